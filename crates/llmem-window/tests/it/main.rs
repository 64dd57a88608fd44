//! Integration tests of llmem-window on LoCoMo conversations with the real gpt-4o tokenizer.
//! The LoCoMo data is read from beside the repository (`../shared/data/locomo`, or
//! `$LLMEM_LOCOMO`); it is never copied into the repository.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod layout;
mod props;
mod short_term;

use std::path::PathBuf;
use std::sync::Arc;

use llmem_core::{Message, Role, TokenCounter, ToolCall};

/// The exact gpt-4o counter (tiktoken o200k_base with OpenAI chat framing).
pub fn gpt4o() -> Arc<dyn TokenCounter> {
    llmem_tokens::Counters::embedded()
        .unwrap()
        .for_model("gpt-4o")
        .unwrap()
}

/// Every LoCoMo turn as (speaker, text, is_speaker_a), conversations one after another.
pub fn locomo_turns() -> Vec<(String, String, bool)> {
    let path = std::env::var_os("LLMEM_LOCOMO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/locomo/locomo-dev.json")
        });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the LoCoMo data at {} ({e}); set LLMEM_LOCOMO to locomo-dev.json",
            path.display()
        )
    });
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for sample in v.as_array().unwrap() {
        let conv = sample["conversation"].as_object().unwrap();
        let a = conv["speaker_a"].as_str().unwrap_or_default();
        let mut keys: Vec<&String> = conv
            .keys()
            .filter(|k| k.starts_with("session_") && !k.ends_with("date_time"))
            .collect();
        keys.sort_by_key(|k| k.trim_start_matches("session_").parse::<u32>().unwrap_or(0));
        for k in keys {
            for turn in conv[k].as_array().into_iter().flatten() {
                if let Some(t) = turn["text"].as_str() {
                    let speaker = turn["speaker"].as_str().unwrap_or("?");
                    out.push((speaker.to_owned(), t.to_owned(), speaker == a));
                }
            }
        }
    }
    assert!(
        out.len() > 1000,
        "expected the LoCoMo turns, found {}",
        out.len()
    );
    out
}

/// LoCoMo turns as a chat: speaker A of each conversation is the user.
pub fn locomo_messages() -> Vec<Message> {
    locomo_turns()
        .into_iter()
        .map(|(s, t, a)| {
            if a {
                Message::user(t)
            } else {
                Message::assistant(t)
            }
            .with_name(s.replace(' ', "_"))
        })
        .collect()
}

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
