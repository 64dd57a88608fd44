//! Cost of late interaction (`retrieval.late_interaction`): what a search adds to re-rank its
//! candidates by MaxSim, and what storing a memory adds to keep its token vectors.
//!
//! - `late/rerank/80`: a question of 12 tokens quantised once, then scored against 80 memories
//!   of 30 tokens each (384 dimensions, MiniLM's), as a search for 10 memories re-ranks 80.
//! - `late/rerank_replies/80`: the same, each odd memory a reply to the one before it, whose
//!   score takes `retrieval.late_reply_share` (0.6) of its match with that question's tokens
//!   (each memory's matches computed once, as the search does).
//! - `late/insert`: quantising and keeping one memory's 30 token vectors.
//!
//! The vectors are pseudo-random: the cost depends only on their shapes.
//! `cargo bench -p llmem --bench late`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use llmem::core::TokenVectors;
use llmem::internals::{LateIndex, LateQuery, TokenMatches};

const DIM: usize = 384;

/// `n` token vectors from a linear congruential sequence seeded with `seed`.
fn vectors(n: usize, seed: u64) -> TokenVectors {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let rows = (0..n * DIM)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    TokenVectors::new(DIM, rows).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut index = LateIndex::new(1 << 30);
    let ids: Vec<String> = (0..80).map(|i| format!("m{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        index.insert(id, id, &vectors(30, i as u64));
    }
    let question = vectors(12, 1000);
    let mut g = c.benchmark_group("late");
    g.bench_function("rerank/80", |b| {
        b.iter(|| {
            let q = LateQuery::new(black_box(&question));
            ids.iter()
                .map(|id| index.score(id, &q).unwrap())
                .fold(f32::NEG_INFINITY, f32::max)
        })
    });
    g.bench_function("rerank_replies/80", |b| {
        b.iter(|| {
            let q = LateQuery::new(black_box(&question));
            let matches: Vec<TokenMatches> = ids
                .iter()
                .map(|id| index.matches(id, &q).unwrap())
                .collect();
            matches
                .iter()
                .enumerate()
                .map(|(i, m)| match i % 2 {
                    1 => m.in_reply_to(&matches[i - 1], 0.6),
                    _ => m.score(),
                })
                .fold(f32::NEG_INFINITY, f32::max)
        })
    });
    let memory = vectors(30, 7);
    let mut fresh = LateIndex::new(1 << 30);
    g.bench_function("insert", |b| {
        b.iter(|| fresh.insert("m", "text", black_box(&memory)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
