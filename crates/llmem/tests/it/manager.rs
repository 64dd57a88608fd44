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

/// Each turn a user message of its speaker, then the session ended: every turn into
/// long-term memory.
async fn say_and_end(m: &mut MemoryManager, turns: &[(&str, &str)]) {
    for (who, text) in turns {
        m.add_message(Message::user(*text).with_name(*who), None)
            .await
            .unwrap();
    }
    assert_eq!(m.end_session().await.unwrap(), turns.len());
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
    // What the model spent, as llama.cpp reported it: the summaries and the fact extraction.
    assert!(s.summary_calls >= 1 && s.summary_tokens > 0, "{s:?}");
    assert!(s.fact_calls >= 1 && s.fact_tokens > 0, "{s:?}");
    assert_eq!(s.compression_tokens, s.summary_tokens + s.fact_tokens);
    assert_eq!(s.estimated_calls, 0, "llama.cpp reports its usage: {s:?}");
    assert_eq!(
        s.net_savings,
        s.full_history_tokens as i64 - s.sent_tokens as i64 - s.compression_tokens as i64
    );
    assert!(m.summary().is_some_and(|x| !x.trim().is_empty()));
}

/// The tokens of one summary by a real [`ChatSummarizer`] over llama.cpp, as the server reported
/// them, and the name of the model it reported.
async fn one_summary(server: &LlamaCppServer) -> llmem::core::Summary {
    use llmem::core::{Summarizer, SummaryRequest};
    let summarizer = server.summarizer(2048).unwrap();
    summarizer
        .summarize_with_usage(SummaryRequest {
            text: "user: My sister Ana moved to Porto in May 2024.\nassistant: Noted.".into(),
            previous_summary: None,
            max_tokens: 40,
            instructions: None,
        })
        .await
        .unwrap()
}

/// A real `ChatSummarizer` over llama.cpp reports what each summary spent; the manager counts
/// it in `compression_tokens` and, priced at the summariser's model (here from a user catalog
/// that prices it), in `compression_cost`, the total cost and the net cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_summarizers_usage_lands_in_the_stats_and_the_net_cost() {
    let server = LlamaCppServer::builder().start().await.unwrap_or_else(|e| {
        panic!("could not start llama.cpp with SmolLM2: {e}\n(run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`)")
    });
    let probe = one_summary(&server).await;
    let usage = probe.usage.tokens.expect("llama.cpp reports usage");
    assert!(
        usage.input_tokens > 20 && usage.output_tokens > 0,
        "{probe:?}"
    );
    assert!(!probe.usage.model.is_empty(), "{probe:?}");

    // Unpriced first: the summariser's model is not one the shipped catalog prices.
    let dir = tempfile::tempdir().unwrap();
    let run = |catalog: Option<std::path::PathBuf>| {
        let server = &server;
        async move {
            // A small summary (a few turns) keeps the model's work short.
            let mut c = small();
            c.memory.compression_threshold = 250;
            c.memory.short_term_size = 2;
            c.tokens.catalog = catalog;
            let summarizer: Arc<dyn llmem::core::Summarizer> =
                Arc::new(server.summarizer(2048).unwrap());
            let mut m = MemoryManager::new(
                c,
                Providers::default()
                    .with_counter(gpt4o())
                    .with_summarizer(summarizer)
                    .with_store(Arc::new(WarmStore::in_memory())),
            )
            .unwrap();
            for msg in conversation().into_iter().take(9) {
                let user = msg.role == Role::User;
                m.add_message(msg, None).await.unwrap();
                if user {
                    m.prepare(None).await.unwrap();
                }
            }
            m
        }
    };
    let m = run(None).await;
    let s = m.stats();
    assert!(s.summary_calls >= 1 && s.summary_tokens > 0, "{s:?}");
    assert_eq!(s.compression_tokens, s.summary_tokens);
    let model = probe.usage.model.to_lowercase();
    if !model.starts_with("smollm2") {
        // Not in the catalog: counted, at $0.
        assert_eq!(s.unpriced_tokens, s.summary_tokens, "{model}: {s:?}");
    }
    assert_eq!(s.compression_cost, 0.0, "{s:?}");

    // Priced by a user catalog at $1,000 / $2,000 per million tokens in / out.
    let catalog = dir.path().join("models.toml");
    std::fs::write(
        &catalog,
        format!(
            "[[model]]\nid = {model:?}\nprovider = \"open\"\ncontext_window = 8192\nmax_output = 2048\n\
             input = 1000.0\noutput = 2000.0\ntokenizer = \"estimate:generic\"\nchat_format = \"chatml\"\n"
        ),
    )
    .unwrap();
    let m = run(Some(catalog)).await;
    let s = m.stats();
    assert!(s.summary_calls >= 1 && s.summary_tokens > 0, "{s:?}");
    assert_eq!(s.unpriced_tokens, 0, "{s:?}");
    let t = s.summary_tokens as f64;
    assert!(
        s.compression_cost >= t * 1000.0 / 1e6 && s.compression_cost <= t * 2000.0 / 1e6,
        "{s:?}"
    );
    // The net cost is what the whole history would have cost, less the prompts paid and the
    // summaries.
    let st = m.state();
    let pending = st.pending_prompt.map_or(0.0, |p| p as f64 * 2.5 / 1e6);
    let expected = s.full_history_cost - (st.prompt_cost + pending) - s.compression_cost;
    assert!((s.net_cost - expected).abs() < 1e-9, "{s:?}");
    assert!(s.total_cost >= s.compression_cost + st.prompt_cost, "{s:?}");
    assert!(s.net_cost < s.full_history_cost - (st.prompt_cost + pending));
}

