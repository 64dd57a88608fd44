//! Forget and update through the product's API: a secret said in a session is forgotten from
//! every place that held it (warm log, Lance cold tier, facts, other memories' lexical keys,
//! saved sessions), nothing else goes, and an update keeps the earlier version.
#![cfg(feature = "lance")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llmem::core::{Filter, MemoryStore, Message, Scope};
use llmem::tiers::{WarmConfig, WarmStore};
use llmem::{Config, MemoryManager, Providers, Sessions};

use crate::{conversation, gpt4o};

const SECRET: &str = "X7731904";

fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.memory.max_context_tokens = 4000;
    c.memory.compression_threshold = 500;
    c.memory.short_term_size = 4;
    c.memory.answer_reserve = 256;
    c.tiers.dir = Some(dir.join("data"));
    c.tiers.cold = true;
    c.tiers.warm_max_items = Some(5);
    c
}

fn sessions(dir: &Path) -> Sessions {
    Sessions::new(config(dir), Providers::default().with_counter(gpt4o())).unwrap()
}

/// The files under `dir` whose bytes hold `needle` (no tier here compresses: warm's log is
/// JSON lines, sessions are JSON, and the test first checks that the secret is found).
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_forgotten_secret_leaves_no_byte_on_disk_and_nothing_else_goes() {
    let dir = tempfile::tempdir().unwrap();
    let conv = conversation();
    {
        let s = sessions(dir.path());
        let h = s.get("alice", "trip").unwrap();
        let mut m = h.lock().await;
        m.add_message(
            Message::user(format!("My passport number is {SECRET}.")),
            None,
        )
        .await
        .unwrap();
        for msg in conv.iter().take(30) {
            m.add_message(msg.clone(), None).await.unwrap();
        }
        m.add_message(
            Message::user(format!("Remind me that passport {SECRET} expires in 2031.")),
            None,
        )
        .await
        .unwrap();
        m.context_for_llm().await.unwrap();
        assert!(m.stats().compression_count >= 1);
        drop(m);
        let h = s.get("bob", "trip").unwrap();
        let mut b = h.lock().await;
        b.add_message(Message::user("My library card is LC-5521."), None)
            .await
            .unwrap();
        for msg in conv.iter().take(12) {
            b.add_message(msg.clone(), None).await.unwrap();
        }
        drop(b);
        s.flush(true).await.unwrap();
        let before = files_holding(dir.path(), SECRET);
        assert!(
            before.len() >= 2,
            "the secret should be on disk before the forget (session, log, dataset): {before:?}"
        );
        let alice = Scope::tenant("alice");
        let store = s.providers().store.clone().unwrap();
        let alice_before = store.count(&alice, &Filter::All).await.unwrap();

        let filter = Filter::parse(&serde_json::json!({"text": {"$contains": SECRET}})).unwrap();
        let out = s.forget("alice", &filter).await.unwrap();
        assert!(out.memories >= 2, "{out:?}");
        assert!(out.sessions >= 1, "{out:?}");
        let left = files_holding(dir.path(), SECRET);
        assert!(left.is_empty(), "files still holding the secret: {left:?}");
        // Everything else of alice's is still there and findable; bob is untouched.
        let alice_after = store.count(&alice, &Filter::All).await.unwrap();
        assert_eq!(alice_after, alice_before - out.memories);
        assert!(alice_after > 10, "{alice_after}");
        let h = s.get("bob", "trip").unwrap();
        let b = h.lock().await;
        let hits = b.search("library card", 3).await.unwrap();
        assert!(
            hits.iter().any(|h| h.record.text.contains("LC-5521")),
            "{hits:?}"
        );
        // Forgetting again finds nothing, and says so without an error.
        let again = s.forget("alice", &filter).await.unwrap();
        assert_eq!(again.memories, 0, "{again:?}");
    }
    // A new process: the session resumes without the secret, and recall cannot bring it back.
    let s = sessions(dir.path());
    let h = s.get("alice", "trip").unwrap();
    let mut m = h.lock().await;
    assert!(!m.messages().is_empty());
    assert!(m.messages().iter().all(|x| !x.text().contains(SECRET)));
    let p = m
        .prepare(Some("What is my passport number?"))
        .await
        .unwrap();
    assert!(
        p.messages.iter().all(|x| !x.text().contains(SECRET)),
        "{:?}",
        p.messages
    );
    assert!(files_holding(dir.path(), SECRET).is_empty());
}

