//! `MemoryManager`: compression under the threshold with nothing lost, gated recall, facts that
//! supersede, actual usage in the cost, and the real SmolLM2 writing summaries and facts.
use std::sync::Arc;

use llmem::core::{Filter, MemoryStore, Message, RecordKind, Role, Scope, Timestamp};
use llmem::providers::llamacpp::LlamaCppServer;
use llmem::tiers::WarmStore;
use llmem::{Config, MemoryManager, Providers, Usage};

use crate::{conversation, gpt4o};

fn small() -> Config {
    let mut c = Config::default();
    c.memory.max_context_tokens = 4000;
    c.memory.compression_threshold = 600;
    c.memory.short_term_size = 6;
    c.memory.answer_reserve = 256;
    c
}

fn manager(config: Config) -> (MemoryManager, Arc<WarmStore>) {
    let store = Arc::new(WarmStore::in_memory());
    let m = MemoryManager::new(
        config,
        Providers::default()
            .with_counter(gpt4o())
            .with_store(store.clone()),
    )
    .unwrap();
    (m, store)
}

#[tokio::test]
async fn compresses_under_the_threshold_and_loses_no_message() {
    let (mut m, store) = manager(small());
    let conv = conversation();
    let mut compressed = 0;
    for msg in &conv {
        m.add_message(msg.clone(), None).await.unwrap();
        if m.was_compressed_last_iteration() {
            compressed += 1;
            assert!(m.last_compression_savings() > 0);
        }
        let tokens = gpt4o().count_messages(m.messages());
        assert!(
            tokens <= 600 || !m.was_compressed_last_iteration(),
            "{tokens} tokens after compressing"
        );
        if msg.role == Role::User {
            m.context_for_llm().await.unwrap();
        }
    }
    let stats = m.stats();
    assert!(compressed >= 3, "{compressed} compressions");
    assert_eq!(stats.compression_count, compressed);
    assert_eq!(stats.messages, conv.len() as u64);
    assert!(stats.savings_percentage > 30.0, "{stats:?}");
    assert!(stats.net_savings > 0 && stats.total_cost > 0.0 && stats.net_cost > 0.0);
    assert!(m.summary().is_some_and(|s| !s.is_empty()));
    // Nothing lost: every conversation message is in the context or in long-term memory.
    let scope = Scope::session("default", "default");
    let archived = store
        .query(&scope, &Filter::eq("kind", "conversation"), None)
        .await
        .unwrap();
    for msg in conv.iter().filter(|x| x.role != Role::System) {
        let line = format!("{}: {}", msg.role.as_str(), msg.text());
        let kept = m.messages().iter().any(|x| x.text() == msg.text())
            || archived.iter().any(|r| r.text == line);
        assert!(kept, "lost: {line}");
    }
    assert!(archived.iter().all(|r| r.kind == RecordKind::Conversation));
}

#[tokio::test]
async fn recalls_only_what_the_question_needs() {
    let (mut m, _) = manager(small());
    for msg in conversation() {
        m.add_message(msg, None).await.unwrap();
    }
    let p = m
        .prepare(Some("Which vaccine booster does Biscuit need, and where?"))
        .await
        .unwrap();
    assert!(!p.retrieved.is_empty());
    assert!(p.retrieved.iter().all(|r| r.relevance >= 0.34));
    let text: String = p
        .messages
        .iter()
        .map(Message::text)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("Relevant memories"), "{text}");
    assert!(text.to_lowercase().contains("rabies"), "{text}");
    assert!(p.tokens <= 4000 - 256);
    let p = m
        .prepare(Some("Explain quantum chromodynamics and gauge symmetry."))
        .await
        .unwrap();
    assert!(p.retrieved.is_empty(), "{:?}", p.retrieved);
    assert!(
        !p.messages
            .iter()
            .any(|x| x.text().contains("Relevant memories"))
    );
}

