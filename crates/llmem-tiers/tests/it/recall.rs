//! Recall (issue 24): a search hit is a read in every tier, so a recalled memory is never
//! demoted for age; access times and promotion counters survive a restart; the glacier tier is
//! searchable through its index, reads back only the batches that hold the hits and promotes
//! what is recalled; with a key, nothing of a record is written in the clear; a SIGKILL during
//! a glacier recall loses nothing.
//!
//! The kill test re-executes the test binary with `LLMEM_TIERS_RECALL_CHILD_DIR` set;
//! `child_recall` then acts as the child (in a normal run it returns at once).

use std::path::Path;
use std::sync::Arc;

use llmem_core::{Filter, MemoryRecord, MemoryStore, Scope, SearchRequest, Timestamp};
use llmem_tiers::{TierKind, WarmConfig, WarmStore};

use crate::common::rec;
use crate::tiered::stand_in;

const DAY: i64 = 86_400_000;

/// `r` created and last accessed at `at`.
fn aged(mut r: MemoryRecord, at: Timestamp) -> MemoryRecord {
    r.created_at = at;
    r.accessed_at = at;
    r
}

fn warm_in(dir: &Path) -> Arc<WarmStore> {
    Arc::new(WarmStore::open(WarmConfig::default().persist_in(dir.join("warm"))).unwrap())
}

/// The record `id` as warm holds it, read without counting a read.
async fn in_warm(w: &(impl MemoryStore + ?Sized), id: &str) -> MemoryRecord {
    w.query(&Scope::tenant("u"), &Filter::All, None)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("{id} is not in warm"))
}

#[tokio::test]
async fn warm_search_hits_are_reads_that_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scope::tenant("u");
    let old = Timestamp(Timestamp::now().0 - 10 * DAY);
    {
        let w = warm_in(dir.path());
        w.put(vec![
            aged(rec("u", "a", "the pottery class on tuesday", 8, 1), old),
            aged(rec("u", "b", "nothing to see", 8, 2), old),
        ])
        .await
        .unwrap();
        for _ in 0..3 {
            let hits = w
                .search(&s, &SearchRequest::text("pottery", 5))
                .await
                .unwrap();
            assert_eq!(hits.len(), 1);
        }
        let a = in_warm(&w, "a").await;
        assert_eq!(a.access_count, 3, "each hit is a read");
        assert!(a.accessed_at > old);
        assert_eq!(in_warm(&w, "b").await.access_count, 0);
        w.flush_touches().unwrap();
    }
    // Past `TOUCH_FLUSH_AT` records read, a read logs the access fields by itself.
    {
        let w = warm_in(dir.path());
        let bulk: Vec<_> = (0..1100u64)
            .map(|i| aged(rec("u", &format!("n{i}"), "a bulk note", 8, i), old))
            .collect();
        w.put(bulk).await.unwrap();
        let hits = w
            .search(&s, &SearchRequest::text("bulk", 2000))
            .await
            .unwrap();
        assert_eq!(hits.len(), 1100);
        // Dropped without a flush (as a crash would).
    }
    let w = warm_in(dir.path());
    let a = in_warm(&w, "a").await;
    assert_eq!(a.access_count, 3, "the access count survived the restart");
    assert!(a.accessed_at > old, "so did the access time");
    let b = in_warm(&w, "b").await;
    assert_eq!((b.access_count, b.accessed_at), (0, old));
    for i in [0, 512, 1099] {
        assert_eq!(in_warm(&w, &format!("n{i}")).await.access_count, 1, "n{i}");
    }
}

