//! An OpenAI-compatible server on 127.0.0.1, written here, behind `ChatSummarizer` and the real
//! OpenAI-compatible provider: map-reduce rounds, server errors and hangs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use llmem_compress::{CompressConfig, Compressor, MemoryCompressor, Method, Strategy};
use llmem_core::{ChatModel, ChatSummarizer, Summarizer};
use llmem_providers::openai::OpenAiBuilder;
use serde_json::{Value, json};

use crate::{conversation, gpt4o};

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Answers with the first sentence of the first three transcript lines.
    Summarize,
    Fail,
    Hang,
}

#[derive(Clone)]
struct Server {
    mode: Mode,
    prompts: Arc<Mutex<Vec<String>>>,
}

async fn chat(State(s): State<Server>, Json(body): Json<Value>) -> Response {
    let prompt: String = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    s.prompts.lock().unwrap().push(prompt.clone());
    match s.mode {
        Mode::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": "model crashed"}})),
        )
            .into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Mode::Summarize => {
            let user = body["messages"][1]["content"].as_str().unwrap_or_default();
            let lines: Vec<String> = user
                .lines()
                .filter(|l| l.contains(": ") && !l.starts_with("Existing summary"))
                .take(3)
                .map(|l| {
                    l.split_inclusive(['.', '!', '?'])
                        .next()
                        .unwrap_or(l)
                        .to_owned()
                })
                .collect();
            let text = if lines.is_empty() {
                "Nothing happened.".to_owned()
            } else {
                lines.join("\n")
            };
            Json(json!({
                "id": "x", "object": "chat.completion", "model": "loopback",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            }))
            .into_response()
        }
    }
}

async fn serve(mode: Mode, window: usize) -> (Arc<dyn Summarizer>, Arc<Mutex<Vec<String>>>) {
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Server {
            mode,
            prompts: prompts.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let model: Arc<dyn ChatModel> = Arc::new(
        OpenAiBuilder::compatible(format!("http://{addr}/v1"))
            .with_model("loopback")
            .build()
            .unwrap(),
    );
    (Arc::new(ChatSummarizer::new(model, window)), prompts)
}

#[tokio::test]
async fn inputs_larger_than_the_summarizer_window_are_map_reduced() {
    let counter = gpt4o();
    let (summarizer, prompts) = serve(Mode::Summarize, 1500).await;
    let conv = conversation(300);
    assert!(counter.count_messages(&conv) > 8000);
    let cfg = CompressConfig {
        keep_recent: 10,
        compression_ratio: 0.05,
        ..CompressConfig::default()
    };
    let c = MemoryCompressor::new(cfg, counter.clone())
        .unwrap()
        .with_summarizer(summarizer);
    let out = c.compress(&conv).await.unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(
        out.method,
        Method::Abstractive {
            summarizer: "openai-compatible".into()
        }
    );
    let prompts = prompts.lock().unwrap().clone();
    assert_eq!(prompts.len(), out.summarizer_calls);
    assert!(
        prompts.len() >= 4,
        "expected map rounds and a reduce, got {} calls",
        prompts.len()
    );
    for p in &prompts {
        assert!(
            counter.count(p) <= 1500,
            "a prompt of {} tokens exceeds the 1500-token window",
            counter.count(p)
        );
    }
    // The reduce step saw the partial summaries, not the transcript.
    assert!(counter.count(prompts.last().unwrap()) < 1500);
    assert!(out.compressed_tokens < out.original_tokens / 5);

    // Rolling: the next compression sends the previous summary to be extended.
    let mut next = out.messages.clone();
    next.extend(crate::locomo_messages().into_iter().skip(300).take(40));
    let (summarizer, prompts) = serve(Mode::Summarize, 1500).await;
    let c = MemoryCompressor::new(
        CompressConfig {
            keep_recent: 10,
            ..CompressConfig::default()
        },
        counter,
    )
    .unwrap()
    .with_summarizer(summarizer);
    let again = c.compress(&next).await.unwrap();
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    let last = prompts.lock().unwrap().last().cloned().unwrap();
    assert!(last.contains("Existing summary"), "{last}");
}

#[tokio::test]
async fn a_failing_summarizer_falls_back_to_extractive_and_reports_it() {
    let (summarizer, prompts) = serve(Mode::Fail, 16_000).await;
    let conv = conversation(200);
    let c = MemoryCompressor::new(
        CompressConfig {
            strategy: Strategy::Selective,
            ..CompressConfig::default()
        },
        gpt4o(),
    )
    .unwrap()
    .with_summarizer(summarizer);
    let out = c.compress(&conv).await.unwrap();
    assert_eq!(prompts.lock().unwrap().len(), 1);
    assert_eq!(out.method, Method::Extractive);
    assert!(
        out.errors[0].contains("HTTP 500") && out.errors[0].contains("extractive"),
        "{:?}",
        out.errors
    );
    assert!(out.summary.is_some());
    assert!(out.compressed_tokens < out.original_tokens);
}

#[tokio::test]
async fn a_hanging_summarizer_times_out_and_nothing_is_lost() {
    let (summarizer, _) = serve(Mode::Hang, 16_000).await;
    let conv = conversation(200);
    let cfg = CompressConfig {
        timeout: Duration::from_millis(500),
        ..CompressConfig::default()
    };
    let c = MemoryCompressor::new(cfg, gpt4o())
        .unwrap()
        .with_summarizer(summarizer);
    let started = std::time::Instant::now();
    let out = c.compress(&conv).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(out.method, Method::Extractive);
    assert!(out.errors[0].contains("timed out"), "{:?}", out.errors);
    assert_eq!(
        &out.messages[out.messages.len() - 20..],
        &conv[conv.len() - 20..]
    );
}
