//! Integration tests of llmem-compress on LoCoMo conversations with the real gpt-4o tokenizer,
//! an OpenAI-compatible loopback server (map-reduce, failures, hangs) and the real SmolLM2 on
//! llama.cpp. LoCoMo is read from beside the repository (`../shared/data/locomo`, or
//! `$LLMEM_LOCOMO`); it is never copied into the repository.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod extractive;
#[path = "../../../llmem-eval/support/locomo.rs"]
pub mod locomo;
mod loopback;
mod smollm2;
mod strategies;

use std::sync::Arc;

use llmem_core::{Message, Role, TokenCounter, ToolCall};

/// The exact gpt-4o counter.
pub fn gpt4o() -> Arc<dyn TokenCounter> {
    llmem_tokens::Counters::embedded()
        .unwrap()
        .for_model("gpt-4o")
        .unwrap()
}

pub use locomo::messages as locomo_messages;

/// A system prompt and the first `n` LoCoMo messages.
pub fn conversation(n: usize) -> Vec<Message> {
    let mut out = vec![Message::system(
        "You are a companion who remembers the user's life.",
    )];
    out.extend(locomo_messages().into_iter().take(n));
    out
}

/// Asserts that every tool call is answered right after it and every result follows its call.
pub fn assert_tool_pairs(ms: &[Message]) {
    let mut open: Vec<String> = Vec::new();
    for (i, m) in ms.iter().enumerate() {
        if m.role == Role::Tool {
            let id = m.tool_call_id.clone().unwrap();
            let pos = open
                .iter()
                .position(|c| *c == id)
                .unwrap_or_else(|| panic!("orphan tool result {id} at {i}"));
            open.remove(pos);
        } else {
            assert!(open.is_empty(), "calls {open:?} unanswered before {i}");
            open = m.tool_calls.iter().map(|c| c.id.clone()).collect();
        }
    }
    assert!(open.is_empty(), "calls {open:?} unanswered at the end");
}

/// An agent transcript: LoCoMo turns with tool calls, tool errors and important notes mixed in.
pub fn agent_conversation(n: usize) -> Vec<Message> {
    let mut out = vec![Message::system("You are an agent with a notes tool.")];
    for (i, m) in locomo_messages().into_iter().take(n).enumerate() {
        out.push(m.clone());
        if i % 17 == 5 {
            let call = ToolCall {
                id: format!("call_{i}"),
                name: "search_notes".into(),
                arguments: format!("{{\"turn\":{i}}}"),
            };
            out.push(Message::assistant_tool_calls("", vec![call]));
            out.push(Message::tool_result(
                format!("call_{i}"),
                format!("note {i}: {}", m.text()),
            ));
        }
        if i % 29 == 7 {
            out.push(Message::assistant(format!(
                "Error: the calendar service failed with status 503 on try {i}."
            )));
        }
        if i % 41 == 9 {
            out.push(
                Message::user(format!("Remember: my locker code is {}.", 1000 + i))
                    .with_metadata("important", true),
            );
        }
    }
    out
}
