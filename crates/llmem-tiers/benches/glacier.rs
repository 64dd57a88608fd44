//! Glacier recall: hybrid (vector + BM25) top-10 searches over 100k archived records
//! (384-d random unit vectors, short texts) in a glacier tier on a local directory, written
//! in 4 batches of 25k; how long a search takes and how many bytes of batch objects it
//! fetches per hit. Also the size of the index object and the time to open the archive.
//!
//! `cargo bench -p llmem-tiers --bench glacier --features glacier`; N, DIM and BATCHES
//! override the size, KEY=1 encrypts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use llmem_core::test_kit::unit_vec;
use llmem_core::{MemoryRecord, MemoryStore, Scope, SearchRequest};
use llmem_tiers::{GlacierConfig, GlacierStore};

const WORDS: [&str; 40] = [
    "pottery", "kayak", "lisbon", "garden", "violin", "chess", "bakery", "tennis", "harbor",
    "quartz", "maple", "orbit", "falcon", "canyon", "lantern", "meadow", "pepper", "saddle",
    "tundra", "walnut", "anchor", "bamboo", "cobalt", "dahlia", "ember", "fjord", "glacier",
    "hazel", "iris", "juniper", "kelp", "lemur", "mosaic", "nectar", "opal", "pixel", "quill",
    "raven", "sierra", "tulip",
];

fn text(i: u64) -> String {
    let w = |k: u64| WORDS[(k % WORDS.len() as u64) as usize];
    format!(
        "note {i}: {} and {} near the {}",
        w(i),
        w(i / 40),
        w(i / 1600)
    )
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &std::path::Path) -> GlacierConfig {
    let cfg = GlacierConfig::new(dir.to_str().unwrap());
    if std::env::var("KEY").is_ok_and(|k| k == "1") {
        cfg.with_key([7u8; 32])
    } else {
        cfg
    }
}

fn bench(c: &mut Criterion) {
    let (n, dim, batches) = (env("N", 100_000), env("DIM", 384), env("BATCHES", 4));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let per = n.div_ceil(batches);
    {
        let g = rt.block_on(GlacierStore::open(config(dir.path()))).unwrap();
        let t = Instant::now();
        for b in 0..batches {
            let recs: Vec<MemoryRecord> = (b * per..((b + 1) * per).min(n))
                .map(|i| {
                    let i = i as u64;
                    MemoryRecord::new("u", text(i))
                        .with_id(format!("r{i}"))
                        .with_embedding(unit_vec(dim, i))
                })
                .collect();
            rt.block_on(g.put(recs)).unwrap();
        }
        eprintln!(
            "glacier: archived {n} x {dim} in {batches} batches in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let size = |name: &str| std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len());
    let index_bytes = size("index.bin.zst").max(size("index.bin.zst.aes"));
    let batch_bytes: u64 = std::fs::read_dir(dir.path().join("batches"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let t = Instant::now();
    let g = rt.block_on(GlacierStore::open(config(dir.path()))).unwrap();
    eprintln!(
        "glacier: open (manifest + index) {:.0} ms; index object {:.1} MB, batches {:.1} MB",
        t.elapsed().as_secs_f64() * 1e3,
        index_bytes as f64 / 1e6,
        batch_bytes as f64 / 1e6
    );
    let scope = Scope::tenant("u");
    let query = |qi: u64| {
        // A query near a stored record, with two of its words.
        let target = (qi * 7919) % n as u64;
        let mut v = unit_vec(dim, target);
        for (x, y) in v.iter_mut().zip(unit_vec(dim, 50_000_000 + qi)) {
            *x += 0.3 * y;
        }
        let w = |k: u64| WORDS[(k % WORDS.len() as u64) as usize];
        SearchRequest::vector(v, 10).with_text(format!("note {target} {}", w(target)))
    };

    // Our own percentiles and bytes per hit over a fixed set of queries.
    let (b0, n0) = (g.bytes_read(), g.batches_read());
    let mut times = Vec::new();
    let mut hits = 0usize;
    for qi in 0..40u64 {
        let req = query(qi);
        let t = Instant::now();
        let h = rt.block_on(g.search(&scope, &req)).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        hits += h.len();
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let bytes = g.bytes_read() - b0;
    eprintln!(
        "glacier: hybrid top-10 over {n}: p50 {:.1} ms, p95 {:.1} ms; {:.2} batches read per query, {:.1} MB per query, {:.2} MB per hit ({hits} hits)",
        at(0.5),
        at(0.95),
        (g.batches_read() - n0) as f64 / times.len() as f64,
        bytes as f64 / times.len() as f64 / 1e6,
        bytes as f64 / hits.max(1) as f64 / 1e6,
    );

    let mut group = c.benchmark_group("glacier");
    group.sample_size(10);
    let mut qi = 1000u64;
    group.bench_function(
        format!("hybrid top-10 {n}x{dim} in {batches} batches"),
        |b| {
            b.iter(|| {
                qi += 1;
                rt.block_on(g.search(&scope, &query(qi))).unwrap()
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
