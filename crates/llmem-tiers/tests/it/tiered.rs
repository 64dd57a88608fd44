//! The tiered store over RAM-backed stand-ins for cold and glacier (the real ones are tested
//! in `cold` and `glacier`): placement, supersede, migration, promotion, retention, archive,
//! snapshots, metrics and tenancy.

use std::sync::Arc;
use std::time::Duration;

use llmem_core::test_kit::store_conformance;
use llmem_core::{Filter, MemoryStore, Scope, SearchRequest, Timestamp};
use llmem_tiers::{
    HotStore, MigrationPolicy, RetentionPolicy, Tier, TierKind, TieredStore, WarmConfig, WarmStore,
};
use serde_json::json;

use crate::common::{later, rec, unit_vec};

/// A tiered store whose cold and glacier tiers are extra warm stores (named so).
pub fn stand_in(dir: &std::path::Path, warm_items: Option<usize>) -> TieredStore {
    let mut warm_cfg = WarmConfig::default().persist_in(dir.join("warm"));
    if let Some(n) = warm_items {
        warm_cfg = warm_cfg.max_items(n);
    }
    let warm = Arc::new(WarmStore::open(warm_cfg).unwrap());
    let cold = Arc::new(
        WarmStore::open(
            WarmConfig::default()
                .named("cold")
                .persist_in(dir.join("cold")),
        )
        .unwrap(),
    );
    let glacier = Arc::new(
        WarmStore::open(
            WarmConfig::default()
                .named("glacier")
                .persist_in(dir.join("glacier")),
        )
        .unwrap(),
    );
    TieredStore::builder()
        .hot(Arc::new(HotStore::new(100).unwrap()))
        .warm(warm)
        .cold(cold)
        .glacier(glacier)
        .state_dir(dir)
        .build()
        .unwrap()
}

