//! The warm and hot tiers: conformance, exact search against brute force, capacity, snapshots.

use std::sync::Arc;

use llmem_core::test_kit::store_conformance;
use llmem_core::{Filter, MemoryStore, Scope, SearchRequest};
use llmem_tiers::{HotStore, Tier, WarmConfig, WarmStore};
use serde_json::json;

use crate::common::{rec, unit_vec};

#[tokio::test]
async fn warm_in_memory_conforms() {
    store_conformance(&WarmStore::in_memory()).await;
}

#[tokio::test]
async fn warm_with_a_write_ahead_log_conforms_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let warm = WarmStore::open(WarmConfig::default().persist_in(dir.path())).unwrap();
    store_conformance(&warm).await;
    warm.put(vec![rec("u", "a", "kept across reopen", 8, 1)])
        .await
        .unwrap();
    drop(warm);
    let again = WarmStore::open(WarmConfig::default().persist_in(dir.path())).unwrap();
    let got = again.get(&Scope::tenant("u"), &["a".into()]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].embedding, Some(unit_vec(8, 1)));
    assert!(again.capabilities().persistent);
}

#[tokio::test]
async fn hot_conforms() {
    store_conformance(&HotStore::new(1000).unwrap()).await;
}

#[tokio::test]
async fn exact_search_equals_brute_force_with_a_filter() {
    let dim = 48;
    let warm = WarmStore::in_memory();
    let recs: Vec<_> = (0..2000u64)
        .map(|i| {
            rec(
                if i % 5 == 0 { "other" } else { "u" },
                &format!("r{i}"),
                "x",
                dim,
                i,
            )
            .with_metadata("even", i % 2 == 0)
        })
        .collect();
    warm.put(recs.clone()).await.unwrap();
    let q = unit_vec(dim, 99_999);
    let f = Filter::parse(&json!({"even": true})).unwrap();
    let hits = warm
        .search(
            &Scope::tenant("u"),
            &SearchRequest::vector(q.clone(), 10).with_filter(f),
        )
        .await
        .unwrap();
    let mut want: Vec<(f32, String)> = recs
        .iter()
        .filter(|r| r.tenant == "u" && r.metadata["even"] == json!(true))
        .map(|r| {
            (
                r.embedding
                    .as_ref()
                    .unwrap()
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| a * b)
                    .sum::<f32>(),
                r.id.clone(),
            )
        })
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0));
    let got: Vec<&str> = hits.iter().map(|h| h.record.id.as_str()).collect();
    let want: Vec<&str> = want.iter().take(10).map(|w| w.1.as_str()).collect();
    assert_eq!(got, want);
    assert!((hits[0].score - 1.0).abs() < 1.0, "cosine scores");
}

#[tokio::test]
async fn byte_capacity_demotes_and_stats_report_usage() {
    let sink = Arc::new(WarmStore::open(WarmConfig::default().named("cold")).unwrap());
    let one = rec("u", "r0", "some text", 16, 0).approx_bytes() as u64;
    let warm = WarmStore::open(WarmConfig::default().max_bytes(one * 10 + one / 2)).unwrap();
    warm.set_demotion_sink(sink.clone());
    for i in 0..25u64 {
        warm.put(vec![rec("u", &format!("r{i}"), "some text", 16, i)])
            .await
            .unwrap();
    }
    let s = warm.stats().await.unwrap();
    assert_eq!(s.items, 10, "{s:?}");
    assert!(s.bytes <= s.capacity_bytes.unwrap());
    let moved = sink
        .query(&Scope::tenant("u"), &Filter::All, None)
        .await
        .unwrap();
    assert_eq!(moved.len(), 15, "the oldest 15 went to the sink");
    assert!(
        moved
            .iter()
            .all(|r| r.id.trim_start_matches('r').parse::<u64>().unwrap() < 15)
    );
}

#[tokio::test]
async fn snapshots_roll_back_persistently() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WarmConfig::default().persist_in(dir.path());
    let warm = WarmStore::open(cfg.clone()).unwrap();
    let s = Scope::tenant("u");
    warm.put(vec![rec("u", "a", "first", 4, 1)]).await.unwrap();
    let snap = warm.snapshot().await.unwrap();
    warm.put(vec![rec("u", "b", "second", 4, 2)]).await.unwrap();
    warm.delete(&s, &["a".into()]).await.unwrap();
    warm.restore(&snap).await.unwrap();
    let ids: Vec<String> = warm
        .query(&s, &Filter::All, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["a"]);
    drop(warm);
    let warm = WarmStore::open(cfg).unwrap();
    assert_eq!(
        warm.count(&s, &Filter::All).await.unwrap(),
        1,
        "the restore is durable"
    );
    assert!(warm.restore("no-such-snapshot").await.is_err());
}

