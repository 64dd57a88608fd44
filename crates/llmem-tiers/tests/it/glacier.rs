//! The glacier tier on object storage: a local directory and a real S3-compatible server
//! (moto, started here on 127.0.0.1 with a free port and killed at the end).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmem_core::test_kit::store_conformance;
use llmem_core::{Filter, MemoryStore, Scope};
use llmem_tiers::glacier::parse_key;
use llmem_tiers::{
    GlacierConfig, GlacierStore, Tier, TierKind, TieredStore, WarmConfig, WarmStore,
};
use serde_json::json;

use crate::common::rec;

/// A moto S3 server for one test; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv python that has `moto[server]` (`LLMEM_PYTHON`, set by `cargo xtask env`).
fn python() -> PathBuf {
    match std::env::var_os("LLMEM_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "LLMEM_PYTHON is not set: the glacier tests start a moto S3 server with it; run \
             `cargo xtask setup` once, then `eval \"$(cargo xtask env)\"` (CI sets it)"
        ),
    }
}

fn start_moto() -> Moto {
    let py = python();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&py)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{} -m moto.server`: {e}", py.display()));
    let mut moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = moto.child.try_wait().unwrap() {
            panic!(
                "`{} -m moto.server` exited with {status}: is moto[server] installed? run `cargo xtask setup`",
                py.display()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "moto.server did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

fn s3_config(moto: &Moto, bucket: &str) -> GlacierConfig {
    GlacierConfig::new(format!("s3://{bucket}/archive"))
        .option("aws_endpoint", &moto.endpoint)
        .option("aws_allow_http", "true")
        .option("aws_region", "us-east-1")
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing")
}

/// Creates a bucket with a plain S3 `PUT /bucket` (moto accepts unsigned requests).
fn create_bucket(moto: &Moto, bucket: &str) {
    use std::io::{Read, Write};
    let addr = moto.endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {resp}"
    );
}

#[tokio::test]
async fn glacier_on_a_local_directory_conforms_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let g = GlacierStore::open(GlacierConfig::new(&url)).await.unwrap();
    store_conformance(&g).await;
    g.put(vec![rec("u", "a", "archived", 8, 1)]).await.unwrap();
    drop(g);
    let g = GlacierStore::open(GlacierConfig::new(&url)).await.unwrap();
    assert_eq!(
        g.get(&Scope::tenant("u"), &["a".into()])
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(dir.path().join("manifest.json").exists());
}

#[tokio::test]
async fn glacier_on_moto_s3_conforms_encrypts_and_restores() {
    let moto = start_moto();
    create_bucket(&moto, "llmem-glacier");
    let key = parse_key(&"42".repeat(32)).unwrap();
    let g = GlacierStore::open(s3_config(&moto, "llmem-glacier").with_key(key))
        .await
        .unwrap();
    assert!(g.encrypted());
    store_conformance(&g).await;

    let s = Scope::tenant("u");
    let recs: Vec<_> = (0..50u64)
        .map(|i| rec("u", &format!("r{i}"), "a secret memory", 8, i))
        .collect();
    g.put(recs[..25].to_vec()).await.unwrap();
    g.put(recs[25..].to_vec()).await.unwrap();
    let snap = g.snapshot().await.unwrap();
    let f = Filter::parse(&json!({"n": {"$lt": 10}})).unwrap();
    assert_eq!(g.delete_by_filter(&s, &f).await.unwrap(), 10);
    assert_eq!(g.count(&s, &Filter::All).await.unwrap(), 40);
    g.restore(&snap).await.unwrap();
    assert_eq!(g.count(&s, &Filter::All).await.unwrap(), 50);
    let st = g.stats().await.unwrap();
    assert!(st.items >= 50 && st.bytes > 0);

    // Reopened without the key: listing works from the manifest, reading refuses clearly.
    let nokey = GlacierStore::open(s3_config(&moto, "llmem-glacier"))
        .await
        .unwrap();
    assert_eq!(
        nokey.count(&s, &Filter::All).await.unwrap(),
        50,
        "count comes from the manifest"
    );
    let err = nokey.get(&s, &["r1".into()]).await.unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    // With the key, from a fresh process-like open.
    let again = GlacierStore::open(s3_config(&moto, "llmem-glacier").with_key(key))
        .await
        .unwrap();
    let got = again.get(&s, &["r33".into()]).await.unwrap();
    assert_eq!(got[0].embedding, recs[33].embedding);
    assert!(
        again.compact().await.unwrap() >= 1,
        "compaction drops batches nothing refers to"
    );
    assert_eq!(again.count(&s, &Filter::All).await.unwrap(), 50);
}

#[tokio::test]
async fn tiered_archive_goes_to_s3() {
    let moto = start_moto();
    create_bucket(&moto, "llmem-tiered");
    let glacier: Arc<dyn Tier> = Arc::new(
        GlacierStore::open(s3_config(&moto, "llmem-tiered"))
            .await
            .unwrap(),
    );
    let store = TieredStore::builder()
        .warm(Arc::new(WarmStore::open(WarmConfig::default()).unwrap()))
        .glacier(glacier)
        .build()
        .unwrap();
    let s = Scope::tenant("u");
    for i in 0..10u64 {
        store
            .store(rec("u", &format!("r{i}"), "x", 8, i).with_metadata("old", i < 6))
            .await
            .unwrap();
    }
    let f = Filter::parse(&json!({"old": true})).unwrap();
    assert_eq!(store.archive(&s, &f).await.unwrap(), 6);
    assert_eq!(
        store.locate(&s, "r0").await.unwrap().unwrap().0,
        TierKind::Glacier
    );
    assert_eq!(store.count(&s, &Filter::All).await.unwrap(), 10);
    assert!(
        store
            .get(&Scope::tenant("intruder"), "r0")
            .await
            .unwrap()
            .is_none()
    );
}
