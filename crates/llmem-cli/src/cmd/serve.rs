//! `llmem serve`: memory as a drop-in OpenAI-compatible proxy.
//!
//! An app points its OpenAI client's base URL at llmem. For every `/v1/chat/completions` call,
//! llmem takes the new turn (the messages after the last assistant message the client sent),
//! adds it to the session's [`MemoryManager`], sends the upstream model a budgeted context (the
//! rolling summary, the recent turns and only the long-term memories the question needs),
//! streams the answer back (SSE) or returns it whole, and records the answer with the usage the
//! upstream reported. The session is the `x-llmem-session` header, else the request's `user`
//! field; the user (whose memories a session may recall) is `x-llmem-user`, else `user`.
//!
//! Endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`, `GET /metrics`
//! (Prometheus text), `GET /v1/sessions/{user}/{session}` (the session's statistics and the
//! messages in its context). With
//! `server.token` set, every call but `/health` needs `Authorization: Bearer <token>`. Upstream
//! keys stay in the server: no response or log line carries them. With a `[budget]` limit and
//! its hard stop, a turn past the budget is refused with 429 `budget_exceeded`, whose message
//! names the budget (session, user or total) and the key that raises it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use llmem::core::{ChatModel, ChatRequest, Message, Role, ToolCallDelta, ToolCallPieces, Usage};
use llmem::{MemoryManager, Sessions};
use serde_json::{Value, json};
use tokio::sync::OwnedMutexGuard;

use super::keys::{KeyStore, keys_path};
use super::memapi::{ApiError, MemApi, Principal, check_name};
use super::rest::{Body, RestState};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub product: super::product::ProductArgs,
    /// Address to listen on (overrides server.listen); port 0 picks a free one.
    #[arg(long)]
    pub listen: Option<String>,
    /// An OpenAI-compatible upstream base URL (llama.cpp, vLLM, Ollama…), instead of [chat].
    #[arg(long, conflicts_with = "llamacpp")]
    pub upstream: Option<String>,
    /// The upstream model (with --upstream).
    #[arg(long, default_value = "local")]
    pub upstream_model: String,
    /// Listen on a non-loopback address with no API keys: anyone who reaches the port reads
    /// and writes every user's memory. Only behind a gateway that authenticates for you.
    #[arg(long)]
    pub allow_no_keys: bool,
    /// Print the OpenAPI document of the REST API and exit.
    #[arg(long)]
    pub print_openapi: bool,
}

#[derive(Debug, Default)]
struct Metrics {
    requests: AtomicU64,
    streamed: AtomicU64,
    errors: AtomicU64,
    unauthorized: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    full_history_tokens: AtomicU64,
    retrieved: AtomicU64,
    storage_errors_after_answer: AtomicU64,
}

/// How callers prove who they are.
#[derive(Debug)]
struct Auth {
    /// API keys (`llmem keys`); once one is in force, only keys are accepted.
    keys: Option<Arc<KeyStore>>,
    /// The older single shared token (`server.token`): one trusted client, whose `user` field
    /// is believed. Accepted only while no key is in force.
    token: Option<String>,
}

impl Auth {
    fn keyed(&self) -> bool {
        self.keys.as_ref().is_some_and(|k| k.active())
    }

    /// The caller of a request, or why it is refused.
    fn principal(&self, headers: &HeaderMap) -> std::result::Result<Principal, ApiError> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 7235).
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(str::trim);
        if let Some(keys) = self.keys.as_ref().filter(|k| k.active()) {
            let Some(given) = bearer else {
                return Err(ApiError::unauthorized(
                    "no API key: send `Authorization: Bearer <key>` (make one with `llmem keys add`)",
                ));
            };
            return keys
                .authenticate(given)
                .ok_or_else(|| ApiError::unauthorized("the API key is wrong or revoked"));
        }
        match &self.token {
            Some(t) if bearer != Some(t.as_str()) => Err(ApiError::unauthorized(
                "missing or wrong bearer token: send `Authorization: Bearer <server.token>`",
            )),
            _ => Ok(Principal::open()),
        }
    }
}

#[derive(Debug)]
struct App {
    sessions: Arc<Sessions>,
    chat: Option<Arc<dyn ChatModel>>,
    auth: Auth,
    metrics: Metrics,
    started: Instant,
    upstream_timeout: Duration,
}