pub async fn exercise(store: &TieredStore) {
    let s = Scope::tenant("alice");
    let dim = 16;
    // Placement.
    store
        .store(rec("alice", "w1", "warm note about squirrels", dim, 1))
        .await
        .unwrap();
    store
        .store_in(
            rec("alice", "c1", "cold note about the oak tree", dim, 2),
            TierKind::Cold,
        )
        .await
        .unwrap();
    store
        .store_in(
            rec("alice", "h1", "hot note in context", dim, 3),
            TierKind::Hot,
        )
        .await
        .unwrap();
    store
        .store_in(
            rec("alice", "g1", "glacier note from long ago", dim, 4),
            TierKind::Glacier,
        )
        .await
        .unwrap();
    for (id, tier) in [
        ("w1", TierKind::Warm),
        ("c1", TierKind::Cold),
        ("h1", TierKind::Hot),
        ("g1", TierKind::Glacier),
    ] {
        assert_eq!(
            store.locate(&s, id).await.unwrap().map(|x| x.0),
            Some(tier),
            "{id}"
        );
    }
    assert!(store.exists(&s, "g1").await.unwrap());
    assert_eq!(store.count(&s, &Filter::All).await.unwrap(), 4);

    // Search reaches every tier, glacier included.
    let hits = store
        .search(&s, &SearchRequest::vector(unit_vec(dim, 2), 10))
        .await
        .unwrap();
    assert_eq!(hits[0].record.id, "c1");
    assert!(hits.iter().any(|h| h.record.id == "g1"));
    let hits = store
        .search(&s, &SearchRequest::text("oak tree", 3))
        .await
        .unwrap();
    assert_eq!(hits[0].record.id, "c1");
    let hits = store
        .search(
            &s,
            &SearchRequest::vector(unit_vec(dim, 1), 2).with_text("oak"),
        )
        .await
        .unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| h.record.id.as_str()).collect();
    assert!(ids.contains(&"w1") && ids.contains(&"c1"), "{ids:?}");

    // Supersede: the old version stays findable, searches skip it by default.
    let new_id = store
        .update(
            &s,
            "c1",
            rec("alice", "c1v2", "cold note about the pine tree", dim, 2),
        )
        .await
        .unwrap();
    let old = store.get(&s, "c1").await.unwrap().unwrap();
    assert_eq!(old.superseded_by.as_deref(), Some(new_id.as_str()));
    let new = store.get(&s, &new_id).await.unwrap().unwrap();
    assert_eq!(new.supersedes.as_deref(), Some("c1"));
    let hits = store
        .search(&s, &SearchRequest::vector(unit_vec(dim, 2), 10))
        .await
        .unwrap();
    assert!(
        hits.iter().all(|h| h.record.id != "c1"),
        "superseded versions are not searched by default"
    );
    assert_eq!(hits[0].record.id, new_id);
    let mut all = SearchRequest::vector(unit_vec(dim, 2), 10);
    all.include_superseded = true;
    assert!(
        store
            .search(&s, &all)
            .await
            .unwrap()
            .iter()
            .any(|h| h.record.id == "c1")
    );

    // Tenancy: bob sees, changes and deletes nothing of alice's.
    let b = Scope::tenant("bob");
    store
        .store(rec("bob", "b1", "bob's squirrels", dim, 1))
        .await
        .unwrap();
    assert!(store.get(&b, "w1").await.unwrap().is_none());
    // Ids are unique across tenants: bob cannot take over alice's records, whichever tier
    // holds them and whichever tier he writes to.
    for (id, tier) in [
        ("w1", TierKind::Warm),
        ("c1", TierKind::Warm),
        ("c1", TierKind::Cold),
        ("g1", TierKind::Cold),
        ("h1", TierKind::Glacier),
    ] {
        assert!(store.exists(&s, id).await.unwrap(), "alice has {id}");
        let err = store
            .store_in(rec("bob", id, "takeover", dim, 5), tier)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("another tenant"), "{id}: {err}");
        // `locate` reads without counting toward promotion.
        assert_eq!(
            store.locate(&s, id).await.unwrap().unwrap().1.tenant,
            "alice",
            "{id} is still alice's"
        );
    }
    assert!(
        store
            .update(&b, "w1", rec("bob", "x", "hijack", dim, 9))
            .await
            .is_err()
    );
    assert_eq!(
        store
            .delete(&b, &["w1".into(), "c1".into(), "g1".into()])
            .await
            .unwrap(),
        0
    );
    let f = Filter::parse(&json!({"tenant": "alice"})).unwrap();
    assert_eq!(store.count(&b, &f).await.unwrap(), 0);
    assert_eq!(store.query(&b, &Filter::All, None).await.unwrap().len(), 1);
    let hits = store
        .search(
            &b,
            &SearchRequest::vector(unit_vec(dim, 2), 10).with_text("oak tree squirrels"),
        )
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.record.tenant == "bob"));
    assert_eq!(store.delete_by_filter(&b, &Filter::All).await.unwrap(), 1);
    assert!(
        store.exists(&s, "w1").await.unwrap(),
        "alice's records survived bob's delete_by_filter"
    );
}

#[tokio::test]
async fn tiered_store_conforms_as_a_memory_store_across_tiers() {
    let dir = tempfile::tempdir().unwrap();
    // Two records fit in warm: the suite's other records are demoted to cold as it writes, so
    // its reads, filters, searches and deletes run across tiers.
    let store = stand_in(dir.path(), Some(2));
    store_conformance(&store).await;
    let dyn_store: Arc<dyn MemoryStore> = Arc::new(store);
    assert_eq!(dyn_store.name(), "tiered");
    let caps = dyn_store.capabilities();
    assert!(caps.vector_search && caps.text_search && caps.persistent && caps.snapshots);
}

