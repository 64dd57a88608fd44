//! What happens to one message that is larger than the room it must fit in.

use llmem_core::{Error, Message, Result, TokenCounter};
use serde_json::Value;

/// Policy for a single message larger than the space it must fit (a block's budget, or the
/// short-term memory's token bound). Nothing is ever cut silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Oversize {
    /// Fail with [`Error::TokenLimit`] naming the message, its size and the limit.
    #[default]
    Reject,
    /// Split a plain text message into consecutive messages of the same role that each fit
    /// (marked `metadata.chunk = "i/n"`); their text concatenates to the original. Messages with
    /// tool calls, tool results and images cannot be split and are rejected.
    Chunk,
}

/// Counts `message` and applies `policy` against `limit` (tokens available for it). Returns the
/// message(s) to insert with their counts.
pub(crate) fn prepare(
    counter: &dyn TokenCounter,
    message: Message,
    limit: Option<usize>,
    policy: Oversize,
    what: &str,
) -> Result<Vec<(Message, usize)>> {
    let tokens = counter.count_message(&message);
    let Some(limit) = limit else {
        return Ok(vec![(message, tokens)]);
    };
    if tokens <= limit {
        return Ok(vec![(message, tokens)]);
    }
    let splittable = message.tool_calls.is_empty()
        && message.tool_call_id.is_none()
        && message
            .content
            .iter()
            .all(|p| matches!(p, llmem_core::ContentPart::Text { .. }));
    match policy {
        Oversize::Chunk if splittable => {
            let framing = counter.count_message(&Message {
                content: Vec::new(),
                ..message.clone()
            });
            let room = limit.saturating_sub(framing);
            if room == 0 {
                return Err(Error::TokenLimit {
                    what: format!("{what} (even one token of it)"),
                    needed: framing + 1,
                    limit,
                });
            }
            let text = message.text();
            let parts = counter.split(&text, room);
            let n = parts.len();
            let mut out = Vec::with_capacity(n);
            for (i, part) in parts.into_iter().enumerate() {
                let mut m = Message::new(message.role, part);
                m.name.clone_from(&message.name);
                m.created_at = message.created_at;
                m.metadata = message.metadata.clone();
                m.metadata
                    .insert("chunk".into(), Value::from(format!("{}/{n}", i + 1)));
                let t = counter.count_message(&m);
                if t > limit {
                    return Err(Error::TokenLimit {
                        what: format!("chunk {} of {what}", i + 1),
                        needed: t,
                        limit,
                    });
                }
                out.push((m, t));
            }
            Ok(out)
        }
        Oversize::Chunk => Err(Error::TokenLimit {
            what: format!(
                "{what} (a {} message with tool calls, a tool result or images cannot be chunked; shorten it or raise the budget)",
                message.role
            ),
            needed: tokens,
            limit,
        }),
        Oversize::Reject => Err(Error::TokenLimit {
            what: format!(
                "{what} (a {} message; shorten it, raise the budget or use Oversize::Chunk)",
                message.role
            ),
            needed: tokens,
            limit,
        }),
    }
}
