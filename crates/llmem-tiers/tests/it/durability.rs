//! Durability: a child process ingesting through the write-ahead log (warm) or with Lance
//! commits (cold) is killed with SIGKILL; every record it acknowledged is there after reopening.
//!
//! The test binary re-executes itself with `LLMEM_TIERS_CHILD_DIR` set; `child_ingest` then acts
//! as the child (in a normal run, without the variable, it returns at once).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use llmem_core::{Filter, MemoryStore, Scope};
use llmem_tiers::{TierKind, TieredStore, WarmConfig, WarmStore};

use crate::common::rec;

const CHILD_ENV: &str = "LLMEM_TIERS_CHILD_DIR";
const CHILD_TIER_ENV: &str = "LLMEM_TIERS_CHILD_TIER";

async fn open(dir: &std::path::Path, tier: TierKind) -> TieredStore {
    let warm =
        Arc::new(WarmStore::open(WarmConfig::default().persist_in(dir.join("warm"))).unwrap());
    let b = TieredStore::builder().warm(warm);
    match tier {
        TierKind::Warm => b.build().unwrap(),
        #[cfg(feature = "lance")]
        TierKind::Cold => {
            let cold = llmem_tiers::ColdStore::open(llmem_tiers::ColdConfig::new(dir.join("cold")))
                .await
                .unwrap();
            b.cold(Arc::new(cold)).build().unwrap()
        }
        other => panic!("no durability test for {other}"),
    }
}

fn child_tier() -> TierKind {
    std::env::var(CHILD_TIER_ENV).map_or(TierKind::Warm, |t| TierKind::parse(&t).unwrap())
}

#[tokio::test]
async fn child_ingest() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tier = child_tier();
    let store = open(std::path::Path::new(&dir), tier).await;
    let mut out = std::io::stdout();
    for i in 0u64.. {
        let id = store
            .store_in(
                rec("u", &format!("k{i}"), "acknowledged before the kill", 32, i),
                tier,
            )
            .await
            .unwrap();
        writeln!(out, "stored {id}").unwrap();
        out.flush().unwrap();
    }
}

/// Runs the child on `tier`, kills it after `n` acknowledged writes, then checks them all.
async fn kill_mid_ingest(tier: TierKind, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "durability::child_ingest",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .env(CHILD_TIER_ENV, tier.as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("stored ") {
            acked.push(id.to_owned());
            if acked.len() == n {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush.
    child.wait().unwrap();
    assert_eq!(acked.len(), n, "the child acknowledged writes");
    let store = open(dir.path(), tier).await;
    let s = Scope::tenant("u");
    for id in &acked {
        assert_eq!(
            store.locate(&s, id).await.unwrap().map(|(t, _)| t),
            Some(tier),
            "acknowledged record {id} was lost"
        );
    }
    let n = store.count(&s, &Filter::All).await.unwrap();
    assert!(n >= acked.len(), "{n} records after the crash");
    assert!(store.tier(tier).unwrap().capabilities().persistent);
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    kill_mid_ingest(TierKind::Warm, 300).await;
}

#[cfg(feature = "lance")]
#[tokio::test]
async fn acknowledged_cold_lance_writes_survive_kill_9() {
    kill_mid_ingest(TierKind::Cold, 40).await;
}