#[tokio::test]
async fn hot_scores_the_working_set() {
    let hot = HotStore::new(100).unwrap();
    hot.put(
        (0..20u64)
            .map(|i| rec("u", &format!("r{i}"), "x", 32, i))
            .collect(),
    )
    .await
    .unwrap();
    let scored = hot.score(&Scope::tenant("u"), &unit_vec(32, 7)).unwrap();
    assert_eq!(scored.len(), 20);
    assert_eq!(scored[0].0, "r7");
    assert!(scored.windows(2).all(|w| w[0].1 >= w[1].1));
    let out = hot
        .gc_candidates(&Scope::tenant("u"), &unit_vec(32, 7), 5)
        .await
        .unwrap();
    assert_eq!(out.len(), 15);
    assert!(!out.contains(&"r7".to_owned()));
    assert!(
        hot.score(&Scope::tenant("nobody"), &unit_vec(32, 7))
            .unwrap()
            .is_empty()
    );
}

/// A scoring engine that keeps its own copy of the matrix and counts how often it is loaded.
#[derive(Debug, Default)]
struct CountingScorer {
    matrix: parking_lot::Mutex<(Vec<f32>, usize)>,
    loads: std::sync::atomic::AtomicUsize,
}

impl llmem_core::VectorScorer for CountingScorer {
    fn name(&self) -> &str {
        "counting"
    }
    fn load(&self, rows: &[f32], dim: usize) -> llmem_core::Result<()> {
        llmem_core::scorer::check_matrix(rows, dim)?;
        *self.matrix.lock() = (rows.to_vec(), dim);
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    fn score(&self, query: &[f32]) -> llmem_core::Result<Vec<f32>> {
        let m = self.matrix.lock();
        Ok(m.0
            .chunks_exact(m.1)
            .map(|row| row.iter().zip(query).map(|(a, b)| a * b).sum())
            .collect())
    }
}

#[tokio::test]
async fn hot_scores_on_an_engine_loaded_once_per_change() {
    let engine = Arc::new(CountingScorer::default());
    let hot = HotStore::new(100).unwrap().with_scorer(engine.clone());
    let cpu = HotStore::new(100).unwrap();
    assert_eq!(hot.scorer_name(), "counting");
    assert_eq!(cpu.scorer_name(), "cpu");
    let loads = || engine.loads.load(std::sync::atomic::Ordering::Relaxed);
    let u = Scope::tenant("u");
    assert!(hot.score(&u, &unit_vec(32, 1)).unwrap().is_empty());
    let recs: Vec<_> = (0..30u64)
        .map(|i| {
            rec(
                if i % 3 == 0 { "v" } else { "u" },
                &format!("r{i}"),
                "x",
                32,
                i,
            )
        })
        .collect();
    hot.put(recs.clone()).await.unwrap();
    cpu.put(recs).await.unwrap();
    // The same ranking as the CPU loop, for the caller's tenant only.
    for q in [4u64, 7, 100] {
        let a = hot.score(&u, &unit_vec(32, q)).unwrap();
        let b = cpu.score(&u, &unit_vec(32, q)).unwrap();
        assert_eq!(a.len(), 20);
        assert_eq!(
            a.iter().map(|x| &x.0).collect::<Vec<_>>(),
            b.iter().map(|x| &x.0).collect::<Vec<_>>()
        );
        assert!(a.iter().zip(&b).all(|(x, y)| (x.1 - y.1).abs() < 1e-5));
        assert!(
            a.iter()
                .all(|(id, _)| id.trim_start_matches('r').parse::<u64>().unwrap() % 3 != 0)
        );
    }
    assert_eq!(
        loads(),
        1,
        "three queries on an unchanged matrix load it once"
    );
    // A change reloads; a delete and a new record show in the next ranking.
    hot.delete(&u, &["r4".into()]).await.unwrap();
    hot.put(vec![rec("u", "new", "x", 32, 4)]).await.unwrap();
    let a = hot.score(&u, &unit_vec(32, 4)).unwrap();
    assert_eq!(a[0].0, "new");
    assert!(!a.iter().any(|(id, _)| id == "r4"));
    assert_eq!(loads(), 2);
    let out = hot.gc_candidates(&u, &unit_vec(32, 4), 5).await.unwrap();
    assert_eq!(out.len(), 15);
    assert!(!out.contains(&"new".to_owned()));
    assert_eq!(loads(), 2);
    // A wrong-sized query is an error that says so, not a panic.
    let e = hot.score(&u, &unit_vec(16, 1)).unwrap_err().to_string();
    assert!(e.contains("16 dimensions"), "{e}");
}
