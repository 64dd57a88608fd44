//! Consolidation: old conversation memories summarised by window, once, linked to their
//! sources, with the local LLM (llama.cpp with SmolLM2) and with the extractive fallback when
//! that server is gone.
use std::sync::Arc;

use llmem::core::{
    ChatSummarizer, Filter, MemoryRecord, MemoryStore, RecordKind, Scope, Summarizer, Timestamp,
};
use llmem::providers::llamacpp::LlamaCppServer;
use llmem::tiers::{WarmConfig, WarmStore};
use llmem::{ConsolidationSettings, ConsolidationWindow, SOURCES, WINDOW, consolidate};

use crate::gpt4o;

const DAY: i64 = 24 * 3600 * 1000;

/// Five turns of `session` on day `day` (days since the epoch, at noon).
fn turns(user: &str, session: &str, day: i64, topic: &str) -> Vec<MemoryRecord> {
    (0..5)
        .map(|i| {
            let who = if i % 2 == 0 { "Ana" } else { "Ben" };
            MemoryRecord::new(
                user,
                format!(
                    "{who}: turn {i} about {topic}, with detail number {}.",
                    day * 10 + i
                ),
            )
            .with_kind(RecordKind::Conversation)
            .with_session(session)
            .with_created_at(Timestamp(day * DAY + DAY / 2 + i * 60_000))
        })
        .collect()
}

#[tokio::test]
async fn old_windows_are_summarised_once_linked_to_their_sources() {
    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::open(WarmConfig::default()).unwrap());
    let now = Timestamp(20_000 * DAY);
    let mut all = Vec::new();
    all.extend(turns("ana", "s1", 19_000, "the garden"));
    all.extend(turns("ana", "s1", 19_001, "a trip to Porto"));
    all.extend(turns("ana", "s2", 19_001, "the new job"));
    all.extend(turns("ana", "s3", 19_999, "yesterday's dinner")); // too recent
    let mut few = turns("ana", "s4", 19_002, "a short chat");
    few.truncate(3); // below min_memories
    all.extend(few);
    all.extend(turns("bob", "s1", 19_000, "bob's garden"));
    store.put(all).await.unwrap();

    let settings = ConsolidationSettings::default();
    let out = consolidate(&store, None, None, gpt4o(), "ana", &settings, now)
        .await
        .unwrap();
    assert_eq!(out.summaries.len(), 3, "{out:?}");
    assert_eq!(out.sources, 15);
    let scope = Scope::tenant("ana");
    let summaries = store
        .query(&scope, &Filter::eq("kind", "summary"), None)
        .await
        .unwrap();
    assert_eq!(summaries.len(), 3);
    for s in &summaries {
        let sources = s.metadata[SOURCES].as_array().unwrap();
        assert_eq!(sources.len(), 5, "{s:?}");
        let ids: Vec<String> = sources
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let src = store.get(&scope, &ids).await.unwrap();
        assert_eq!(src.len(), 5, "the sources stay");
        assert!(src.iter().all(|r| r.session == s.session));
        let last = src.iter().map(|r| r.created_at).max().unwrap();
        assert_eq!(s.created_at, last);
        assert!(!s.text.trim().is_empty());
        assert!(
            s.metadata[WINDOW].as_str().unwrap().starts_with("2022-"),
            "{s:?}"
        );
    }
    // Nothing new: a second run writes nothing; bob is untouched.
    let again = consolidate(&store, None, None, gpt4o(), "ana", &settings, now)
        .await
        .unwrap();
    assert!(again.summaries.is_empty(), "{again:?}");
    let bob = Scope::tenant("bob");
    assert_eq!(
        store
            .count(&bob, &Filter::eq("kind", "summary"))
            .await
            .unwrap(),
        0
    );
    // By week, the two days of session s1 (19000 and 19001 fall in one ISO week or two) make
    // at most one summary per session and week; bob's is made on his own run.
    let weekly = ConsolidationSettings {
        window: ConsolidationWindow::Week,
        ..settings.clone()
    };
    let b = consolidate(&store, None, None, gpt4o(), "bob", &weekly, now)
        .await
        .unwrap();
    assert_eq!(b.summaries.len(), 1);
    // Bad settings name the key.
    let bad = ConsolidationSettings {
        min_memories: 1,
        ..settings
    };
    let e = consolidate(&store, None, None, gpt4o(), "ana", &bad, now)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("consolidation.min_memories"), "{e}");
}

#[tokio::test]
async fn the_local_llm_summarises_and_a_dead_one_falls_back_to_extractive() {
    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::open(WarmConfig::default()).unwrap());
    let now = Timestamp(20_000 * DAY);
    store
        .put(turns("ana", "s1", 19_000, "Biscuit the beagle"))
        .await
        .unwrap();
    let settings = ConsolidationSettings::default();
    let summarizer: Arc<dyn Summarizer> = {
        let server = LlamaCppServer::builder().start().await.unwrap_or_else(|e| {
            panic!("could not start llama.cpp with SmolLM2: {e}\n(run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`)")
        });
        let s: Arc<dyn Summarizer> = Arc::new(ChatSummarizer::new(
            Arc::new(server.chat_model().unwrap()),
            2048,
        ));
        let out = consolidate(&store, Some(&s), None, gpt4o(), "ana", &settings, now)
            .await
            .unwrap();
        assert_eq!((out.summaries.len(), out.fallbacks), (1, 0), "{out:?}");
        s
        // The server stops here.
    };
    store
        .put(turns("ana", "s1", 19_001, "the vet visit"))
        .await
        .unwrap();
    let out = consolidate(
        &store,
        Some(&summarizer),
        None,
        gpt4o(),
        "ana",
        &settings,
        now,
    )
    .await
    .unwrap();
    assert_eq!((out.summaries.len(), out.fallbacks), (1, 1), "{out:?}");
    let s = store
        .get(&Scope::tenant("ana"), &out.summaries)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        s.text.contains("vet visit"),
        "the extractive summary keeps source sentences: {}",
        s.text
    );
}
