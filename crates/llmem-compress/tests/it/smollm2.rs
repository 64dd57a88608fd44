//! The real SmolLM2-135M-Instruct on llama.cpp (from the providers crate) as the summarizer.

use std::sync::Arc;

use llmem_compress::{CompressConfig, Compressor, MemoryCompressor, Method};
use llmem_providers::llamacpp::LlamaCppServer;

use crate::{conversation, gpt4o};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_on_llamacpp_summarises_a_locomo_session() {
    let server = LlamaCppServer::builder().start().await.unwrap_or_else(|e| {
        panic!("could not start llama.cpp with SmolLM2: {e}\n(run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`)")
    });
    let summarizer = Arc::new(server.summarizer(2048).unwrap());
    // Small enough for two shared CPU cores; the timeout is generous for the same reason.
    let conv = conversation(30);
    let cfg = CompressConfig {
        keep_recent: 6,
        compression_ratio: 0.15,
        timeout: std::time::Duration::from_secs(240),
        ..CompressConfig::default()
    };
    let c = MemoryCompressor::new(cfg, gpt4o())
        .unwrap()
        .with_summarizer(summarizer);
    let out = c.compress(&conv).await.unwrap();
    assert!(
        matches!(out.method, Method::Abstractive { .. }),
        "{:?} {:?}",
        out.method,
        out.errors
    );
    assert!(out.summarizer_calls >= 1);
    let summary = out.summary.as_deref().unwrap();
    assert!(!summary.trim().is_empty());
    assert!(
        out.compressed_tokens < out.original_tokens,
        "{} !< {}",
        out.compressed_tokens,
        out.original_tokens
    );
    assert!(out.messages[1].flag("summary"));
}
