//! Gemini against a loopback server speaking `generateContent`, `streamGenerateContent?alt=sse`,
//! `countTokens`, `embedContent` and `batchEmbedContents`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use llmem_core::test_kit::{chat_conformance, embedder_conformance};
use llmem_core::{ChatModel, ChatRequest, Embedder, Message, ToolSpec};
use llmem_providers::gemini::{Gemini, GeminiBuilder};
use serde_json::{Value, json};

use crate::common::{
    all_text, bag_of_words, collect, collect_calls, reply_to, serve, sse_body, words,
};

const KEY: &str = "gk-test";

fn error(status: StatusCode, message: &str, code: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": code}})),
    )
        .into_response()
}

fn usage(prompt: u64, out: u64) -> Value {
    json!({"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out, "cachedContentTokenCount": prompt / 2,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]})
}

async fn models(
    State(last): State<Arc<Mutex<Value>>>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    *last.lock().unwrap() = body.clone();
    if headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return error(
            StatusCode::BAD_REQUEST,
            "API key not valid. Please pass a valid API key.",
            "INVALID_ARGUMENT",
        );
    }
    let Some((model, method)) = rest.split_once(':') else {
        return error(StatusCode::NOT_FOUND, "not found", "NOT_FOUND");
    };
    let prompt = words(&all_text(
        &json!({"contents": body["contents"], "systemInstruction": body["systemInstruction"]}),
    ));
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    let last = contents.last().cloned().unwrap_or_default();
    let part0 = &last["parts"][0];
    let (parts, text) = if let Some(fr) = part0.get("functionResponse") {
        let t = format!(
            "{} says {}",
            fr["name"].as_str().unwrap_or_default(),
            fr["response"]["result"].as_str().unwrap_or_default()
        );
        (json!([{"text": t}]), t)
    } else if body["tools"].is_array() && all_text(&last).contains("weather") {
        (
            json!([{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]),
            String::new(),
        )
    } else {
        let t = reply_to(&all_text(&last));
        (json!([{"text": t}]), t)
    };
    match method {
        "generateContent" => Json(json!({
            "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage(prompt, words(&text)), "modelVersion": model, "responseId": "mAitaLmkHPPlz7IPvtfUqQ4"
        }))
        .into_response(),
        "streamGenerateContent" => {
            assert_eq!(q.get("alt").map(String::as_str), Some("sse"));
            if text.is_empty() {
                // A function call comes whole, in one event.
                let event = json!({"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}], "usageMetadata": usage(prompt, 1), "modelVersion": model});
                return ([("content-type", "text/event-stream")], sse_body(vec![format!("data: {event}\r\n\r\n")])).into_response();
            }
            let ws: Vec<&str> = text.split(' ').collect();
            let events: Vec<String> = ws
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let piece = if i == 0 { (*w).to_owned() } else { format!(" {w}") };
                    let mut cand = json!({"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0});
                    if i + 1 == ws.len() {
                        cand["finishReason"] = json!("STOP");
                    }
                    format!("data: {}\r\n\r\n", json!({"candidates": [cand], "usageMetadata": usage(prompt, i as u64 + 1), "modelVersion": model}))
                })
                .collect();
            ([("content-type", "text/event-stream")], sse_body(events)).into_response()
        }
        "countTokens" => Json(json!({"totalTokens": prompt, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]})).into_response(),
        "embedContent" => {
            let d = body["outputDimensionality"].as_u64().unwrap_or(32) as usize;
            Json(json!({"embedding": {"values": bag_of_words(&all_text(&body["content"]), d)}})).into_response()
        }
        "batchEmbedContents" => {
            let embs: Vec<Value> = body["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    assert_eq!(r["model"], format!("models/{model}"));
                    let d = r["outputDimensionality"].as_u64().unwrap_or(32) as usize;
                    json!({"values": bag_of_words(&all_text(&r["content"]), d)})
                })
                .collect();
            Json(json!({"embeddings": embs})).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "method not found", "NOT_FOUND"),
    }
}

async fn server() -> (String, Arc<Mutex<Value>>) {
    let last = Arc::new(Mutex::new(Value::Null));
    let app = axum::Router::new()
        .route("/v1beta/models/{*rest}", post(models))
        .with_state(last.clone());
    (serve(app).await, last)
}

fn client(base: &str) -> Gemini {
    GeminiBuilder::new()
        .with_base_url(base)
        .with_api_key(KEY)
        .with_model("gemini-test")
        .with_embedding_model("gemini-embedding-001", 48)
        .build()
        .unwrap()
}

#[tokio::test]
async fn gemini_passes_chat_and_embedder_conformance() {
    let (base, _) = server().await;
    let m = client(&base);
    chat_conformance(&m).await;
    // The fake returns unnormalised vectors; the provider normalises them.
    embedder_conformance(&m).await;
}

#[tokio::test]
async fn usage_stream_and_system_instruction() {
    let (base, last) = server().await;
    let m = client(&base);
    let resp = m
        .chat(
            ChatRequest::new(vec![
                Message::system("be kind"),
                Message::user("one two three four"),
            ])
            .with_max_tokens(5),
        )
        .await
        .unwrap();
    let u = resp.usage.unwrap();
    assert_eq!((u.input_tokens, u.cached_input_tokens), (6, 3));
    assert_eq!(resp.model, "gemini-test");
    assert_eq!(resp.finish_reason.as_deref(), Some("STOP"));
    let sent = last.lock().unwrap().clone();
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "be kind");
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 5);
    let (text, finish, usage) = collect(
        m.chat_stream(ChatRequest::new(vec![Message::user("x y")]))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(text, "Hello! You said: x y");
    assert_eq!(finish.as_deref(), Some("STOP"));
    assert_eq!(usage.unwrap().output_tokens, 5);
}

#[tokio::test]
async fn function_calls_round_trip_and_bad_keys_fail() {
    let (base, last) = server().await;
    let m = client(&base);
    let mut req = ChatRequest::new(vec![Message::user("weather in Oslo?")]);
    req.tools = vec![ToolSpec {
        name: "get_weather".into(),
        description: "weather".into(),
        parameters: json!({"type": "object"}),
    }];
    let resp = m.chat(req.clone()).await.unwrap();
    let (_, _, calls) = collect_calls(m.chat_stream(req.clone()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(calls, resp.message.tool_calls, "streamed, the same call");
    let call = resp.message.tool_calls[0].clone();
    assert_eq!(call.name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"city": "Oslo"})
    );
    req.messages.push(resp.message);
    req.messages.push(Message::tool_result(call.id, "snow"));
    let resp = m.chat(req).await.unwrap();
    assert_eq!(resp.message.text(), "get_weather says snow");
    let sent = last.lock().unwrap().clone();
    assert_eq!(sent["contents"][1]["role"], "model");
    assert_eq!(
        sent["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );

    let bad = GeminiBuilder::new()
        .with_base_url(&base)
        .with_api_key("nope")
        .build()
        .unwrap();
    let err = bad
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("(HTTP 400)") && err.to_string().contains("API key not valid"),
        "{err}"
    );
    assert!(!err.to_string().contains("nope"));
    let single = m.embed(&["just one".to_owned()]).await.unwrap();
    assert_eq!(single[0].len(), 48);
}