#[tokio::test]
async fn a_new_fact_supersedes_the_old_one_and_keeps_its_date() {
    let (mut m, store) = manager(Config::default());
    let at = |d: &str| Timestamp::parse(d).unwrap();
    m.add_message(
        Message::user("My favourite colour is blue. What should I paint the hall?")
            .with_created_at(at("2024-01-02T10:00:00Z")),
        None,
    )
    .await
    .unwrap();
    m.add_message(Message::assistant("A light blue would work."), None)
        .await
        .unwrap();
    m.add_message(
        Message::user("Actually my favourite colour is green now.")
            .with_created_at(at("2024-03-05T10:00:00Z")),
        None,
    )
    .await
    .unwrap();
    let scope = Scope::tenant("default");
    let facts = store
        .query(
            &scope,
            &Filter::eq("metadata.fact_key", "my favourite colour"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(facts.len(), 2, "{facts:?}");
    let (old, new) = (&facts[0], &facts[1]);
    assert!(old.text.contains("blue") && new.text.contains("green"));
    assert_eq!(old.superseded_by.as_deref(), Some(new.id.as_str()));
    assert_eq!(new.supersedes.as_deref(), Some(old.id.as_str()));
    // Recall (the ranking the prompt is filled from) gives the new fact, not the old one.
    #[cfg(feature = "internals")]
    {
        let hits = m
            .longterm()
            .recall(&scope, "What is my favourite colour?", 5, &[])
            .await
            .unwrap();
        assert!(hits.iter().any(|h| h.record.text.contains("green")));
        assert!(
            !hits.iter().any(|h| h.record.text.contains("blue")),
            "{hits:?}"
        );
        let line = hits
            .iter()
            .find(|h| h.record.text.contains("green"))
            .unwrap()
            .line();
        assert!(line.starts_with("[5 March 2024] "), "{line}");
    }
    assert_eq!(m.stats().facts, 2);
}

#[tokio::test]
async fn actual_usage_replaces_the_estimate() {
    let (mut m, _) = manager(Config::default());
    m.add_message(Message::user("Hello there, how are you?"), None)
        .await
        .unwrap();
    let p = m.prepare(None).await.unwrap();
    assert!(p.tokens > 0);
    m.add_message(
        Message::assistant("Fine, thanks."),
        Some(Usage {
            input_tokens: 1000,
            output_tokens: 50,
            cached_input_tokens: 0,
        }),
    )
    .await
    .unwrap();
    let s = m.stats();
    assert_eq!(s.sent_tokens, 1000);
    // gpt-4o: $2.50 per 1M input tokens, $10 per 1M output tokens.
    assert!((s.total_cost - 0.003).abs() < 1e-9, "{}", s.total_cost);
    // Without usage, the estimate stands and the answer is priced as output.
    m.add_message(Message::user("And now?"), None)
        .await
        .unwrap();
    let p = m.prepare(None).await.unwrap();
    m.add_message(Message::assistant("Still fine."), None)
        .await
        .unwrap();
    let s2 = m.stats();
    assert_eq!(s2.sent_tokens, 1000 + p.tokens as u64);
    assert!(s2.total_cost > s.total_cost);
}

#[tokio::test]
async fn a_session_ends_into_long_term_memory_with_its_provenance_times_and_neighbours() {
    let store = Arc::new(WarmStore::in_memory());
    let mut c = small();
    c.retrieval.min_term_overlap = 0.2;
    let providers = Providers::default()
        .with_counter(gpt4o())
        .with_store(store.clone());
    let said = Timestamp::parse("2023-05-08T13:56:00Z").unwrap();
    let turns = [
        (
            "Caroline",
            "D1:1",
            "Hey Mel! What did you do at the weekend?",
        ),
        (
            "Melanie",
            "D1:2",
            "I painted a sunrise over the lake yesterday.",
        ),
        ("Caroline", "D1:3", "Lovely. See you next week!"),
    ];
    let mut m = MemoryManager::for_session(
        c.clone(),
        providers.clone(),
        Scope::session("conv", "session_1"),
    )
    .unwrap();
    for (who, id, text) in turns {
        let msg = Message::user(text)
            .with_name(who)
            .with_created_at(said)
            .with_metadata("dia_id", id);
        m.add_message(msg, None).await.unwrap();
    }
    assert_eq!(m.stats().compression_count, 0, "all still in the window");
    assert_eq!(m.end_session().await.unwrap(), 3);
    assert_eq!(m.end_session().await.unwrap(), 0, "nothing is stored twice");
    assert_eq!(m.messages().len(), 3, "the window keeps its messages");
    let all = store
        .query(&Scope::tenant("conv"), &Filter::All, None)
        .await
        .unwrap();
    assert_eq!(all.len(), 4, "three turns and one fact: {all:?}");
    let fact = all
        .iter()
        .find(|r| r.kind == RecordKind::Knowledge)
        .unwrap();
    assert_eq!(fact.text, "I painted a sunrise over the lake yesterday.");
    assert_eq!(
        fact.metadata["dia_id"], "D1:2",
        "a fact keeps its message's id"
    );
    assert_eq!(fact.metadata["times"], "yesterday = 7 May 2023");
    let painted = all
        .iter()
        .find(|r| r.kind == RecordKind::Conversation && r.text.contains("sunrise"))
        .unwrap();
    assert_eq!(
        painted.text,
        "Melanie: I painted a sunrise over the lake yesterday."
    );
    assert_eq!(
        painted.metadata["dia_id"], "D1:2",
        "the app's id travels along"
    );
    assert_eq!(painted.metadata["times"], "yesterday = 7 May 2023");
    let key = painted.metadata[llmem::core::KEYWORDS].as_str().unwrap();
    assert!(
        key.contains("weekend") && key.contains("next week"),
        "the question before and the reply after join the lexical key: {key}"
    );
    assert!(!all[0].metadata.contains_key("archived"));

    // A later session of the same user finds the turn by the words of the question it answered.
    let mut later =
        MemoryManager::for_session(c, providers, Scope::session("conv", "session_2")).unwrap();
    let p = later
        .prepare(Some("What did Melanie do at the weekend?"))
        .await
        .unwrap();
    let line = p
        .retrieved
        .iter()
        .find(|r| r.record.text.starts_with("Melanie: "))
        .map(llmem::Recalled::line)
        .unwrap_or_else(|| panic!("not recalled: {:?}", p.retrieved));
    assert_eq!(
        line,
        "[8 May 2023] Melanie: I painted a sunrise over the lake yesterday. (yesterday = 7 May 2023)"
    );
    // In the prompt the memories form a timeline: each day once, then what was said on it.
    let block = p
        .messages
        .iter()
        .map(Message::text)
        .find(|t| t.starts_with("Relevant memories"))
        .unwrap();
    assert!(
        block.contains(
            "\n[8 May 2023]\n- Melanie: I painted a sunrise over the lake yesterday. (yesterday = 7 May 2023)"
        ),
        "{block}"
    );
    assert_eq!(block.matches("[8 May 2023]").count(), 1, "{block}");
}

#[tokio::test]
async fn disabled_memory_passes_messages_through() {
    let mut c = small();
    c.memory.enabled = false;
    let (mut m, store) = manager(c);
    let conv = conversation();
    for msg in &conv {
        m.add_message(msg.clone(), None).await.unwrap();
    }
    assert_eq!(m.messages().len(), conv.len());
    assert_eq!(m.stats().compression_count, 0);
    assert_eq!(
        store
            .count(&Scope::tenant("default"), &Filter::All)
            .await
            .unwrap(),
        0
    );
    let ctx = m.context_for_llm().await.unwrap();
    assert_eq!(ctx.len(), conv.len());
}

#[tokio::test]
async fn bad_sessions_and_configs_are_errors() {
    let e = MemoryManager::for_session(Config::default(), Providers::default(), Scope::tenant(" "))
        .unwrap_err()
        .to_string();
    assert!(e.contains("user"), "{e}");
    let mut c = Config::default();
    c.memory.compression_ratio = 0.0;
    let e = MemoryManager::new(c, Providers::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory.compression_ratio"), "{e}");
    let mut c = Config::default();
    c.memory.summarizer = llmem::SummarizerMode::Chat;
    let e = MemoryManager::new(c, Providers::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory.summarizer"), "{e}");
    let mut c = Config::default();
    c.retrieval.taxonomy = "no/such/wordnet".into();
    let e = MemoryManager::new(c, Providers::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("retrieval.taxonomy") && e.contains("cargo xtask setup wordnet"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_writes_the_summaries_and_lists_the_facts() {
    let server = LlamaCppServer::builder().start().await.unwrap_or_else(|e| {
        panic!("could not start llama.cpp with SmolLM2: {e}\n(run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`)")
    });
    let chat: Arc<dyn llmem::core::ChatModel> = Arc::new(server.chat_model().unwrap());
    let mut c = small();
    c.memory.compression_threshold = 350;
    c.memory.short_term_size = 4;
    c.memory.facts = llmem::FactMode::Llm;
    c.memory.summarizer = llmem::SummarizerMode::Chat;
    c.chat = Some(toml::toml! { kind = "openai-compatible" });
    let store = Arc::new(WarmStore::in_memory());
    let mut m = MemoryManager::new(
        c,
        Providers::default()
            .with_counter(gpt4o())
            .with_chat(chat)
            .with_store(store.clone()),
    )
    .unwrap();
    for msg in conversation().into_iter().take(13) {
        m.add_message(msg, None).await.unwrap();
    }
    let s = m.stats();
    assert!(s.compression_count >= 1, "{s:?}");
    assert!(s.facts >= 1, "{s:?}");
    assert!(
        s.compression_tokens > 0,
        "the summaries were written by the model: {s:?}"
    );
    assert!(m.summary().is_some_and(|x| !x.trim().is_empty()));
}

/// Search ranks the reply to a question above the question, which repeats the words of a later
/// question about it; `retrieval.question_weight = 1` turns that off.
#[tokio::test]
async fn a_reply_outranks_the_question_it_answers() {
    async fn order(weight: f32) -> Vec<String> {
        let mut c = small();
        c.retrieval.question_weight = weight;
        let (mut m, _) = manager(c);
        let turns = [
            (
                "Ana",
                "Where did you go hiking last weekend with your sister?",
            ),
            (
                "Ben",
                "Mount Tamalpais. The hiking was steep, all the way up from the coast.",
            ),
            ("Ana", "I spent the weekend baking bread for the market."),
        ];
        for (who, text) in turns {
            m.add_message(Message::user(text).with_name(who), None)
                .await
                .unwrap();
        }
        m.end_session().await.unwrap();
        m.search("Where did they go hiking last weekend?", 3)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.record.text)
            .collect()
    }
    let plain = order(1.0).await;
    assert!(plain[0].starts_with("Ana: Where"), "{plain:?}");
    let weighted = order(Config::default().retrieval.question_weight).await;
    assert!(weighted[0].starts_with("Ben: Mount"), "{weighted:?}");
    assert_eq!(weighted.len(), plain.len(), "re-ranked, none dropped");
}

/// With WordNet (`cargo xtask setup wordnet`), a question that names a kind of thing finds the
/// memory that names one of them: "instruments" the clarinet, "animals" the puppy. Without it
/// (`retrieval.taxonomy = "off"`) neither shares a word with its question.
#[tokio::test]
async fn a_kind_of_thing_finds_the_thing_named() {
    let dir = llmem::providers::assets::cache_dir().join("wordnet");
    if !dir.join("data.noun").is_file() {
        assert!(
            std::env::var_os("LLMEM_CACHE_DIR").is_none(),
            "no WordNet in {}: run `cargo xtask setup wordnet`",
            dir.display()
        );
        eprintln!("skipped: no WordNet (run `cargo xtask setup wordnet`)");
        return;
    }
    async fn first(taxonomy: &str, question: &str) -> Option<String> {
        let mut c = small();
        c.retrieval.taxonomy = taxonomy.to_owned();
        let (mut m, _) = manager(c);
        let turns = [
            "I play clarinet in the park band on Sundays.",
            "We adopted a puppy last month, she chews everything.",
            "Took a short trip to Rome to clear my head.",
        ];
        for text in turns {
            m.add_message(Message::user(text).with_name("Mel"), None)
                .await
                .unwrap();
        }
        assert_eq!(m.end_session().await.unwrap(), 3);
        let hits = m.search(question, 3).await.unwrap();
        hits.into_iter().next().map(|h| h.record.text)
    }
    let with = dir.display().to_string();
    for (question, answer) in [
        ("Which instruments does she know?", "clarinet"),
        ("What animals live with them?", "puppy"),
        ("Which capital cities has she seen?", "Rome"),
    ] {
        let hit = first(&with, question).await;
        assert!(
            hit.as_deref().is_some_and(|h| h.contains(answer)),
            "{question} → {hit:?}"
        );
        let hit = first("off", question).await;
        assert!(
            hit.as_deref().is_none_or(|h| !h.contains(answer)),
            "{question} without WordNet → {hit:?}"
        );
    }
}

/// A fact and the turn it was drawn from say the same thing on the same day: recall gives it
/// once, and the slot goes to the next memory. The same words on another day are another
/// event, and are recalled too.
#[tokio::test]
#[cfg(feature = "internals")]
async fn recall_gives_a_statement_once_a_day() {
    use llmem::RetrievalSettings;
    use llmem::core::MemoryRecord;
    use llmem::internals::LongTerm;

    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::in_memory());
    let day = |d: &str| Timestamp::parse(&format!("{d}T10:00:00Z")).unwrap();
    let said = [
        ("Found a vet for Biscuit in Alvalade.", "2025-06-08"),
        ("user: Found a vet for Biscuit in Alvalade.", "2025-06-08"),
        ("user: Found a vet for Biscuit in Alvalade.", "2025-09-01"),
        (
            "user: Biscuit liked the clinic, open on Saturdays.",
            "2025-06-08",
        ),
        ("user: The balcony gets sun all afternoon.", "2025-06-08"),
    ];
    let records = said
        .iter()
        .map(|(t, d)| MemoryRecord::new("u1", *t).with_created_at(day(d)))
        .collect();
    let lt = LongTerm::new(store, None, RetrievalSettings::default());
    lt.remember(records).await.unwrap();
    let recalled = lt
        .recall(
            &Scope::tenant("u1"),
            "Where is the vet for Biscuit?",
            3,
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String)> = recalled
        .iter()
        .map(|r| (r.record.text.clone(), r.record.created_at.to_rfc3339()))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    let alvalade_june = got
        .iter()
        .filter(|(t, d)| t.contains("Alvalade") && d.starts_with("2025-06-08"))
        .count();
    assert_eq!(alvalade_june, 1, "the fact and its turn, once: {got:?}");
    assert!(
        got.iter()
            .any(|(t, d)| t.contains("Alvalade") && d.starts_with("2025-09-01")),
        "the same words on another day stay: {got:?}"
    );
    assert!(
        got.iter().any(|(t, _)| t.contains("Saturdays")),
        "the freed slot goes to the next memory: {got:?}"
    );
}
