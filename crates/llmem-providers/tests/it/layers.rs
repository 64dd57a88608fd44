//! The layers around real providers on loopback: retry, rate limit, timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use llmem_core::test_kit::chat_conformance;
use llmem_core::{ChatModel, ChatRequest, Embedder, Error, Message};
use llmem_providers::layers::{RateLimit, Retry, RetryPolicy, Timeout};

use crate::common::collect;
use crate::openai::{client, server};

fn req(model: &str) -> ChatRequest {
    let mut r = ChatRequest::new(vec![Message::user("hi")]);
    r.model = Some(model.into());
    r
}

#[tokio::test]
async fn timeout_fires_on_a_hanging_server_and_retry_gives_up() {
    let (base, fake) = server().await;
    let m: Arc<dyn ChatModel> = Arc::new(client(&base));
    let t: Arc<dyn ChatModel> = Arc::new(Timeout::new(m, Duration::from_millis(300)));
    let start = Instant::now();
    let err = t.chat(req("hang")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let err = match t.chat_stream(req("hang")).await {
        Err(e) => e,
        Ok(s) => collect(s).await.unwrap_err(),
    };
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // Timeouts are temporary: Retry tries again, up to its limit.
    fake.calls.store(0, Ordering::SeqCst);
    let r = Retry::new(
        t,
        RetryPolicy::default()
            .with_max_attempts(2)
            .with_base_delay(Duration::from_millis(10)),
    );
    let err = r.chat(req("hang")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retry_recovers_from_5xx_with_backoff_and_stops_on_final_errors() {
    let (base, fake) = server().await;
    let m: Arc<dyn ChatModel> = Arc::new(client(&base));
    let r = Retry::new(
        m.clone(),
        RetryPolicy::default()
            .with_max_attempts(3)
            .with_base_delay(Duration::from_millis(20)),
    );
    let resp = r.chat(req("flaky")).await.unwrap();
    assert_eq!(resp.message.text(), "Hello! You said: hi");
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        3,
        "two 503s, then success"
    );
    fake.calls.store(0, Ordering::SeqCst);
    let err = r.chat(req("missing-model")).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Provider {
            status: Some(404),
            ..
        }
    ));
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "a 404 is not retried");
    chat_conformance(&r).await;
}

#[tokio::test]
async fn rate_limit_spaces_requests() {
    let (base, _) = server().await;
    let m: Arc<dyn ChatModel> = Arc::new(client(&base));
    let limited = Arc::new(RateLimit::new(m, 20.0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let l = limited.clone();
        tasks.push(tokio::spawn(async move { l.chat(req("gpt-test")).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // One at once, then one every 50 ms: at least 250 ms for six.
    assert!(
        start.elapsed() >= Duration::from_millis(240),
        "{:?}",
        start.elapsed()
    );
    chat_conformance(limited.as_ref()).await;
}

#[tokio::test]
async fn layers_wrap_embedders_too() {
    let (base, _) = server().await;
    let e: Arc<dyn Embedder> = Arc::new(client(&base));
    let e: Arc<dyn Embedder> = Arc::new(RateLimit::new(e, 100.0));
    let e: Arc<dyn Embedder> = Arc::new(Timeout::new(e, Duration::from_secs(10)));
    let e = Retry::new(e, RetryPolicy::default());
    llmem_core::test_kit::embedder_conformance(&e).await;
}
