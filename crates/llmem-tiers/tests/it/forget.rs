//! Forget (`MemoryStore::forget`, issue 24): a forgotten record's text is in no file of the
//! data directory and no object of the bucket afterwards, the other records all stay and stay
//! searchable, snapshots do not bring it back, and a forget killed with SIGKILL at any point
//! neither loses a kept record nor lets an acknowledged forget come undone.
//!
//! The kill test re-executes the test binary with `LLMEM_TIERS_FORGET_CHILD_DIR` set;
//! `child_forget` then acts as the child (in a normal run it returns at once).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llmem_core::{Filter, MemoryRecord, MemoryStore, Scope, SearchRequest};
use llmem_tiers::{HotStore, MigrationPolicy, Tier, TierKind, TieredStore, WarmConfig, WarmStore};
use serde_json::json;

use crate::common::rec;

/// No promotion by reads, so that records stay in the tier the test put them in.
fn no_promotion() -> MigrationPolicy {
    MigrationPolicy {
        promote_after_accesses: None,
        ..MigrationPolicy::default()
    }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    haystack.windows(n.len()).any(|w| w == n)
}

/// Whether `bytes` (an object or a file named `name`) hold `needle`: raw, or zstd-decoded for a
/// `.zst` name.
fn bytes_hold(name: &str, bytes: &[u8], needle: &str) -> bool {
    holds(bytes, needle)
        || (name.ends_with(".zst")
            && zstd::decode_all(bytes).is_ok_and(|plain| holds(&plain, needle)))
}

/// The files under `dir` that hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes_hold(&p.to_string_lossy(), &bytes, needle)
        })
        .collect()
}

#[tokio::test]
async fn warm_forget_rewrites_the_log_and_the_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let open = || WarmStore::open(WarmConfig::default().persist_in(dir.path())).unwrap();
    let warm = open();
    let s = Scope::tenant("u");
    let secret = "my locker code is Aster-5521";
    warm.put(vec![
        rec("u", "a", "groceries on friday", 8, 1),
        rec("u", "s", secret, 8, 2),
        rec("u", "b", "call the plumber", 8, 3),
    ])
    .await
    .unwrap();
    // An older version of `c` held the secret too.
    warm.put(vec![rec("u", "c", &format!("old: {secret}"), 8, 4)])
        .await
        .unwrap();
    warm.put(vec![rec("u", "c", "new: nothing to hide", 8, 4)])
        .await
        .unwrap();
    let snap = warm.snapshot().await.unwrap();
    assert!(!files_holding(dir.path(), "Aster-5521").is_empty());

    let f = Filter::parse(&json!({"text": {"$contains": "aster-5521"}})).unwrap();
    // Another tenant's scope forgets nothing.
    assert_eq!(warm.forget(&Scope::tenant("v"), &f).await.unwrap(), 0);
    assert_eq!(warm.forget(&s, &f).await.unwrap(), 1);
    assert_eq!(
        files_holding(dir.path(), "Aster-5521"),
        Vec::<PathBuf>::new()
    );
    // The snapshot was scrubbed: restoring it does not bring the secret back.
    warm.restore(&snap).await.unwrap();
    assert!(warm.get(&s, &["s".into()]).await.unwrap().is_empty());
    assert_eq!(warm.count(&s, &Filter::All).await.unwrap(), 3);
    drop(warm);
    let warm = open();
    assert!(warm.get(&s, &["s".into()]).await.unwrap().is_empty());
    let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    assert_eq!(warm.get(&s, &ids).await.unwrap().len(), 3);
    let hits = warm
        .search(&s, &SearchRequest::text("plumber", 3))
        .await
        .unwrap();
    assert_eq!(hits[0].record.id, "b");
    // A filter that matches nothing: Ok(0).
    let none = Filter::parse(&json!({"text": {"$contains": "no such words"}})).unwrap();
    assert_eq!(warm.forget(&s, &none).await.unwrap(), 0);
}

