//! ShortTermMemory: the last K raw messages under count and token bounds, counted once each.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use llmem_core::{Accuracy, Error, Message, Role, TokenCounter};
use llmem_window::{Oversize, ShortTermMemory};

use crate::{agent_messages, assert_tool_pairs, gpt4o, locomo_messages};

#[test]
fn a_locomo_conversation_stays_under_the_token_bound_and_nothing_is_lost() {
    let counter = gpt4o();
    let all = locomo_messages();
    let mut mem = ShortTermMemory::new(counter.clone()).with_max_tokens(1500);
    mem.push(Message::system(
        "You are a friendly companion. Remember what the user tells you.",
    ))
    .unwrap();
    let mut evicted = Vec::new();
    for (i, m) in all.iter().enumerate() {
        evicted.extend(mem.push(m.clone()).unwrap());
        let window = mem.render();
        let exact = counter.count_messages(&window);
        assert_eq!(mem.tokens(), exact, "running total drifted at turn {i}");
        assert!(exact <= 1500, "turn {i}: {exact} tokens");
        assert_eq!(
            window[0].role,
            Role::System,
            "the system prompt was evicted at turn {i}"
        );
        let last_user = all[..=i].iter().rev().find(|m| m.role == Role::User);
        if let Some(u) = last_user {
            assert!(
                window.contains(u),
                "the latest user message is missing at turn {i}"
            );
        }
    }
    // Evicted + kept = the whole conversation, in order.
    let mut seen = evicted;
    seen.extend(mem.render().into_iter().skip(1));
    assert_eq!(seen.len(), all.len());
    let first_diff = seen.iter().zip(&all).position(|(a, b)| a != b);
    assert_eq!(
        first_diff, None,
        "evicted + kept differs from the conversation"
    );
}

#[test]
fn the_count_bound_keeps_the_last_k() {
    let all = locomo_messages();
    let mut mem = ShortTermMemory::new(gpt4o()).with_max_messages(20);
    for m in all.iter().take(300) {
        mem.push(m.clone()).unwrap();
        assert!(mem.len() <= 20);
    }
    assert_eq!(mem.render(), all[280..300].to_vec());
}

#[test]
fn tool_calls_leave_together_with_their_results() {
    let counter = gpt4o();
    let msgs = agent_messages(600);
    assert!(msgs.iter().any(|m| m.role == Role::Tool));
    let mut mem = ShortTermMemory::new(counter.clone())
        .with_max_tokens(700)
        .with_max_messages(12);
    for (i, m) in msgs.iter().enumerate() {
        let evicted = mem.push(m.clone()).unwrap();
        assert_tool_pairs(&evicted, false);
        // The window may end with a call whose results are still arriving.
        let next_is_tool = msgs.get(i + 1).is_some_and(|n| n.role == Role::Tool);
        assert_tool_pairs(&mem.render(), next_is_tool);
        assert!(counter.count_messages(&mem.render()) <= 700);
    }
}

#[test]
fn an_oversize_message_is_rejected_clearly_or_chunked_losslessly() {
    let counter = gpt4o();
    let long: String = locomo_messages()
        .iter()
        .take(60)
        .map(Message::text)
        .collect::<Vec<_>>()
        .join(" ");
    let mut mem = ShortTermMemory::new(counter.clone()).with_max_tokens(200);
    mem.push(Message::user("hello")).unwrap();
    let err = mem.push(Message::user(long.clone())).unwrap_err();
    assert!(
        matches!(err, Error::TokenLimit { limit, .. } if limit < 200),
        "{err}"
    );
    assert!(err.to_string().contains("Oversize::Chunk"), "{err}");
    assert_eq!(
        mem.render(),
        vec![Message::user("hello")],
        "a failed push changed the memory"
    );

    let mut mem = ShortTermMemory::new(counter.clone())
        .with_max_tokens(200)
        .with_oversize(Oversize::Chunk);
    let evicted = mem.push(Message::user(long.clone())).unwrap();
    let mut pieces = evicted;
    pieces.extend(mem.render());
    assert!(pieces.len() > 3);
    let joined: String = pieces.iter().map(Message::text).collect();
    assert_eq!(joined, long, "chunks must concatenate to the original");
    assert!(
        pieces
            .iter()
            .all(|m| counter.count_messages(std::slice::from_ref(m)) <= 200)
    );
    assert!(mem.tokens() <= 200);

    // A tool result cannot be chunked: the error says so.
    let call = llmem_core::ToolCall {
        id: "call_1".into(),
        name: "notes".into(),
        arguments: "{}".into(),
    };
    mem.push(Message::assistant_tool_calls("", vec![call]))
        .unwrap();
    let err = mem.push(Message::tool_result("call_1", long)).unwrap_err();
    assert!(err.to_string().contains("cannot be chunked"), "{err}");
}

#[test]
fn pinned_messages_are_never_evicted() {
    let counter = gpt4o();
    let mut mem = ShortTermMemory::new(counter.clone())
        .with_max_tokens(400)
        .with_max_messages(4);
    mem.push(Message::system("System prompt.")).unwrap();
    for (i, m) in locomo_messages().into_iter().take(100).enumerate() {
        if i == 10 {
            mem.push(Message::user("My API key is 123.").with_metadata("pinned", true))
                .unwrap();
        }
        mem.push(m).unwrap();
    }
    let w = mem.render();
    assert_eq!(w[0].text(), "System prompt.");
    assert_eq!(w[1].text(), "My API key is 123.");
    assert_eq!(mem.len(), 4);
}

/// Counts how many characters pass through `count`.
#[derive(Debug)]
struct Metered {
    inner: Arc<dyn TokenCounter>,
    chars: AtomicUsize,
}

impl TokenCounter for Metered {
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn count(&self, text: &str) -> usize {
        self.chars.fetch_add(text.len(), Ordering::Relaxed);
        self.inner.count(text)
    }
    fn accuracy(&self) -> Accuracy {
        self.inner.accuracy()
    }
    fn message_overhead(&self, m: &Message) -> usize {
        self.inner.message_overhead(m)
    }
    fn request_overhead(&self) -> usize {
        self.inner.request_overhead()
    }
}

#[test]
fn each_message_is_counted_once_never_the_history() {
    let metered = Arc::new(Metered {
        inner: gpt4o(),
        chars: AtomicUsize::new(0),
    });
    let all = locomo_messages();
    let mut mem = ShortTermMemory::new(metered.clone()).with_max_tokens(4000);
    let mut text = 0;
    for m in &all {
        mem.push(m.clone()).unwrap();
        text += m.text().len() + m.name.as_ref().map_or(0, String::len);
        let _ = mem.tokens();
        let _ = mem.render();
    }
    // Exactly the text of each message once: no recount of the window or the history.
    assert_eq!(metered.chars.load(Ordering::Relaxed), text);
}

#[test]
fn a_tool_result_without_its_call_is_refused() {
    let mut mem = ShortTermMemory::new(gpt4o()).with_max_tokens(1000);
    mem.push(Message::user("What's the weather?")).unwrap();
    let call = llmem_core::ToolCall {
        id: "call_1".into(),
        name: "weather".into(),
        arguments: "{}".into(),
    };
    mem.push(Message::assistant_tool_calls("", vec![call]))
        .unwrap();
    let err = mem
        .push(Message::tool_result("call_9", "sunny"))
        .unwrap_err();
    assert!(
        err.to_string().contains("call_9") && err.to_string().contains("right after"),
        "{err}"
    );
    mem.push(Message::tool_result("call_1", "sunny")).unwrap();
    assert_eq!(mem.len(), 3);
}
