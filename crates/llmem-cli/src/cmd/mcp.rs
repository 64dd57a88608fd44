//! `llmem mcp`: llmem's long-term memory as an MCP server (the Model Context Protocol, on the
//! official Rust SDK `rmcp`), so that any MCP client (Claude Desktop, an IDE, an agent
//! framework) can remember, recall, update and forget.
//!
//! Two transports serve the same four tools, each a call into [`MemApi`]:
//!
//! - stdio (`llmem mcp --dir D [--user U]`): the client starts this process and speaks JSON-RPC
//!   on its stdin/stdout (logs go to stderr only). The caller is [`Principal::open`]: the
//!   `user_id` a call names is its scope, `--user` when it names none.
//! - streamable HTTP ([`http_service`], [`http_router`]): mounted at `/mcp` by `llmem serve`
//!   behind its key check, which puts the caller's [`Principal`] in the HTTP request's
//!   extensions. Each tool call reads it back from the request's HTTP parts (rmcp hands
//!   them to the handler as [`Parts`] in the request context's extensions); a call without one
//!   is refused, never served with open access. The service is stateless (no MCP session:
//!   every POST carries one request and gets its answer as JSON), so any instance can serve
//!   any call and nothing is kept between them.
//!
//! Tool results are JSON text (and the same JSON as structured content): `remember` and
//! `recall` answer `{"results": [Memory…]}`, `update` the updated Memory, `forget`
//! `{"deleted": n}`, a Memory being the REST API's shape (`id`, `memory`, `user_id`, `kind`,
//! `metadata`, `created_at`, `updated_at`, `score`, `event`). What goes wrong in a call
//! (an unknown id, bad arguments, a store error) comes back as a tool error (`isError`) with
//! the API's message, which the calling model can read and act on.

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::http::request::Parts;
use llmem::core::{Filter, MemoryStore};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::memapi::{ApiError, MemApi, Principal, check_name, parse_filter};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub product: super::product::ProductArgs,
    /// The user whose memories a tool call reaches when it names no `user_id`.
    #[arg(long, default_value = "default")]
    pub user: String,
}

/// How many memories `recall` returns when the call does not say.
const DEFAULT_LIMIT: usize = 5;

/// What the server tells the client's model about itself.
const INSTRUCTIONS: &str = "llmem is a long-term memory. Call `remember` to store a fact worth \
keeping (one fact per call, in a self-contained sentence), `recall` with a question to get the \
memories most relevant to it (best first), `update` to correct a memory by its id, and `forget` \
to delete one by id or those whose metadata match a filter. Memories belong to a user: pass \
`user_id` to keep users apart.";

/// The MCP server: the memory operations, and who calls them.
#[derive(Debug, Clone)]
pub struct LlmemMcp {
    api: Arc<MemApi>,
    /// The caller on stdio; `None` over HTTP, where each request carries its own.
    principal: Option<Principal>,
    /// The user a call that names none reaches (stdio's `--user`).
    default_user: Option<String>,
}

impl LlmemMcp {
    /// The server of `llmem mcp`: an open caller, `user` when a call names no user.
    pub fn stdio(api: Arc<MemApi>, user: &str) -> Result<Self, ApiError> {
        check_name("user", user)?;
        Ok(LlmemMcp {
            api,
            principal: Some(Principal::open()),
            default_user: Some(user.to_owned()),
        })
    }

    /// The server behind `/mcp`: each call's caller is the [`Principal`] the HTTP layer put in
    /// its request's extensions.
    pub fn http(api: Arc<MemApi>) -> Self {
        LlmemMcp {
            api,
            principal: None,
            default_user: None,
        }
    }

    /// Who makes this call: the stdio caller, else the `Principal` of the HTTP request.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Principal, ApiError> {
        if let Some(p) = &self.principal {
            return Ok(p.clone());
        }
        ctx.extensions
            .get::<Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .cloned()
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "this MCP call carries no authenticated caller: send `Authorization: Bearer <key>`",
                )
            })
    }

    /// The user a call reaches: the one it names, else the default.
    fn user<'a>(&'a self, named: &'a Option<String>) -> Option<&'a str> {
        named
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .or(self.default_user.as_deref())
    }

    async fn dispatch(
        &self,
        name: &str,
        arguments: JsonObject,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Value, ApiError> {
        let p = self.caller(ctx)?;
        match name {
            "remember" => {
                let a: RememberArgs = arguments_of(name, arguments)?;
                let results = self
                    .api
                    .add(
                        &p,
                        self.user(&a.user_id),
                        vec![a.text],
                        None,
                        a.metadata.unwrap_or_default(),
                    )
                    .await?;
                Ok(json!({ "results": results }))
            }
            "recall" => {
                let a: RecallArgs = arguments_of(name, arguments)?;
                let results = self
                    .api
                    .search(
                        &p,
                        self.user(&a.user_id),
                        &a.query,
                        a.limit.unwrap_or(DEFAULT_LIMIT),
                        a.filter.as_ref(),
                    )
                    .await?;
                Ok(json!({ "results": results }))
            }
            "update" => {
                let a: UpdateArgs = arguments_of(name, arguments)?;
                let memory = self
                    .api
                    .update(&p, self.user(&a.user_id), &a.id, &a.text, a.metadata)
                    .await?;
                Ok(json!(memory))
            }
            "forget" => {
                let a: ForgetArgs = arguments_of(name, arguments)?;
                let user = self.user(&a.user_id);
                match (a.id, a.filter) {
                    (Some(id), None) => {
                        self.api.delete(&p, user, &id).await?;
                        Ok(json!({ "deleted": 1 }))
                    }
                    (None, Some(filter)) => {
                        if parse_filter(Some(&filter))? == Filter::All {
                            return Err(ApiError::bad(
                                "`filter` matches every memory: name a condition, such as \
                                 {\"topic\": \"food\"}, or forget memories one `id` at a time",
                            ));
                        }
                        let n = self.api.delete_where(&p, user, Some(&filter)).await?;
                        Ok(json!({ "deleted": n }))
                    }
                    _ => Err(ApiError::bad(
                        "`forget` takes either `id` (one memory) or `filter` (the memories whose \
                         metadata match it), not both and not neither",
                    )),
                }
            }
            other => Err(ApiError::bad(format!(
                "unknown tool `{other}`: use remember, recall, update or forget"
            ))),
        }
    }
}