type Shared = Arc<App>;

/// An OpenAI-style error response.
fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, kind, message).into_response()
}

pub async fn run(args: Args) -> Result<()> {
    if args.print_openapi {
        println!("{}", super::rest::openapi_json());
        return Ok(());
    }
    let mut config = args.product.config()?;
    if let Some(l) = &args.listen {
        config.server.listen = l.clone();
    }
    if let Some(url) = &args.upstream {
        let mut t = toml::Table::new();
        t.insert("kind".into(), "openai-compatible".into());
        t.insert("base_url".into(), url.clone().into());
        t.insert("model".into(), args.upstream_model.clone().into());
        config.chat = Some(t);
    }
    let (providers, _local) = args.product.providers(&config).await?;
    let chat = providers.chat.clone();
    let addr: SocketAddr =
        config.server.listen.parse().with_context(|| {
            format!("server.listen `{}` is not an address", config.server.listen)
        })?;
    let keys = keys_path(&config)
        .map(KeyStore::open)
        .transpose()?
        .map(Arc::new);
    let auth = Auth {
        keys: keys.clone(),
        token: config.server.token.clone(),
    };
    if !addr.ip().is_loopback() && !auth.keyed() {
        if !args.allow_no_keys {
            bail!(
                "refusing to listen on {addr} with no API keys: anyone reaching the port could \
                 read and write every user's memory. Make a key with `llmem keys add --tenant \
                 NAME` (keys are read from {}), listen on 127.0.0.1, or pass --allow-no-keys \
                 if a gateway in front authenticates",
                keys.as_ref().map_or(
                    "server.keys_file or <tiers.dir>/keys.json".to_owned(),
                    |k| k.path().display().to_string()
                )
            );
        }
        eprintln!(
            "WARNING: llmem serve is listening on {addr} WITHOUT API KEYS (--allow-no-keys): \
             every client that reaches it can read and write every user's memory"
        );
        tracing::warn!(%addr, "serving without API keys on a non-loopback address");
    }
    let store = match &providers.store {
        Some(s) => s.clone(),
        None => llmem::open_store(&config.tiers)?,
    };
    let sessions = Arc::new(
        Sessions::new(config.clone(), providers.clone().with_store(store.clone()))?
            .with_write_behind(),
    );
    let consolidator = consolidation_task(&config, &sessions, store.clone());
    let api = Arc::new(
        MemApi::new(store, providers.embedder.clone())
            .with_sessions(sessions.clone())
            .deferring(providers.deferred.is_some()),
    );
    let flush_every = Duration::from_millis(config.server.flush_interval_ms);
    let max_body = config.server.max_body_bytes;
    let upstream_timeout = Duration::from_secs(config.server.upstream_timeout_secs);
    let app = Arc::new(App {
        sessions,
        chat,
        auth,
        metrics: Metrics::default(),
        started: Instant::now(),
        upstream_timeout,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    println!(
        "llmem serve: listening on http://{bound}/v1 (upstream {})",
        app.chat
            .as_ref()
            .map_or("none: memory API only".to_owned(), |c| format!(
                "{} {}",
                c.name(),
                c.model()
            )),
    );
    tracing::info!(%bound, keys = app.auth.keyed(), "listening");
    // Write-behind: changed sessions reach the disk every flush interval, off the requests.
    let flusher = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(flush_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = app.sessions.flush(false).await {
                    tracing::error!(error = %e, "saving sessions failed; retrying next interval");
                }
            }
        })
    };
    let rest = RestState { api, keys };
    axum::serve(listener, router(app.clone(), rest, max_body))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    flusher.abort();
    if let Some(c) = consolidator {
        c.abort();
    }
    // In-flight turns (streams included) finish before their session is written.
    let written = app.sessions.flush(true).await?;
    eprintln!("llmem serve: stopped; {written} session(s) saved");
    Ok(())
}

