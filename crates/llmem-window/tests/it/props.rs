//! Property tests: random conversations (plain turns, tool calls with results, pinned facts,
//! long messages) against random budgets.

use llmem_core::{Message, Role, ToolCall};
use llmem_window::{Layout, Oversize, ShortTermMemory};
use proptest::prelude::*;

use crate::{assert_tool_pairs, gpt4o};

#[derive(Debug, Clone)]
enum Op {
    User(usize),
    Assistant(usize),
    Tools(usize, usize),
    Pinned(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..120).prop_map(Op::User),
        4 => (1usize..120).prop_map(Op::Assistant),
        2 => (1usize..4, 1usize..60).prop_map(|(n, w)| Op::Tools(n, w)),
        1 => (1usize..20).prop_map(Op::Pinned),
    ]
}

fn words(n: usize, seed: usize) -> String {
    const W: &[&str] = &[
        "squirrel", "May", "2023", "Caroline", "went", "to", "the", "support", "group", "on", "7",
        "painting",
    ];
    (0..n)
        .map(|i| W[(i * 7 + seed) % W.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn expand(ops: &[Op]) -> Vec<Message> {
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::User(n) => out.push(Message::user(words(n, i))),
            Op::Assistant(n) => out.push(Message::assistant(words(n, i))),
            Op::Pinned(n) => out.push(Message::user(words(n, i)).with_metadata("pinned", true)),
            Op::Tools(k, n) => {
                let calls: Vec<ToolCall> = (0..k)
                    .map(|j| ToolCall {
                        id: format!("c{i}_{j}"),
                        name: "lookup".into(),
                        arguments: format!("{{\"q\":{j}}}"),
                    })
                    .collect();
                out.push(Message::assistant_tool_calls("", calls.clone()));
                for c in calls {
                    out.push(Message::tool_result(c.id, words(n, i)));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn short_term_memory_invariants(ops in prop::collection::vec(op(), 1..80), budget in 150usize..1500, k in 2usize..30) {
        let counter = gpt4o();
        let msgs = expand(&ops);
        let mut mem = ShortTermMemory::new(counter.clone()).with_max_tokens(budget).with_max_messages(k).with_oversize(Oversize::Chunk);
        let mut pinned = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let before = mem.render();
            match mem.push(m.clone()) {
                Ok(_) => if m.is_pinned() { pinned.push(m.clone()) },
                // Refusals leave the memory as it was, and are about tokens.
                // A refused tool result leaves its call unanswered: the caller got the error and the
                // conversation cannot go on as generated.
                Err(_) if m.role == Role::Tool => break,
                Err(e) => {
                    prop_assert!(matches!(e, llmem_core::Error::TokenLimit { .. }), "{}", e);
                    prop_assert_eq!(mem.render(), before);
                    continue;
                }
            }
            let w = mem.render();
            prop_assert!(counter.count_messages(&w) <= budget);
            prop_assert_eq!(mem.tokens(), counter.count_messages(&w));
            prop_assert_eq!(&w[..pinned.len()], &pinned[..]);
            let next_is_tool = msgs.get(i + 1).is_some_and(|n| n.role == Role::Tool);
            assert_tool_pairs(&w[pinned.len()..], next_is_tool);
            if m.role == Role::User && !m.is_pinned() && counter.count_message(m) + 3 <= budget {
                // The message itself, or (when it had to be chunked) its last chunk.
                let last = w.iter().rev().find(|x| x.role == Role::User && !x.is_pinned()).unwrap();
                prop_assert!(last.text() == m.text() || (last.metadata.contains_key("chunk") && m.text().ends_with(&last.text())));
            }
        }
    }

    #[test]
    fn layout_invariants(ops in prop::collection::vec(op(), 1..80), budget in 300usize..2000) {
        let counter = gpt4o();
        let msgs = expand(&ops);
        let mut p = Layout::chat(counter.clone(), budget, 100).unwrap();
        p.push_text("system", "Be brief.").unwrap();
        // Whether the latest user message (not pinned) was refused when it was pushed.
        let mut user_refused = false;
        for (i, m) in msgs.iter().enumerate() {
            let block = if m.is_pinned() { "pinned" } else { "history" };
            let before = p.render();
            let pushed = p.push(block, m.clone());
            if m.role == Role::User && !m.is_pinned() {
                user_refused = pushed.is_err();
            }
            if pushed.is_err() {
                prop_assert_eq!(p.render(), before);
                if m.role == Role::Tool {
                    break;
                }
                continue;
            }
            let w = p.render();
            let exact = counter.count_messages(&w);
            prop_assert_eq!(p.prompt_tokens(), exact);
            prop_assert!(exact + 100 <= budget);
            prop_assert_eq!(w[0].text(), "Be brief.");
            let hist: Vec<Message> = w.iter().filter(|x| !x.is_pinned()).cloned().collect();
            let next_is_tool = msgs.get(i + 1).is_some_and(|n| n.role == Role::Tool);
            assert_tool_pairs(&hist, next_is_tool);
            if let Some(u) = msgs[..=i].iter().rev().find(|x| x.role == Role::User && !x.is_pinned()) {
                // Present unless it was itself refused when it was pushed (what came after it
                // never evicts it).
                prop_assert!(w.contains(u) || user_refused, "the latest user message was evicted");
            }
        }
    }
}
