//! Layout invariants: budgets by the real tokenizer, protected blocks, tool groups, overflow and load policies.
use llmem_core::{Error, Message, Result, Role};
use llmem_window::{Block, Compactor, Layout, Load, Overflow, Oversize};

use crate::{agent_messages, assert_tool_pairs, gpt4o, locomo_messages};

fn check(layout: &Layout) {
    let counter = layout.counter();
    let rendered = layout.render();
    let exact = counter.count_messages(&rendered);
    assert_eq!(
        layout.prompt_tokens(),
        exact,
        "running totals drifted from the model's count"
    );
    assert!(exact + layout.block("answer").map_or(0, |b| b.used()) <= layout.budget());
    assert_eq!(layout.free_memory(), layout.budget() - layout.used());
}

#[test]
fn a_chat_layout_over_a_long_conversation_respects_every_invariant() {
    let counter = gpt4o();
    let mut p = Layout::chat(counter.clone(), 2000, 300).unwrap();
    p.push_text(
        "system",
        "You are a companion who remembers the user's life.",
    )
    .unwrap();
    p.push_text("pinned", "The user's name is Caroline.")
        .unwrap();
    let all = agent_messages(1200);
    let mut evicted = Vec::new();
    for (i, m) in all.iter().enumerate() {
        p += m.clone();
        if i % 50 == 0 {
            p.load(
                "retrieved",
                [Message::system(format!("Retrieved note {i}: {}", m.text()))],
                Load::Overwrite,
            )
            .unwrap();
        }
        evicted.extend(p.take_rejected().into_iter().map(|(_, e)| e.to_string()));
        check(&p);
        let w = p.render();
        assert_eq!(
            w[0].text(),
            "You are a companion who remembers the user's life."
        );
        assert_eq!(w[1].text(), "The user's name is Caroline.");
        let next_is_tool = all.get(i + 1).is_some_and(|n| n.role == Role::Tool);
        assert_tool_pairs(&w, next_is_tool);
        if let Some(u) = all[..=i].iter().rev().find(|m| m.role == Role::User) {
            assert!(w.contains(u), "latest user message missing at {i}");
        }
    }
    assert!(evicted.is_empty(), "{evicted:?}");
    assert!(p.block("history").unwrap().len() < all.len());
    // Anthropic shape: the system text goes top level, every tool_result answers the tool_use
    // of the assistant message right before it.
    let (system, msgs) = p.render_anthropic().unwrap();
    assert!(system.unwrap().contains("Caroline"));
    let msgs = msgs.as_array().unwrap();
    let mut results = 0;
    for (i, m) in msgs.iter().enumerate() {
        for b in m["content"].as_array().unwrap() {
            if b["type"] == "tool_result" {
                results += 1;
                let prev = &msgs[i - 1]["content"];
                let ids: Vec<&str> = prev
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|x| x["id"].as_str())
                    .collect();
                assert!(
                    ids.contains(&b["tool_use_id"].as_str().unwrap()),
                    "tool_result {} without its tool_use",
                    b["tool_use_id"]
                );
            }
        }
    }
    assert!(results > 0);
    let oa = p.render_openai().unwrap();
    assert!(
        oa.as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("metadata").is_none())
    );
}

#[test]
fn question_is_replaced_and_overflow_reject_says_what_to_do() {
    let counter = gpt4o();
    let mut p = Layout::chat(counter, 400, 50).unwrap();
    p.push_text(
        "question",
        "What is the average lifespan of a black squirrel?",
    )
    .unwrap();
    let pushed = p.push_text("question", "And of a red squirrel?").unwrap();
    assert_eq!(
        pushed.evicted[0].text(),
        "What is the average lifespan of a black squirrel?"
    );
    assert_eq!(p.block("question").unwrap().len(), 1);

    let long = locomo_messages()
        .iter()
        .take(40)
        .map(Message::text)
        .collect::<Vec<_>>()
        .join(" ");
    let before = p.render();
    let err = p.push_text("pinned", long.clone()).unwrap_err();
    assert!(matches!(err, Error::TokenLimit { .. }), "{err}");
    assert!(err.to_string().contains("Oversize::Chunk"), "{err}");
    assert_eq!(p.render(), before);
    // Unknown and reserve blocks are clear errors.
    assert!(
        p.push_text("nope", "x")
            .unwrap_err()
            .to_string()
            .contains("blocks: system")
    );
    assert!(
        p.push_text("answer", "x")
            .unwrap_err()
            .to_string()
            .contains("reserve")
    );
}

