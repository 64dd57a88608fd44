//! Embeddings per second of the local ONNX embedder (MiniLM-L6-v2 int8) at batch 1 and 32, on the
//! sentences in `benches/sentences.txt` (the same ones `benches/peers/onnxruntime_bench.py` uses).
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