/// A tool's arguments, or an error that says which and why.
fn arguments_of<T: DeserializeOwned>(tool: &str, arguments: JsonObject) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| ApiError::bad(format!("bad arguments to `{tool}`: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RememberArgs {
    text: String,
    user_id: Option<String>,
    metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecallArgs {
    query: String,
    user_id: Option<String>,
    limit: Option<usize>,
    filter: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateArgs {
    id: String,
    text: String,
    user_id: Option<String>,
    metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetArgs {
    id: Option<String>,
    user_id: Option<String>,
    filter: Option<Value>,
}

/// A JSON Schema object for a tool's input.
fn schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let mut s = JsonObject::new();
    s.insert("type".into(), "object".into());
    s.insert("properties".into(), properties);
    s.insert("required".into(), json!(required));
    s.insert("additionalProperties".into(), false.into());
    Arc::new(s)
}

fn user_id_property() -> Value {
    json!({
        "type": "string",
        "description": "The user the memory belongs to (1 to 128 characters, no `/`); \
                        memories of different users never mix."
    })
}

fn filter_property(what: &str) -> Value {
    json!({
        "type": "object",
        "description": format!(
            "{what}: a Mongo-style filter on metadata keys, e.g. {{\"topic\": \"food\"}} or \
             {{\"n\": {{\"$gte\": 2}}}}; operators $eq $ne $gt $gte $lt $lte $in $nin $and $or."
        )
    })
}

/// The four tools, as `tools/list` shows them.
fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "remember",
            "Store a memory: a fact worth keeping, as one self-contained sentence. Returns the \
             stored memory with its id.",
            schema(
                json!({
                    "text": {"type": "string", "description": "What to remember."},
                    "user_id": user_id_property(),
                    "metadata": {
                        "type": "object",
                        "description": "Any JSON object kept with the memory, for filtering \
                                        (e.g. {\"topic\": \"food\"})."
                    }
                }),
                &["text"],
            ),
        )
        .with_annotations(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(false),
        ),
        Tool::new(
            "recall",
            "Search the memories for those most relevant to a question or topic, best first, \
             each with its id and score.",
            schema(
                json!({
                    "query": {"type": "string", "description": "What to look for, in words."},
                    "user_id": user_id_property(),
                    "limit": {
                        "type": "integer", "minimum": 1, "maximum": 1000, "default": DEFAULT_LIMIT,
                        "description": "How many memories to return at most."
                    },
                    "filter": filter_property("Only memories whose metadata match")
                }),
                &["query"],
            ),
        )
        .with_annotations(ToolAnnotations::new().read_only(true).open_world(false)),
        Tool::new(
            "update",
            "Replace the text of a memory, by its id (from remember or recall). Returns the \
             updated memory.",
            schema(
                json!({
                    "id": {"type": "string", "description": "The memory's id."},
                    "text": {"type": "string", "description": "Its new text."},
                    "user_id": user_id_property(),
                    "metadata": {
                        "type": "object",
                        "description": "When given, replaces the memory's metadata."
                    }
                }),
                &["id", "text"],
            ),
        )
        .with_annotations(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(true)
                .idempotent(true)
                .open_world(false),
        ),
        Tool::new(
            "forget",
            "Delete a memory by its id, or all the memories whose metadata match a filter. \
             Give exactly one of `id` and `filter`. Returns how many were deleted.",
            schema(
                json!({
                    "id": {"type": "string", "description": "The id of the memory to delete."},
                    "user_id": user_id_property(),
                    "filter": filter_property("Delete every memory whose metadata match")
                }),
                &[],
            ),
        )
        .with_annotations(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(true)
                .idempotent(true)
                .open_world(false),
        ),
    ]
}