#[tokio::test]
async fn forgetting_everything_of_a_user_deletes_their_sessions_and_memories_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = sessions(dir.path());
    for user in ["carol", "dave"] {
        let h = s.get(user, "one").unwrap();
        let mut m = h.lock().await;
        m.add_message(
            Message::user(format!("My locker code is {user}-4417.")),
            None,
        )
        .await
        .unwrap();
        for msg in conversation().iter().take(12) {
            m.add_message(msg.clone(), None).await.unwrap();
        }
    }
    let out = s.forget("carol", &Filter::All).await.unwrap();
    assert!(out.memories >= 1 && out.sessions == 1, "{out:?}");
    assert!(files_holding(dir.path(), "carol-4417").is_empty());
    assert!(!files_holding(dir.path(), "dave-4417").is_empty());
    let store = s.providers().store.clone().unwrap();
    assert_eq!(
        store
            .count(&Scope::tenant("carol"), &Filter::All)
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .count(&Scope::tenant("dave"), &Filter::All)
            .await
            .unwrap()
            > 0
    );
    // carol's session starts again empty.
    let h = s.get("carol", "one").unwrap();
    assert!(h.lock().await.messages().is_empty());
}

#[tokio::test]
async fn an_update_keeps_the_earlier_version_and_bad_ids_get_clear_errors() {
    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::open(WarmConfig::default()).unwrap());
    let mut m = MemoryManager::new(
        Config::default(),
        Providers::default()
            .with_counter(gpt4o())
            .with_store(store.clone()),
    )
    .unwrap();
    m.add_message(Message::user("My favourite colour is green."), None)
        .await
        .unwrap();
    let hit = m
        .search("favourite colour", 5)
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.record.text.contains("green"))
        .expect("the fact is stored");
    let id = hit.record.id.clone();
    let updated = m.update(&id, "My favourite colour is blue.").await.unwrap();
    assert_eq!(updated.id, id, "an update keeps the memory's id");
    assert!(updated.metadata.contains_key(llmem::UPDATED_AT));
    let hits = m.search("favourite colour", 5).await.unwrap();
    assert!(
        hits.iter().any(|h| h.record.text.contains("blue")),
        "{hits:?}"
    );
    assert!(
        hits.iter().all(|h| !h.record.text.contains("green")),
        "{hits:?}"
    );
    // The earlier version: findable by id, marked as replaced, with its text and time.
    let old_id = updated.supersedes.clone().unwrap();
    let scope = Scope::tenant("default");
    let old = store
        .get(&scope, std::slice::from_ref(&old_id))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(old.text, "My favourite colour is green.");
    assert_eq!(old.superseded_by.as_deref(), Some(id.as_str()));
    assert_eq!(old.created_at, hit.record.created_at);
    // Updating the earlier version names the one to update instead.
    let e = m.update(&old_id, "purple").await.unwrap_err().to_string();
    assert!(e.contains("earlier version") && e.contains(&id), "{e}");
    let e = m
        .update("no-such-id", "purple")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-id"), "{e}");
    let e = m.update(&id, "   ").await.unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    // Forgetting the memory takes its history with it.
    let only = Filter::parse(&serde_json::json!({"id": id})).unwrap();
    let out = m.forget(&only).await.unwrap();
    assert_eq!(out.memories, 2, "{out:?}");
    assert!(store.get(&scope, &[old_id]).await.unwrap().is_empty());
}