/// With `consolidation.every_secs`, a task that consolidates every user's old conversation
/// memories on that period (`llmem::consolidate`), with the configured summariser and the
/// extractive fallback; a failure is logged and tried again next period.
fn consolidation_task(
    config: &llmem::Config,
    sessions: &Sessions,
    store: Arc<dyn llmem::core::MemoryStore>,
) -> Option<tokio::task::JoinHandle<()>> {
    let settings = config.consolidation.clone();
    if settings.every_secs == 0 {
        return None;
    }
    let p = sessions.providers();
    let counter = p.counter.clone()?;
    let (summarizer, embedder) = (p.summarizer.clone(), p.embedder.clone());
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(settings.every_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let users = match llmem::consolidation_users(&*store).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(error = %e, "consolidation: listing users failed");
                    continue;
                }
            };
            for user in users {
                let now = llmem::core::Timestamp::now();
                match llmem::consolidate(
                    &store,
                    summarizer.as_ref(),
                    embedder.as_ref(),
                    counter.clone(),
                    &user,
                    &settings,
                    now,
                )
                .await
                {
                    Ok(out) if !out.summaries.is_empty() => tracing::info!(
                        %user,
                        summaries = out.summaries.len(),
                        sources = out.sources,
                        "consolidated"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(%user, error = %e, "consolidation failed"),
                }
            }
        }
    }))
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: finishing requests, then saving sessions");
}

/// Every route but `/health` and `/openapi.json` passes here: the caller's [`Principal`] goes
/// into the request for the handlers, or the request ends with 401.
async fn authenticate(State(app): State<Shared>, mut req: Request, next: Next) -> Response {
    match app.auth.principal(req.headers()) {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => {
            app.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
            e.into_response()
        }
    }
}

fn router(app: Shared, rest: RestState, max_body: usize) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(completions))
        .route("/v1/sessions/{user}/{session}", get(session_stats))
        .with_state(app.clone())
        .merge(super::mcp::http_router(rest.api.clone()))
        .merge(super::rest::router(rest))
        .layer(axum::middleware::from_fn_with_state(app, authenticate));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [("content-type", "application/json")],
                    super::rest::openapi_json(),
                )
            }),
        )
        .merge(protected)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "no such route: see /openapi.json for the memory API and /v1/chat/completions",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
}

