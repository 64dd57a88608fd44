//! Anthropic against a loopback server speaking `/v1/messages` (JSON and SSE) and
//! `/v1/messages/count_tokens`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use llmem_core::test_kit::chat_conformance;
use llmem_core::{ChatModel, ChatRequest, Error, Message, ToolSpec};
use llmem_providers::anthropic::{Anthropic, AnthropicBuilder};
use llmem_providers::layers::{Retry, RetryPolicy};
use serde_json::{Value, json};

use crate::common::{all_text, collect, collect_calls, reply_to, serve, sse_body, words};

pub const KEY: &str = "sk-ant-test";

#[derive(Default)]
pub struct Fake {
    pub calls: AtomicUsize,
    pub last_body: std::sync::Mutex<Value>,
}

fn error(status: StatusCode, typ: &str, message: &str) -> Response {
    (status, Json(json!({"type": "error", "error": {"type": typ, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}))).into_response()
}

fn check(headers: &HeaderMap) -> Option<Response> {
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        ));
    }
    if headers.get("anthropic-version").is_none() {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    None
}

fn prompt_tokens(body: &Value) -> u64 {
    words(&all_text(
        &json!({"system": body["system"], "messages": body["messages"]}),
    ))
}

async fn messages(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let n = fake.calls.fetch_add(1, Ordering::SeqCst);
    *fake.last_body.lock().unwrap() = body.clone();
    if let Some(r) = check(&headers) {
        return r;
    }
    if !body["max_tokens"].is_u64() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Field required",
        );
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    match model.as_str() {
        "rate-limited" if n == 0 => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            );
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            return r;
        }
        "overloaded" => {
            return error(
                StatusCode::from_u16(529).unwrap(),
                "overloaded_error",
                "Overloaded",
            );
        }
        _ => {}
    }
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let last = msgs.last().cloned().unwrap_or_default();
    let last_blocks = last["content"].as_array().cloned().unwrap_or_default();
    let input = prompt_tokens(&body);
    let (content, stop) = if let Some(tr) = last_blocks.iter().find(|b| b["type"] == "tool_result")
    {
        (
            json!([{"type": "text", "text": format!("It is {} there.", all_text(&tr["content"]))}]),
            "end_turn",
        )
    } else if body["tools"].is_array() && all_text(&last["content"]).contains("weather") {
        (
            json!([{"type": "text", "text": "I'll check the weather."}, {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA"}}]),
            "tool_use",
        )
    } else {
        (
            json!([{"type": "text", "text": reply_to(&all_text(&last["content"]))}]),
            "end_turn",
        )
    };
    let text = all_text(&content);
    if body["stream"] == true {
        let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        let mut events = vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-haiku-4-5-20251001", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}}}),
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ev("ping", json!({"type": "ping"})),
        ];
        // The text blocks' words (`text` also counts the tool_use block, as an empty word).
        for (i, w) in text.trim_end().split(' ').enumerate() {
            let piece = if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            };
            events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})));
        }
        events.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        // Each tool_use block as Anthropic streams it: the block with an empty input, then the
        // input's JSON in `input_json_delta` pieces.
        let blocks = content.as_array().cloned().unwrap_or_default();
        for (i, b) in blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b["type"] == "tool_use")
        {
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}})));
            let input = b["input"].to_string();
            let chars: Vec<char> = input.chars().collect();
            for piece in chars.chunks(9) {
                let piece: String = piece.iter().collect();
                events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": piece}})));
            }
            events.push(ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            ));
        }
        events.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": words(&text)}})));
        events.push(ev("message_stop", json!({"type": "message_stop"})));
        return ([("content-type", "text/event-stream")], sse_body(events)).into_response();
    }
    Json(json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": input - input / 2, "cache_creation_input_tokens": 0, "cache_read_input_tokens": input / 2, "output_tokens": words(&text)}
    }))
    .into_response()
}

async fn count_tokens(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = check(&headers) {
        return r;
    }
    if body.get("max_tokens").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Extra inputs are not permitted",
        );
    }
    Json(json!({"input_tokens": prompt_tokens(&body) + 3})).into_response()
}

pub async fn server() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = axum::Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .with_state(fake.clone());
    (serve(app).await, fake)
}

pub fn client(base: &str) -> Anthropic {
    AnthropicBuilder::new()
        .with_base_url(base)
        .with_api_key(KEY)
        .with_model("claude-test")
        .build()
        .unwrap()
}

