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
