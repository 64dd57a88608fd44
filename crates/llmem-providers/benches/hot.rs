//! The hot tier's scoring: `HotStore::score` over a working set of 1k and 10k × 384 on the CPU
//! loop and on `OnnxScorer` (ONNX Runtime; CPU here, the GPU with `cuda` where there is one),
//! and the cost of loading a changed matrix into the engine.
//! `cargo bench -p llmem-providers --features onnx --bench hot`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use llmem_core::test_kit::unit_vec;
use llmem_core::{MemoryRecord, MemoryStore, Scope, VectorScorer};
use llmem_providers::onnx::OnnxScorer;
use llmem_tiers::HotStore;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dim = 384;
    let scope = Scope::tenant("u");
    let mut g = c.benchmark_group("hot_score");
    for n in [1_000usize, 10_000] {
        let records: Vec<MemoryRecord> = (0..n as u64)
            .map(|i| {
                MemoryRecord::new("u", format!("message {i}"))
                    .with_id(format!("m{i}"))
                    .with_embedding(unit_vec(dim, i))
            })
            .collect();
        let engine = Arc::new(OnnxScorer::new(None).unwrap_or_else(|e| {
            panic!("{e}\nRun `cargo xtask setup` and `eval \"$(cargo xtask env)\"`.")
        }));
        let cpu = HotStore::new(n).unwrap();
        let onnx = HotStore::new(n).unwrap().with_scorer(engine.clone());
        rt.block_on(cpu.put(records.clone())).unwrap();
        rt.block_on(onnx.put(records)).unwrap();
        let q = unit_vec(dim, 7);
        assert_eq!(
            cpu.score(&scope, &q).unwrap()[0].0,
            onnx.score(&scope, &q).unwrap()[0].0
        );
        g.bench_function(format!("cpu/{n}"), |b| {
            b.iter(|| cpu.score(&scope, &q).unwrap())
        });
        g.bench_function(format!("onnx/{n}"), |b| {
            b.iter(|| onnx.score(&scope, &q).unwrap())
        });
        let matrix: Vec<f32> = (0..n as u64).flat_map(|i| unit_vec(dim, i)).collect();
        g.bench_function(format!("onnx_load/{n}"), |b| {
            b.iter(|| engine.load(&matrix, dim).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
