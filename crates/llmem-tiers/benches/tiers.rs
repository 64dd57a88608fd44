//! Benchmarks: warm top-10 on 100k × 384 with a filter (int8 scan + f32 re-score, and exact),
//! warm insert throughput, and (with the `lance` feature) cold top-10 at 100k without and with
//! the default vector index (`ColdConfig::index`, IVF-SQ).
//!
//! `cargo bench -p llmem-tiers --bench tiers [--features lance]`; N and DIM override the size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmem_core::test_kit::unit_vec;
use llmem_core::{Filter, MemoryRecord, MemoryStore, Scope, SearchRequest};
use llmem_tiers::{WarmConfig, WarmStore};
use serde_json::json;

fn records(n: usize, dim: usize) -> Vec<MemoryRecord> {
    (0..n as u64)
        .map(|i| {
            MemoryRecord::new("u", format!("note {i}"))
                .with_id(format!("r{i}"))
                .with_embedding(unit_vec(dim, i))
                .with_metadata("even", i % 2 == 0)
        })
        .collect()
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench(c: &mut Criterion) {
    let (n, dim) = (env("N", 100_000), env("DIM", 384));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let recs = records(n, dim);
    let scope = Scope::tenant("u");
    let filter = Filter::parse(&json!({"even": true})).unwrap();

    let mut g = c.benchmark_group("warm");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("insert {n}x{dim}"), |b| {
        b.iter(|| {
            let w = WarmStore::in_memory();
            rt.block_on(w.put(recs.clone())).unwrap();
        })
    });
    g.finish();

    let mut qi = 0u64;
    for quantized in [true, false] {
        let warm = WarmStore::open(WarmConfig::default().quantized(quantized)).unwrap();
        rt.block_on(warm.put(recs.clone())).unwrap();
        let how = if quantized { "int8+rescore" } else { "exact" };
        let mut g = c.benchmark_group("warm");
        g.bench_function(format!("{how} top-10 {n}x{dim} filtered"), |b| {
            b.iter(|| {
                qi += 1;
                let req = SearchRequest::vector(unit_vec(dim, 10_000_000 + qi), 10)
                    .with_filter(filter.clone());
                rt.block_on(warm.search(&scope, &req)).unwrap()
            })
        });
        g.finish();
    }

    #[cfg(feature = "lance")]
    {
        use llmem_tiers::{ColdConfig, ColdStore};
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ColdConfig::new(dir.path().join("cold"));
        cfg.index_threshold = usize::MAX;
        let cold = rt.block_on(ColdStore::open(cfg)).unwrap();
        for chunk in recs.chunks(20_000) {
            rt.block_on(cold.put(chunk.to_vec())).unwrap();
        }
        let mut g = c.benchmark_group("cold");
        g.sample_size(10);
        g.bench_function(format!("exact top-10 {n}x{dim}"), |b| {
            b.iter(|| {
                qi += 1;
                rt.block_on(cold.search(
                    &scope,
                    &SearchRequest::vector(unit_vec(dim, 10_000_000 + qi), 10),
                ))
                .unwrap()
            })
        });
        rt.block_on(cold.build_index()).unwrap();
        let kind = ColdConfig::new("").index.name().replace('_', "-");
        g.bench_function(format!("{kind} top-10 {n}x{dim}"), |b| {
            b.iter(|| {
                qi += 1;
                rt.block_on(cold.search(
                    &scope,
                    &SearchRequest::vector(unit_vec(dim, 10_000_000 + qi), 10),
                ))
                .unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
