//! Cost of WordNet's broader terms (`retrieval.taxonomy`): loading the noun hierarchy once per
//! process, and the broader terms of one conversation turn, which each memory's archive runs.
//!
//! - `taxonomy/load`: `Taxonomy::load` of `index.noun` and `data.noun` (WordNet 3.1).
//! - `taxonomy/broader/turn`: `Taxonomy::broader` of one sentence, cycling 64 everyday ones.
//!
//! Needs `cargo xtask setup wordnet`; without it the bench says so and measures nothing.
//! `cargo bench -p llmem --bench taxonomy`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use llmem::internals::Taxonomy;

const SENTENCES: &str = include_str!("../../llmem-providers/benches/sentences.txt");

fn bench(c: &mut Criterion) {
    let dir = llmem::providers::assets::cache_dir().join("wordnet");
    if !dir.join("data.noun").is_file() {
        eprintln!(
            "no WordNet in {}: run `cargo xtask setup wordnet`",
            dir.display()
        );
        return;
    }
    let mut g = c.benchmark_group("taxonomy");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("load", |b| {
        b.iter(|| Taxonomy::load(black_box(&dir)).unwrap())
    });
    g.finish();
    let t = Taxonomy::load(&dir).unwrap();
    let lines: Vec<&str> = SENTENCES.lines().filter(|l| !l.is_empty()).collect();
    let mut g = c.benchmark_group("taxonomy/broader");
    let mut i = 0;
    g.bench_function("turn", |b| {
        b.iter(|| {
            i = (i + 1) % lines.len();
            t.broader(black_box(lines[i]))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
