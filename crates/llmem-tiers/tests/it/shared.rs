//! The cold tier on S3 (a real moto server on 127.0.0.1) and replicas sharing it.

use std::sync::Arc;
use std::time::Duration;

use llmem_core::test_kit::store_conformance;
use llmem_core::{Filter, MemoryStore, Scope, SearchRequest};
use llmem_tiers::{ColdConfig, ColdStore, SharedConfig, SharedStore};

use crate::common::rec;
use crate::glacier::{Server, create_bucket, s3_client, start_moto};

fn cold_on(moto: &Server, bucket: &str, prefix: &str) -> ColdConfig {
    let mut c = ColdConfig::at(&format!("s3://{bucket}/{prefix}"))
        .option("aws_endpoint", moto.endpoint())
        .option("aws_allow_http", "true")
        .option("aws_region", "us-east-1")
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing");
    c.dimensions = Some(8);
    c
}

fn replica(moto: &Server, bucket: &str, staleness: Duration) -> SharedStore {
    let mut cfg = SharedConfig::new(cold_on(moto, bucket, "team/memory"));
    cfg.staleness = staleness;
    // Compaction after a few dozen writes, so that the test goes through it.
    cfg.compact_at = 24;
    SharedStore::new(cfg).unwrap()
}

#[tokio::test]
async fn the_cold_tier_on_moto_s3_conforms_and_reopens() {
    let moto = start_moto();
    create_bucket(&moto, "llmem-cold");
    let cold = ColdStore::open(cold_on(&moto, "llmem-cold", "cold"))
        .await
        .unwrap();
    store_conformance(&cold).await;
    cold.put(vec![rec("u", "kept", "kept on S3", 8, 3)])
        .await
        .unwrap();
    drop(cold);
    // The dataset is in the bucket, not on local disk.
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let listed: Vec<_> = s3_client(&moto, "llmem-cold")
        .list(Some(&object_store::path::Path::from("cold/_versions")))
        .try_collect()
        .await
        .unwrap();
    assert!(!listed.is_empty(), "no Lance manifest in the bucket");
    let cold = ColdStore::open(cold_on(&moto, "llmem-cold", "cold"))
        .await
        .unwrap();
    let got = cold
        .get(&Scope::tenant("u"), &["kept".into()])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "kept on S3");
}