#[tokio::test]
async fn reads_through_the_store_trait_span_tiers_and_promote() {
    let dir = tempfile::tempdir().unwrap();
    let store = stand_in(dir.path(), None);
    let s = Scope::tenant("u");
    store.store(rec("u", "w", "warm", 8, 1)).await.unwrap();
    store
        .store_in(rec("u", "c", "cold", 8, 2), TierKind::Cold)
        .await
        .unwrap();
    store
        .store_in(rec("u", "g", "glacier", 8, 3), TierKind::Glacier)
        .await
        .unwrap();
    let as_store: &dyn MemoryStore = &store;
    let ids = ["g".to_owned(), "nope".into(), "w".into(), "c".into()];
    for _ in 0..3 {
        let got = as_store.get(&s, &ids).await.unwrap();
        let got: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(got, ["g", "w", "c"], "order asked, unknown skipped");
    }
    // Three reads (the default policy) moved the cold and glacier records to warm.
    for id in ["g", "c"] {
        assert_eq!(
            store.locate(&s, id).await.unwrap().unwrap().0,
            TierKind::Warm,
            "{id} promoted"
        );
    }
    assert_eq!(as_store.stats().await.unwrap().items, 3);
    assert_eq!(
        as_store.scan_all(&Filter::All, None).await.unwrap().len(),
        3
    );
}

#[tokio::test]
async fn placement_supersede_search_and_tenancy() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&stand_in(dir.path(), None)).await;
}

#[tokio::test]
async fn migration_follows_age_thresholds_and_reads_promote() {
    let dir = tempfile::tempdir().unwrap();
    let store = stand_in(dir.path(), None);
    let s = Scope::tenant("u");
    let t0 = Timestamp::now();
    let old = Timestamp(t0.0 - 100 * 3_600_000);
    store
        .store_in(
            rec("u", "h", "hot", 8, 1).with_created_at(old),
            TierKind::Hot,
        )
        .await
        .unwrap();
    store
        .store(rec("u", "w", "warm", 8, 2).with_created_at(old))
        .await
        .unwrap();
    store.store(rec("u", "fresh", "fresh", 8, 3)).await.unwrap();
    let report = store.migrate_at(t0).await.unwrap();
    // Default policy: hot→warm 24 h, warm→cold 72 h, cold→glacier 30 days; one pass
    // cascades, so the 100-hour-old records end in cold.
    assert_eq!(
        report.moved,
        vec![
            (TierKind::Hot, TierKind::Warm, 1),
            (TierKind::Warm, TierKind::Cold, 2)
        ]
    );
    assert_eq!(
        store.locate(&s, "h").await.unwrap().unwrap().0,
        TierKind::Cold
    );
    assert_eq!(
        store.locate(&s, "fresh").await.unwrap().unwrap().0,
        TierKind::Warm
    );
    let report = store.migrate_at(later(t0, 31 * 24)).await.unwrap();
    // `fresh` (untouched for 31 days) cascades warm → cold → glacier with the other two.
    assert_eq!(
        report.moved,
        vec![
            (TierKind::Warm, TierKind::Cold, 1),
            (TierKind::Cold, TierKind::Glacier, 3)
        ]
    );

    // Three reads from glacier bring a record back to warm.
    for i in 0..3 {
        assert_eq!(
            store.locate(&s, "w").await.unwrap().unwrap().0,
            TierKind::Glacier,
            "read {i}"
        );
        assert!(store.get(&s, "w").await.unwrap().is_some());
    }
    assert_eq!(
        store.locate(&s, "w").await.unwrap().unwrap().0,
        TierKind::Warm
    );

    let m = store.metrics().await.unwrap();
    let glacier = m.iter().find(|m| m.tier == "glacier").unwrap();
    assert!(glacier.hits >= 3 && m[0].misses >= 3, "{m:?}");
    assert!(m.iter().all(|t| t.ops > 0 && t.p99_us >= t.p50_us), "{m:?}");
}

