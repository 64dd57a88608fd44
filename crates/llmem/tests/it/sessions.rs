//! `Sessions`: isolation under concurrency, and a session resumed after a restart.
use llmem::core::Message;
use llmem::{Config, Providers, Sessions};

use crate::{conversation, gpt4o};

fn config(dir: Option<&std::path::Path>) -> Config {
    let mut c = Config::default();
    c.memory.max_context_tokens = 4000;
    c.memory.compression_threshold = 500;
    c.memory.short_term_size = 4;
    c.memory.answer_reserve = 256;
    c.tiers.dir = dir.map(std::path::Path::to_path_buf);
    c
}

/// Sessions kept in `dir`, as a process would open them.
fn persistent(dir: &std::path::Path) -> Sessions {
    Sessions::new(
        config(Some(dir)),
        Providers::default().with_counter(gpt4o()),
    )
    .unwrap()
}

const WORDS: [&str; 16] = [
    "amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "jasper",
    "kelp", "lagoon", "marble", "nectar", "onyx", "pepper",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_never_see_each_other() {
    let sessions = std::sync::Arc::new(
        Sessions::new(config(None), Providers::default().with_counter(gpt4o())).unwrap(),
    );
    let filler: Vec<Message> = conversation().into_iter().skip(1).take(24).collect();
    let mut tasks = Vec::new();
    for (i, word) in WORDS.iter().enumerate() {
        let sessions = sessions.clone();
        let filler = filler.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("user{i}");
            let h = sessions.get(&user, "s").unwrap();
            let mut m = h.lock().await;
            m.add_message(
                Message::user(format!("My secret password is {word}.")),
                None,
            )
            .await
            .unwrap();
            for f in filler {
                m.add_message(f, None).await.unwrap();
            }
            assert!(m.stats().compression_count >= 1);
            let p = m
                .prepare(Some("What is my secret password?"))
                .await
                .unwrap();
            let text: String = p
                .messages
                .iter()
                .map(Message::text)
                .collect::<Vec<_>>()
                .join(" ");
            // Whole words: a date line says "December", which holds "ember".
            let words: std::collections::HashSet<&str> =
                text.split(|c: char| !c.is_alphanumeric()).collect();
            assert!(words.contains(word), "{user} lost its password: {text}");
            for other in WORDS.iter().filter(|w| *w != word) {
                assert!(!words.contains(other), "{user} sees {other}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sessions.len(), WORDS.len());
}

#[tokio::test]
async fn a_session_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let conv = conversation();
    let (messages, stats) = {
        let s = persistent(dir.path());
        let h = s.get("alice", "trip/planning").unwrap();
        let mut m = h.lock().await;
        m.add_message(Message::user("My passport number is X1234567."), None)
            .await
            .unwrap();
        for msg in conv.iter().take(30) {
            m.add_message(msg.clone(), None).await.unwrap();
        }
        m.context_for_llm().await.unwrap();
        assert!(m.stats().compression_count >= 1);
        (m.messages().to_vec(), m.stats())
    };
    // A new process: the same directory, nothing in memory.
    let s = persistent(dir.path());
    let h = s.get("alice", "trip/planning").unwrap();
    let mut m = h.lock().await;
    assert_eq!(m.messages(), messages.as_slice());
    assert_eq!(m.stats(), stats);
    let p = m
        .prepare(Some("What is my passport number?"))
        .await
        .unwrap();
    assert!(
        p.retrieved
            .iter()
            .any(|r| r.record.text.contains("X1234567")),
        "{:?}",
        p.retrieved
    );
    // Another user's session starts empty and cannot recall alice's facts.
    let h = s.get("bob", "trip/planning").unwrap();
    let mut b = h.lock().await;
    assert!(b.messages().is_empty());
    let p = b
        .prepare(Some("What is my passport number?"))
        .await
        .unwrap();
    assert!(p.retrieved.is_empty());
    // Names cannot escape the directory.
    assert!(s.get("../../etc", "x").is_ok());
    assert!(
        std::fs::read_dir(dir.path().join("sessions"))
            .unwrap()
            .count()
            >= 2
    );
    assert!(s.get("", "x").is_err());
}

/// The access count of alice's memory holding `needle`, read from the store.
async fn access_count(s: &Sessions, needle: &str) -> u64 {
    use llmem::core::{Filter, MemoryStore, Scope};
    let store = s.providers().store.clone().unwrap();
    let all = store
        .query(&Scope::tenant("alice"), &Filter::All, None)
        .await
        .unwrap();
    let r = all
        .iter()
        .find(|r| r.text.contains(needle))
        .unwrap_or_else(|| panic!("no memory holds {needle}: {all:?}"));
    r.access_count
}

/// A recall counts as a read of what it found; `Sessions::flush` keeps those reads (the
/// server calls it at shutdown and every flush interval), and without it they were only in
/// RAM.
#[tokio::test]
async fn the_reads_of_a_recall_are_kept_by_flush() {
    let dir = tempfile::tempdir().unwrap();
    let recall = |s: &Sessions| {
        let h = s.get("alice", "s").unwrap();
        async move {
            let mut m = h.lock().await;
            let p = m
                .prepare(Some("What is my passport number?"))
                .await
                .unwrap();
            assert!(
                p.retrieved
                    .iter()
                    .any(|r| r.record.text.contains("X1234567"))
            );
        }
    };
    // Storing also reads (a new fact is compared with the stored ones): start from what that
    // left, saved.
    let before = {
        let s = persistent(dir.path());
        let h = s.get("alice", "s").unwrap();
        let mut m = h.lock().await;
        m.add_message(Message::user("My passport number is X1234567."), None)
            .await
            .unwrap();
        for msg in conversation().iter().take(30) {
            m.add_message(msg.clone(), None).await.unwrap();
        }
        drop(m);
        s.flush(true).await.unwrap();
        let before = access_count(&s, "X1234567").await;
        // Read, then stop without a flush: the read was in RAM only.
        recall(&s).await;
        assert_eq!(
            access_count(&s, "X1234567").await,
            before + 1,
            "counted in RAM"
        );
        before
    };
    let s = persistent(dir.path());
    assert_eq!(
        access_count(&s, "X1234567").await,
        before,
        "lost without a flush"
    );
    recall(&s).await;
    recall(&s).await;
    s.flush(true).await.unwrap();
    drop(s);
    let s = persistent(dir.path());
    assert_eq!(
        access_count(&s, "X1234567").await,
        before + 2,
        "kept by the flush"
    );
}

/// Two replicas changed one session from the same base: the merge keeps every message of both,
/// in time order, once, and adds up the counters.
#[test]
fn a_three_way_merge_keeps_both_replicas_turns() {
    use llmem::SessionState;
    use llmem::core::Timestamp;
    let at = |t: i64, m: Message| Message {
        created_at: Some(Timestamp(t)),
        ..m
    };
    let mut base = SessionState {
        tenant: "u".into(),
        session: Some("s".into()),
        context: vec![
            at(1, Message::user("hello")),
            at(2, Message::assistant("hi")),
        ],
        history_tokens: 10,
        ..SessionState::default()
    };
    base.stats.messages = 2;
    base.stats.total_cost = 0.5;
    let mut mine = base.clone();
    mine.context.push(at(5, Message::user("mine: kayak")));
    mine.context.push(at(6, Message::assistant("ok kayak")));
    mine.history_tokens += 7;
    mine.stats.messages += 2;
    mine.stats.total_cost += 0.25;
    let mut theirs = base.clone();
    theirs.context.push(at(3, Message::user("theirs: tent")));
    theirs.context.push(at(4, Message::assistant("ok tent")));
    theirs.history_tokens += 5;
    theirs.stats.messages += 2;
    theirs.stats.total_cost += 0.125;
    let merged = SessionState::merge(&base, &mine, &theirs);
    let texts: Vec<String> = merged.context.iter().map(Message::text).collect();
    assert_eq!(
        texts,
        [
            "hello",
            "hi",
            "theirs: tent",
            "ok tent",
            "mine: kayak",
            "ok kayak"
        ]
    );
    assert_eq!(merged.history_tokens, 22);
    assert_eq!(merged.stats.messages, 6);
    assert!((merged.stats.total_cost - 0.875).abs() < 1e-9);
    // Merging again with what is already in is a no-op: nothing twice.
    let again = SessionState::merge(&theirs, &merged, &merged);
    assert_eq!(again.context.len(), 6);
    // Only one side compressed: its summary stays, the other side's new turns join it.
    let mut compressed = base.clone();
    compressed.summary = Some("they greeted".into());
    compressed.context = vec![at(7, Message::user("after the summary"))];
    let merged = SessionState::merge(&base, &compressed, &theirs);
    assert_eq!(merged.summary.as_deref(), Some("they greeted"));
    let texts: Vec<String> = merged.context.iter().map(Message::text).collect();
    assert_eq!(texts, ["theirs: tent", "ok tent", "after the summary"]);
}