#[tokio::test]
async fn hot_forget_drops_the_record_and_its_snapshot_copies() {
    let hot = HotStore::new(10).unwrap();
    let s = Scope::tenant("u");
    hot.put(vec![
        rec("u", "a", "keep me", 8, 1),
        rec("u", "s", "forget me", 8, 2),
    ])
    .await
    .unwrap();
    let snap = hot.snapshot().await.unwrap();
    let f = Filter::parse(&json!({"text": "forget me"})).unwrap();
    assert_eq!(hot.forget(&s, &f).await.unwrap(), 1);
    hot.restore(&snap).await.unwrap();
    assert!(hot.get(&s, &["s".into()]).await.unwrap().is_empty());
    assert_eq!(hot.get(&s, &["a".into()]).await.unwrap().len(), 1);
}

#[cfg(all(feature = "lance", feature = "glacier"))]
mod everywhere {
    use futures::TryStreamExt;
    use llmem_tiers::{ColdConfig, ColdStore, GlacierConfig, GlacierStore};
    use object_store::{ObjectStore, ObjectStoreExt};

    use super::*;

    /// The secret sentence, and the parts of it that must be found nowhere: a phrase, and a
    /// word as a lexical index keeps it (lower case, a term of its own).
    const SECRET: &str = "the vault under the mill opens with Orchid-Quasar-7419 zebrafrond";
    const NEEDLE: &str = "Orchid-Quasar-7419";
    const TOKEN: &str = "zebrafrond";

    fn dim() -> usize {
        16
    }

    /// Ordinary records of one tier: `{tier}-{i}` with a searchable word.
    fn ordinary(tier: &str, n: u64, seed: u64) -> Vec<MemoryRecord> {
        (0..n)
            .map(|i| {
                rec(
                    "u",
                    &format!("{tier}-{i}"),
                    &format!("an ordinary {tier} memory about gardening number {i}"),
                    dim(),
                    seed + i,
                )
            })
            .collect()
    }

    async fn tiered(dir: &Path, glacier: GlacierConfig) -> TieredStore {
        let warm =
            Arc::new(WarmStore::open(WarmConfig::default().persist_in(dir.join("warm"))).unwrap());
        let cold = ColdStore::open(ColdConfig::new(dir.join("cold")))
            .await
            .unwrap();
        let glacier = GlacierStore::open(glacier).await.unwrap();
        assert!(!glacier.encrypted());
        TieredStore::builder()
            .warm(warm)
            .cold(Arc::new(cold))
            .glacier(Arc::new(glacier))
            .state_dir(dir.join("state"))
            .policy(no_promotion())
            .build()
            .unwrap()
    }

    /// Fills the store: ordinary records in each tier, the secret in each tier among them (in
    /// the same write, so the same Lance fragment and glacier batch), and a record `{tier}-v`
    /// whose older version held the secret.
    async fn fill(store: &TieredStore) {
        for (k, kind) in [
            (0u64, TierKind::Warm),
            (100, TierKind::Cold),
            (200, TierKind::Glacier),
        ] {
            let t = kind.as_str();
            let mut batch = ordinary(t, 20, k);
            batch.insert(10, rec("u", &format!("{t}-secret"), SECRET, dim(), k + 50));
            store.store_batch_in(batch, kind).await.unwrap();
            store
                .store_in(
                    rec(
                        "u",
                        &format!("{t}-v"),
                        &format!("draft: {SECRET}"),
                        dim(),
                        k + 60,
                    ),
                    kind,
                )
                .await
                .unwrap();
            store
                .store_in(
                    rec(
                        "u",
                        &format!("{t}-v"),
                        "final: the mill is closed on sundays",
                        dim(),
                        k + 60,
                    ),
                    kind,
                )
                .await
                .unwrap();
        }
        // Another tenant's words are not touched by a forget of `u`.
        store
            .store_in(
                rec("w", "w-1", "tenant w gardening notes", dim(), 999),
                TierKind::Cold,
            )
            .await
            .unwrap();
    }

