//! OpenAI (and OpenAI-compatible) against a loopback server speaking `/v1/chat/completions` and
//! `/v1/embeddings` with bodies shaped like the API reference.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use llmem_core::test_kit::{chat_conformance, embedder_conformance};
use llmem_core::{ChatModel, ChatRequest, Embedder, Error, Message, ToolCall, ToolSpec};
use llmem_providers::openai::{OpenAi, OpenAiBuilder};
use serde_json::{Value, json};

use crate::common::{
    all_text, bag_of_words, collect, collect_calls, reply_to, serve, sse_body, words,
};

pub const KEY: &str = "sk-test-0123456789";

#[derive(Default)]
pub struct Fake {
    pub calls: AtomicUsize,
    pub last_body: std::sync::Mutex<Value>,
}

fn error(status: StatusCode, message: &str, typ: &str, code: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": typ, "param": null, "code": code}})),
    )
        .into_response()
}

async fn chat(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let n = fake.calls.fetch_add(1, Ordering::SeqCst);
    *fake.last_body.lock().unwrap() = body.clone();
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}"))
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided: sk-wr***ng. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        );
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    match model.as_str() {
        "truncated" => {
            return (StatusCode::OK, [("content-type", "application/json")], r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","choices":[{"index":0,"message":{"role":"assis"#).into_response();
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        "flaky" if n < 2 => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is overloaded or not ready yet.",
                "server_error",
                "service_unavailable",
            );
        }
        "missing-model" => {
            return error(
                StatusCode::NOT_FOUND,
                "The model `missing-model` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            );
        }
        _ => {}
    }
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    if msgs
        .iter()
        .any(|m| m.get("created_at").is_some() || m.get("metadata").is_some())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Unrecognized request argument supplied: metadata",
            "invalid_request_error",
            "",
        );
    }
    let last_user = msgs
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| all_text(&m["content"]))
        .unwrap_or_default();
    let last = msgs.last().cloned().unwrap_or_default();
    let prompt_tokens = words(&all_text(&json!({"messages": msgs})));
    let wants_tool =
        body["tools"].is_array() && last["role"] == "user" && last_user.contains("weather");
    let (message, finish) = if wants_tool {
        (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_abc123", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}], "refusal": null, "annotations": []}),
            "tool_calls",
        )
    } else if last["role"] == "tool" {
        (
            json!({"role": "assistant", "content": format!("The weather is {}.", all_text(&last["content"])), "refusal": null, "annotations": []}),
            "stop",
        )
    } else {
        (
            json!({"role": "assistant", "content": reply_to(&last_user), "refusal": null, "annotations": []}),
            "stop",
        )
    };
    let text = message["content"].as_str().unwrap_or_default().to_owned();
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": words(&text).max(1), "total_tokens": prompt_tokens + words(&text).max(1),
        "prompt_tokens_details": {"cached_tokens": prompt_tokens / 2, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}});
    if body["stream"] == true {
        let head = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_44709d6fcb", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
            )
        };
        let mut events = vec![head(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        for (i, w) in text.split(' ').enumerate().filter(|_| !text.is_empty()) {
            let piece = if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            };
            events.push(head(json!({"content": piece}), Value::Null));
        }
        if wants_tool {
            // As OpenAI streams a call: id, type and name first, then the arguments in pieces.
            events.push(head(
                json!({"tool_calls": [{"index": 0, "id": "call_abc123", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in ["{\"loc", "ation\":\"Par", "is\"}"] {
                events.push(head(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
        if model != "broken-stream" {
            events.push(head(json!({}), json!(finish)));
            if body["stream_options"]["include_usage"] == true {
                events.push(format!("data: {}\n\n", json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini-2024-07-18", "choices": [], "usage": usage})));
            }
            events.push("data: [DONE]\n\n".into());
        }
        return ([("content-type", "text/event-stream")], sse_body(events)).into_response();
    }
    Json(json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion", "created": 1741570283,
        "model": if model == "gpt-test" { "gpt-4o-mini-2024-07-18".to_owned() } else { model.clone() },
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage, "service_tier": "default", "system_fingerprint": "fp_06737a9306"
    }))
    .into_response()
}

async fn embeddings(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}"))
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            "invalid_api_key",
        );
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        v => serde_json::from_value(v.clone()).unwrap_or_default(),
    };
    let dim = body["dimensions"].as_u64().unwrap_or(64) as usize;
    // Answer in reverse order: clients must sort by `index`.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| {
            let mut v = bag_of_words(t, dim);
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
            v.iter_mut().for_each(|x| *x /= n);
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| words(t)).sum();
    Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})).into_response()
}

pub async fn server() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .with_state(fake.clone());
    (serve(app).await, fake)
}

pub fn client(base: &str) -> OpenAi {
    OpenAiBuilder::new()
        .with_base_url(format!("{base}/v1"))
        .with_api_key(KEY)
        .with_model("gpt-test")
        .with_embedding_model("text-embedding-3-small")
        .with_dimensions(64)
        .build()
        .unwrap()
}

#[tokio::test]
async fn openai_passes_chat_and_embedder_conformance() {
    let (base, fake) = server().await;
    let m = client(&base);
    chat_conformance(&m).await;
    embedder_conformance(&m).await;
    let body = fake.last_body.lock().unwrap().clone();
    assert_eq!(
        body["stream_options"]["include_usage"], true,
        "streams ask for usage"
    );
}

#[tokio::test]
async fn openai_compatible_passes_conformance_without_a_key() {
    // A compatible server usually needs no key; this one does, so send it through the builder.
    let (base, fake) = server().await;
    let m = OpenAiBuilder::compatible(format!("{base}/v1"))
        .with_api_key(KEY)
        .with_model("gpt-test")
        .build()
        .unwrap();
    chat_conformance(&m).await;
    let body = fake.last_body.lock().unwrap().clone();
    assert_eq!(
        body["max_tokens"], 32,
        "compatible servers get `max_tokens`"
    );
    let m = OpenAiBuilder::compatible(format!("{base}/v1"))
        .with_model("gpt-test")
        .build()
        .unwrap();
    let err = m
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Provider {
                status: Some(401),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn usage_includes_cached_tokens_and_requests_strip_llmem_fields() {
    let (base, fake) = server().await;
    let m = client(&base);
    let msg = Message::user("one two three four five six").with_metadata("pinned", true);
    let resp = m
        .chat(ChatRequest::new(vec![msg]).with_max_tokens(10))
        .await
        .unwrap();
    let u = resp.usage.unwrap();
    assert_eq!(u.input_tokens, 6);
    assert_eq!(u.cached_input_tokens, 3);
    assert_eq!(u.output_tokens, words(&resp.message.text()));
    assert_eq!(resp.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
    let body = fake.last_body.lock().unwrap().clone();
    assert_eq!(
        body["max_completion_tokens"], 10,
        "OpenAI gets `max_completion_tokens`"
    );
    let (_, _, usage) = collect(
        m.chat_stream(ChatRequest::new(vec![Message::user("a b c d")]))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let usage = usage.expect("the last chunk carries usage");
    assert_eq!((usage.input_tokens, usage.cached_input_tokens), (4, 2));
}

#[tokio::test]
async fn tool_calls_round_trip() {
    let (base, fake) = server().await;
    let m = client(&base);
    let tool = ToolSpec {
        name: "get_weather".into(),
        description: "Current weather".into(),
        parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}),
    };
    let mut req = ChatRequest::new(vec![Message::user("What's the weather in Paris?")]);
    req.tools = vec![tool];
    let resp = m.chat(req.clone()).await.unwrap();
    assert_eq!(resp.finish_reason.as_deref(), Some("tool_calls"));
    let (text, finish, calls) = collect_calls(m.chat_stream(req.clone()).await.unwrap())
        .await
        .unwrap();
    assert_eq!((text.as_str(), finish.as_deref()), ("", Some("tool_calls")));
    assert_eq!(
        calls, resp.message.tool_calls,
        "streamed in pieces, the same call"
    );
    assert_eq!(
        resp.message.tool_calls,
        vec![ToolCall {
            id: "call_abc123".into(),
            name: "get_weather".into(),
            arguments: "{\"location\":\"Paris\"}".into()
        }]
    );
    let sent = fake.last_body.lock().unwrap().clone();
    assert_eq!(sent["tools"][0]["type"], "function");
    assert_eq!(
        sent["tools"][0]["function"]["parameters"]["required"][0],
        "location"
    );
    req.messages.push(resp.message);
    req.messages
        .push(Message::tool_result("call_abc123", "sunny, 21C"));
    let resp = m.chat(req).await.unwrap();
    assert_eq!(resp.message.text(), "The weather is sunny, 21C.");
    let sent = fake.last_body.lock().unwrap().clone();
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(sent["messages"][2]["tool_call_id"], "call_abc123");
}

#[tokio::test]
async fn errors_carry_status_and_the_providers_message() {
    let (base, _) = server().await;
    let bad = OpenAiBuilder::new()
        .with_base_url(format!("{base}/v1"))
        .with_api_key("sk-wrong")
        .build()
        .unwrap();
    let err = bad
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    match &err {
        Error::Provider {
            provider,
            status,
            message,
            ..
        } => {
            assert_eq!((provider.as_str(), *status), ("openai", Some(401)));
            assert!(message.contains("Incorrect API key provided"), "{message}");
            assert!(message.contains("/v1/chat/completions"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_temporary());
    assert!(
        !format!("{bad:?}").contains("sk-wrong"),
        "keys never appear in Debug output"
    );
    let err = bad.embed(&["x".to_owned()]).await.unwrap_err();
    assert!(
        matches!(err, Error::Unsupported { .. }),
        "no embedding model configured: {err}"
    );

    let m = client(&base);
    let mut req = ChatRequest::new(vec![Message::user("hi")]);
    req.model = Some("missing-model".into());
    let err = m.chat(req).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Provider {
                status: Some(404),
                ..
            }
        ) && err.to_string().contains("does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn truncated_json_and_streams_are_clear_errors() {
    let (base, _) = server().await;
    let m = client(&base);
    let mut req = ChatRequest::new(vec![Message::user("hi")]);
    req.model = Some("truncated".into());
    let err = m.chat(req.clone()).await.unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    req.model = Some("broken-stream".into());
    let err = collect(m.chat_stream(req).await.unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("truncated stream"), "{err}");
}

#[tokio::test]
async fn a_dead_server_is_a_temporary_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let m = OpenAiBuilder::compatible(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let err = m
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Provider { status: None, .. }) && err.is_temporary(),
        "{err}"
    );
}