/// A `[budget]` in dollars: the 50 % alarm fires once, 100 % once, then the next request is
/// refused with `BudgetExceeded` naming the budget and the key that raises it; a resumed
/// session keeps its spending and does not fire its alarms again.
#[tokio::test]
async fn a_budget_alarms_once_and_its_hard_stop_refuses_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let mut c = Config::default();
    c.budget.max_cost_usd = Some(0.01);
    c.budget.alarm_at = vec![0.5];
    let open = |c: &Config| {
        MemoryManager::new(
            c.clone(),
            Providers::default()
                .with_counter(gpt4o())
                .with_store(Arc::new(WarmStore::in_memory())),
        )
        .unwrap()
        .persist_to(&path)
        .unwrap()
    };
    let mut m = open(&c);
    // gpt-4o: $2.50 per 1M input tokens.
    let turn = |input: u64| Usage {
        input_tokens: input,
        output_tokens: 0,
        cached_input_tokens: 0,
    };
    let mut alarms = Vec::new();
    for input in [1_000, 1_200, 400, 2_000] {
        m.add_message(Message::user("How is the garden doing?"), None)
            .await
            .unwrap();
        m.prepare(None).await.unwrap();
        m.add_message(Message::assistant("Growing well."), Some(turn(input)))
            .await
            .unwrap();
        alarms.push(m.stats().budget_alarms);
    }
    // $0.0025, $0.0055 (50 %), $0.0065, $0.0115 (100 %).
    assert_eq!(alarms, [0, 1, 1, 2]);
    assert_eq!(
        m.budget()
            .alarms()
            .iter()
            .map(|a| a.threshold)
            .collect::<Vec<_>>(),
        [0.5, 1.0]
    );
    m.add_message(Message::user("And the roses?"), None)
        .await
        .unwrap();
    let e = m.prepare(None).await.unwrap_err();
    assert!(matches!(e, llmem::Error::BudgetExceeded { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("session `default/default`") && msg.contains("raise budget.max_cost_usd"),
        "{msg}"
    );
    assert_eq!(m.stats().budget_refusals, 1);
    drop(m);

    // Resumed: still over, and no alarm fires again.
    let mut m = open(&c);
    assert!(m.prepare(None).await.is_err());
    let s = m.stats();
    assert_eq!((s.budget_alarms, s.budget_refusals), (2, 2), "{s:?}");
    // A larger budget lets it go on.
    c.budget.max_cost_usd = Some(1.0);
    let mut m = open(&c);
    m.prepare(None).await.unwrap();
}

/// `budget.per = "user"`: a user's sessions share one budget, other users have their own;
/// `hard_stop = false` only warns.
#[tokio::test]
async fn a_users_sessions_share_a_budget() {
    let mut c = Config::default();
    c.budget.max_tokens = Some(1_000);
    c.budget.per = llmem::BudgetScope::User;
    let providers = Providers::default()
        .with_counter(gpt4o())
        .with_store(Arc::new(WarmStore::in_memory()));
    let session = |c: &Config, user: &str, s: &str| {
        MemoryManager::for_session(c.clone(), providers.clone(), Scope::session(user, s)).unwrap()
    };
    let mut a1 = session(&c, "ana", "one");
    a1.add_message(Message::user("Hello!"), None).await.unwrap();
    a1.prepare(None).await.unwrap();
    a1.add_message(
        Message::assistant("Hi."),
        Some(Usage {
            input_tokens: 900,
            output_tokens: 200,
            cached_input_tokens: 0,
        }),
    )
    .await
    .unwrap();
    let mut a2 = session(&c, "ana", "two");
    a2.add_message(Message::user("Hello again!"), None)
        .await
        .unwrap();
    let e = a2.prepare(None).await.unwrap_err().to_string();
    assert!(
        e.contains("user `ana`") && e.contains("budget.max_tokens"),
        "{e}"
    );
    let mut b = session(&c, "bo", "one");
    b.add_message(Message::user("Hello!"), None).await.unwrap();
    b.prepare(None).await.unwrap();
    assert_eq!(providers.budgets.refusals(), 1);
    assert_eq!(
        providers.budgets.alarms(),
        3,
        "50 %, 80 % and 100 % of ana's"
    );

    c.budget.hard_stop = false;
    let mut w = MemoryManager::for_session(
        c,
        Providers::default()
            .with_counter(gpt4o())
            .with_store(Arc::new(WarmStore::in_memory())),
        Scope::session("cy", "one"),
    )
    .unwrap();
    w.add_message(Message::user("Hello!"), None).await.unwrap();
    w.prepare(None).await.unwrap();
    w.add_message(
        Message::assistant("Hi."),
        Some(Usage {
            input_tokens: 5_000,
            output_tokens: 0,
            cached_input_tokens: 0,
        }),
    )
    .await
    .unwrap();
    w.prepare(None).await.unwrap();
    assert_eq!(w.stats().budget_alarms, 3);
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
        say_and_end(&mut m, &turns).await;
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
/// once, and so does the search: the slot goes to the next memory. The same words on another day are another
/// event, and are recalled too.
#[tokio::test]
#[cfg(feature = "internals")]
async fn recall_and_search_give_a_statement_once_a_day() {
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
    let recalled: Vec<(String, String)> = recalled
        .iter()
        .map(|r| (r.record.text.clone(), r.record.created_at.to_rfc3339()))
        .collect();
    // The search's top k too: a memory repeating one above it takes no place.
    let searched: Vec<(String, String)> = lt
        .search(&Scope::tenant("u1"), "Where is the vet for Biscuit?", 3)
        .await
        .unwrap()
        .iter()
        .map(|h| (h.record.text.clone(), h.record.created_at.to_rfc3339()))
        .collect();
    for got in [recalled, searched] {
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
}

/// The relevance gate judges a question by its best match, then fills by rank: with the real
/// MiniLM, a question about the conversation recalls its memories, those far from it by cosine
/// too (which a gate on each memory's own cosine drops), and a question about nothing
/// remembered recalls nothing (which no gate at all would not ensure).
#[cfg(feature = "onnx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_judges_the_question_by_its_best_match() {
    async fn recalled(gate: f32, floor: f32, question: &str) -> Vec<(String, f32)> {
        let mut c = small();
        c.retrieval.recall_gate = gate;
        c.retrieval.recall_floor = floor;
        c.memory.facts = llmem::FactMode::Off;
        let providers = Providers::default()
            .with_counter(gpt4o())
            .with_store(Arc::new(WarmStore::in_memory()))
            .with_embedder(crate::minilm());
        let mut m = MemoryManager::new(c.clone(), providers.clone()).unwrap();
        let turns = [
            (
                "Mel",
                "We went to a pottery workshop on Saturday, the kids made bowls.",
            ),
            ("Jon", "Did Ava like it?"),
            ("Mel", "Loved it! Already asking when we go back."),
            ("Jon", "I started training for the marathon in October."),
            ("Mel", "The weather was awful all week, rain every day."),
        ];
        say_and_end(&mut m, &turns).await;
        // Asked in a new session of the same user: the turns are no longer in its window
        // (recall leaves out what the prompt already says), only in long-term memory.
        let mut asker =
            MemoryManager::for_session(c, providers, Scope::session("default", "questions"))
                .unwrap();
        let p = asker.prepare(Some(question)).await.unwrap();
        p.retrieved
            .into_iter()
            .map(|r| (r.record.text, r.relevance))
            .collect()
    }
    let about = "Did Mel's kids enjoy the pottery workshop?";
    let elsewhere = "Explain quantum chromodynamics and gauge symmetry.";
    let defaults = llmem::RetrievalSettings::default();
    let (gate, floor) = (defaults.recall_gate, defaults.recall_floor);

    // The shipped gate: the question's best match passes it, and memories far from the
    // question by cosine come with it, best first, up to k.
    let got = recalled(gate, floor, about).await;
    assert!(got[0].0.contains("pottery") && got[0].1 >= gate, "{got:?}");
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.iter().any(|(_, c)| *c < 0.35), "{got:?}");
    // Nothing remembered is about the other question: it recalls nothing.
    assert_eq!(recalled(gate, floor, elsewhere).await, Vec::new());

    // A gate on each memory's own cosine keeps only the close ones.
    let got = recalled(0.0, 0.35, about).await;
    assert!(
        !got.is_empty() && got.iter().all(|(_, c)| *c >= 0.35),
        "{got:?}"
    );
    assert!(got.len() < 5, "{got:?}");
    // And without the gate, the other question is given memories it does not need.
    assert!(!recalled(0.0, 0.0, elsewhere).await.is_empty());
}

/// `retrieval.vector_weight` sets what the hybrid search ranks by: with the real MiniLM, 1
/// ranks the memories by their cosine with the question, 0 by its words, as a store without
/// vectors does.
#[cfg(feature = "onnx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vector_weight_ranks_by_meaning_or_by_words() {
    let question = "Did the children have fun making things out of clay?";
    async fn ranked(
        weight: f32,
        embedder: bool,
        question: &str,
    ) -> Vec<(String, Option<Vec<f32>>)> {
        let mut c = small();
        c.retrieval.vector_weight = weight;
        // The search alone: no re-ranking after the fusion.
        c.retrieval.late_interaction = 0.0;
        c.retrieval.session_weight = 0.0;
        c.retrieval.question_weight = 1.0;
        c.memory.facts = llmem::FactMode::Off;
        let mut providers = Providers::default()
            .with_counter(gpt4o())
            .with_store(Arc::new(WarmStore::in_memory()));
        if embedder {
            providers = providers.with_embedder(crate::minilm());
        }
        let mut m = MemoryManager::new(c, providers).unwrap();
        let turns = [
            (
                "Mel",
                "We went to a pottery workshop on Saturday, the kids made bowls.",
            ),
            ("Jon", "Did the children have a good time at the fair?"),
            (
                "Mel",
                "Making things by hand is fun, out of wood or anything.",
            ),
            ("Jon", "I started training for the marathon in October."),
            ("Mel", "The weather was awful all week, rain every day."),
        ];
        say_and_end(&mut m, &turns).await;
        m.search(question, 5)
            .await
            .unwrap()
            .into_iter()
            .map(|h| (h.record.text, h.record.embedding))
            .collect()
    }
    let texts =
        |r: &[(String, Option<Vec<f32>>)]| r.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
    let q = crate::minilm()
        .embed(&[question.to_owned()])
        .await
        .unwrap()
        .remove(0);
    let by_meaning = ranked(1.0, true, question).await;
    let cosines: Vec<f32> = by_meaning
        .iter()
        .map(|(_, v)| {
            let v = v.as_ref().expect("every memory has its vector");
            q.iter().zip(v).map(|(a, b)| a * b).sum()
        })
        .collect();
    assert!(
        cosines.windows(2).all(|w| w[0] >= w[1]),
        "weight 1 ranks by cosine: {:?} {cosines:?}",
        texts(&by_meaning)
    );
    assert!(
        by_meaning[0].0.contains("pottery"),
        "{:?}",
        texts(&by_meaning)
    );
    let by_words = texts(&ranked(0.0, true, question).await);
    let without_vectors = texts(&ranked(0.0, false, question).await);
    assert_eq!(by_words, without_vectors, "weight 0 ranks by words alone");
    assert_ne!(by_words, texts(&by_meaning), "the weight changes the order");
    // The pottery turn says what was asked in other words ("kids", "bowls"): first by
    // meaning, last by words, behind the turn that repeats the question's words.
    assert!(
        by_words[0].starts_with("Mel: Making things"),
        "{by_words:?}"
    );
    assert!(by_words[4].contains("pottery"), "{by_words:?}");
}