    /// After the forget: the others all there (by id, from every tier), searchable in warm and
    /// cold (text and vector), the secrets gone.
    async fn check_kept(store: &TieredStore) {
        let s = Scope::tenant("u");
        for (k, kind) in [
            (0u64, TierKind::Warm),
            (100, TierKind::Cold),
            (200, TierKind::Glacier),
        ] {
            let t = kind.as_str();
            for i in 0..20u64 {
                let id = format!("{t}-{i}");
                let (at, r) = store.locate(&s, &id).await.unwrap().unwrap();
                assert_eq!(at, kind, "{id} stays in {t}");
                assert_eq!(
                    r.embedding.as_deref(),
                    Some(&llmem_core::test_kit::unit_vec(dim(), k + i)[..])
                );
            }
            let (_, v) = store.locate(&s, &format!("{t}-v")).await.unwrap().unwrap();
            assert!(v.text.starts_with("final:"), "{t}-v keeps its last version");
            assert!(
                store
                    .locate(&s, &format!("{t}-secret"))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        let hits = store
            .search(
                &s,
                &SearchRequest::text("ordinary cold memory gardening number 7", 40),
            )
            .await
            .unwrap();
        assert!(
            hits.iter().any(|h| h.record.id == "cold-7"),
            "cold text search"
        );
        assert!(
            hits.iter().any(|h| h.record.id == "warm-7"),
            "warm text search"
        );
        assert!(hits.iter().all(|h| !h.record.text.contains(NEEDLE)));
        let v = store
            .search(
                &s,
                &SearchRequest::vector(llmem_core::test_kit::unit_vec(dim(), 107), 1),
            )
            .await
            .unwrap();
        assert_eq!(v[0].record.id, "cold-7", "cold vector search");
        let secret_hits = store
            .search(&s, &SearchRequest::text("vault mill orchid quasar", 10))
            .await
            .unwrap();
        assert!(secret_hits.iter().all(|h| !h.record.text.contains(NEEDLE)));
        assert_eq!(
            store
                .count(&Scope::tenant("w"), &Filter::All)
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.count(&s, &Filter::All).await.unwrap(), 63);
    }

    /// The whole scenario over a glacier at `glacier()`; `bucket_holding(needle)` lists the
    /// objects of the archive's bucket that hold `needle` (decoded).
    async fn scenario<F, Fut>(dir: &Path, glacier: impl Fn() -> GlacierConfig, bucket_holding: F)
    where
        F: Fn(&'static str) -> Fut,
        Fut: std::future::Future<Output = Vec<String>>,
    {
        let store = tiered(dir, glacier()).await;
        fill(&store).await;
        let snap = store.snapshot().await.unwrap();
        // The check sees the secret where it is: in every tier before the forget.
        let before = files_holding(dir, NEEDLE);
        for part in ["warm", "cold"] {
            assert!(
                before.iter().any(|p| p.starts_with(dir.join(part))),
                "the {part} tier's files hold the secret before the forget: {before:?}"
            );
        }
        assert!(!bucket_holding(NEEDLE).await.is_empty());
        assert!(!bucket_holding(TOKEN).await.is_empty());
        let s = Scope::tenant("u");
        let f = Filter::parse(&json!({"text": {"$contains": "orchid-quasar-7419"}})).unwrap();
        assert_eq!(store.count(&s, &f).await.unwrap(), 3);
        assert_eq!(store.forget(&s, &f).await.unwrap(), 3);

        for needle in [NEEDLE, TOKEN] {
            assert_eq!(files_holding(dir, needle), Vec::<PathBuf>::new());
            assert_eq!(bucket_holding(needle).await, Vec::<String>::new());
        }
        check_kept(&store).await;
        // The ordinary text is still on disk (the check would see a forgotten one).
        assert!(!files_holding(&dir.join("cold"), "gardening number 7").is_empty());
        // The snapshot taken before the forget is gone, with a message that says why.
        let err = store.restore(&snap).await.unwrap_err().to_string();
        assert!(err.contains("forget"), "{err}");
        // Again: nothing left to forget, and nothing changes.
        assert_eq!(store.forget(&s, &f).await.unwrap(), 0);
        drop(store);

        // From disk and bucket alone.
        let store = tiered(dir, glacier()).await;
        check_kept(&store).await;
        assert_eq!(store.count(&s, &f).await.unwrap(), 0);
        // A new snapshot works, and restores.
        let snap = store.snapshot().await.unwrap();
        store.restore(&snap).await.unwrap();
        check_kept(&store).await;
    }

    #[tokio::test]
    async fn forget_leaves_no_byte_of_the_secret_with_a_local_glacier() {
        let dir = tempfile::tempdir().unwrap();
        let gdir = dir.path().join("glacier");
        let url = gdir.to_str().unwrap().to_owned();
        let gdir2 = gdir.clone();
        scenario(
            dir.path(),
            || GlacierConfig::new(&url),
            move |needle| {
                let g = gdir2.clone();
                async move {
                    files_holding(&g, needle)
                        .into_iter()
                        .map(|p| p.display().to_string())
                        .collect()
                }
            },
        )
        .await;
    }

    #[tokio::test]
    async fn forget_leaves_no_byte_of_the_secret_with_glacier_on_moto_s3() {
        let moto = crate::glacier::start_moto();
        crate::glacier::create_bucket(&moto, "llmem-forget");
        let dir = tempfile::tempdir().unwrap();
        let s3 = Arc::new(crate::glacier::s3_client(&moto, "llmem-forget"));
        scenario(
            dir.path(),
            || crate::glacier::s3_config(&moto, "llmem-forget"),
            move |needle| {
                let s3 = s3.clone();
                async move {
                    let objects: Vec<object_store::ObjectMeta> =
                        s3.list(None).try_collect().await.unwrap();
                    assert!(!objects.is_empty(), "the bucket holds the archive");
                    let mut out = Vec::new();
                    for o in objects {
                        let bytes = s3.get(&o.location).await.unwrap().bytes().await.unwrap();
                        if bytes_hold(o.location.as_ref(), &bytes, needle) {
                            out.push(o.location.to_string());
                        }
                    }
                    out
                }
            },
        )
        .await;
    }
}

/// The kill test: a child process runs forgets (and stores) over warm, cold and a local
/// glacier and is killed at a random moment; run several times over the same directory.
#[cfg(all(feature = "lance", feature = "glacier"))]
mod killed {
    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use llmem_tiers::{ColdConfig, ColdStore, GlacierConfig, GlacierStore};

    use super::*;

    const CHILD_ENV: &str = "LLMEM_TIERS_FORGET_CHILD_DIR";
    const FROM_ENV: &str = "LLMEM_TIERS_FORGET_FROM";
    const ROUND_ENV: &str = "LLMEM_TIERS_FORGET_ROUND";
    const VICTIMS: u64 = 45;
    const KEEPERS: u64 = 36;
    const TIERS: [TierKind; 3] = [TierKind::Warm, TierKind::Cold, TierKind::Glacier];

    async fn open(dir: &Path) -> TieredStore {
        let warm =
            Arc::new(WarmStore::open(WarmConfig::default().persist_in(dir.join("warm"))).unwrap());
        let cold = ColdStore::open(ColdConfig::new(dir.join("cold")))
            .await
            .unwrap();
        let glacier = GlacierStore::open(GlacierConfig::new(dir.join("glacier").to_str().unwrap()))
            .await
            .unwrap();
        TieredStore::builder()
            .warm(warm)
            .cold(Arc::new(cold))
            .glacier(Arc::new(glacier))
            .state_dir(dir.join("state"))
            .policy(no_promotion())
            .build()
            .unwrap()
    }

    fn victim_text(i: u64) -> String {
        format!("victim secret Vx{i}Qz")
    }

    fn victim_filter(i: u64) -> Filter {
        Filter::parse(&json!({"victim": i})).unwrap()
    }

    /// Keepers and victims in each tier, mixed in the same writes.
    async fn seed(dir: &Path) {
        let store = open(dir).await;
        for (t, kind) in TIERS.iter().enumerate() {
            let mut batch = Vec::new();
            for i in (0..KEEPERS).filter(|i| i % 3 == t as u64) {
                batch.push(rec(
                    "u",
                    &format!("k{i}"),
                    &format!("keeper number {i}"),
                    16,
                    i,
                ));
            }
            for i in (0..VICTIMS).filter(|i| i % 3 == t as u64) {
                batch.push(
                    rec("u", &format!("v{i}"), &victim_text(i), 16, 1000 + i)
                        .with_metadata("victim", i),
                );
            }
            store.store_batch_in(batch, *kind).await.unwrap();
        }
    }

    #[tokio::test]
    async fn child_forget() {
        let Ok(dir) = std::env::var(CHILD_ENV) else {
            return;
        };
        let from: u64 = std::env::var(FROM_ENV).unwrap().parse().unwrap();
        let round = std::env::var(ROUND_ENV).unwrap();
        let store = open(Path::new(&dir)).await;
        let s = Scope::tenant("u");
        let mut out = std::io::stdout();
        for i in from..VICTIMS {
            let id = format!("n{round}-{i}");
            store
                .store(rec("u", &id, "stored while forgetting", 16, 5000 + i))
                .await
                .unwrap();
            writeln!(out, "stored {id}").unwrap();
            out.flush().unwrap();
            store.forget(&s, &victim_filter(i)).await.unwrap();
            writeln!(out, "forgot {i}").unwrap();
            out.flush().unwrap();
        }
        writeln!(out, "done").unwrap();
        out.flush().unwrap();
    }

    /// A number below `n` from the clock's nanoseconds (no random crate needed).
    fn random_below(n: u64, salt: u64) -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        (nanos / 1000 + salt * 7919) % n
    }

    #[tokio::test]
    async fn forgets_killed_mid_way_lose_nothing_kept_and_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        seed(dir.path()).await;
        let s = Scope::tenant("u");
        let mut kept: BTreeSet<String> = (0..KEEPERS).map(|i| format!("k{i}")).collect();
        let mut forgotten: BTreeSet<u64> = BTreeSet::new();
        let mut from = 0u64;
        let mut killed = 0;
        for round in 0..40u64 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "forget::killed::child_forget",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, dir.path())
                .env(FROM_ENV, from.to_string())
                .env(ROUND_ENV, round.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(line);
                }
            });
            // Kill at a random point of a random forget: after the child has stored (and so
            // is about to forget) its 1st to 4th record of the round, 0 to 60 ms into it.
            let wait_for = 1 + random_below(4, round);
            let delay = Duration::from_millis(random_below(60, round + 1));
            let mut lines = Vec::new();
            let mut stored = 0;
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
                let last = line == "done";
                stored += u64::from(line.starts_with("stored "));
                lines.push(line);
                if last || stored == wait_for {
                    break;
                }
            }
            std::thread::sleep(delay);
            let finished = child.try_wait().unwrap().is_some();
            if !finished {
                child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush.
                killed += 1;
            }
            child.wait().unwrap();
            reader.join().unwrap();
            lines.extend(rx.try_iter());
            let mut done = false;
            for line in &lines {
                if let Some(id) = line.strip_prefix("stored ") {
                    kept.insert(id.to_owned());
                } else if let Some(i) = line.strip_prefix("forgot ") {
                    let i: u64 = i.parse().unwrap();
                    forgotten.insert(i);
                    from = from.max(i + 1);
                } else if line == "done" {
                    done = true;
                }
            }
            eprintln!(
                "round {round}: {} {delay:?} after store {wait_for}; {} forgets acknowledged so far",
                if finished { "finished" } else { "killed" },
                forgotten.len()
            );
            // Reopened: nothing acknowledged is lost, nothing acknowledged as forgotten is back.
            let store = open(dir.path()).await;
            let ids: Vec<String> = kept.iter().cloned().collect();
            let got = store.get_many(&s, &ids).await.unwrap();
            assert_eq!(
                got.len(),
                ids.len(),
                "round {round}: a kept record was lost"
            );
            for i in &forgotten {
                assert!(
                    store.get(&s, &format!("v{i}")).await.unwrap().is_none(),
                    "round {round}: forgotten v{i} came back"
                );
                assert_eq!(store.count(&s, &victim_filter(*i)).await.unwrap(), 0);
            }
            drop(store);
            if done {
                break;
            }
        }
        assert!(killed >= 5, "{killed} children were killed mid-way");
        // Whatever a kill interrupted, a forget run again completes it.
        let store = open(dir.path()).await;
        let all = Filter::parse(&json!({"victim": {"$gte": 0}})).unwrap();
        store.forget(&s, &all).await.unwrap();
        assert_eq!(store.count(&s, &all).await.unwrap(), 0);
        let ids: Vec<String> = kept.iter().cloned().collect();
        assert_eq!(store.get_many(&s, &ids).await.unwrap().len(), ids.len());
        drop(store);
        for i in 0..VICTIMS {
            for needle in [victim_text(i), format!("vx{i}qz")] {
                assert_eq!(
                    files_holding(dir.path(), &needle),
                    Vec::<PathBuf>::new(),
                    "victim {i}'s text is on disk after the final forget"
                );
            }
        }
        assert!(!files_holding(dir.path(), "keeper number 1").is_empty());
    }
}
