//! A queue of atomic message groups with running token totals: the shared core of
//! [`crate::ShortTermMemory`] and of every [`crate::Block`].

use std::collections::VecDeque;

use llmem_core::{Message, Role};

/// A message held in a lane.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub message: Message,
}

/// Messages that are evicted together: an assistant message with tool calls and the tool results
/// answering it, or any other single message.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub entries: Vec<Entry>,
    pub tokens: usize,
    /// Sequence number of the group, increasing with every group pushed.
    pub seq: u64,
    /// Ids of the tool calls this group opened (empty for plain messages).
    pub call_ids: Vec<String>,
}

/// Groups in arrival order with O(1) totals. Pushing is O(1) (amortised); evicting the oldest
/// group is O(1); nothing ever recounts the history.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lane {
    pub groups: VecDeque<Group>,
    pub tokens: usize,
    pub messages: usize,
    next_seq: u64,
    /// `seq` and tokens of the group holding the most recent user message.
    last_user: Option<u64>,
    last_user_tokens: usize,
}

impl Lane {
    /// Where `message` would go: `true` when it joins the newest group (a tool result answering
    /// one of that group's calls).
    pub fn joins_last(&self, message: &Message) -> bool {
        match (&message.tool_call_id, self.groups.back()) {
            (Some(id), Some(g)) if message.role == Role::Tool => g.call_ids.iter().any(|c| c == id),
            _ => false,
        }
    }

    /// Refuses a tool result that does not answer a call of the newest group: rendered, it
    /// would be separated from its call.
    pub fn check_tool_result(&self, message: &Message) -> llmem_core::Result<()> {
        if message.role == Role::Tool && !self.joins_last(message) {
            return Err(llmem_core::Error::invalid(format!(
                "tool result `{}` does not answer a call of the newest message; push each tool result right after the assistant message that made the call",
                message
                    .tool_call_id
                    .as_deref()
                    .unwrap_or("(no tool_call_id)")
            )));
        }
        Ok(())
    }

    pub fn push(&mut self, message: Message, tokens: usize) {
        self.tokens += tokens;
        self.messages += 1;
        let is_user = message.role == Role::User;
        if self.joins_last(&message)
            && let Some(g) = self.groups.back_mut()
        {
            g.tokens += tokens;
            g.entries.push(Entry { message });
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let call_ids = message.tool_calls.iter().map(|c| c.id.clone()).collect();
        self.groups.push_back(Group {
            entries: vec![Entry { message }],
            tokens,
            seq,
            call_ids,
        });
        if is_user {
            self.last_user = Some(seq);
            self.last_user_tokens = tokens;
        }
    }

    /// Whether the group at `seq` must stay: it holds the most recent user message.
    pub fn is_protected(&self, seq: u64) -> bool {
        self.last_user == Some(seq)
    }

    /// Index of the oldest group that may be evicted: not the one with the most recent user
    /// message, and not the newest group (the message just pushed). `None` when nothing may go.
    pub fn evictable(&self) -> Option<usize> {
        let newest = self.groups.len().checked_sub(1)?;
        (0..newest).find(|&i| !self.is_protected(self.groups[i].seq))
    }

    /// Tokens that cannot be evicted now: the newest group and the latest user message's. O(1).
    pub fn unevictable(&self) -> usize {
        match self.groups.back() {
            None => 0,
            Some(g) if self.is_protected(g.seq) || self.last_user.is_none() => g.tokens,
            Some(g) => g.tokens + self.last_user_tokens,
        }
    }

    /// Tokens that could not be evicted once `message` (costing `tokens`) is pushed: the newest
    /// group it lands in and the group with the most recent user message.
    pub fn kept_after(&self, message: &Message, tokens: usize) -> usize {
        let protected = |skip: Option<u64>| {
            self.groups
                .iter()
                .rev()
                .find(|g| self.is_protected(g.seq) && Some(g.seq) != skip)
                .map_or(0, |g| g.tokens)
        };
        if self.joins_last(message) {
            let last = self.groups.back().map_or(0, |g| g.tokens);
            last + tokens + protected(self.groups.back().map(|g| g.seq))
        } else if message.role == Role::User {
            tokens
        } else {
            tokens + protected(None)
        }
    }

    pub fn remove(&mut self, i: usize) -> Option<Group> {
        let g = self.groups.remove(i)?;
        self.tokens -= g.tokens;
        self.messages -= g.entries.len();
        if self.last_user == Some(g.seq) {
            self.last_user = None;
            self.last_user_tokens = 0;
        }
        Some(g)
    }

    pub fn clear(&mut self) -> Vec<Message> {
        let out = self
            .groups
            .drain(..)
            .flat_map(|g| g.entries.into_iter().map(|e| e.message))
            .collect();
        self.tokens = 0;
        self.messages = 0;
        self.last_user = None;
        self.last_user_tokens = 0;
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.groups.iter().flat_map(|g| g.entries.iter())
    }
}
