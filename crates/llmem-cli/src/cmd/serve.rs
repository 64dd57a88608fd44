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
//! (Prometheus text), `GET /v1/sessions/{user}/{session}` (the session's statistics). With
//! `server.token` set, every call but `/health` needs `Authorization: Bearer <token>`. Upstream
//! keys stay in the server: no response or log line carries them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use llmem::core::{ChatModel, ChatRequest, Message, Role, ToolCallDelta, ToolCallPieces, Usage};
use llmem::{MemoryManager, Sessions};
use serde_json::{Value, json};
use tokio::sync::OwnedMutexGuard;

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
}

#[derive(Debug)]
struct App {
    sessions: Sessions,
    chat: Arc<dyn ChatModel>,
    token: Option<String>,
    metrics: Metrics,
    started: Instant,
}

type Shared = Arc<App>;

/// An OpenAI-style error response.
fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"message": message.into(), "type": kind, "code": status.as_u16()}})),
    )
        .into_response()
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    match &app.token {
        None => true,
        Some(t) => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| given == t),
    }
}

fn unauthorized(app: &App) -> Response {
    app.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
    error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "missing or wrong bearer token: send `Authorization: Bearer <server.token>`",
    )
}

pub async fn run(args: Args) -> Result<()> {
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
    let chat = providers.chat.clone().context(
        "no upstream model: configure [chat] in llmem.toml, or pass --upstream URL or --llamacpp",
    )?;
    let addr: SocketAddr =
        config.server.listen.parse().with_context(|| {
            format!("server.listen `{}` is not an address", config.server.listen)
        })?;
    let app = Arc::new(App {
        token: config.server.token.clone(),
        sessions: Sessions::new(config, providers)?,
        chat,
        metrics: Metrics::default(),
        started: Instant::now(),
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    println!(
        "llmem serve: listening on http://{bound}/v1 (upstream {} {})",
        app.chat.name(),
        app.chat.model()
    );
    tracing::info!(%bound, upstream = app.chat.name(), "listening");
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(completions))
        .route("/v1/sessions/{user}/{session}", get(session_stats))
        .with_state(app)
}

async fn models(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized(&app);
    }
    Json(json!({
        "object": "list",
        "data": [{"id": app.chat.model(), "object": "model", "created": 0, "owned_by": app.chat.name()}]
    }))
    .into_response()
}

async fn metrics(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized(&app);
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
         # TYPE llmem_prompt_tokens_total counter\nllmem_prompt_tokens_total {sent}\n\
         # TYPE llmem_completion_tokens_total counter\nllmem_completion_tokens_total {}\n\
         # TYPE llmem_full_history_tokens_total counter\nllmem_full_history_tokens_total {full}\n\
         # TYPE llmem_retrieved_memories_total counter\nllmem_retrieved_memories_total {}\n\
         # TYPE llmem_sessions gauge\nllmem_sessions {}\n\
         # TYPE llmem_savings_ratio gauge\nllmem_savings_ratio {:.4}\n\
         # TYPE llmem_uptime_seconds gauge\nllmem_uptime_seconds {:.0}\n",
        g(&m.requests),
        g(&m.streamed),
        g(&m.errors),
        g(&m.unauthorized),
        g(&m.completion_tokens),
        g(&m.retrieved),
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
    headers: HeaderMap,
    Path((user, session)): Path<(String, String)>,
) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized(&app);
    }
    match app.sessions.get(&user, &session) {
        Ok(h) => {
            let m = h.lock().await;
            Json(json!({
                "user": user,
                "session": session,
                "stats": m.stats(),
                "context_messages": m.messages().len(),
                "summary": m.summary(),
            }))
            .into_response()
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            e.to_string(),
        ),
    }
}

/// The parts of an OpenAI chat-completions body llmem reads; the rest goes upstream as is.
struct Incoming {
    messages: Vec<Message>,
    stream: bool,
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    include_usage: bool,
    user: String,
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

fn parse(headers: &HeaderMap, mut body: Value) -> std::result::Result<Incoming, String> {
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
        .or(field_user)
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

async fn completions(State(app): State<Shared>, headers: HeaderMap, body: Json<Value>) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized(&app);
    }
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let incoming = match parse(&headers, body.0) {
        Ok(i) => i,
        Err(e) => {
            app.metrics.errors.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::BAD_REQUEST, "invalid_request_error", e);
        }
    };
    match turn(app.clone(), incoming).await {
        Ok(r) => r,
        Err((status, msg)) => {
            app.metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%status, error = %msg, "chat completion failed");
            error(
                status,
                if status.is_server_error() {
                    "upstream_error"
                } else {
                    "invalid_request_error"
                },
                msg,
            )
        }
    }
}

type TurnError = (StatusCode, String);

fn bad(e: impl std::fmt::Display) -> TurnError {
    (StatusCode::BAD_REQUEST, e.to_string())
}

async fn turn(app: Shared, inc: Incoming) -> std::result::Result<Response, TurnError> {
    let handle = app.sessions.get(&inc.user, &inc.session).map_err(bad)?;
    // One turn at a time per session: the lock is held until the answer is recorded.
    let mut m: OwnedMutexGuard<MemoryManager> = handle.lock_owned().await;
    add_turn(&mut m, &inc.messages).await.map_err(bad)?;
    let before = m.state().stats.full_history_tokens;
    let prepared = m
        .prepare(None)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
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
        .unwrap_or_else(|| app.chat.model().to_owned());
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
    let upstream_err = |e: llmem::Error| (StatusCode::BAD_GATEWAY, format!("upstream: {e}"));
    if !inc.stream {
        let r = app.chat.chat(request).await.map_err(upstream_err)?;
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
        m.add_message(answer.clone(), r.usage).await.map_err(bad)?;
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
    let mut upstream = app.chat.chat_stream(request).await.map_err(upstream_err)?;
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
            if let Err(e) = m.add_message(answer, usage).await {
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
