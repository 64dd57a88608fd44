//! Ingest through `MemoryManager` with the local MiniLM embedder, inline against deferred
//! (`retrieval.deferred_embedding`), in one run:
//!
//! - `ingest/inline`: 200 turns added (the example conversation's 77 messages, cycled and
//!   numbered), each memory embedded before the write returns: the earlier path, the peer.
//! - `ingest/deferred_ack`: the same 200 `add_message` calls with the queue on, timed until
//!   the last returns (the queue, 4,096, holds them all); the drain after each run is not timed.
//! - `ingest/deferred_embedded`: the same, timed until every memory has its vector.
//! - `ingest/deferred_embedded_batch_64`: the same with the queue's earlier call size (64
//!   records an embedder call, where the default is now 256).
//! - `ingest/deferred_embedded_int8` and `ingest/inline_int8`: the same on the model's quantised
//!   copy (`quantized = true`, `model-int8.onnx`).
//!
//! The manager runs the eval's window (compress at 750 tokens, the last 8 turns raw) so that
//! turns reach long-term memory as they are said, with heuristic facts off. Criterion reports
//! the time of 200 turns; turns/s is 200 / that. Needs `cargo xtask setup` (the model).
//! `cargo bench -p llmem --features onnx --bench ingest`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use llmem::core::{Embedder, Message, Scope};
use llmem::providers::onnx::OnnxEmbedderBuilder;
use llmem::tiers::WarmStore;
use llmem::{Config, DeferredSettings, FactMode, MemoryManager, Providers, SummarizerMode};

const TURNS: usize = 200;

fn turns() -> Vec<Message> {
    let said: Vec<Message> = include_str!("../../../examples/data/conversation.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (0..TURNS)
        .map(|i| {
            let m = &said[i % said.len()];
            // Numbered, so that no two memories are the same text.
            Message::user(format!("({i}) {}", m.text())).with_name("user")
        })
        .collect()
}

fn config() -> Config {
    let mut c = Config::default();
    c.memory.max_context_tokens = 1500;
    c.memory.answer_reserve = 200;
    c.memory.compression_threshold = 750;
    c.memory.short_term_size = 8;
    c.memory.summarizer = SummarizerMode::Extractive;
    c.memory.facts = FactMode::Off;
    c
}

/// Adds every turn through a fresh manager over a fresh store; returns the time until the
/// last `add_message` returned and until every memory had its vector.
async fn ingest(
    embedder: &Arc<dyn Embedder>,
    deferred: Option<DeferredSettings>,
    turns: &[Message],
) -> (Duration, Duration) {
    let mut providers = Providers::default()
        .with_store(Arc::new(WarmStore::in_memory()))
        .with_embedder(embedder.clone());
    if let Some(settings) = deferred {
        providers = providers.with_deferred_embedding(settings).unwrap();
    }
    let mut m =
        MemoryManager::for_session(config(), providers.clone(), Scope::session("u", "s")).unwrap();
    let started = Instant::now();
    for t in turns {
        m.add_message(t.clone(), None).await.unwrap();
    }
    let acked = started.elapsed();
    providers.drain_embeddings().await;
    (acked, started.elapsed())
}

fn bench(c: &mut Criterion) {
    let load = |quantized: bool| -> Arc<dyn Embedder> {
        Arc::new(
            OnnxEmbedderBuilder::from_env()
                .with_threads(2)
                .with_quantized(quantized)
                .build()
                .unwrap_or_else(|e| panic!("the ONNX embedder: {e}; run `cargo xtask setup`")),
        )
    };
    let (exact, int8) = (load(false), load(true));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let turns = turns();
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    // Each row: the embedder, the queue's settings (none: inline), and whether the time runs
    // until every memory has its vector or only until the last `add_message` returns.
    let queue = Some(DeferredSettings::default());
    let rows = [
        ("inline", &exact, None, false),
        ("deferred_ack", &exact, queue.clone(), false),
        ("deferred_embedded", &exact, queue.clone(), true),
        (
            "deferred_embedded_batch_64",
            &exact,
            Some(DeferredSettings {
                batch: 64,
                ..DeferredSettings::default()
            }),
            true,
        ),
        ("inline_int8", &int8, None, false),
        ("deferred_embedded_int8", &int8, queue, true),
    ];
    for (name, embedder, settings, until_embedded) in rows {
        g.bench_function(name, |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        let (acked, embedded) =
                            rt.block_on(ingest(embedder, settings.clone(), &turns));
                        if until_embedded { embedded } else { acked }
                    })
                    .sum()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
