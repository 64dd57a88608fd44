//! The one-run benchmark report of llmem-tiers (`harness = false`):
//!
//! - warm: insert throughput; top-10 on N × DIM, with and without a metadata filter, by the
//!   default int4 scan with f32 re-scoring and by the exact f32 scan (latency, recall@10);
//! - cold (feature `lance`): insert throughput; top-10 without the index (exact) and with the
//!   default index (IVF-SQ + refine), unfiltered and filtered, and without refine (latency,
//!   recall@10 against brute force);
//!   optionally again at `COLD_LARGE` rows;
//! - Chroma (PyPI `chromadb`, in-process) and a one-thread numpy scan on the same vectors and
//!   queries, through
//!   `benches/peers/chroma_bench.py` run with `$LLMEM_PYTHON` (skipped with a note when absent).
//!
//! ```text
//! eval "$(cargo xtask env)"
//! cargo bench -p llmem-tiers --features lance --bench report
//! ```
//! Env: `N` (100000), `DIM` (384), `QUERIES` (100), `CLUSTERS` (1000; 0: uniform random
//! vectors), `NOISE` (0.8), `CHROMA_EF` (100), `COLD_LARGE` (rows for a second cold run,
//! e.g. 1000000; unset: skipped), `BENCH_OUT` (output directory; default a temp dir). The report
//! is printed as Markdown and written to `$BENCH_OUT/tiers-report.md`.
//!
//! `COLD_SWEEP=1000000` runs only the cold tier's index sweep at that size instead
//! (`SWEEP_INDEXES=ivf_pq,ivf_rq` to run some kinds only): see [`cold_sweep`].
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_arguments
)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use llmem_core::test_kit::unit_vec;
use llmem_core::{Filter, MemoryRecord, MemoryStore, RecordKind, Scope, SearchRequest};
use llmem_tiers::vector::dot;
use llmem_tiers::{WarmConfig, WarmStore};
use serde_json::json;

/// Clusters in the data (`CLUSTERS`, default 1000; 0: i.i.d. uniform unit vectors).
fn clusters() -> u64 {
    env("CLUSTERS", 1000) as u64
}

