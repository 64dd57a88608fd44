//! Embeddings per second of the local ONNX embedder (MiniLM-L6-v2 int8) at batch 1 and 32, on the
//! sentences in `benches/sentences.txt` (the same ones `benches/peers/onnxruntime_bench.py` uses).
//!
//! `onnx_embed_mixed` embeds 256 texts of mixed length (one to four of those sentences, about
//! 12 to 75 tokens, as conversation turns are) in the order given, in runs of 32 (each run
//! padded to its longest: the earlier path, the peer), against one call that runs them
//! shortest first at 32 and at 16 a run, and the same call on the quantised model
//! (`model-int8.onnx`, `quantized = true`), which runs one text at a time.
//! `cargo bench -p llmem-providers --features onnx --bench embed`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmem_providers::onnx::OnnxEmbedderBuilder;

fn sentences() -> Vec<String> {
    include_str!("sentences.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// 256 texts of one to four sentences, in an order that mixes their lengths.
fn mixed(sentences: &[String]) -> Vec<String> {
    (0..256)
        .map(|i| {
            let k = 1 + (i * 7 + i / 5) % 4;
            (0..k)
                .map(|j| sentences[(i + j * 13) % sentences.len()].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let threads = std::env::var("LLMEM_ONNX_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let e = OnnxEmbedderBuilder::new()
        .with_threads(threads)
        .with_batch_size(32)
        .build()
        .unwrap_or_else(|err| {
            panic!("{err}\nRun `cargo xtask setup` and `eval \"$(cargo xtask env)\"`.")
        });
    let texts = sentences();
    let mut g = c.benchmark_group("onnx_embed");
    for batch in [1usize, 32] {
        g.throughput(Throughput::Elements(batch as u64));
        let mut i = 0;
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| {
                let start = (i * batch) % (texts.len() - batch + 1);
                i += 1;
                e.embed_blocking(&texts[start..start + batch]).unwrap()
            })
        });
    }
    g.finish();

    let e16 = OnnxEmbedderBuilder::new()
        .with_threads(threads)
        .with_batch_size(16)
        .build()
        .unwrap();
    let mixed = mixed(&texts);
    let mut g = c.benchmark_group("onnx_embed_mixed");
    g.sample_size(10);
    g.throughput(Throughput::Elements(mixed.len() as u64));
    g.bench_function("in_order_runs_of_32", |b| {
        b.iter(|| {
            for run in mixed.chunks(32) {
                e.embed_blocking(run).unwrap();
            }
        })
    });
    g.bench_function("by_length_runs_of_32", |b| {
        b.iter(|| e.embed_blocking(&mixed).unwrap())
    });
    g.bench_function("by_length_runs_of_16", |b| {
        b.iter(|| e16.embed_blocking(&mixed).unwrap())
    });
    let q = OnnxEmbedderBuilder::new()
        .with_threads(threads)
        .with_quantized(true)
        .build()
        .unwrap();
    g.bench_function("int8_one_a_run", |b| {
        b.iter(|| q.embed_blocking(&mixed).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
