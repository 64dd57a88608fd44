//! Anthropic's messages API: chat with `tool_use`, SSE streaming, and exact prompt counts from
//! `/v1/messages/count_tokens`.
//!
//! ```toml
//! [providers.claude]
//! kind = "anthropic"
//! model = "claude-sonnet-4-5"
//! # api_key = "…"       # else ANTHROPIC_API_KEY
//! ```

use async_trait::async_trait;
use llmem_core::wire::{from_anthropic, to_anthropic};
use llmem_core::{
    Capabilities, ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, Error, Message,
    Result, ToolCallDelta, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::http::{
    ApiKey, Call, SseEvent, chunk_stream, config_from_table, default_client, event_json, u64_at,
};

pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_MODEL: &str = "claude-haiku-4-5";
pub const API_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// The `anthropic-version` header sent with every request.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; used when a request sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Configuration of [`Anthropic`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKey>,
    /// Without the `/v1` path (`https://api.anthropic.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `max_tokens` for requests that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// Builds an [`Anthropic`] provider.
#[derive(Debug, Clone, Default)]
pub struct AnthropicBuilder {
    config: AnthropicConfig,
    client: Option<reqwest::Client>,
}

impl AnthropicBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Key from `$ANTHROPIC_API_KEY`, base URL from `$ANTHROPIC_BASE_URL`.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        b.config.api_key = ApiKey::from_env(API_KEY_ENV);
        b.config.base_url = std::env::var("ANTHROPIC_BASE_URL")
            .ok()
            .filter(|u| !u.is_empty());
        b
    }

    pub fn from_config(config: AnthropicConfig) -> Self {
        AnthropicBuilder {
            config,
            client: None,
        }
    }

    pub fn from_table(table: &toml::Table) -> Result<Self> {
        Ok(Self::from_config(config_from_table(table)?))
    }

    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(ApiKey::new(key));
        self
    }

    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.config.base_url = Some(url.into());
        self
    }

    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.config.model = Some(model.into());
        self
    }

    #[must_use]
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.config.max_tokens = Some(n);
        self
    }

    #[must_use]
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    pub fn build(self) -> Result<Anthropic> {
        let c = self.config;
        let api_key = match c.api_key {
            Some(k) => k,
            None => ApiKey::from_env(API_KEY_ENV).ok_or_else(|| {
                Error::config(
                    "api_key",
                    format!("set `api_key` or the {API_KEY_ENV} environment variable"),
                )
            })?,
        };
        Ok(Anthropic {
            client: self.client.unwrap_or_else(default_client),
            base_url: c
                .base_url
                .unwrap_or_else(|| ANTHROPIC_BASE_URL.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            api_key,
            model: c.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            max_tokens: c.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        })
    }
}

/// Anthropic's chat provider.
#[derive(Debug, Clone)]
pub struct Anthropic {
    client: reqwest::Client,
    base_url: String,
    api_key: ApiKey,
    model: String,
    max_tokens: u32,
}

const NAME: &str = "anthropic";

impl Anthropic {
    pub fn builder() -> AnthropicBuilder {
        AnthropicBuilder::new()
    }

    fn call(&self, path: &str) -> Call<'_> {
        Call {
            provider: NAME,
            client: &self.client,
            url: format!("{}{path}", self.base_url),
            headers: vec![
                ("x-api-key", self.api_key.expose().to_owned()),
                ("anthropic-version", API_VERSION.to_owned()),
            ],
        }
    }

    /// The request body; `count` builds the count_tokens shape (no sampling fields).
    fn body(&self, req: &ChatRequest, stream: bool, count: bool) -> Result<Value> {
        let (system, messages) = to_anthropic(&req.messages)?;
        let mut b = Map::new();
        b.insert(
            "model".into(),
            json!(req.model.as_deref().unwrap_or(&self.model)),
        );
        b.insert("messages".into(), messages);
        if let Some(s) = system {
            b.insert("system".into(), json!(s));
        }
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description,
                        "input_schema": if t.parameters.is_null() { json!({"type": "object", "properties": {}}) } else { t.parameters.clone() }})
                })
                .collect();
            b.insert("tools".into(), Value::Array(tools));
        }
        if count {
            return Ok(Value::Object(b));
        }
        b.insert(
            "max_tokens".into(),
            json!(req.max_tokens.unwrap_or(self.max_tokens)),
        );
        if let Some(t) = req.temperature {
            b.insert("temperature".into(), json!(t));
        }
        if !req.stop.is_empty() {
            b.insert("stop_sequences".into(), json!(req.stop));
        }
        if stream {
            b.insert("stream".into(), json!(true));
        }
        for (k, v) in &req.extra {
            b.insert(k.clone(), v.clone());
        }
        Ok(Value::Object(b))
    }
}

/// Anthropic's `usage`: `input_tokens` excludes cache reads and writes; llmem's counts the whole
/// prompt.
pub fn parse_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let cached = u64_at(u, "cache_read_input_tokens");
    Some(Usage {
        input_tokens: u64_at(u, "input_tokens") + cached + u64_at(u, "cache_creation_input_tokens"),
        output_tokens: u64_at(u, "output_tokens"),
        cached_input_tokens: cached,
    })
}