async fn models(State(app): State<Shared>) -> Response {
    let data: Vec<Value> = app
        .chat
        .iter()
        .map(|c| json!({"id": c.model(), "object": "model", "created": 0, "owned_by": c.name()}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn metrics(State(app): State<Shared>, Extension(p): Extension<Principal>) -> Response {
    if !p.open && !p.admin {
        return ApiError::forbidden("the metrics cover every tenant: use an admin key")
            .into_response();
    }
    let m = &app.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let sent = g(&m.prompt_tokens);
    let full = g(&m.full_history_tokens);
    let body = format!(
        "# TYPE llmem_requests_total counter\nllmem_requests_total {}\n\
         # TYPE llmem_streamed_total counter\nllmem_streamed_total {}\n\
         # TYPE llmem_errors_total counter\nllmem_errors_total {}\n\
         # TYPE llmem_unauthorized_total counter\nllmem_unauthorized_total {}\n\
         # TYPE llmem_storage_errors_after_answer_total counter\nllmem_storage_errors_after_answer_total {}\n\
         # TYPE llmem_prompt_tokens_total counter\nllmem_prompt_tokens_total {sent}\n\
         # TYPE llmem_completion_tokens_total counter\nllmem_completion_tokens_total {}\n\
         # TYPE llmem_full_history_tokens_total counter\nllmem_full_history_tokens_total {full}\n\
         # TYPE llmem_retrieved_memories_total counter\nllmem_retrieved_memories_total {}\n\
         # TYPE llmem_budget_alarms_total counter\nllmem_budget_alarms_total {}\n\
         # TYPE llmem_budget_refusals_total counter\nllmem_budget_refusals_total {}\n\
         # TYPE llmem_sessions gauge\nllmem_sessions {}\n\
         # TYPE llmem_savings_ratio gauge\nllmem_savings_ratio {:.4}\n\
         # TYPE llmem_uptime_seconds gauge\nllmem_uptime_seconds {:.0}\n",
        g(&m.requests),
        g(&m.streamed),
        g(&m.errors),
        g(&m.unauthorized),
        g(&m.storage_errors_after_answer),
        g(&m.completion_tokens),
        g(&m.retrieved),
        app.sessions.providers().budgets.alarms(),
        app.sessions.providers().budgets.refusals(),
        app.sessions.len(),
        if full == 0 {
            0.0
        } else {
            1.0 - sent as f64 / full as f64
        },
        app.started.elapsed().as_secs_f64(),
    );
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

async fn session_stats(
    State(app): State<Shared>,
    Extension(p): Extension<Principal>,
    names: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let result = async {
        let Path((user, session)) =
            names.map_err(|e| ApiError::bad(format!("the path: {}", e.body_text())))?;
        check_name("session", &session)?;
        let scope = p.user_scope(Some(&user))?;
        let m = app.sessions.checkout(&scope, &session).await?;
        Ok::<_, ApiError>(Json(json!({
            "user": user,
            "session": session,
            "stats": m.stats(),
            "context_messages": m.messages().len(),
            "messages": m.messages().iter().map(|x| json!({
                "role": x.role,
                "content": x.text(),
            })).collect::<Vec<_>>(),
            "summary": m.summary(),
        })))
    }
    .await;
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The parts of an OpenAI chat-completions body llmem reads; the rest goes upstream as is.
struct Incoming {
    messages: Vec<Message>,
    stream: bool,
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    include_usage: bool,
    /// The scope whose memories the session reads and writes.
    user: String,
    /// The `user` field as sent.
    field_user: Option<String>,
    session: String,
    request: ChatRequest,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn parse(
    p: &Principal,
    headers: &HeaderMap,
    body: Value,
) -> std::result::Result<Incoming, ApiError> {
    let mut inc = parse_body(headers, body).map_err(ApiError::bad)?;
    if !p.open {
        // A key's caller names end users inside its tenant, never another tenant.
        let named = header(headers, "x-llmem-user").or_else(|| inc.field_user.clone());
        inc.user = p.user_scope(named.as_deref())?;
    }
    check_name("session", &inc.session)?;
    Ok(inc)
}

fn parse_body(headers: &HeaderMap, mut body: Value) -> std::result::Result<Incoming, String> {
    let obj = body
        .as_object_mut()
        .ok_or("the body must be a JSON object with `messages`")?;
    let messages: Vec<Message> = serde_json::from_value(
        obj.remove("messages")
            .ok_or("`messages` is missing: send the chat messages")?,
    )
    .map_err(|e| format!("`messages`: {e}"))?;
    if messages.is_empty() {
        return Err("`messages` is empty: send at least one message".into());
    }
    let stream = obj
        .remove("stream")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let include_usage = obj
        .remove("stream_options")
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
        .unwrap_or(false);
    let field_user = obj
        .remove("user")
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|u| !u.is_empty());
    let user = header(headers, "x-llmem-user")
        .or_else(|| field_user.clone())
        .unwrap_or_else(|| "anonymous".into());
    let session = header(headers, "x-llmem-session")
        .or_else(|| field_user.clone())
        .unwrap_or_else(|| "default".into());
    let mut request = ChatRequest::default();
    if let Some(m) = obj
        .remove("model")
        .and_then(|v| v.as_str().map(str::to_owned))
    {
        request.model = Some(m);
    }
    let max = obj
        .remove("max_completion_tokens")
        .or_else(|| obj.remove("max_tokens"));
    request.max_tokens = max.and_then(|v| v.as_u64()).map(|v| v as u32);
    request.temperature = obj
        .remove("temperature")
        .and_then(|v| v.as_f64())
        .map(|t| t as f32);
    if let Some(stop) = obj.remove("stop") {
        request.stop = match stop {
            Value::String(s) => vec![s],
            other => serde_json::from_value(other).map_err(|e| format!("`stop`: {e}"))?,
        };
    }
    request.extra = std::mem::take(obj);
    Ok(Incoming {
        messages,
        stream,
        include_usage,
        user,
        field_user,
        session,
        request,
    })
}

/// Adds the client's new turn to the session: its system prompts the first time, then every
/// message after the last assistant message it sent.
async fn add_turn(m: &mut MemoryManager, messages: &[Message]) -> llmem::Result<()> {
    if !m.messages().iter().any(|x| x.role == Role::System) {
        for s in messages.iter().take_while(|x| x.role == Role::System) {
            m.add_message(s.clone(), None).await?;
        }
    }
    let start = messages
        .iter()
        .rposition(|x| x.role == Role::Assistant)
        .map_or(0, |i| i + 1);
    for x in &messages[start..] {
        if x.role != Role::System {
            m.add_message(x.clone(), None).await?;
        }
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn completions(
    State(app): State<Shared>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: std::result::Result<Body<Value>, ApiError>,
) -> Response {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let incoming = body.and_then(|Body(b)| parse(&p, &headers, b));
    let result = match incoming {
        Ok(i) => turn(app.clone(), i).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            app.metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(status = %e.status, error = %e.message, "chat completion failed");
            e.into_response()
        }
    }
}

/// Runs an upstream call under the server's time limit; a call that runs over is a temporary
/// failure (503 with `retry-after`).
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = llmem::Result<T>>,
) -> std::result::Result<T, ApiError> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| upstream_error(&e)),
        Err(_) => Err(ApiError::from_llmem(&llmem::Error::Timeout {
            what: "the upstream model".into(),
            after: limit,
        })),
    }
}

/// An upstream model's error: its final errors are 502 with its message, temporary ones 503.
fn upstream_error(e: &llmem::Error) -> ApiError {
    let mut out = ApiError::from_llmem(e);
    if out.status == StatusCode::INTERNAL_SERVER_ERROR || out.status.is_client_error() {
        out.status = StatusCode::BAD_GATEWAY;
        out.kind = "upstream_error";
    }
    out.message = format!("upstream: {}", out.message);
    out
}

async fn turn(app: Shared, inc: Incoming) -> std::result::Result<Response, ApiError> {
    let Some(chat) = app.chat.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_upstream",
            "this server has no upstream model: configure [chat] in llmem.toml or start it \
             with --upstream URL; the memory API (/v1/memories) works without one",
        ));
    };
    // One turn at a time per session (in this process): the lock is held until the answer is
    // recorded. Replicas read the session's latest shared copy here.
    let mut m: OwnedMutexGuard<MemoryManager> =
        app.sessions.checkout(&inc.user, &inc.session).await?;
    // A used-up budget (`[budget]`, hard stop) refuses the turn before it is kept: 429.
    m.check_budget()?;
    add_turn(&mut m, &inc.messages).await?;
    let before = m.state().stats.full_history_tokens;
    let prepared = m.prepare(None).await?;
    // Replicas: the user's turn is in the shared session before the upstream is called.
    app.sessions.commit(&mut m).await?;
    let full = m.state().stats.full_history_tokens.saturating_sub(before);
    let metrics = &app.metrics;
    metrics
        .prompt_tokens
        .fetch_add(prepared.tokens as u64, Ordering::Relaxed);
    metrics
        .retrieved
        .fetch_add(prepared.retrieved.len() as u64, Ordering::Relaxed);
    metrics
        .full_history_tokens
        .fetch_add(full, Ordering::Relaxed);
    let mut request = inc.request;
    request.messages = prepared.messages;
    if request.max_tokens.is_none() {
        request.max_tokens = Some(m.config().memory.answer_reserve as u32);
    }
    let model = request
        .model
        .clone()
        .unwrap_or_else(|| chat.model().to_owned());
    let id = format!("chatcmpl-{}", llmem::core::new_id());
    let mut extra = HeaderMap::new();
    let hv = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("?"));
    extra.insert(
        "x-llmem-session",
        hv(format!("{}/{}", inc.user, inc.session)),
    );
    extra.insert("x-llmem-prompt-tokens", hv(prepared.tokens.to_string()));
    extra.insert(
        "x-llmem-retrieved",
        hv(prepared.retrieved.len().to_string()),
    );
    if !inc.stream {
        let r = bounded(app.upstream_timeout, chat.chat(request)).await?;
        // The whole message: text and any tool calls the model made.
        let answer = Message {
            role: Role::Assistant,
            ..r.message
        };
        let wire = llmem::core::wire::openai_messages(std::slice::from_ref(&answer))
            .ok()
            .and_then(|v| v.get(0).cloned())
            .unwrap_or_else(|| json!({"role": "assistant", "content": answer.text()}));
        let usage = r.usage.unwrap_or(Usage {
            input_tokens: prepared.tokens as u64,
            output_tokens: m.counter().count_message(&answer) as u64,
            cached_input_tokens: 0,
        });
        // The upstream has answered: a failure to record it is logged, and the client still
        // gets the answer it paid for.
        let recorded = match m.add_message(answer.clone(), r.usage).await {
            Ok(()) => app.sessions.commit(&mut m).await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            app.metrics
                .storage_errors_after_answer
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "could not record the upstream's answer");
        }
        app.metrics
            .completion_tokens
            .fetch_add(usage.output_tokens, Ordering::Relaxed);
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": now_secs(),
            "model": model,
            "choices": [{
                "index": 0,
                "message": wire,
                "finish_reason": finish_reason(r.finish_reason, !answer.tool_calls.is_empty()),
            }],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        });
        return Ok((extra, Json(body)).into_response());
    }
    app.metrics.streamed.fetch_add(1, Ordering::Relaxed);
    let mut upstream = bounded(app.upstream_timeout, chat.chat_stream(request)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let created = now_secs();
    let chunk = move |delta: Value, finish: Option<String>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let app2 = app.clone();
    let include_usage = inc.include_usage;
    let prompt_tokens = prepared.tokens as u64;
    tokio::spawn(async move {
        let send = |v: Value| Event::default().data(v.to_string());
        let _ = tx
            .send(send(chunk(
                json!({"role": "assistant", "content": ""}),
                None,
            )))
            .await;
        let mut text = String::new();
        let mut tools = ToolCallPieces::default();
        let mut usage = None;
        let mut finish = None;
        let mut failed = None;
        while let Some(item) = upstream.next().await {
            match item {
                Ok(c) => {
                    if !c.delta.is_empty() {
                        text.push_str(&c.delta);
                        let _ = tx
                            .send(send(chunk(json!({"content": c.delta}), None)))
                            .await;
                    }
                    if !c.tool_calls.is_empty() {
                        for d in &c.tool_calls {
                            tools.push(d);
                        }
                        let calls: Vec<Value> = c.tool_calls.iter().map(tool_call_delta).collect();
                        let _ = tx
                            .send(send(chunk(json!({"tool_calls": calls}), None)))
                            .await;
                    }
                    usage = c.usage.or(usage);
                    finish = c.finish_reason.or(finish);
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = failed {
            app2.metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "upstream stream failed");
            let _ = tx
                .send(send(json!({"error": {"message": format!("upstream: {e}"), "type": "upstream_error"}})))
                .await;
        }
        // Record what the client received, even when the upstream stopped early.
        let called = !tools.is_empty();
        if !text.is_empty() || called {
            let answer = Message::assistant_tool_calls(text, tools.finish());
            let out = usage.map_or(m.counter().count_message(&answer) as u64, |u: Usage| {
                u.output_tokens
            });
            app2.metrics
                .completion_tokens
                .fetch_add(out, Ordering::Relaxed);
            let recorded = match m.add_message(answer, usage).await {
                Ok(()) => app2.sessions.commit(&mut m).await,
                Err(e) => Err(e),
            };
            if let Err(e) = recorded {
                app2.metrics
                    .storage_errors_after_answer
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "could not record the streamed answer");
            }
        }
        let _ = tx
            .send(send(chunk(json!({}), Some(finish_reason(finish, called)))))
            .await;
        if include_usage {
            let u = usage.unwrap_or(Usage {
                input_tokens: prompt_tokens,
                ..Usage::default()
            });
            let mut last = chunk(Value::Null, None);
            last["choices"] = json!([]);
            last["usage"] = json!({
                "prompt_tokens": u.input_tokens,
                "completion_tokens": u.output_tokens,
                "total_tokens": u.input_tokens + u.output_tokens,
            });
            let _ = tx.send(send(last)).await;
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
        drop(m);
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok((extra, Sse::new(events).keep_alive(KeepAlive::default())).into_response())
}

/// The OpenAI finish reason of an answer: `tool_calls` when it calls tools (Anthropic says
/// `tool_use`, Gemini `STOP`), else the upstream's, else `stop`.
fn finish_reason(upstream: Option<String>, called: bool) -> String {
    if called {
        "tool_calls".into()
    } else {
        upstream.unwrap_or_else(|| "stop".into())
    }
}

/// A tool-call piece as an OpenAI stream sends it in `delta.tool_calls`: the index, and the id,
/// type and name with the call's first piece.
fn tool_call_delta(d: &ToolCallDelta) -> Value {
    let mut function = json!({"arguments": d.arguments});
    if let Some(name) = &d.name {
        function["name"] = json!(name);
    }
    let mut call = json!({"index": d.index, "function": function});
    if let Some(id) = &d.id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    call
}