impl ServerHandler for LlmemMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("llmem", env!("CARGO_PKG_VERSION"))
                    .with_title("llmem memory")
                    .with_description(
                        "Long-term memory for LLM apps: remember, recall, update, forget.",
                    ),
            )
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let arguments = request.arguments.unwrap_or_default();
        let result = match self.dispatch(&name, arguments, &context).await {
            Ok(value) => CallToolResult::structured(value),
            Err(e) => {
                tracing::debug!(tool = %name, kind = e.kind, "tool error: {}", e.message);
                CallToolResult::error(vec![ContentBlock::text(e.message)])
            }
        };
        Ok(result.into())
    }
}

/// The streamable HTTP MCP service, stateless and answering JSON, for
/// `Router::nest_service("/mcp", …)` behind the layer that puts the caller's [`Principal`] in
/// each request's extensions (without one, every tool call is refused).
///
/// `Host` is not checked here: the caller's key is what guards this endpoint, as it guards the
/// REST API beside it.
pub fn http_service(api: Arc<MemApi>) -> StreamableHttpService<LlmemMcp, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(LlmemMcp::http(api.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// A router that serves [`http_service`] at `/mcp`, to merge into the server's router.
pub fn http_router(api: Arc<MemApi>) -> axum::Router {
    axum::Router::new().route_service("/mcp", http_service(api))
}

pub async fn run(args: Args) -> Result<()> {
    let config = args.product.config()?;
    let (providers, _local) = args.product.providers(&config).await?;
    let store = match providers.store.clone() {
        Some(s) => s,
        None => llmem::open_store(&config.tiers)?,
    };
    let api = Arc::new(
        MemApi::new(store.clone(), providers.embedder.clone())
            .with_sessions_in(&config.tiers)
            .deferring(providers.deferred.is_some()),
    );
    let server = LlmemMcp::stdio(api, &args.user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    tracing::info!(user = %args.user, "llmem mcp: serving MCP on stdin/stdout");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("starting the MCP session on stdin/stdout")?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "llmem mcp: the client closed the session");
    // The recalls' reads, kept for promotion.
    store.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_tools_have_object_schemas() {
        let names: Vec<_> = tools().iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names, ["remember", "recall", "update", "forget"]);
        for t in tools() {
            assert_eq!(t.input_schema.get("type"), Some(&json!("object")));
        }
    }

    #[test]
    fn tool_arguments_are_checked() {
        let ok: RecallArgs = arguments_of(
            "recall",
            json!({"query": "dog"}).as_object().cloned().unwrap(),
        )
        .unwrap();
        assert_eq!((ok.query.as_str(), ok.limit), ("dog", None));
        let typo = arguments_of::<RecallArgs>(
            "recall",
            json!({"query": "dog", "user": "bob"})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap_err();
        assert!(
            typo.message.contains("unknown field `user`"),
            "{}",
            typo.message
        );
        let missing = arguments_of::<RememberArgs>("remember", JsonObject::new()).unwrap_err();
        assert!(missing.message.contains("`text`"), "{}", missing.message);
    }

    /// `http_router` on loopback, with `principal` put in every request by a layer as
    /// `llmem serve`'s authentication does (or none); returns the `/mcp` URL.
    async fn http_server(api: Arc<MemApi>, principal: Option<Principal>) -> String {
        let app = http_router(api).layer(axum::middleware::from_fn(
            move |mut req: axum::extract::Request, next: axum::middleware::Next| {
                if let Some(p) = principal.clone() {
                    req.extensions_mut().insert(p);
                }
                next.run(req)
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/mcp")
    }

    async fn call_tool(url: &str, name: &str, arguments: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": name, "arguments": arguments}});
        let r = reqwest::Client::new()
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["result"].clone()
    }

    #[tokio::test]
    async fn over_http_the_caller_is_the_principal_of_the_request_and_none_is_refused() {
        let store = llmem::open_store(&llmem::Config::default().tiers).unwrap();
        let api = Arc::new(MemApi::new(store, None));
        let acme = http_server(api.clone(), Some(Principal::tenant("acme", false))).await;
        let anonymous = http_server(api.clone(), None).await;

        let added = call_tool(&acme, "remember", json!({"text": "My dog is called Rex"})).await;
        assert_eq!(added["isError"], false, "{added}");
        let m = &added["structuredContent"]["results"][0];
        assert_eq!(m["memory"], "My dog is called Rex");
        let recalled = api
            .search(&Principal::tenant("acme", false), None, "dog", 5, None)
            .await
            .unwrap();
        assert_eq!(recalled[0].id, m["id"].as_str().unwrap());

        for (tool, args) in [
            ("recall", json!({"query": "dog"})),
            ("remember", json!({"text": "x"})),
        ] {
            let refused = call_tool(&anonymous, tool, args).await;
            assert_eq!(refused["isError"], true, "{refused}");
            let text = refused["content"][0]["text"].as_str().unwrap();
            assert!(text.contains("no authenticated caller"), "{text}");
        }
        let open = api
            .list(&Principal::open(), None, None, None)
            .await
            .unwrap();
        assert!(open.is_empty(), "{open:?}");
    }
}