fn bad_shape(what: &str, body: &Value) -> Error {
    Error::Provider {
        provider: NAME.into(),
        status: None,
        message: format!(
            "unexpected response shape ({what}): {}",
            body.to_string().chars().take(300).collect::<String>()
        ),
        retry_after: None,
    }
}

/// Parses a messages-API response.
pub fn parse_response(v: &Value) -> Result<ChatResponse> {
    let content = v
        .get("content")
        .filter(|c| c.is_array())
        .ok_or_else(|| bad_shape("no `content` array", v))?;
    let wrapped = json!([{"role": "assistant", "content": content}]);
    let message = from_anthropic(None, &wrapped)?
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            let mut m = Message::assistant("");
            m.content.clear();
            m
        });
    Ok(ChatResponse {
        message,
        model: v["model"].as_str().unwrap_or_default().to_owned(),
        usage: parse_usage(&v["usage"]),
        finish_reason: v["stop_reason"].as_str().map(str::to_owned),
    })
}

#[derive(Default)]
struct StreamState {
    usage: Usage,
    /// The tool call (by order among the answer's calls) of each `tool_use` content block.
    tools: std::collections::HashMap<u64, usize>,
}

fn step(st: &mut StreamState, ev: SseEvent) -> Result<(Vec<ChatChunk>, bool)> {
    let kind = ev.event.clone().unwrap_or_default();
    if kind == "ping" || ev.data.is_empty() {
        return Ok((Vec::new(), false));
    }
    let v = event_json(NAME, &ev)?;
    let kind = if kind.is_empty() {
        v["type"].as_str().unwrap_or_default().to_owned()
    } else {
        kind
    };
    match kind.as_str() {
        "message_start" => {
            if let Some(u) = parse_usage(&v["message"]["usage"]) {
                st.usage = u;
            }
            Ok((Vec::new(), false))
        }
        "content_block_start" => {
            let block = &v["content_block"];
            if block["type"] != "tool_use" {
                return Ok((Vec::new(), false));
            }
            let index = st.tools.len();
            st.tools.insert(v["index"].as_u64().unwrap_or(0), index);
            // The input arrives in `input_json_delta` pieces; a non-empty one here is whole.
            let arguments = match block["input"].as_object() {
                Some(o) if !o.is_empty() => block["input"].to_string(),
                _ => String::new(),
            };
            Ok((
                vec![ChatChunk {
                    tool_calls: vec![ToolCallDelta {
                        index,
                        id: block["id"].as_str().map(str::to_owned),
                        name: block["name"].as_str().map(str::to_owned),
                        arguments,
                    }],
                    ..Default::default()
                }],
                false,
            ))
        }
        "content_block_delta" => {
            let d = &v["delta"];
            if d["type"] == "input_json_delta" {
                let tool = v["index"].as_u64().and_then(|i| st.tools.get(&i));
                let piece = d["partial_json"].as_str().unwrap_or_default();
                return Ok(match tool {
                    Some(&index) if !piece.is_empty() => (
                        vec![ChatChunk {
                            tool_calls: vec![ToolCallDelta {
                                index,
                                arguments: piece.to_owned(),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        false,
                    ),
                    _ => (Vec::new(), false),
                });
            }
            let text = d["text"].as_str().unwrap_or_default();
            let chunks = if text.is_empty() {
                Vec::new()
            } else {
                vec![ChatChunk {
                    delta: text.to_owned(),
                    ..Default::default()
                }]
            };
            Ok((chunks, false))
        }
        "message_delta" => {
            // Cumulative counts; input counts appear here too on newer API versions.
            let u = &v["usage"];
            st.usage.output_tokens = u64_at(u, "output_tokens");
            if let Some(p) = parse_usage(u).filter(|_| u.get("input_tokens").is_some()) {
                st.usage.input_tokens = p.input_tokens;
                st.usage.cached_input_tokens = p.cached_input_tokens;
            }
            let reason = v["delta"]["stop_reason"].as_str().map(str::to_owned);
            Ok((
                vec![ChatChunk {
                    finish_reason: reason.or(Some("end_turn".into())),
                    usage: Some(st.usage),
                    ..Default::default()
                }],
                false,
            ))
        }
        "message_stop" => Ok((Vec::new(), true)),
        "error" => Err(Error::Provider {
            provider: NAME.into(),
            status: None,
            message: crate::http::error_message(&ev.data),
            retry_after: None,
        }),
        _ => Ok((Vec::new(), false)),
    }
}

#[async_trait]
impl ChatModel for Anthropic {
    fn name(&self) -> &str {
        NAME
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            streaming: true,
            tools: true,
            embeddings: false,
            token_count: true,
            local: false,
        }
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let body = self.body(&request, false, false)?;
        let v = self.call("/v1/messages").json(&body).await?;
        parse_response(&v)
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = self.body(&request, true, false)?;
        let events = self.call("/v1/messages").sse(&body).await?;
        Ok(chunk_stream(NAME, events, StreamState::default(), step))
    }

    async fn count_tokens(&self, request: &ChatRequest) -> Result<usize> {
        let body = self.body(request, false, true)?;
        let v = self.call("/v1/messages/count_tokens").json(&body).await?;
        let n = v["input_tokens"]
            .as_u64()
            .ok_or_else(|| bad_shape("no `input_tokens`", &v))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
