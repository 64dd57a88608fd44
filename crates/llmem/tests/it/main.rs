//! The facade: config, the public API, the memory manager, sessions, prompt blocks, the
//! examples.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use llmem::core::{Message, TokenCounter};

mod api;
mod changes;
mod config;
mod consolidate;
mod deferred;
mod examples;
mod forget;
mod late;
mod manager;
mod memory;
mod reembed;
mod sessions;
mod tiers;

/// The exact gpt-4o counter.
pub fn gpt4o() -> Arc<dyn TokenCounter> {
    llmem::tokens::Counters::embedded()
        .and_then(|c| c.for_model("gpt-4o"))
        .map(|c| c as Arc<dyn TokenCounter>)
        .unwrap_or_else(|e| panic!("gpt-4o counter: {e}"))
}

/// The local MiniLM embedder (`cargo xtask setup`, then `eval "$(cargo xtask env)"`).
#[cfg(feature = "onnx")]
pub fn minilm() -> Arc<dyn llmem::core::Embedder> {
    Arc::new(
        llmem::providers::onnx::OnnxEmbedderBuilder::from_env()
            .with_threads(2)
            .build()
            .unwrap_or_else(|e| panic!("the ONNX embedder could not load: {e}\nRun `cargo xtask setup`, then `eval \"$(cargo xtask env)\"`.")),
    )
}

/// The conversation shipped in examples/data (77 messages, dated).
pub fn conversation() -> Vec<Message> {
    include_str!("../../../../examples/data/conversation.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}
