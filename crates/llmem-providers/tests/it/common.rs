//! Shared helpers: loopback servers, SSE bodies, a bag-of-words embedding for fake servers.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use futures::StreamExt;
use llmem_core::{ChatStream, ToolCall, ToolCallPieces, Usage};
use serde_json::Value;

/// Serves `router` on a random loopback port; returns `http://127.0.0.1:<port>`.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

/// Words in a text (the fake servers' "tokens").
pub fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// All text in a JSON value's string leaves under `key` fields named `text`/`content`.
pub fn all_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(all_text).collect::<Vec<_>>().join(" "),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "text"
                        | "content"
                        | "messages"
                        | "system"
                        | "contents"
                        | "parts"
                        | "systemInstruction"
                )
            })
            .map(|(_, v)| all_text(v))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A hashed bag of words: related sentences share words, so they come out closer.
pub fn bag_of_words(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; dim];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let w = w.to_lowercase();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in w.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        v[(h % dim as u64) as usize] += 1.0;
    }
    v
}

/// An SSE body sent in small pieces, so the client must reassemble events across reads.
pub fn sse_body(events: Vec<String>) -> Body {
    let text: String = events.concat();
    let pieces: Vec<Result<Bytes, std::io::Error>> = text
        .as_bytes()
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let s = futures::stream::iter(pieces).then(|p| async move {
        tokio::time::sleep(Duration::from_micros(50)).await;
        p
    });
    Body::from_stream(s)
}

/// Drains a stream: text, last finish reason, last usage.
pub async fn collect(
    mut s: ChatStream,
) -> llmem_core::Result<(String, Option<String>, Option<Usage>)> {
    let (mut text, mut finish, mut usage) = (String::new(), None, None);
    while let Some(c) = s.next().await {
        let c = c?;
        text.push_str(&c.delta);
        finish = c.finish_reason.or(finish);
        usage = c.usage.or(usage);
    }
    Ok((text, finish, usage))
}

/// Drains a stream that may call tools: text, last finish reason, the calls put together.
pub async fn collect_calls(
    mut s: ChatStream,
) -> llmem_core::Result<(String, Option<String>, Vec<ToolCall>)> {
    let (mut text, mut finish, mut calls) = (String::new(), None, ToolCallPieces::default());
    while let Some(c) = s.next().await {
        let c = c?;
        text.push_str(&c.delta);
        finish = c.finish_reason.or(finish);
        for d in &c.tool_calls {
            calls.push(d);
        }
    }
    Ok((text, finish, calls.finish()))
}

/// The reply the fake servers give: it echoes the last user words.
pub fn reply_to(last_user: &str) -> String {
    format!("Hello! You said: {}", last_user.trim())
}