/// Vector `seed`: a cluster centre plus noise of norm `NOISE` (default 0.8), normalised, so the
/// data has the neighbourhood structure of real embeddings (i.i.d. uniform vectors in 384-d
/// are all nearly equidistant, which no ANN index can rank). The Chroma script reads the very
/// same vectors from disk.
fn data_vec(dim: usize, seed: u64) -> Vec<f32> {
    let c = clusters();
    if c == 0 {
        return unit_vec(dim, seed);
    }
    let noise: f32 = std::env::var("NOISE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.8);
    let mut h = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    let centre = unit_vec(dim, 1_000_000_000 + h % c);
    let mut v: Vec<f32> = centre
        .iter()
        .zip(unit_vec(dim, seed))
        .map(|(a, b)| a + noise * b)
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Row `i`: even rows are `knowledge`, odd ones `conversation`; the benchmark's filter keeps
/// the even half (`{"kind": "knowledge"}` runs as a Lance SQL predicate in cold; Chroma gets
/// the same split as metadata `{"even": true}`).
fn record(i: usize, v: &[f32]) -> MemoryRecord {
    let kind = if i.is_multiple_of(2) {
        RecordKind::Knowledge
    } else {
        RecordKind::Conversation
    };
    MemoryRecord::new("u", format!("note {i}"))
        .with_id(format!("r{i}"))
        .with_kind(kind)
        .with_embedding(v.to_vec())
        .with_metadata("even", i.is_multiple_of(2))
}

/// Brute-force top-10 ids (as indices) per query; `even_only` applies the benchmark's filter.
fn truth(vecs: &[Vec<f32>], queries: &[Vec<f32>], even_only: bool) -> Vec<Vec<usize>> {
    queries
        .iter()
        .map(|q| {
            let mut s: Vec<(f32, usize)> = vecs
                .iter()
                .enumerate()
                .filter(|(i, _)| !even_only || i % 2 == 0)
                .map(|(i, v)| (dot(q, v), i))
                .collect();
            let k = 10.min(s.len());
            s.select_nth_unstable_by(k.saturating_sub(1), |a, b| b.0.total_cmp(&a.0));
            s.truncate(k);
            s.into_iter().map(|(_, i)| i).collect()
        })
        .collect()
}

#[derive(Default)]
struct Row {
    what: String,
    p50_ms: f64,
    p99_ms: f64,
    recall: Option<f64>,
    note: String,
}

fn pct(lat: &mut [Duration], p: f64) -> f64 {
    lat.sort();
    let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
    lat[i].as_secs_f64() * 1e3
}

/// Runs every query through `store`, returning latency percentiles and recall@10 vs `truth`.
async fn measure(
    store: &dyn MemoryStore,
    what: String,
    queries: &[Vec<f32>],
    filter: Option<&Filter>,
    truth: &[Vec<usize>],
) -> Row {
    let scope = Scope::tenant("u");
    let mut lat = Vec::with_capacity(queries.len());
    let mut hits = 0usize;
    for (q, t) in queries.iter().zip(truth) {
        let mut req = SearchRequest::vector(q.clone(), 10);
        if let Some(f) = filter {
            req = req.with_filter(f.clone());
        }
        let t0 = Instant::now();
        let got = store.search(&scope, &req).await.unwrap();
        lat.push(t0.elapsed());
        let want: HashSet<String> = t.iter().map(|i| format!("r{i}")).collect();
        hits += got.iter().filter(|h| want.contains(&h.record.id)).count();
    }
    Row {
        what,
        p50_ms: pct(&mut lat, 0.5),
        p99_ms: pct(&mut lat, 0.99),
        recall: Some(hits as f64 / (10 * queries.len()) as f64),
        note: String::new(),
    }
}

fn write_f32(path: &Path, vecs: &[Vec<f32>]) {
    let mut bytes = Vec::with_capacity(vecs.len() * vecs.first().map_or(0, Vec::len) * 4);
    for v in vecs {
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// Puts `vecs` into `store` in batches of 10k (row `i` is [`record`] `i`); returns the seconds.
#[cfg(feature = "lance")]
async fn fill(store: &dyn MemoryStore, vecs: &[Vec<f32>]) -> f64 {
    let t0 = Instant::now();
    for (c, chunk) in vecs.chunks(10_000).enumerate() {
        let recs: Vec<MemoryRecord> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| record(c * 10_000 + j, v))
            .collect();
        store.put(recs).await.unwrap();
    }
    t0.elapsed().as_secs_f64()
}

#[cfg(feature = "lance")]
async fn cold_rows(
    n: usize,
    dim: usize,
    vecs: &[Vec<f32>],
    queries: &[Vec<f32>],
    filter: &Filter,
    t_all: &[Vec<usize>],
    t_even: &[Vec<usize>],
    rows: &mut Vec<Row>,
    inserts: &mut Vec<(String, f64)>,
) {
    use llmem_tiers::{ColdConfig, ColdStore};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ColdConfig::new(dir.path().join("cold"));
    cfg.dimensions = Some(dim);
    cfg.index_threshold = usize::MAX;
    let cold = ColdStore::open(cfg).await.unwrap();
    let secs = fill(&cold, vecs).await;
    inserts.push((
        format!("cold (Lance merge-insert, batches of 10k) {n}×{dim}"),
        n as f64 / secs,
    ));
    rows.push(
        measure(
            &cold,
            format!("cold exact top-10, {n}×{dim}"),
            queries,
            None,
            t_all,
        )
        .await,
    );
    rows.push(
        measure(
            &cold,
            format!("cold exact top-10, {n}×{dim}, filtered"),
            queries,
            Some(filter),
            t_even,
        )
        .await,
    );
    let t0 = Instant::now();
    cold.build_index().await.unwrap();
    let build = t0.elapsed().as_secs_f64();
    let kind = ColdConfig::new("")
        .index
        .name()
        .to_uppercase()
        .replace('_', "-");
    let mut r = measure(
        &cold,
        format!("cold {kind} top-10, {n}×{dim}"),
        queries,
        None,
        t_all,
    )
    .await;
    let defaults = ColdConfig::new("");
    let probes = defaults.probes(n);
    let refine = defaults.refine_factor;
    r.note = format!("index build {build:.1} s; {probes} probes, refine ×{refine} (default)");
    rows.push(r);
    rows.push(
        measure(
            &cold,
            format!("cold {kind} top-10, {n}×{dim}, filtered"),
            queries,
            Some(filter),
            t_even,
        )
        .await,
    );
    // The same index, no candidates re-ranked exactly: the latency/recall trade.
    drop(cold);
    let mut cfg = ColdConfig::new(dir.path().join("cold"));
    cfg.index_threshold = usize::MAX;
    cfg.refine_factor = 0;
    let cold = ColdStore::open(cfg).await.unwrap();
    let mut r = measure(
        &cold,
        format!("cold {kind} top-10, {n}×{dim}, no refine"),
        queries,
        None,
        t_all,
    )
    .await;
    r.note = format!("{probes} probes");
    rows.push(r);
}

/// The cold tier's index sweep (`COLD_SWEEP` rows): one dataset, each index kind of
/// `SWEEP_INDEXES` (comma-separated names; default every [`llmem_tiers::ColdIndex`]) built in
/// turn over it, each measured at several probes and refine factors (HNSW: `ef`), unfiltered,
/// then the best setting that reaches recall@10 0.95, and the default's, filtered as well. Writes
/// `$BENCH_OUT/cold-sweep.md` and prints it.
#[cfg(feature = "lance")]
async fn cold_sweep(n: usize, dim: usize, queries: &[Vec<f32>], filter: &Filter, out: &Path) {
    use llmem_tiers::{ColdConfig, ColdIndex, ColdStore};
    let started = Instant::now();
    eprintln!("sweep: generating {n}×{dim} vectors");
    let vecs: Vec<Vec<f32>> = (0..n as u64).map(|i| data_vec(dim, i)).collect();
    let (t_all, t_even) = (truth(&vecs, queries, false), truth(&vecs, queries, true));
    let dir = tempfile::tempdir().unwrap();
    let base = || {
        let mut c = ColdConfig::new(dir.path().join("cold"));
        c.dimensions = Some(dim);
        c.index_threshold = usize::MAX;
        c
    };
    // The store over the dataset with index `kind` queried at `(probes, refine, ef)`.
    let with = |kind: ColdIndex, (probes, refine, ef): (usize, u32, usize)| {
        let mut c = base();
        c.index = kind;
        c.nprobes = probes;
        c.refine_factor = refine;
        c.ef = ef;
        ColdStore::open(c)
    };
    let cold = ColdStore::open(base()).await.unwrap();
    let insert_s = fill(&cold, &vecs).await;
    drop(vecs);
    let mut md = String::new();
    writeln!(
        md,
        "Cold-tier index sweep: {n}×{dim} clustered vectors ({} clusters), {} queries, top-10, recall@10 against brute force; inserts {insert_s:.0} s.\n",
        clusters(),
        queries.len()
    )
    .unwrap();
    writeln!(
        md,
        "| index | build s | probes | refine | ef | p50 ms | p99 ms | recall@10 | filtered p50 ms | filtered recall@10 |"
    )
    .unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    let exact_q = &queries[..queries.len().min(20)];
    let mut ex = measure(&cold, String::new(), exact_q, None, &t_all[..exact_q.len()]).await;
    writeln!(
        md,
        "| none (exact scan, {} queries) | – | – | – | – | {:.1} | {:.1} | {:.3} | | |",
        exact_q.len(),
        ex.p50_ms,
        ex.p99_ms,
        ex.recall.take().unwrap_or(0.0)
    )
    .unwrap();
    drop(cold);
    let kinds: Vec<ColdIndex> = match std::env::var("SWEEP_INDEXES") {
        Ok(v) => v.split(',').map(|k| ColdIndex::parse(k).unwrap()).collect(),
        Err(_) => ColdIndex::ALL.to_vec(),
    };
    let default_probes = base().probes(n);
    for kind in kinds {
        let cold = with(kind, (default_probes, 0, 0)).await.unwrap();
        eprintln!(
            "sweep: building {} ({:.0} s in)",
            kind.name(),
            started.elapsed().as_secs_f64()
        );
        let t0 = Instant::now();
        cold.build_index().await.unwrap();
        let build = t0.elapsed().as_secs_f64();
        drop(cold);
        let hnsw = kind == ColdIndex::IvfHnswSq;
        let settings: Vec<(usize, u32, usize)> = if hnsw {
            vec![
                (default_probes / 2, 0, 50),
                (default_probes, 0, 50),
                (default_probes, 0, 150),
                (default_probes, 5, 150),
                (default_probes * 2, 5, 150),
            ]
        } else {
            vec![
                (default_probes / 2, 5, 0),
                (default_probes, 0, 0),
                (default_probes, 5, 0),
                (default_probes, 20, 0),
                (default_probes * 2, 5, 0),
                (default_probes * 2, 20, 0),
            ]
        };
        let mut best: Option<(f64, (usize, u32, usize))> = None;
        let mut lines = Vec::new();
        for (probes, refine, ef) in settings {
            let cold = with(kind, (probes, refine, ef)).await.unwrap();
            // The store takes the index's size from its build; reopened, it reads it again.
            assert!(
                cold.indexed().await,
                "{} index found on reopen",
                kind.name()
            );
            let r = measure(&cold, String::new(), queries, None, &t_all).await;
            let recall = r.recall.unwrap_or(0.0);
            eprintln!(
                "sweep: {} probes {probes} refine {refine} ef {ef}: {:.1} ms, recall {recall:.3}",
                kind.name(),
                r.p50_ms
            );
            if recall >= 0.95 && best.is_none_or(|(ms, _)| r.p50_ms < ms) {
                best = Some((r.p50_ms, (probes, refine, ef)));
            }
            lines.push((probes, refine, ef, r));
        }
        for (i, (probes, refine, ef, r)) in lines.into_iter().enumerate() {
            let mut filtered = String::from(" | ");
            // The best setting, and the shipped default's (ColdConfig::new).
            let shipped = kind == ColdIndex::default()
                && (probes, refine, ef) == (default_probes, base().refine_factor, 0);
            if shipped || best.is_some_and(|(_, b)| b == (probes, refine, ef)) {
                let cold = with(kind, (probes, refine, ef)).await.unwrap();
                let f = measure(&cold, String::new(), queries, Some(filter), &t_even).await;
                filtered = format!("{:.1} | {:.3}", f.p50_ms, f.recall.unwrap_or(0.0));
            }
            writeln!(
                md,
                "| {} | {} | {probes} | {} | {} | {:.1} | {:.1} | {:.3} | {filtered} |",
                if i == 0 { kind.name() } else { "" },
                if i == 0 {
                    format!("{build:.0}")
                } else {
                    String::new()
                },
                if refine == 0 {
                    "–".to_owned()
                } else {
                    format!("×{refine}")
                },
                if ef == 0 {
                    "–".to_owned()
                } else {
                    ef.to_string()
                },
                r.p50_ms,
                r.p99_ms,
                r.recall.unwrap_or(0.0)
            )
            .unwrap();
        }
        // Written as each kind is done, so that a sweep cut short keeps what it measured.
        std::fs::write(out.join("cold-sweep.md"), &md).unwrap();
    }
    writeln!(
        md,
        "\nThe whole sweep took {:.0} s.",
        started.elapsed().as_secs_f64()
    )
    .unwrap();
    println!("{md}");
    std::fs::write(out.join("cold-sweep.md"), md).unwrap();
}

fn chroma(
    out: &Path,
    n: usize,
    dim: usize,
    vec_file: &Path,
    q_file: &Path,
) -> Result<serde_json::Value, String> {
    let py = std::env::var("LLMEM_PYTHON").map_err(|_| {
        "LLMEM_PYTHON unset: run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`".to_owned()
    })?;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/peers/chroma_bench.py");
    let st = std::process::Command::new(py)
        .arg(&script)
        .arg(out)
        .env("N", n.to_string())
        .env("DIM", dim.to_string())
        .env("VECTORS", vec_file)
        .env("QUERIES_FILE", q_file)
        .status()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !st.success() {
        return Err(format!("{} exited with {st}", script.display()));
    }
    let text = std::fs::read_to_string(out.join("chroma.json")).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let (n, dim, nq) = (env("N", 100_000), env("DIM", 384), env("QUERIES", 100));
    let out = std::env::var("BENCH_OUT").map_or_else(
        |_| std::env::temp_dir().join("llmem-tiers-bench"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&out).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!("generating {n}×{dim} vectors and {nq} queries");
    let vecs: Vec<Vec<f32>> = (0..n as u64).map(|i| data_vec(dim, i)).collect();
    let queries: Vec<Vec<f32>> = (0..nq as u64)
        .map(|i| data_vec(dim, 10_000_000 + i))
        .collect();
    #[cfg(feature = "lance")]
    {
        let sweep = env("COLD_SWEEP", 0);
        if sweep > 0 {
            let filter = Filter::parse(&json!({"kind": "knowledge"})).unwrap();
            rt.block_on(cold_sweep(sweep, dim, &queries, &filter, &out));
            return;
        }
    }
    let (vec_file, q_file) = (out.join("vectors.f32"), out.join("queries.f32"));
    write_f32(&vec_file, &vecs);
    write_f32(&q_file, &queries);
    let t_all = truth(&vecs, &queries, false);
    let t_even = truth(&vecs, &queries, true);
    let filter = Filter::parse(&json!({"kind": "knowledge"})).unwrap();
    let mut rows = Vec::new();
    let mut inserts = Vec::new();

    eprintln!("warm");
    rt.block_on(async {
        let recs: Vec<MemoryRecord> = vecs.iter().enumerate().map(|(i, v)| record(i, v)).collect();
        // The default (int4 scan, f32 re-score) and the exact f32 scan, on the same rows.
        for quantized in [true, false] {
            let warm = WarmStore::open(WarmConfig::default().quantized(quantized)).unwrap();
            let t0 = Instant::now();
            for chunk in recs.chunks(10_000) {
                warm.put(chunk.to_vec()).await.unwrap();
            }
            let secs = t0.elapsed().as_secs_f64();
            let how = if quantized {
                "int4 scan + f32 re-score"
            } else {
                "exact f32 scan"
            };
            if quantized {
                inserts.push((
                    format!("warm (RAM, batches of 10k) {n}×{dim}"),
                    n as f64 / secs,
                ));
            }
            rows.push(
                measure(
                    &warm,
                    format!("warm {how} top-10, {n}×{dim}, filtered"),
                    &queries,
                    Some(&filter),
                    &t_even,
                )
                .await,
            );
            rows.push(
                measure(
                    &warm,
                    format!("warm {how} top-10, {n}×{dim}"),
                    &queries,
                    None,
                    &t_all,
                )
                .await,
            );
        }
    });

    #[cfg(feature = "lance")]
    {
        eprintln!("cold at {n}");
        rt.block_on(cold_rows(
            n,
            dim,
            &vecs,
            &queries,
            &filter,
            &t_all,
            &t_even,
            &mut rows,
            &mut inserts,
        ));
        let large = env("COLD_LARGE", 0);
        if large > n {
            eprintln!("cold at {large}");
            let big: Vec<Vec<f32>> = (0..large as u64).map(|i| data_vec(dim, i)).collect();
            let (ta, te) = (truth(&big, &queries, false), truth(&big, &queries, true));
            rt.block_on(cold_rows(
                large,
                dim,
                &big,
                &queries,
                &filter,
                &ta,
                &te,
                &mut rows,
                &mut inserts,
            ));
        }
    }
    #[cfg(not(feature = "lance"))]
    rows.push(Row {
        what: "cold".into(),
        note: "not built: run with --features lance".into(),
        ..Row::default()
    });

    eprintln!("chroma");
    let mut chroma_note = String::new();
    match chroma(&out, n, dim, &vec_file, &q_file) {
        Ok(c) => {
            let f = |k: &str| {
                c.get(k)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(f64::NAN)
            };
            let engine = c
                .get("engine")
                .and_then(|e| e.as_str())
                .unwrap_or("chromadb");
            inserts.push((
                format!("{engine} (in-process, batches of 5k) {n}×{dim}"),
                f("insert_per_s"),
            ));
            let ef = c
                .get("ef_search")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            rows.push(Row {
                what: format!("{engine} HNSW (ef_search {ef}) top-10, {n}×{dim}"),
                p50_ms: f("query_top10_p50_ms"),
                p99_ms: f("query_top10_p99_ms"),
                recall: Some(f("recall_at_10")),
                note: String::new(),
            });
            rows.push(Row {
                what: format!("{engine} HNSW (ef_search {ef}) top-10, {n}×{dim}, filtered"),
                p50_ms: f("query_filtered_top10_p50_ms"),
                p99_ms: f("query_filtered_top10_p99_ms"),
                recall: Some(f("recall_filtered_at_10")),
                note: String::new(),
            });
            let numpy = c
                .get("numpy")
                .and_then(|e| e.as_str())
                .unwrap_or("numpy")
                .to_owned();
            for (what, key) in [("", "numpy_top10"), (", filtered", "numpy_filtered_top10")] {
                rows.push(Row {
                    what: format!("{numpy} exact scan (1 thread) top-10, {n}×{dim}{what}"),
                    p50_ms: f(&format!("{key}_p50_ms")),
                    p99_ms: f(&format!("{key}_p99_ms")),
                    recall: Some(1.0),
                    note: String::new(),
                });
            }
        }
        Err(e) => chroma_note = format!("Chroma not measured: {e}"),
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "{nq} queries, top-10 by cosine on deterministic vectors ({}); the filter (`kind = knowledge`; Chroma: `even = true`) keeps the even half of the rows; recall@10 against brute force.\n",
        match clusters() {
            0 => "i.i.d. uniform unit vectors".to_owned(),
            c => format!(
                "{c} clusters, noise norm {}",
                std::env::var("NOISE").unwrap_or_else(|_| "0.8".into())
            ),
        }
    );
    let _ = writeln!(md, "| search | p50 ms | p99 ms | recall@10 | note |");
    let _ = writeln!(md, "|---|---:|---:|---:|---|");
    for r in &rows {
        let rec = r.recall.map_or("–".to_owned(), |x| format!("{x:.3}"));
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {rec} | {} |",
            r.what, r.p50_ms, r.p99_ms, r.note
        );
    }
    let _ = writeln!(md, "\n| insert | records/s |\n|---|---:|");
    for (w, r) in &inserts {
        let _ = writeln!(md, "| {w} | {r:.0} |");
    }
    if !chroma_note.is_empty() {
        let _ = writeln!(md, "\n{chroma_note}");
    }
    std::fs::write(out.join("tiers-report.md"), &md).unwrap();
    println!("{md}");
    eprintln!(
        "report written to {}",
        out.join("tiers-report.md").display()
    );
}