#[test]
fn free_memory_and_clear_follow_seed_000() {
    let counter = gpt4o();
    let mut memory = Layout::new(counter.clone(), 5120)
        .with_block(
            Block::new("context")
                .with_max_tokens(4096)
                .with_role(Role::System)
                .with_oversize(Oversize::Chunk),
        )
        .unwrap()
        .with_block(
            Block::new("question")
                .with_max_tokens(512)
                .with_overflow(Overflow::Replace),
        )
        .unwrap()
        .with_block(Block::reserve("answer", 512))
        .unwrap();
    let article = locomo_messages()
        .iter()
        .take(400)
        .map(Message::text)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(counter.count(&article) > 4096);
    memory.push_text("context", article.clone()).unwrap_err();
    let chunked = Layout::new(counter.clone(), 5120)
        .with_block(
            Block::new("context")
                .with_max_tokens(4096)
                .with_overflow(Overflow::EvictOldest)
                .with_oversize(Oversize::Chunk),
        )
        .unwrap();
    let mut chunked = chunked;
    let pushed = chunked.push_text("context", article).unwrap();
    assert!(
        !pushed.evicted.is_empty(),
        "older chunks are evicted and handed back"
    );
    assert!(chunked.block("context").unwrap().used() <= 4096);

    memory
        .push_text("context", "Black squirrels live 6 to 12 years in the wild.")
        .unwrap();
    memory += (
        "question",
        Message::user("What is the average lifespan of a black squirrel?"),
    );
    assert!(memory.take_rejected().is_empty());
    let free = memory.free_memory();
    assert_eq!(free, 5120 - counter.count_messages(&memory.render()) - 512);
    let cleared = memory.clear("context").unwrap();
    assert_eq!(cleared.len(), 1);
    assert!(memory.free_memory() > free);
    check_no_answer(&memory);
    // OpenAI and Anthropic shapes.
    let oa = memory.render_openai().unwrap();
    assert_eq!(oa[0]["role"], "user");
    let (system, msgs) = memory.render_anthropic().unwrap();
    assert!(system.is_none());
    assert_eq!(msgs[0]["content"][0]["type"], "text");
}

fn check_no_answer(layout: &Layout) {
    assert!(layout.counter().count_messages(&layout.render()) + 512 <= layout.budget());
}

#[test]
fn nested_blocks_share_their_parent_budget() {
    let counter = gpt4o();
    let mut p = Layout::new(counter.clone(), 3000)
        .with_block(Block::new("system").with_role(Role::System).protected())
        .unwrap()
        .with_block(
            Block::group(
                "context",
                vec![
                    Block::new("facts")
                        .with_role(Role::System)
                        .with_max_tokens(300)
                        .with_overflow(Overflow::EvictOldest),
                    Block::new("docs")
                        .with_role(Role::System)
                        .with_max_tokens(300)
                        .with_overflow(Overflow::EvictOldest),
                ],
            )
            .with_max_tokens(600),
        )
        .unwrap()
        .with_block(Block::new("history").with_overflow(Overflow::EvictOldest))
        .unwrap();
    for m in locomo_messages().into_iter().take(300) {
        p.push_text("facts", m.text()).unwrap();
        p.push_text("docs", m.text()).unwrap();
        p.push("history", m).unwrap();
        assert!(p.block("context").unwrap().used() <= 600);
        assert_eq!(p.prompt_tokens(), counter.count_messages(&p.render()));
        assert!(p.prompt_tokens() <= 3000);
    }
    assert!(
        p.push_text("context", "x")
            .unwrap_err()
            .to_string()
            .contains("children")
    );
    assert!(
        Layout::new(counter, 10)
            .with_block(Block::new("a"))
            .unwrap()
            .with_block(Block::new("a"))
            .is_err(),
        "duplicate names are refused"
    );
}

/// Keeps the first sentence of each evicted message (a stand-in for the extractive summarizer
/// of llmem-compress, which has its own tests against this hook).
#[derive(Debug)]
struct FirstSentences;

impl Compactor for FirstSentences {
    fn compact(
        &self,
        previous: Option<&str>,
        evicted: &[Message],
        max_tokens: usize,
    ) -> Result<String> {
        let mut s = previous.unwrap_or_default().to_owned();
        for m in evicted {
            let t = m.text();
            s.push(' ');
            s.push_str(t.split('.').next().unwrap_or(""));
        }
        let words: Vec<&str> = s.split_whitespace().collect();
        // Words are at least one token: keep the last `max_tokens / 2`.
        Ok(words[words.len().saturating_sub(max_tokens / 2)..].join(" "))
    }
}

#[derive(Debug)]
struct Failing;

impl Compactor for Failing {
    fn compact(&self, _: Option<&str>, _: &[Message], _: usize) -> Result<String> {
        Err(Error::invalid("no summary today"))
    }
}

#[test]
fn summarize_overflow_folds_evictions_into_the_summary_block() {
    let counter = gpt4o();
    let summarize = |c: std::sync::Arc<dyn Compactor>| {
        Layout::new(counter.clone(), 800)
            .with_block(
                Block::new("summary")
                    .with_role(Role::System)
                    .with_max_tokens(200),
            )
            .unwrap()
            .with_block(Block::new("history").with_overflow(Overflow::Summarize {
                compactor: c,
                into: "summary".into(),
            }))
            .unwrap()
    };
    let mut p = summarize(std::sync::Arc::new(FirstSentences));
    let mut n_evicted = 0;
    for m in locomo_messages().into_iter().take(200) {
        let pushed = p.push("history", m).unwrap();
        assert!(pushed.summary_error.is_none(), "{:?}", pushed.summary_error);
        n_evicted += pushed.evicted.len();
        assert!(p.prompt_tokens() <= 800);
        assert_eq!(p.prompt_tokens(), counter.count_messages(&p.render()));
    }
    assert!(n_evicted > 0);
    let summary = &p.block("summary").unwrap();
    assert_eq!(summary.len(), 1);
    assert!(p.render()[0].flag("summary"));

    let mut p = summarize(std::sync::Arc::new(Failing));
    let mut errors = 0;
    let mut evicted = 0;
    for m in locomo_messages().into_iter().take(200) {
        let pushed = p.push("history", m).unwrap();
        errors += usize::from(pushed.summary_error.is_some());
        evicted += pushed.evicted.len();
    }
    assert!(
        errors > 0 && evicted > 0,
        "a failing compactor is reported and the evicted messages are returned"
    );
}