/// Day after day (synthetic times, in the past), one record is recalled by a search and the
/// other is not: the recalled one never leaves warm, the other goes to cold, then glacier.
#[tokio::test]
async fn a_record_searched_every_day_never_leaves_warm() {
    let dir = tempfile::tempdir().unwrap();
    let store = stand_in(dir.path(), None);
    let s = Scope::tenant("u");
    let t0 = Timestamp(Timestamp::now().0 - 60 * DAY);
    store
        .store(aged(rec("u", "daily", "the pottery class", 8, 1), t0))
        .await
        .unwrap();
    store
        .store(aged(rec("u", "idle", "gardening notes", 8, 2), t0))
        .await
        .unwrap();
    for d in 0..=40 {
        let hits = store
            .search(&s, &SearchRequest::text("pottery", 3))
            .await
            .unwrap();
        assert_eq!(hits[0].record.id, "daily");
        store.migrate_at(Timestamp(t0.0 + d * DAY)).await.unwrap();
        assert_eq!(
            store.locate(&s, "daily").await.unwrap().unwrap().0,
            TierKind::Warm,
            "day {d}"
        );
    }
    assert_eq!(
        store.locate(&s, "idle").await.unwrap().unwrap().0,
        TierKind::Glacier,
        "the record nobody recalled was archived on the policy's timers"
    );
}

#[cfg(feature = "glacier")]
mod archive {
    use std::io::{BufRead, BufReader, Write};

    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    use llmem_core::{Filter, MemoryStore, Scope, SearchRequest, Timestamp};
    use llmem_tiers::glacier::parse_key;
    use llmem_tiers::{GlacierConfig, GlacierStore, MigrationPolicy, TierKind, TieredStore};
    use serde_json::json;

    use super::{DAY, aged, in_warm, warm_in};
    use crate::common::{rec, unit_vec};
    use crate::glacier::{create_bucket, s3_config, start_moto};

    fn local(dir: &Path) -> GlacierConfig {
        GlacierConfig::new(dir.join("glacier").to_str().unwrap())
    }

    /// Every regular file under `dir`, recursively.
    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// Three batches of 50 records (`r0`…`r149`, 16-d, `n` in the metadata); `r60` is the
    /// only one about pottery.
    async fn three_batches(g: &GlacierStore) {
        for b in 0..3u64 {
            let recs = (0..50u64)
                .map(|i| {
                    let n = b * 50 + i;
                    let text = if n == 60 {
                        "the pottery class meets on tuesday".to_owned()
                    } else {
                        format!("note {n} about ordinary things")
                    };
                    rec("u", &format!("r{n}"), &text, 16, n)
                })
                .collect();
            g.put(recs).await.unwrap();
        }
    }

    #[tokio::test]
    async fn glacier_search_reads_only_the_batch_of_its_hits_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let g = GlacierStore::open(local(dir.path())).await.unwrap();
        let caps = g.capabilities();
        assert!(caps.vector_search && caps.text_search);
        three_batches(&g).await;
        let sizes: Vec<u64> = files_under(&dir.path().join("glacier/batches"))
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect();
        assert_eq!(sizes.len(), 3);
        let s = Scope::tenant("u");
        let one_batch = |g: &GlacierStore, before: (u64, u64), what: &str| {
            assert_eq!(g.batches_read() - before.1, 1, "{what}: one batch read");
            assert!(
                sizes.contains(&(g.bytes_read() - before.0)),
                "{what}: the bytes of that batch"
            );
        };

