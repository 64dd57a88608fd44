//! Integration tests of llmem-window on LoCoMo conversations with the real gpt-4o tokenizer.
//! The LoCoMo data is read from beside the repository (`../shared/data/locomo`, or
//! `$LLMEM_LOCOMO`); it is never copied into the repository.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod layout;
#[path = "../../../llmem-eval/support/locomo.rs"]
pub mod locomo;
mod props;
mod short_term;

use std::sync::Arc;

use llmem_core::{Message, Role, TokenCounter, ToolCall};

/// The exact gpt-4o counter (tiktoken o200k_base with OpenAI chat framing).
pub fn gpt4o() -> Arc<dyn TokenCounter> {
    llmem_tokens::Counters::embedded()
        .unwrap()
        .for_model("gpt-4o")
        .unwrap()
}

pub use locomo::messages as locomo_messages;

/// An agent-style conversation from LoCoMo turns: every 5th assistant turn calls `n` tools
/// (1..=3) whose results quote the next turns.
pub fn agent_messages(limit: usize) -> Vec<Message> {
    let mut out = Vec::new();
    for (i, m) in locomo_messages().into_iter().take(limit).enumerate() {
        if m.role == Role::Assistant && i % 5 == 0 {
            let n = 1 + i % 3;
            let calls: Vec<ToolCall> = (0..n)
                .map(|j| ToolCall {
                    id: format!("call_{i}_{j}"),
                    name: "search_notes".into(),
                    arguments: format!("{{\"query\":\"turn {i} part {j}\"}}"),
                })
                .collect();
            out.push(Message::assistant_tool_calls("", calls.clone()));
            for c in &calls {
                out.push(Message::tool_result(
                    c.id.clone(),
                    format!("{} (note {})", m.text(), c.id),
                ));
            }
        }
        out.push(m);
    }
    out
}

/// Panics unless every tool call in `ms` is followed by all its results and every tool result
/// follows its call (allowing the last group to be still waiting for results when `open_tail`).
pub fn assert_tool_pairs(ms: &[Message], open_tail: bool) {
    let mut open: Vec<String> = Vec::new();
    for (i, m) in ms.iter().enumerate() {
        if m.role == Role::Tool {
            let id = m.tool_call_id.clone().unwrap();
            let pos = open.iter().position(|c| *c == id);
            assert!(
                pos.is_some(),
                "tool result {id} at {i} has no call before it"
            );
            open.remove(pos.unwrap());
        } else {
            assert!(
                open.is_empty() || (open_tail && i == ms.len()),
                "calls {open:?} unanswered before message {i}"
            );
            open = m.tool_calls.iter().map(|c| c.id.clone()).collect();
        }
    }
    assert!(
        open.is_empty() || open_tail,
        "calls {open:?} unanswered at the end"
    );
}
