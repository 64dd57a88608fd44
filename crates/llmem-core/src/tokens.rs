//! The token-counter trait. Implementations live in `llmem-tokens`; this crate only fixes the
//! interface so windows, compressors and plugins can count without depending on a tokenizer.

use crate::message::Message;

/// How trustworthy a count is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accuracy {
    /// The model's own tokenizer: counts equal what the provider bills.
    Exact,
    /// A calibrated estimate; `mean_abs_error` is the measured mean relative error (0.08 = 8%).
    Estimate { mean_abs_error: f32 },
}

/// Counts tokens the way one model does. Synchronous and CPU-only.
pub trait TokenCounter: Send + Sync + std::fmt::Debug {
    /// The model (or encoding) whose tokens are counted.
    fn model(&self) -> &str;

    /// Tokens in `text`, without any chat framing.
    fn count(&self, text: &str) -> usize;

    fn accuracy(&self) -> Accuracy;

    /// Framing tokens the chat format adds around one message (role markers, separators).
    fn message_overhead(&self, message: &Message) -> usize {
        let _ = message;
        0
    }

    /// Framing tokens added once per request (e.g. priming the assistant's reply).
    fn request_overhead(&self) -> usize {
        0
    }

    /// Tokens one message costs inside a prompt: its text, tool calls and framing.
    fn count_message(&self, message: &Message) -> usize {
        let mut n = self.count(&message.text()) + self.message_overhead(message);
        for call in &message.tool_calls {
            n += self.count(&call.name) + self.count(&call.arguments);
        }
        if let Some(name) = &message.name {
            n += self.count(name);
        }
        n
    }

    /// Tokens a whole prompt costs: every message plus the per-request framing.
    fn count_messages(&self, messages: &[Message]) -> usize {
        messages
            .iter()
            .map(|m| self.count_message(m))
            .sum::<usize>()
            + self.request_overhead()
    }

    /// Splits `text` into pieces of at most `max_tokens` tokens each, cutting at whitespace when
    /// possible. The default searches on character boundaries with [`TokenCounter::count`];
    /// counters with token ids may do better.
    fn split(&self, text: &str, max_tokens: usize) -> Vec<String> {
        split_by_count(text, max_tokens, &|s| self.count(s))
    }
}

/// Splits `text` greedily into pieces of at most `max_tokens` tokens as measured by `count`,
/// preferring to cut after whitespace. Nothing is lost: the pieces concatenate to `text`.
pub fn split_by_count(text: &str, max_tokens: usize, count: &dyn Fn(&str) -> usize) -> Vec<String> {
    let max_tokens = max_tokens.max(1);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if count(rest) <= max_tokens {
            out.push(rest.to_owned());
            break;
        }
        // Largest char boundary `end` with count(rest[..end]) <= max_tokens (binary search).
        let bounds: Vec<usize> = rest
            .char_indices()
            .map(|(i, _)| i)
            .skip(1)
            .chain([rest.len()])
            .collect();
        let (mut lo, mut hi) = (0usize, bounds.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if count(&rest[..bounds[mid - 1]]) <= max_tokens {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let mut end = if lo == 0 { bounds[0] } else { bounds[lo - 1] };
        // Back off to just after the last whitespace, if that keeps at least half the piece.
        if let Some(ws) = rest[..end].rfind(char::is_whitespace) {
            let cut = ws + rest[ws..].chars().next().map_or(1, char::len_utf8);
            if cut >= end / 2 && cut > 0 {
                end = cut;
            }
        }
        out.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_never_loses_text_and_respects_the_limit() {
        let words = |s: &str| s.split_whitespace().count();
        let text = "one two three four five six seven eight nine ten eleven";
        let parts = split_by_count(text, 3, &words);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| words(p) <= 3), "{parts:?}");
        let chars = |s: &str| s.chars().count();
        let parts = split_by_count("héllo wörld ünïcode", 4, &chars);
        assert_eq!(parts.concat(), "héllo wörld ünïcode");
        assert!(parts.iter().all(|p| chars(p) <= 4));
    }
}
