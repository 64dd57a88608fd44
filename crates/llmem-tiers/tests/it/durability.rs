//! Durability: a child process ingesting through the write-ahead log is killed with SIGKILL;
//! every record it acknowledged is there after reopening.
//!
//! The test binary re-executes itself with `LLMEM_TIERS_CHILD_DIR` set; `child_ingest` then acts
//! as the child (in a normal run, without the variable, it returns at once).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use llmem_core::{Filter, MemoryStore, Scope};
use llmem_tiers::{TieredStore, WarmConfig, WarmStore};

use crate::common::rec;

const CHILD_ENV: &str = "LLMEM_TIERS_CHILD_DIR";

fn open(dir: &std::path::Path) -> TieredStore {
    let warm = Arc::new(WarmStore::open(WarmConfig::default().persist_in(dir)).unwrap());
    TieredStore::builder().warm(warm).build().unwrap()
}

#[tokio::test]
async fn child_ingest() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = open(std::path::Path::new(&dir));
    let mut out = std::io::stdout();
    for i in 0u64.. {
        let id = store
            .store(rec(
                "u",
                &format!("k{i}"),
                "acknowledged before the kill",
                32,
                i,
            ))
            .await
            .unwrap();
        writeln!(out, "stored {id}").unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "durability::child_ingest",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
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
            if acked.len() == 300 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush.
    child.wait().unwrap();
    assert_eq!(acked.len(), 300, "the child acknowledged writes");
    let store = open(dir.path());
    let s = Scope::tenant("u");
    for id in &acked {
        assert!(
            store.exists(&s, id).await.unwrap(),
            "acknowledged record {id} was lost"
        );
    }
    let n = store.count(&s, &Filter::All).await.unwrap();
    assert!(n >= acked.len(), "{n} records after the crash");
    let warm = store.tier(llmem_tiers::TierKind::Warm).unwrap();
    assert!(warm.capabilities().persistent);
}
