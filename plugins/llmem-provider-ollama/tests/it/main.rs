//! The Ollama plugin against a loopback server speaking Ollama's `/api/chat` (JSON and NDJSON)
//! and `/api/embed`, built by name from TOML through a `Registry`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use llmem_core::test_kit::{chat_conformance, embedder_conformance};
use llmem_core::{
    ChatModel, ChatRequest, Embedder, Error, Message, Registry, ToolCallPieces, ToolSpec,
};
use serde_json::{Value, json};

fn text_of(v: &Value) -> String {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn chat(Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if model != "llama3.2" {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("model '{model}' not found, try pulling it first")})),
        )
            .into_response();
    }
    let msgs = body["messages"].as_array().unwrap();
    let last = msgs.last().unwrap()["content"].as_str().unwrap_or_default();
    let reply = format!("Hello! You said: {last}");
    let prompt = text_of(&body).split_whitespace().count();
    let fin = |content: &str| {
        json!({"model": "llama3.2", "created_at": "2023-08-04T19:22:45.499127Z", "message": {"role": "assistant", "content": content}, "done": true, "done_reason": "stop",
        "total_duration": 4883583458u64, "load_duration": 1334875, "prompt_eval_count": prompt, "prompt_eval_duration": 342546000, "eval_count": reply.split_whitespace().count(), "eval_duration": 4535599000u64})
    };
    if body["tools"].is_array() && last.contains("weather") {
        // Ollama sends a call whole, its arguments an object, without an id.
        let call = json!({"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}});
        let mut m = fin("");
        if body["stream"] == false {
            m["message"]["tool_calls"] = json!([call]);
            return Json(m).into_response();
        }
        let head = json!({"model": "llama3.2", "created_at": "2023-08-04T08:52:19.385406455-07:00", "message": {"role": "assistant", "content": "", "tool_calls": [call]}, "done": false});
        return (
            [("content-type", "application/x-ndjson")],
            format!("{head}\n{m}\n"),
        )
            .into_response();
    }
    if body["stream"] == false {
        return Json(fin(&reply)).into_response();
    }
    let mut lines: Vec<String> = reply
        .split_inclusive(' ')
        .map(|w| format!("{}\n", json!({"model": "llama3.2", "created_at": "2023-08-04T08:52:19.385406455-07:00", "message": {"role": "assistant", "content": w}, "done": false})))
        .collect();
    lines.push(format!("{}\n", fin("")));
    let pieces: Vec<Result<Bytes, std::io::Error>> = lines
        .concat()
        .into_bytes()
        .chunks(9)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (
        [("content-type", "application/x-ndjson")],
        Body::from_stream(futures::stream::iter(pieces)),
    )
        .into_response()
}

fn bag(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 32];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = w.to_lowercase().bytes().fold(2166136261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16777619)
        });
        v[(h % 32) as usize] += 1.0;
    }
    v
}

async fn embed(Json(body): Json<Value>) -> Response {
    let input: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        v => serde_json::from_value(v.clone()).unwrap(),
    };
    Json(json!({"model": body["model"], "embeddings": input.iter().map(|t| bag(t)).collect::<Vec<_>>(), "total_duration": 14143917, "load_duration": 1019500, "prompt_eval_count": 8})).into_response()
}

async fn serve() -> String {
    let app = axum::Router::new()
        .route("/api/chat", post(chat))
        .route("/api/embed", post(embed));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(base: &str) -> toml::Table {
    toml::from_str(&format!("kind = \"ollama\"\nbase_url = \"{base}\"\nmodel = \"llama3.2\"\nembedding_model = \"all-minilm\"\ndimensions = 32\nkeep_alive = \"5m\"")).unwrap()
}

#[tokio::test]
async fn registered_by_name_it_passes_the_conformance_suites() {
    let base = serve().await;
    let mut chats: Registry<dyn ChatModel> = Registry::new("provider");
    llmem_provider_ollama::register(&mut chats);
    let model = chats.build(&config(&base)).unwrap();
    chat_conformance(model.as_ref()).await;
    let mut embedders: Registry<dyn Embedder> = Registry::new("embedder");
    llmem_provider_ollama::register_embedder(&mut embedders);
    let e = embedders.build(&config(&base)).unwrap();
    embedder_conformance(e.as_ref()).await;
}

#[tokio::test]
async fn usage_streaming_and_errors() {
    let base = serve().await;
    let m = llmem_provider_ollama::OllamaBuilder::from_table(&config(&base))
        .unwrap()
        .build()
        .unwrap();
    let r = m
        .chat(ChatRequest::new(vec![Message::user("one two three")]))
        .await
        .unwrap();
    assert_eq!(r.usage.unwrap().input_tokens, 3);
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    let mut s = m
        .chat_stream(ChatRequest::new(vec![Message::user("a b")]))
        .await
        .unwrap();
    let mut text = String::new();
    let mut usage = None;
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        text.push_str(&c.delta);
        usage = c.usage.or(usage);
    }
    assert_eq!(text, "Hello! You said: a b");
    assert_eq!(usage.unwrap().output_tokens, 5);
    let mut req = ChatRequest::new(vec![Message::user("x")]);
    req.model = Some("nope".into());
    let err = m.chat(req).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Provider {
                status: Some(404),
                ..
            }
        ) && err.to_string().contains("not found"),
        "{err}"
    );
    let mut bad = config(&base);
    bad.insert("temprature".into(), toml::Value::Float(0.1));
    assert!(
        llmem_provider_ollama::OllamaBuilder::from_table(&bad)
            .unwrap_err()
            .to_string()
            .contains("temprature")
    );
}

/// A call Ollama makes comes the same way whole and streamed (numbered, with the same id).
#[tokio::test]
async fn tool_calls_stream_as_they_answer() {
    let base = serve().await;
    let m = llmem_provider_ollama::OllamaBuilder::from_table(&config(&base))
        .unwrap()
        .build()
        .unwrap();
    let mut req = ChatRequest::new(vec![Message::user("weather in Oslo?")]);
    req.tools = vec![ToolSpec {
        name: "get_weather".into(),
        description: "weather".into(),
        parameters: json!({"type": "object"}),
    }];
    let whole = m.chat(req.clone()).await.unwrap().message.tool_calls;
    assert_eq!(whole.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&whole[0].arguments).unwrap(),
        json!({"city": "Oslo"})
    );
    let mut s = m.chat_stream(req).await.unwrap();
    let mut pieces = ToolCallPieces::default();
    while let Some(c) = s.next().await {
        for d in &c.unwrap().tool_calls {
            pieces.push(d);
        }
    }
    assert_eq!(pieces.finish(), whole);
}
