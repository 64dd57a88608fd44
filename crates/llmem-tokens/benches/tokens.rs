//! Token-counting throughput on the LoCoMo turns (the corpus `benches/peers/tiktoken_bench.py`
//! counts with Python tiktoken in the same `cargo xtask bench` run):
//!
//! - `o200k/large`: one document of every turn; `o200k/small`: every turn on its own;
//!   llmem's counter (fast path; `llmem-cold` with its table of pieces emptied before each
//!   run) against tiktoken-rs's `encode_ordinary` and the `bpe` crate's counter (`bpe-openai`).
//! - `history/add_one`: cost of adding one message to a 1k-message history with the cached
//!   counter, against recounting the whole history.
//!
//! `cargo bench -p llmem-tokens --bench tokens`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

#[path = "../../llmem-eval/support/locomo.rs"]
mod locomo;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use llmem_core::{Message, TokenCounter};
use llmem_tokens::{CachedCounter, Counters, ModelCounter};

fn corpus() -> Vec<String> {
    locomo::lines()
}

fn counting(c: &mut Criterion) {
    let turns = corpus();
    let large = turns.join("\n");
    let counter = ModelCounter::encoding("o200k_base").unwrap();
    assert_eq!(
        counter.count(&large),
        counter.count_reference(&large),
        "fast path must equal tiktoken-rs"
    );
    eprintln!(
        "corpus: {} turns, {} bytes, {} o200k tokens",
        turns.len(),
        large.len(),
        counter.count(&large)
    );

    let mut g = c.benchmark_group("o200k");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(large.len() as u64));
    g.bench_function(BenchmarkId::new("large", "llmem"), |b| {
        b.iter(|| counter.count(&large))
    });
    // The same with the table of pieces emptied first: the cost of text never seen before.
    g.bench_function(BenchmarkId::new("large", "llmem-cold"), |b| {
        b.iter(|| {
            llmem_tokens::o200k::clear_cache();
            counter.count(&large)
        })
    });
    g.bench_function(BenchmarkId::new("large", "tiktoken-rs"), |b| {
        b.iter(|| counter.count_reference(&large))
    });
    g.bench_function(BenchmarkId::new("large", "bpe-openai"), |b| {
        b.iter(|| bpe_openai::o200k_base().count(large.as_str()))
    });
    let small_bytes: usize = turns.iter().map(String::len).sum();
    g.throughput(Throughput::Bytes(small_bytes as u64));
    g.bench_function(BenchmarkId::new("small", "llmem"), |b| {
        b.iter(|| turns.iter().map(|t| counter.count(t)).sum::<usize>())
    });
    g.bench_function(BenchmarkId::new("small", "llmem-cold"), |b| {
        b.iter(|| {
            llmem_tokens::o200k::clear_cache();
            turns.iter().map(|t| counter.count(t)).sum::<usize>()
        })
    });
    g.bench_function(BenchmarkId::new("small", "tiktoken-rs"), |b| {
        b.iter(|| {
            turns
                .iter()
                .map(|t| counter.count_reference(t))
                .sum::<usize>()
        })
    });
    g.bench_function(BenchmarkId::new("small", "bpe-openai"), |b| {
        b.iter(|| {
            turns
                .iter()
                .map(|t| bpe_openai::o200k_base().count(t.as_str()))
                .sum::<usize>()
        })
    });
    g.finish();

    let model: Arc<dyn TokenCounter> = Counters::embedded().unwrap().for_model("gpt-4o").unwrap();
    let history: Vec<Message> = turns
        .iter()
        .take(1000)
        .map(|t| Message::user(t.clone()))
        .collect();
    let cached = CachedCounter::new(model.clone());
    cached.count_messages(&history);
    let new =
        Message::assistant("A new reply that mentions 7 May 2023 and Caroline's support group.");
    let mut g = c.benchmark_group("history");
    g.bench_function("add_one/cached_1k", |b| {
        b.iter(|| cached.count_message(&new))
    });
    g.bench_function("add_one/recount_1k", |b| {
        b.iter(|| model.count_messages(&history) + model.count_message(&new))
    });
    g.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
