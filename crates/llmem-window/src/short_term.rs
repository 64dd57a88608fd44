//! [`ShortTermMemory`]: a sliding window of the last K messages, kept raw.

use std::sync::Arc;

use llmem_core::{Error, Message, Result, TokenCounter};

use crate::lane::Lane;
use crate::oversize::{Oversize, prepare};

/// The most recent messages of a conversation, kept verbatim and bounded by a message count
/// and/or a token budget.
///
/// - Each message is counted once, when pushed; the total is a running sum, so [`push`] costs
///   O(new message + evicted messages) whatever the history length, and [`tokens`] is O(1).
/// - Pinned messages (system prompts, `metadata.pinned = true`) are kept apart and never evicted;
///   they count towards the token bound but not towards the message bound.
/// - Eviction removes whole groups, oldest first: an assistant message with tool calls leaves
///   together with its tool results, so a call is never separated from its result.
/// - The group holding the most recent user message is never evicted, nor the newest group.
///   When the bounds cannot be met without evicting them, [`push`] fails and changes nothing.
/// - A single message larger than the token bound is rejected or chunked, per [`Oversize`].
///
/// [`push`]: ShortTermMemory::push
/// [`tokens`]: ShortTermMemory::tokens
#[derive(Debug, Clone)]
pub struct ShortTermMemory {
    counter: Arc<dyn TokenCounter>,
    max_messages: Option<usize>,
    max_tokens: Option<usize>,
    oversize: Oversize,
    pinned: Lane,
    lane: Lane,
}

impl ShortTermMemory {
    /// An unbounded memory counting with `counter`; add bounds with the `with_*` setters.
    pub fn new(counter: Arc<dyn TokenCounter>) -> Self {
        ShortTermMemory {
            counter,
            max_messages: None,
            max_tokens: None,
            oversize: Oversize::Reject,
            pinned: Lane::default(),
            lane: Lane::default(),
        }
    }

    /// Keep at most `k` unpinned messages, evicting the oldest groups first. A group
    /// (a tool call with its results) larger than `k` is still kept whole when it is the newest.
    #[must_use]
    pub fn with_max_messages(mut self, k: usize) -> Self {
        self.max_messages = Some(k);
        self
    }

    /// Keep the rendered window (pinned messages, history and the request framing) within
    /// `tokens` as counted by the memory's counter.
    #[must_use]
    pub fn with_max_tokens(mut self, tokens: usize) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// What to do with one message larger than the token bound (default [`Oversize::Reject`]).
    #[must_use]
    pub fn with_oversize(mut self, policy: Oversize) -> Self {
        self.oversize = policy;
        self
    }

    /// The counter used for every count.
    pub fn counter(&self) -> &Arc<dyn TokenCounter> {
        &self.counter
    }

    /// Adds a message and evicts the oldest groups until both bounds hold again. Returns the
    /// evicted messages, oldest first, for the caller to summarise or archive (nothing is
    /// dropped silently). On error nothing changes.
    pub fn push(&mut self, message: Message) -> Result<Vec<Message>> {
        self.lane.check_tool_result(&message)?;
        let overhead = self.counter.request_overhead();
        let limit = self
            .max_tokens
            .map(|m| m.saturating_sub(overhead + self.pinned.tokens));
        let pieces = prepare(
            self.counter.as_ref(),
            message,
            limit,
            self.oversize,
            "the message",
        )?;
        if pieces.iter().any(|(m, _)| m.is_pinned()) {
            return self.push_pinned(pieces);
        }
        if let (Some(max), Some((last, t))) = (self.max_tokens, pieces.last()) {
            // Feasibility first, so that a failure leaves the memory untouched. Earlier chunks of
            // a chunked message are evictable; the last one (or the message) is not.
            let need = self.pinned.tokens + overhead + self.lane.kept_after(last, *t);
            if need > max {
                return Err(Error::TokenLimit {
                    what: "the short-term memory (pinned messages, the latest user message and the newest tool group)"
                        .into(),
                    needed: need,
                    limit: max,
                });
            }
        }
        for (m, t) in pieces {
            self.lane.push(m, t);
        }
        Ok(self.evict())
    }

    fn push_pinned(&mut self, pieces: Vec<(Message, usize)>) -> Result<Vec<Message>> {
        let new: usize = pieces.iter().map(|(_, t)| t).sum();
        if let Some(max) = self.max_tokens {
            let kept: usize = self
                .lane
                .groups
                .iter()
                .enumerate()
                .filter(|(i, g)| *i + 1 == self.lane.groups.len() || self.lane.is_protected(g.seq))
                .map(|(_, g)| g.tokens)
                .sum();
            let need = self.pinned.tokens + self.counter.request_overhead() + kept + new;
            if need > max {
                return Err(Error::TokenLimit {
                    what: "pinned messages".into(),
                    needed: need,
                    limit: max,
                });
            }
        }
        for (m, t) in pieces {
            self.pinned.push(m, t);
        }
        Ok(self.evict())
    }

    fn over(&self) -> bool {
        let tokens = self.tokens();
        self.max_tokens.is_some_and(|m| tokens > m)
            || self.max_messages.is_some_and(|k| self.lane.messages > k)
    }

    fn evict(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while self.over() {
            let Some(i) = self.lane.evictable() else {
                break;
            };
            if let Some(g) = self.lane.remove(i) {
                out.extend(g.entries.into_iter().map(|e| e.message));
            }
        }
        out
    }

    /// Tokens the rendered window costs: pinned + history + request framing. O(1).
    pub fn tokens(&self) -> usize {
        let n = self.pinned.tokens + self.lane.tokens;
        if n == 0 {
            0
        } else {
            n + self.counter.request_overhead()
        }
    }

    /// Unpinned messages held.
    pub fn len(&self) -> usize {
        self.lane.messages
    }

    /// Whether no message at all (pinned or not) is held.
    pub fn is_empty(&self) -> bool {
        self.lane.messages == 0 && self.pinned.messages == 0
    }

    /// Pinned messages first, then the history in order. O(window).
    pub fn render(&self) -> Vec<Message> {
        self.pinned
            .iter()
            .chain(self.lane.iter())
            .map(|e| e.message.clone())
            .collect()
    }

    /// Removes and returns every unpinned message.
    pub fn drain(&mut self) -> Vec<Message> {
        self.lane.clear()
    }
}