#[tokio::test]
async fn a_bucket_that_cannot_be_reached_is_a_clear_error() {
    let cfg = ColdConfig::at("s3://nowhere/cold")
        .option("aws_endpoint", "http://127.0.0.1:9")
        .option("aws_allow_http", "true")
        .option("aws_region", "us-east-1")
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing");
    let err = match ColdStore::open(cfg).await {
        Ok(c) => c
            .put(vec![rec("u", "a", "x", 8, 1)])
            .await
            .expect_err("a write to an unreachable bucket must fail"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("cold"), "{msg}");
    let bad = ColdConfig::at("s3://b/c").option("aws_no_such_option", "1");
    let msg = ColdStore::open(bad).await.unwrap_err().to_string();
    assert!(msg.contains("cold.options.aws_no_such_option"), "{msg}");
    let msg = SharedStore::new(SharedConfig::new(ColdConfig::new("/tmp/x")))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tiers.cold_url"), "{msg}");
}

#[tokio::test]
async fn replicas_write_concurrently_and_see_each_other_within_the_staleness() {
    let moto = start_moto();
    create_bucket(&moto, "llmem-shared");
    let stale = Duration::from_millis(300);
    let a = Arc::new(replica(&moto, "llmem-shared", stale));
    let b = Arc::new(replica(&moto, "llmem-shared", stale));
    // Both write at once, 4 writers each: every commit race is rebased and retried.
    let mut jobs = Vec::new();
    for (name, store) in [("a", a.clone()), ("b", b.clone())] {
        for w in 0..4 {
            let store = store.clone();
            jobs.push(tokio::spawn(async move {
                for i in 0..5 {
                    let id = format!("{name}{w}-{i}");
                    let seed = (w * 10 + i) as u64 + if name == "a" { 0 } else { 100 };
                    store
                        .put(vec![rec(
                            "u",
                            &id,
                            &format!("note {id} about kayaks"),
                            8,
                            seed,
                        )])
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for j in jobs {
        j.await.unwrap();
    }
    let u = Scope::tenant("u");
    // A replica's own writes are visible at once; the other's within the staleness.
    tokio::time::sleep(stale).await;
    for s in [&a, &b] {
        let all = s.query(&u, &Filter::All, None).await.unwrap();
        assert_eq!(all.len(), 40, "every acknowledged write, once");
        let mut ids: Vec<_> = all.iter().map(|r| r.id.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 40);
        let hits = s
            .search(&u, &SearchRequest::text("kayaks b3-4", 3))
            .await
            .unwrap();
        assert_eq!(
            hits[0].record.id, "b3-4",
            "BM25 over the other replica's write"
        );
    }
    // An update and a delete on one replica reach the other.
    a.put(vec![rec("u", "b0-0", "rewritten by a", 8, 7)])
        .await
        .unwrap();
    assert_eq!(a.delete(&u, &["b1-1".into()]).await.unwrap(), 1);
    tokio::time::sleep(stale).await;
    let got = b.get(&u, &["b0-0".into(), "b1-1".into()]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "rewritten by a");
    // Incremental: a write reads one new fragment, not the table.
    a.put(vec![rec("u", "late", "one more", 8, 9)])
        .await
        .unwrap();
    let r = b.refresh().await.unwrap();
    assert_eq!(r.fragments_read, 1, "{r:?}");
    assert_eq!(r.upserted, 1, "{r:?}");
    // The writes so far made more fragments than `compact_at`: a replica compacted them, and
    // the others read the compacted rows as new fragments without losing or doubling one.
    let cold = ColdStore::open({
        let mut c = cold_on(&moto, "llmem-shared", "team/memory");
        c.shared = true;
        c
    })
    .await
    .unwrap();
    cold.latest().await.unwrap();
    assert!(
        cold.fragments().await < 40,
        "{} fragments",
        cold.fragments().await
    );
    // A fresh replica sees the same memory.
    let c = replica(&moto, "llmem-shared", stale);
    assert_eq!(c.count(&u, &Filter::All).await.unwrap(), 40);
    // Forget on one replica: gone everywhere.
    let n = c.forget(&u, &Filter::eq("id", "late")).await.unwrap();
    assert_eq!(n, 1);
    tokio::time::sleep(stale).await;
    for s in [&a, &b] {
        assert!(s.get(&u, &["late".into()]).await.unwrap().is_empty());
        assert_eq!(s.count(&u, &Filter::All).await.unwrap(), 39);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_on_moto_let_one_writer_win() {
    use llmem_tiers::objects::{Versioned, Written};
    let moto = start_moto();
    create_bucket(&moto, "llmem-objects");
    let opts: Vec<(String, String)> = [
        ("aws_endpoint", moto.endpoint()),
        ("aws_allow_http", "true".into()),
        ("aws_region", "us-east-1".into()),
        ("aws_access_key_id", "testing".into()),
        ("aws_secret_access_key", "testing".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let objs = Versioned::open("s3://llmem-objects/sessions", &opts, "sessions").unwrap();
    for round in 0..10 {
        let name = format!("u/s{round}.json");
        let mut jobs = Vec::new();
        for i in 0..6u8 {
            let (objs, name) = (objs.clone(), name.clone());
            jobs.push(tokio::spawn(async move {
                objs.put_if(&name, vec![i; 10], None).await.unwrap()
            }));
        }
        let mut won = 0;
        for j in jobs {
            if let Written::Done(_) = j.await.unwrap() {
                won += 1;
            }
        }
        assert_eq!(won, 1, "round {round}: {won} creators won");
        let (_, v) = objs.get(&name).await.unwrap().unwrap();
        let mut jobs = Vec::new();
        for i in 0..6u8 {
            let (objs, name, v) = (objs.clone(), name.clone(), v.clone());
            jobs.push(tokio::spawn(async move {
                objs.put_if(&name, vec![i; 12], Some(&v)).await.unwrap()
            }));
        }
        let mut won = 0;
        for j in jobs {
            if let Written::Done(_) = j.await.unwrap() {
                won += 1;
            }
        }
        assert_eq!(won, 1, "round {round}: {won} updaters won");
    }
}

/// With a cache directory, a restarted replica reads only what was written while it was down,
/// not the dataset; a cache directory removed by hand makes it read everything again.
#[tokio::test]
async fn a_restarted_replica_reads_only_what_changed() {
    let moto = start_moto();
    create_bucket(&moto, "llmem-restart");
    let dir = tempfile::tempdir().unwrap();
    let with_cache = || {
        let mut cfg = SharedConfig::new(cold_on(&moto, "llmem-restart", "team/memory"));
        cfg.staleness = Duration::from_millis(1);
        cfg.cache_dir = Some(dir.path().join("shared"));
        SharedStore::new(cfg).unwrap()
    };
    let writer = replica(&moto, "llmem-restart", Duration::from_millis(1));
    for i in 0..6 {
        writer
            .put(vec![rec("u", &format!("r{i}"), &format!("row {i}"), 8, i)])
            .await
            .unwrap();
    }
    let u = Scope::tenant("u");
    let a = with_cache();
    let first = a.refresh().await.unwrap();
    assert_eq!(first.upserted, 6, "{first:?}");
    a.flush().await.unwrap();
    drop(a);
    // While it is down: one more, one updated, one deleted.
    writer
        .put(vec![rec("u", "r6", "row 6", 8, 6)])
        .await
        .unwrap();
    writer
        .put(vec![rec("u", "r0", "row 0 again", 8, 7)])
        .await
        .unwrap();
    assert_eq!(writer.delete(&u, &["r1".into()]).await.unwrap(), 1);
    let a = with_cache();
    let r = a.refresh().await.unwrap();
    assert_eq!(r.fragments_read, 2, "only the two new fragments: {r:?}");
    assert_eq!(r.upserted, 2, "{r:?}");
    assert_eq!(a.count(&u, &Filter::All).await.unwrap(), 6);
    let got = a.get(&u, &["r0".into(), "r1".into()]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "row 0 again");
    a.flush().await.unwrap();
    drop(a);
    std::fs::remove_dir_all(dir.path().join("shared/cache")).unwrap();
    let a = with_cache();
    let r = a.refresh().await.unwrap();
    assert_eq!(r.upserted, 6, "the whole dataset again: {r:?}");
    assert_eq!(a.count(&u, &Filter::All).await.unwrap(), 6);
}
