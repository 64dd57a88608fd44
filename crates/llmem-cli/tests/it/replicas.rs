//! Three `llmem serve` replicas over one S3 bucket (a real moto server on 127.0.0.1) with
//! `tiers.shared`: one user's turns and memories spread over all three at random by two
//! concurrent clients, one replica killed with SIGKILL mid-run and restarted. Every
//! acknowledged turn and memory is then readable from every replica, once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde_json::{Value, json};

use crate::serve::{Proxy, echo_upstream, get_json, serve};
use crate::servers::{Server, create_bucket, start_moto};

const BUCKET: &str = "llmem-team";
const STALENESS_MS: u64 = 500;
const TURNS: usize = 30;

fn env(moto: &Server) -> Vec<(String, String)> {
    [
        ("LLMEM_TIERS_SHARED", "true".to_owned()),
        ("LLMEM_TIERS_COLD_URL", format!("s3://{BUCKET}/team/memory")),
        (
            "LLMEM_TIERS_SESSIONS_URL",
            format!("s3://{BUCKET}/team/sessions"),
        ),
        ("LLMEM_TIERS_SHARED_STALENESS_MS", STALENESS_MS.to_string()),
        ("AWS_ENDPOINT", moto.endpoint()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        // Everything stays in the context, so that the session shows every turn.
        ("LLMEM_MEMORY_MAX_CONTEXT_TOKENS", "200000".into()),
        ("LLMEM_MEMORY_COMPRESSION_THRESHOLD", "150000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A replica; its cache of the shared memory is kept in `dir` across restarts.
fn start(upstream: &str, env: &[(String, String)], dir: &std::path::Path) -> Proxy {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    serve(
        &["--upstream", upstream, "--dir", dir.to_str().unwrap()],
        &env,
    )
}

/// A small deterministic generator, so that a failure replays.
fn pick(seed: &mut u64, n: usize) -> usize {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % n as u64) as usize
}

#[derive(Default)]
struct Acked {
    turns: Vec<String>,
    memories: Vec<String>,
    failed: usize,
    latencies_ms: Vec<f64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_nothing_across_a_sigkill() {
    let moto = start_moto();
    create_bucket(&moto, BUCKET);
    let upstream = echo_upstream(Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))).await;
    let env = env(&moto);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas: Vec<Proxy> = dirs
        .iter()
        .map(|d| start(&upstream, &env, d.path()))
        .collect();
    let bases = Arc::new(RwLock::new(
        replicas.iter().map(|p| p.base.clone()).collect::<Vec<_>>(),
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // Two clients of one user and one session, each turn and memory to a random replica.
    let mut clients = Vec::new();
    for c in 0..2u64 {
        let (http, bases) = (http.clone(), bases.clone());
        clients.push(tokio::spawn(async move {
            let mut acked = Acked::default();
            let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (c + 1);
            let mut history = Vec::new();
            for i in 0..TURNS {
                let said = format!("turn {c}-{i}: what do you know about kayak-{c}x{i}?");
                history.push(json!({"role": "user", "content": said}));
                let base = {
                    let b = bases.read();
                    b[pick(&mut seed, b.len())].clone()
                };
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/chat/completions"))
                    .json(
                        &json!({"model": "echo", "messages": history, "user": "alice",
                                  "stream": i % 2 == 1}),
                    )
                    .header("x-llmem-session", "trip")
                    .send()
                    .await;
                let answer = match r {
                    Ok(r) if r.status().is_success() => {
                        let text = r.text().await.unwrap_or_default();
                        // A stream cut by the kill is not an acknowledged turn.
                        (i % 2 == 0 || text.contains("[DONE]")).then_some(text)
                    }
                    _ => None,
                };
                match answer {
                    Some(_) => {
                        acked.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                        acked.turns.push(said);
                        // The client's history holds the answer as the proxy recorded it.
                        history
                            .push(json!({"role": "assistant", "content": format!("ack {c}-{i}")}));
                    }
                    None => {
                        acked.failed += 1;
                        history.pop();
                    }
                }
                // Distinct subjects, so that no memory updates another (that would hide it from the
                // list as an earlier version).
                let memory = format!("note {c}-{i}: item-{c}x{i} goes in bag {c}{i}");
                let base = {
                    let b = bases.read();
                    b[pick(&mut seed, b.len())].clone()
                };
                let r = http
                    .post(format!("{base}/memories"))
                    .json(&json!({"text": memory, "user_id": "alice"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => acked.memories.push(memory),
                    _ => acked.failed += 1,
                }
            }
            acked
        }));
    }
    // Mid-run: replica 1 is killed (SIGKILL: no shutdown, no flush) and started again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    replicas[1].child.kill().unwrap();
    replicas[1].child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Its cache on disk is checked against the view it saved, then brought up to date.
    replicas[1] = start(&upstream, &env, dirs[1].path());
    bases.write()[1] = replicas[1].base.clone();

    let mut acked = Acked::default();
    for c in clients {
        let a = c.await.unwrap();
        acked.turns.extend(a.turns);
        acked.memories.extend(a.memories);
        acked.failed += a.failed;
        acked.latencies_ms.extend(a.latencies_ms);
    }
    assert!(
        acked.turns.len() >= TURNS,
        "too few turns acknowledged: {}",
        acked.turns.len()
    );
    tokio::time::sleep(Duration::from_millis(STALENESS_MS + 100)).await;

    for p in &replicas {
        let base = &p.base;
        // Memories: every acknowledged one, exactly once, on every replica.
        let listed = get_json(
            &http,
            &format!("{base}/memories?user_id=alice&limit=1000"),
            None,
        )
        .await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for m in listed["results"].as_array().unwrap() {
            *seen
                .entry(m["memory"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        let missing: Vec<&String> = acked
            .memories
            .iter()
            .filter(|m| seen.get(*m) != Some(&1))
            .collect();
        if !missing.is_empty() {
            for (i, q) in replicas.iter().enumerate() {
                let url = format!("{}/memories?user_id=alice&limit=1000", q.base);
                let l = get_json(&http, &url, None).await;
                eprintln!(
                    "replica {i} lists {}",
                    l["results"].as_array().map_or(0, Vec::len)
                );
            }
            panic!("{base}: missing {missing:?}");
        }
        assert!(
            seen.values().all(|n| *n == 1),
            "{base}: a duplicate memory: {seen:?}"
        );
        // The session: every acknowledged turn, exactly once, in every replica's copy.
        let s = get_json(&http, &format!("{base}/sessions/alice/trip"), None).await;
        let texts: Vec<&str> = s["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user")
            .filter_map(|m| m["content"].as_str())
            .collect();
        for t in &acked.turns {
            assert_eq!(
                texts.iter().filter(|x| *x == t).count(),
                1,
                "{base}: turn {t:?} in {texts:?}"
            );
        }
        let mut unique = texts.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), texts.len(), "{base}: a turn twice: {texts:?}");
    }

    // A memory written on one replica is found by a search on another within the staleness.
    let r = http
        .post(format!("{}/memories", replicas[0].base))
        .json(&json!({"text": "Alice's passport number is PX-4471", "user_id": "alice"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let written = Instant::now();
    let mut found_after = None;
    while written.elapsed() < Duration::from_millis(STALENESS_MS * 4) {
        let hits: Value = http
            .post(format!("{}/memories/search", replicas[2].base))
            .json(&json!({"query": "passport number", "user_id": "alice"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if hits["results"].as_array().is_some_and(|h| {
            h.iter()
                .any(|m| m["memory"].as_str().is_some_and(|t| t.contains("PX-4471")))
        }) {
            found_after = Some(written.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found_after = found_after.expect("replica 2 never found replica 0's memory");
    assert!(
        found_after <= Duration::from_millis(STALENESS_MS + 500),
        "found after {found_after:?}, past the staleness bound"
    );
    let mut l = acked.latencies_ms.clone();
    l.sort_by(f64::total_cmp);
    eprintln!(
        "replicas: {} turns and {} memories acknowledged, {} refused or cut by the kill; turn p50 {:.0} ms p95 {:.0} ms; cross-replica search visible after {:?}",
        acked.turns.len(),
        acked.memories.len(),
        acked.failed,
        l[l.len() / 2],
        l[(l.len() * 95 / 100).min(l.len() - 1)],
        found_after
    );
}

/// Throughput and p95 of 1 and 3 replicas (loopback, moto), and the cost of write-through
/// against one process with its warm tier on local disk: 8 clients, each with its own user
/// and session, each request a turn (chat completion) or a memory write, to a random replica.
/// A measurement for docs/deployment.md, not a pass/fail test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about a minute), for docs/deployment.md"]
async fn replicas_measured() {
    let moto = start_moto();
    create_bucket(&moto, BUCKET);
    let upstream = echo_upstream(Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))).await;
    let shared = env(&moto);
    let local_dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let runs: Vec<(&str, Vec<Proxy>)> = vec![
        (
            "1 process, local warm tier (no sharing)",
            vec![serve(
                &[
                    "--upstream",
                    &upstream,
                    "--dir",
                    local_dir.path().to_str().unwrap(),
                ],
                &[],
            )],
        ),
        (
            "1 replica, shared",
            vec![start(&upstream, &shared, &local_dir.path().join("r0"))],
        ),
        (
            "3 replicas, shared",
            (1..4)
                .map(|i| start(&upstream, &shared, &local_dir.path().join(format!("r{i}"))))
                .collect(),
        ),
    ];
    for (name, procs) in runs {
        let bases: Vec<String> = procs.iter().map(|p| p.base.clone()).collect();
        let started = Instant::now();
        let mut jobs = Vec::new();
        for c in 0..8u64 {
            let (http, bases) = (http.clone(), bases.clone());
            let name = name.to_owned();
            jobs.push(tokio::spawn(async move {
                let mut seed = 0xA076_1D64_78BD_642F ^ (c + 1);
                let (mut turns, mut writes) = (Vec::new(), Vec::new());
                let mut history = Vec::new();
                for i in 0..20 {
                    let base = &bases[pick(&mut seed, bases.len())];
                    let user = format!("{name}-user-{c}").replace([' ', ',', '(', ')'], "-");
                    let t = Instant::now();
                    let r = http
                        .post(format!("{base}/memories"))
                        .json(&json!({"text": format!("note {i}: item-{c}x{i}"), "user_id": user}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                    writes.push(t.elapsed().as_secs_f64() * 1000.0);
                    history.push(
                        json!({"role": "user", "content": format!("turn {i} about kayak-{c}x{i}")}),
                    );
                    let base = &bases[pick(&mut seed, bases.len())];
                    let t = Instant::now();
                    let r = http
                        .post(format!("{base}/chat/completions"))
                        .header("x-llmem-session", "s")
                        .json(&json!({"model": "echo", "messages": history, "user": user}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                    r.bytes().await.unwrap();
                    turns.push(t.elapsed().as_secs_f64() * 1000.0);
                    history.push(json!({"role": "assistant", "content": "ok"}));
                }
                (turns, writes)
            }));
        }
        let (mut turns, mut writes) = (Vec::new(), Vec::new());
        for j in jobs {
            let (t, w) = j.await.unwrap();
            turns.extend(t);
            writes.extend(w);
        }
        let secs = started.elapsed().as_secs_f64();
        let q = |xs: &mut Vec<f64>, p: f64| {
            xs.sort_by(f64::total_cmp);
            xs[((xs.len() - 1) as f64 * p).round() as usize]
        };
        eprintln!(
            "MEASURED {name}: {:.0} requests/s; turn p50 {:.0} ms p95 {:.0} ms; memory write p50 {:.0} ms p95 {:.0} ms",
            (turns.len() + writes.len()) as f64 / secs,
            q(&mut turns, 0.5),
            q(&mut turns, 0.95),
            q(&mut writes, 0.5),
            q(&mut writes, 0.95),
        );
    }
}