#[tokio::test]
async fn anthropic_passes_chat_conformance_with_exact_counts() {
    let (base, fake) = server().await;
    let m = client(&base);
    chat_conformance(&m).await;
    let n = m
        .count_tokens(&ChatRequest::new(vec![
            Message::system("be brief"),
            Message::user("one two three"),
        ]))
        .await
        .unwrap();
    assert_eq!(n, 5 + 3, "count_tokens returns the server's input_tokens");
    let _ = m
        .chat(ChatRequest::new(vec![
            Message::system("be brief"),
            Message::user("hi"),
        ]))
        .await
        .unwrap();
    let body = fake.last_body.lock().unwrap().clone();
    assert_eq!(body["system"], "be brief", "system travels top-level");
    assert_eq!(
        body["max_tokens"], 1024,
        "a default max_tokens is always sent"
    );
}

#[tokio::test]
async fn usage_counts_cache_reads_and_streams_report_usage() {
    let (base, _) = server().await;
    let m = client(&base);
    let resp = m
        .chat(ChatRequest::new(vec![Message::user("a b c d e f g h")]))
        .await
        .unwrap();
    let u = resp.usage.unwrap();
    assert_eq!(
        (u.input_tokens, u.cached_input_tokens),
        (8, 4),
        "input includes the cache reads"
    );
    assert_eq!(resp.finish_reason.as_deref(), Some("end_turn"));
    let (text, finish, usage) = collect(
        m.chat_stream(ChatRequest::new(vec![Message::user("a b c")]))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(text, "Hello! You said: a b c");
    assert_eq!(finish.as_deref(), Some("end_turn"));
    let usage = usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (3, 6));
}

#[tokio::test]
async fn tool_use_round_trip() {
    let (base, fake) = server().await;
    let m = client(&base);
    let mut req = ChatRequest::new(vec![Message::user(
        "What's the weather like in San Francisco?",
    )]);
    req.tools = vec![ToolSpec {
        name: "get_weather".into(),
        description: "Get the weather".into(),
        parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}}),
    }];
    let resp = m.chat(req.clone()).await.unwrap();
    assert_eq!(resp.finish_reason.as_deref(), Some("tool_use"));
    assert_eq!(resp.message.text(), "I'll check the weather.");
    let (text, finish, calls) = collect_calls(m.chat_stream(req.clone()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        (text.as_str(), finish.as_deref()),
        ("I'll check the weather.", Some("tool_use"))
    );
    assert_eq!(
        calls, resp.message.tool_calls,
        "streamed in pieces, the same call"
    );
    let call = &resp.message.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("toolu_01A09q90qw90lq917835lq9", "get_weather")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"location": "San Francisco, CA"})
    );
    assert_eq!(
        fake.last_body.lock().unwrap()["tools"][0]["input_schema"]["type"],
        "object"
    );
    req.messages.push(resp.message.clone());
    req.messages
        .push(Message::tool_result(call.id.clone(), "15 degrees"));
    let resp = m.chat(req).await.unwrap();
    assert_eq!(resp.message.text(), "It is 15 degrees there.");
    let sent = fake.last_body.lock().unwrap().clone();
    assert_eq!(
        sent["messages"][2]["content"][0]["type"], "tool_result",
        "tool results travel in a user message"
    );
}

#[tokio::test]
async fn errors_map_status_and_body() {
    let (base, _) = server().await;
    let bad = AnthropicBuilder::new()
        .with_base_url(&base)
        .with_api_key("wrong")
        .build()
        .unwrap();
    let err = bad
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("provider `anthropic` (HTTP 401): POST http://127.0.0.1:"),
        "{msg}"
    );
    assert!(
        msg.ends_with("/v1/messages: authentication_error: invalid x-api-key"),
        "{msg}"
    );
    let m = client(&base);
    let mut req = ChatRequest::new(vec![Message::user("hi")]);
    req.model = Some("overloaded".into());
    let err = m.chat(req).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Provider {
                status: Some(529),
                ..
            }
        ) && err.is_temporary(),
        "{err}"
    );
}

#[tokio::test]
async fn retry_layer_recovers_from_429_after_retry_after() {
    let (base, fake) = server().await;
    let m: Arc<dyn ChatModel> = Arc::new(client(&base));
    let mut req = ChatRequest::new(vec![Message::user("hi")]);
    req.model = Some("rate-limited".into());
    let err = m.chat(req.clone()).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)), "{err}");
    assert!(err.is_temporary());
    // The server limits only the first call; reset and go through the layer.
    fake.calls.store(0, Ordering::SeqCst);
    let retry = Retry::new(
        m,
        RetryPolicy::default()
            .with_max_attempts(3)
            .with_base_delay(Duration::from_millis(10)),
    );
    let start = Instant::now();
    let resp = retry.chat(req).await.unwrap();
    assert_eq!(resp.message.text(), "Hello! You said: hi");
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "retry-after was honoured ({:?})",
        start.elapsed()
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}