        let before = (g.bytes_read(), g.batches_read());
        let hits = g
            .search(&s, &SearchRequest::text("pottery", 3))
            .await
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].record.id, "r60");
        assert_eq!(
            hits[0].record.embedding.as_deref(),
            Some(&unit_vec(16, 60)[..])
        );
        one_batch(&g, before, "text");

        let before = (g.bytes_read(), g.batches_read());
        let hits = g
            .search(&s, &SearchRequest::vector(unit_vec(16, 120), 1))
            .await
            .unwrap();
        assert_eq!(hits[0].record.id, "r120");
        assert!(
            hits[0].score > 0.999,
            "re-scored exactly: {}",
            hits[0].score
        );
        one_batch(&g, before, "vector");

        let before = (g.bytes_read(), g.batches_read());
        let req = SearchRequest::vector(unit_vec(16, 60), 1).with_text("pottery");
        let hits = g.search(&s, &req).await.unwrap();
        assert_eq!(hits[0].record.id, "r60");
        one_batch(&g, before, "hybrid");

        let f = Filter::parse(&json!({"n": {"$lt": 100}})).unwrap();
        let hits = g
            .search(
                &s,
                &SearchRequest::vector(unit_vec(16, 120), 3).with_filter(f),
            )
            .await
            .unwrap();
        assert_eq!(hits.len(), 3);
        assert!(
            hits.iter()
                .all(|h| h.record.metadata["n"].as_u64() < Some(100))
        );
        assert!(
            g.search(&Scope::tenant("v"), &SearchRequest::text("pottery", 3))
                .await
                .unwrap()
                .is_empty(),
            "another tenant finds nothing"
        );

        // A delete drops the id from the index, for good.
        assert_eq!(g.delete(&s, &["r60".into()]).await.unwrap(), 1);
        assert!(
            g.search(&s, &SearchRequest::text("pottery", 3))
                .await
                .unwrap()
                .is_empty()
        );
        drop(g);
        let g = GlacierStore::open(local(dir.path())).await.unwrap();
        assert_eq!(g.indexed(), Some(149));
        assert_eq!(g.batches_read(), 0, "the index was loaded, not rebuilt");
        assert!(
            g.search(&s, &SearchRequest::text("pottery", 3))
                .await
                .unwrap()
                .is_empty()
        );
        let hits = g
            .search(&s, &SearchRequest::vector(unit_vec(16, 7), 1))
            .await
            .unwrap();
        assert_eq!(hits[0].record.id, "r7");

        // An archive without an index (written before there was one) gets one at open.
        drop(g);
        std::fs::remove_file(dir.path().join("glacier/index.bin.zst")).unwrap();
        let g = GlacierStore::open(local(dir.path())).await.unwrap();
        assert_eq!(g.indexed(), Some(149));
        assert_eq!(g.batches_read(), 3, "rebuilt from the batches");
        let hits = g
            .search(&s, &SearchRequest::text("note 99 ordinary", 1))
            .await
            .unwrap();
        assert_eq!(hits[0].record.id, "r99");
        assert!(dir.path().join("glacier/index.bin.zst").exists());
    }

    #[tokio::test]
    async fn an_encrypted_archive_writes_nothing_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let key = parse_key(&"7e".repeat(32)).unwrap();
        let s = Scope::tenant("u");
        {
            let plain = GlacierStore::open(local(dir.path())).await.unwrap();
            plain
                .put(vec![rec("u", "p1", "written before the key", 8, 1)])
                .await
                .unwrap();
        }
        assert!(dir.path().join("glacier/index.bin.zst").exists());
        let g = GlacierStore::open(local(dir.path()).with_key(key))
            .await
            .unwrap();
        assert!(
            !dir.path().join("glacier/index.bin.zst").exists(),
            "the plain index is replaced by a sealed one once a key is set"
        );
        assert!(dir.path().join("glacier/index.bin.zst.aes").exists());
        g.put(vec![
            rec("u", "s1", "zanzibarite smuggling route", 8, 2),
            rec("u", "s2", "another zanzibarite note", 8, 3),
        ])
        .await
        .unwrap();
        let hits = g
            .search(&s, &SearchRequest::text("zanzibarite route", 2))
            .await
            .unwrap();
        assert_eq!(hits[0].record.id, "s1");
        assert_eq!(
            g.search(&s, &SearchRequest::text("before key", 1))
                .await
                .unwrap()[0]
                .record
                .id,
            "p1"
        );
        for f in files_under(dir.path()) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !contains(&bytes, b"zanzibar"),
                "{} holds the text in the clear",
                f.display()
            );
        }
        drop(g);
        let nokey = GlacierStore::open(local(dir.path())).await.unwrap();
        assert_eq!(nokey.count(&s, &Filter::All).await.unwrap(), 3);
        assert_eq!(nokey.indexed(), None);
        let err = nokey
            .search(&s, &SearchRequest::text("zanzibarite", 1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
        let again = GlacierStore::open(local(dir.path()).with_key(key))
            .await
            .unwrap();
        assert_eq!(again.indexed(), Some(3));
    }

    #[tokio::test]
    async fn glacier_on_moto_s3_with_a_key_is_searchable_and_sealed() {
        let moto = start_moto();
        create_bucket(&moto, "llmem-recall");
        let key = parse_key(&"3c".repeat(32)).unwrap();
        let cfg = || s3_config(&moto, "llmem-recall").with_key(key);
        let s = Scope::tenant("u");
        {
            let g = GlacierStore::open(cfg()).await.unwrap();
            three_batches(&g).await;
            g.put(vec![rec("u", "z", "the zanzibarite ledger", 16, 500)])
                .await
                .unwrap();
        }
        let g = GlacierStore::open(cfg()).await.unwrap();
        assert_eq!(g.indexed(), Some(151));
        assert_eq!(g.batches_read(), 0);
        let hits = g
            .search(&s, &SearchRequest::text("zanzibarite", 1))
            .await
            .unwrap();
        assert_eq!(hits[0].record.id, "z");
        assert_eq!(g.batches_read(), 1, "only the batch of the hit");
        let hits = g
            .search(
                &s,
                &SearchRequest::vector(unit_vec(16, 60), 1).with_text("pottery"),
            )
            .await
            .unwrap();
        assert_eq!(hits[0].record.id, "r60");
        assert_eq!(g.batches_read(), 2);

        // Every object of the bucket, read with the archive's credentials.
        let s3 = crate::glacier::s3_client(&moto, "llmem-recall");
        let objects: Vec<object_store::ObjectMeta> = s3.list(None).try_collect().await.unwrap();
        let keys: Vec<String> = objects.iter().map(|o| o.location.to_string()).collect();
        assert!(
            keys.contains(&"archive/index.bin.zst.aes".to_owned()),
            "{keys:?}"
        );
        assert!(
            !keys.contains(&"archive/index.bin.zst".to_owned()),
            "{keys:?}"
        );
        assert!(keys.len() >= 6, "{keys:?}");
        for o in objects {
            let body = s3.get(&o.location).await.unwrap().bytes().await.unwrap();
            assert!(!body.is_empty(), "{}", o.location);
            assert!(
                !contains(&body, b"zanzibar") && !contains(&body, b"pottery"),
                "object {} holds text in the clear",
                o.location
            );
        }
    }

    /// Warm (with a log) and glacier on a local directory, counters in `dir`.
    async fn tiered(dir: &Path, promote: Option<u64>) -> (TieredStore, Arc<GlacierStore>) {
        let glacier = Arc::new(GlacierStore::open(local(dir)).await.unwrap());
        let store = TieredStore::builder()
            .warm(warm_in(dir))
            .glacier(glacier.clone())
            .policy(MigrationPolicy {
                promote_after_accesses: promote,
                ..MigrationPolicy::default()
            })
            .state_dir(dir)
            .build()
            .unwrap();
        (store, glacier)
    }

    #[tokio::test]
    async fn tiered_search_recalls_from_glacier_and_promotes_after_n_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (store, glacier) = tiered(dir.path(), Some(3)).await;
        let s = Scope::tenant("u");
        for i in 0..20u64 {
            let text = if i == 3 {
                "the pottery class meets on tuesday".to_owned()
            } else {
                format!("note {i}")
            };
            store
                .store(rec("u", &format!("r{i}"), &text, 16, i).with_metadata("group", i / 10))
                .await
                .unwrap();
        }
        // Two archive batches.
        for group in 0..2 {
            let f = Filter::parse(&json!({ "group": group })).unwrap();
            assert_eq!(store.archive(&s, &f).await.unwrap(), 10);
        }
        assert_eq!(glacier.indexed(), Some(20));
        let req = SearchRequest::vector(unit_vec(16, 3), 1).with_text("pottery");
        for i in 0..3 {
            let before = glacier.batches_read();
            let hits = store.search(&s, &req).await.unwrap();
            assert_eq!(hits[0].record.id, "r3", "search {i}");
            if i < 2 {
                assert_eq!(glacier.batches_read() - before, 1, "only r3's batch");
                assert_eq!(
                    store.locate(&s, "r3").await.unwrap().unwrap().0,
                    TierKind::Glacier
                );
            }
        }
        let (tier, r3) = store.locate(&s, "r3").await.unwrap().unwrap();
        assert_eq!(tier, TierKind::Warm, "three recalls brought it back");
        assert!(r3.access_count >= 3);
        assert_eq!(glacier.indexed(), Some(19));
        // The record stays recallable from warm.
        let hits = store
            .search(&s, &SearchRequest::text("pottery", 1))
            .await
            .unwrap();
        assert_eq!(hits[0].record.id, "r3");
    }

    #[tokio::test]
    async fn promotion_counters_and_access_times_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scope::tenant("u");
        {
            let (store, _) = tiered(dir.path(), Some(3)).await;
            store
                .store_in(
                    rec("u", "g", "an archived note about kayaks", 8, 1),
                    TierKind::Glacier,
                )
                .await
                .unwrap();
            store
                .store(rec("u", "w", "a warm note about kayaks", 8, 2))
                .await
                .unwrap();
            for _ in 0..2 {
                let hits = store
                    .search(&s, &SearchRequest::text("kayaks", 5))
                    .await
                    .unwrap();
                assert_eq!(hits.len(), 2);
            }
            assert_eq!(
                store.locate(&s, "g").await.unwrap().unwrap().0,
                TierKind::Glacier
            );
            store.flush_reads().await.unwrap();
        }
        let (store, _) = tiered(dir.path(), Some(3)).await;
        let warm = store.tier(TierKind::Warm).unwrap();
        assert_eq!(in_warm(&*warm, "w").await.access_count, 2);
        // The third read, after the restart, promotes.
        let hits = store
            .search(&s, &SearchRequest::text("kayaks", 5))
            .await
            .unwrap();
        assert_eq!(hits.len(), 2);
        let (tier, g) = store.locate(&s, "g").await.unwrap().unwrap();
        assert_eq!(tier, TierKind::Warm, "two reads before the restart counted");
        assert!(g.access_count >= 3, "{}", g.access_count);
    }

    #[cfg(feature = "lance")]
    #[tokio::test]
    async fn cold_hits_are_applied_in_one_commit_and_keep_records_out_of_glacier() {
        use llmem_tiers::{ColdConfig, ColdStore};
        let dir = tempfile::tempdir().unwrap();
        let cold = Arc::new(
            ColdStore::open(ColdConfig::new(dir.path().join("cold")))
                .await
                .unwrap(),
        );
        let glacier = Arc::new(GlacierStore::open(local(dir.path())).await.unwrap());
        let store = TieredStore::builder()
            .warm(warm_in(dir.path()))
            .cold(cold.clone())
            .glacier(glacier)
            .policy(MigrationPolicy {
                promote_after_accesses: None,
                ..MigrationPolicy::default()
            })
            .state_dir(dir.path())
            .build()
            .unwrap();
        let s = Scope::tenant("u");
        let t0 = Timestamp(Timestamp::now().0 - 60 * DAY);
        store
            .store_batch_in(
                vec![
                    aged(rec("u", "d1", "pottery class one", 8, 1), t0),
                    aged(rec("u", "d2", "pottery wheel two", 8, 2), t0),
                    aged(rec("u", "idle", "gardening notes", 8, 3), t0),
                ],
                TierKind::Cold,
            )
            .await
            .unwrap();
        for d in 0..=40i64 {
            let v = cold.version().await;
            let hits = store
                .search(&s, &SearchRequest::text("pottery", 5))
                .await
                .unwrap();
            assert_eq!(hits.len(), 2, "day {d}");
            assert_eq!(cold.version().await, v, "a search writes nothing");
            store.migrate_at(Timestamp(t0.0 + d * DAY)).await.unwrap();
            if d == 0 {
                assert_eq!(
                    cold.version().await,
                    v + 1,
                    "both records' reads in one merge-insert"
                );
            }
            for id in ["d1", "d2"] {
                assert_eq!(
                    store.locate(&s, id).await.unwrap().unwrap().0,
                    TierKind::Cold,
                    "{id} on day {d}"
                );
            }
        }
        assert_eq!(
            store.locate(&s, "idle").await.unwrap().unwrap().0,
            TierKind::Glacier
        );
        drop(store);
        drop(cold);
        let cold = ColdStore::open(ColdConfig::new(dir.path().join("cold")))
            .await
            .unwrap();
        let d1 = cold.get(&s, &["d1".into()]).await.unwrap().remove(0);
        assert_eq!(d1.access_count, 41, "one read a day, kept by Lance");
        assert!(d1.accessed_at.0 > t0.0 + 40 * DAY);
    }

    /// The glacier figures of `docs/benchmarks.md` where no release build can run: hybrid
    /// top-10 searches over `N` (default 100,000) archived records, 384-d random unit vectors
    /// and short texts, in `BATCHES` (default 4) batches on a local directory; p50/p95 latency and bytes of batch
    /// objects fetched per hit. `benches/glacier.rs` measures the same in release.
    /// `cargo xtask test -- recall::archive::glacier_recall_measured --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "a measurement (minutes in a debug build), for docs/benchmarks.md"]
    async fn glacier_recall_measured() {
        let n: u64 = std::env::var("N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let batches: u64 = std::env::var("BATCHES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        let dim = 384usize;
        let words = [
            "pottery", "kayak", "lisbon", "garden", "violin", "chess", "bakery", "tennis",
        ];
        let w = |k: u64| words[(k % words.len() as u64) as usize];
        let dir = tempfile::tempdir().unwrap();
        {
            let g = GlacierStore::open(local(dir.path())).await.unwrap();
            let per = n.div_ceil(batches);
            let t = std::time::Instant::now();
            for b in 0..batches {
                let recs = (b * per..((b + 1) * per).min(n))
                    .map(|i| {
                        let text =
                            format!("note {i}: {} and {} near {}", w(i), w(i / 8), w(i / 64));
                        rec("u", &format!("r{i}"), &text, dim, i)
                    })
                    .collect();
                g.put(recs).await.unwrap();
            }
            eprintln!(
                "archived {n} x {dim} in {batches} batches: {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        let size = |p: &str| std::fs::metadata(dir.path().join(p)).map_or(0, |m| m.len());
        let batch_bytes: u64 = files_under(&dir.path().join("glacier/batches"))
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        let t = std::time::Instant::now();
        let g = GlacierStore::open(local(dir.path())).await.unwrap();
        eprintln!(
            "open {:.0} ms; index object {:.1} MB; batches {:.1} MB",
            t.elapsed().as_secs_f64() * 1e3,
            size("glacier/index.bin.zst") as f64 / 1e6,
            batch_bytes as f64 / 1e6
        );
        let s = Scope::tenant("u");
        let mut times = Vec::new();
        let (mut hits, b0, n0) = (0usize, g.bytes_read(), g.batches_read());
        for qi in 0..20u64 {
            let target = (qi * 7919) % n;
            let mut v = unit_vec(dim, target);
            for (x, y) in v.iter_mut().zip(unit_vec(dim, 50_000_000 + qi)) {
                *x += 0.3 * y;
            }
            let req =
                SearchRequest::vector(v, 10).with_text(format!("note {target} {}", w(target)));
            let t = std::time::Instant::now();
            let h = g.search(&s, &req).await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(h[0].record.id, format!("r{target}"), "query {qi}");
            hits += h.len();
        }
        times.sort_by(f64::total_cmp);
        let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        let bytes = g.bytes_read() - b0;
        eprintln!(
            "hybrid top-10 over {n}: p50 {:.0} ms, p95 {:.0} ms; {:.2} batches and {:.1} MB read per query; {:.2} MB per hit",
            at(0.5),
            at(0.95),
            (g.batches_read() - n0) as f64 / times.len() as f64,
            bytes as f64 / times.len() as f64 / 1e6,
            bytes as f64 / hits as f64 / 1e6
        );
    }

    const CHILD_ENV: &str = "LLMEM_TIERS_RECALL_CHILD_DIR";

    /// The child: archives a record, then recalls it with a search (one read promotes it back
    /// to warm), over and over, saying what it did.
    #[tokio::test]
    async fn child_recall() {
        let Ok(dir) = std::env::var(CHILD_ENV) else {
            return;
        };
        let (store, _) = tiered(Path::new(&dir), Some(1)).await;
        let s = Scope::tenant("u");
        let mut out = std::io::stdout();
        for i in 0u64.. {
            let id = format!("k{i}");
            let text = format!("archived memory token{i}");
            store
                .store_in(rec("u", &id, &text, 16, i), TierKind::Glacier)
                .await
                .unwrap();
            writeln!(out, "archived {id}").unwrap();
            out.flush().unwrap();
            let hits = store
                .search(&s, &SearchRequest::text(format!("token{i}"), 1))
                .await
                .unwrap();
            assert_eq!(hits[0].record.id, id);
            writeln!(out, "recalled {id}").unwrap();
            out.flush().unwrap();
        }
    }

    /// Kills the child after `n` archived records, mid-recall; each is then in warm, in
    /// glacier, or in both with the same version, and still found by a search.
    fn kill_mid_recall(dir: &Path, n: usize) -> Vec<String> {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "recall::archive::child_recall",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut archived = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            // The harness may print `test … ... ` in front of the first line.
            let line = line.unwrap();
            if let Some(at) = line.find("archived ") {
                archived.push(line[at + "archived ".len()..].to_owned());
                if archived.len() == n {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush.
        child.wait().unwrap();
        assert_eq!(archived.len(), n, "the child archived records");
        archived
    }

    #[tokio::test]
    async fn a_glacier_recall_killed_with_sigkill_loses_nothing() {
        let s = Scope::tenant("u");
        for n in [3, 11, 25] {
            let dir = tempfile::tempdir().unwrap();
            let archived = kill_mid_recall(dir.path(), n);
            let (store, glacier) = tiered(dir.path(), Some(1)).await;
            let warm = store.tier(TierKind::Warm).unwrap();
            assert_eq!(archived[0], "k0");
            for id in &archived {
                let ids = [id.clone()];
                let w = warm.get(&s, &ids).await.unwrap().into_iter().next();
                let g = glacier.get(&s, &ids).await.unwrap().into_iter().next();
                match (&w, &g) {
                    (None, None) => panic!("{id} was lost (kill after {n})"),
                    (Some(a), Some(b)) => {
                        assert_eq!(
                            (&a.text, a.created_at, &a.metadata, &a.embedding),
                            (&b.text, b.created_at, &b.metadata, &b.embedding),
                            "{id}: two copies of different versions"
                        );
                    }
                    _ => {}
                }
                let q = SearchRequest::text(format!("token{}", &id[1..]), 1);
                let hits = store.search(&s, &q).await.unwrap();
                assert_eq!(
                    hits.first().map(|h| h.record.id.as_str()),
                    Some(id.as_str()),
                    "{id} is still recalled (kill after {n}; warm {:?}, glacier {:?}): {:?}",
                    w.map(|r| r.text),
                    g.map(|r| r.text),
                    hits.iter().map(|h| &h.record.text).collect::<Vec<_>>()
                );
            }
        }
    }
}