#[tokio::test]
async fn lru_demotion_goes_to_cold_and_usage_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = stand_in(dir.path(), Some(5));
    let s = Scope::tenant("u");
    for i in 0..12u64 {
        store
            .store(rec("u", &format!("r{i}"), "text", 8, i))
            .await
            .unwrap();
    }
    let m = store.metrics().await.unwrap();
    let warm = m.iter().find(|m| m.tier == "warm").unwrap();
    let cold = m.iter().find(|m| m.tier == "cold").unwrap();
    assert_eq!((warm.items, cold.items), (5, 7));
    assert_eq!(
        store.locate(&s, "r0").await.unwrap().unwrap().0,
        TierKind::Cold
    );
    assert_eq!(
        store.count(&s, &Filter::All).await.unwrap(),
        12,
        "nothing was dropped"
    );
}

#[tokio::test]
async fn a_batch_larger_than_warm_loses_nothing_and_replaces_older_copies() {
    let dir = tempfile::tempdir().unwrap();
    let store = stand_in(dir.path(), Some(5));
    let s = Scope::tenant("u");
    // An older version of r3 sits in glacier.
    store
        .store_in(rec("u", "r3", "old r3", 8, 3), TierKind::Glacier)
        .await
        .unwrap();
    let batch: Vec<_> = (0..12u64)
        .map(|i| rec("u", &format!("r{i}"), &format!("new r{i}"), 8, i))
        .collect();
    store.store_batch(batch).await.unwrap();
    assert_eq!(
        store.count(&s, &Filter::All).await.unwrap(),
        12,
        "the records demoted while the batch was written were kept"
    );
    for i in 0..12 {
        let r = store.get(&s, &format!("r{i}")).await.unwrap().unwrap();
        assert_eq!(r.text, format!("new r{i}"));
    }
}

#[tokio::test]
async fn retention_archive_snapshot_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let store = stand_in(dir.path(), None);
    let s = Scope::tenant("u");
    let t0 = Timestamp::now();
    store
        .store(rec("u", "ancient", "old", 8, 1).with_created_at(Timestamp(t0.0 - 400 * 86_400_000)))
        .await
        .unwrap();
    store
        .store_in(
            rec("v", "ancient-v", "old", 8, 1).with_created_at(Timestamp(t0.0 - 400 * 86_400_000)),
            TierKind::Cold,
        )
        .await
        .unwrap();
    store
        .store(rec("u", "recent", "new", 8, 2).with_metadata("project", "x"))
        .await
        .unwrap();
    let gone = store
        .retention(&RetentionPolicy {
            max_age: Duration::from_secs(365 * 86_400),
            filter: Filter::All,
        })
        .await
        .unwrap();
    assert_eq!(gone, 2, "retention spans tiers and tenants");
    assert!(!store.exists(&s, "ancient").await.unwrap());

    let snap = store.snapshot().await.unwrap();
    let f = Filter::parse(&json!({"project": "x"})).unwrap();
    assert_eq!(store.archive(&s, &f).await.unwrap(), 1);
    assert_eq!(
        store.locate(&s, "recent").await.unwrap().unwrap().0,
        TierKind::Glacier
    );
    store.delete(&s, &["recent".into()]).await.unwrap();
    assert!(!store.exists(&s, "recent").await.unwrap());
    store.restore(&snap).await.unwrap();
    assert_eq!(
        store.locate(&s, "recent").await.unwrap().unwrap().0,
        TierKind::Warm,
        "restored to warm"
    );
    assert!(store.restore("nope").await.is_err());

    // gc keeps the working set's best matches in hot.
    for i in 10..20u64 {
        store
            .store_in(rec("u", &format!("h{i}"), "ctx", 8, i), TierKind::Hot)
            .await
            .unwrap();
    }
    let moved = store.gc(&s, &unit_vec(8, 15), 3).await.unwrap();
    assert_eq!(moved, 7);
    assert_eq!(
        store.locate(&s, "h15").await.unwrap().unwrap().0,
        TierKind::Hot
    );
    let _ = MigrationPolicy::default();
    let cold: Arc<dyn Tier> = store.tier(TierKind::Cold).unwrap();
    assert!(cold.capabilities().persistent);
}
