//! Incremental counting: a message is counted once, and a running total is kept as messages come
//! and go, so adding a message never recounts the history.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use llmem_core::{Accuracy, Message, TokenCounter};
use parking_lot::Mutex;

/// A fingerprint of what a message costs: role, text, name, tool calls.
pub fn message_key(m: &Message) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.role.hash(&mut h);
    m.text().hash(&mut h);
    m.name.hash(&mut h);
    for c in &m.tool_calls {
        c.name.hash(&mut h);
        c.arguments.hash(&mut h);
    }
    h.finish()
}

/// Wraps a counter and remembers each message's count, so a message is tokenised once however
/// often windows are re-rendered. Bounded: the memo is cleared when it holds `capacity` entries.
#[derive(Debug, Clone)]
pub struct CachedCounter {
    inner: Arc<dyn TokenCounter>,
    memo: Arc<Mutex<std::collections::HashMap<u64, usize>>>,
    capacity: usize,
}

impl CachedCounter {
    pub fn new(inner: Arc<dyn TokenCounter>) -> Self {
        CachedCounter {
            inner,
            memo: Arc::default(),
            capacity: 100_000,
        }
    }

    /// How many message counts are memoised.
    pub fn memoised(&self) -> usize {
        self.memo.lock().len()
    }
}

impl TokenCounter for CachedCounter {
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn count(&self, text: &str) -> usize {
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
    fn count_message(&self, m: &Message) -> usize {
        let key = message_key(m);
        if let Some(&n) = self.memo.lock().get(&key) {
            return n;
        }
        let n = self.inner.count_message(m);
        let mut memo = self.memo.lock();
        if memo.len() >= self.capacity {
            memo.clear();
        }
        memo.insert(key, n);
        n
    }
    fn split(&self, text: &str, max_tokens: usize) -> Vec<String> {
        self.inner.split(text, max_tokens)
    }
}

/// A queue of per-item token counts with an O(1) running total.
#[derive(Debug, Clone, Default)]
pub struct TokenLedger {
    counts: VecDeque<usize>,
    total: usize,
}

impl TokenLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an item costing `tokens`.
    pub fn push(&mut self, tokens: usize) {
        self.counts.push_back(tokens);
        self.total += tokens;
    }

    /// Removes the oldest item, returning its cost.
    pub fn pop_front(&mut self) -> Option<usize> {
        let n = self.counts.pop_front()?;
        self.total -= n;
        Some(n)
    }

    /// Removes the item at `i`.
    pub fn remove(&mut self, i: usize) -> Option<usize> {
        let n = self.counts.remove(i)?;
        self.total -= n;
        Some(n)
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<usize> {
        self.counts.get(i).copied()
    }

    pub fn clear(&mut self) {
        self.counts.clear();
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);
    impl TokenCounter for Counting {
        fn model(&self) -> &str {
            "words"
        }
        fn count(&self, text: &str) -> usize {
            self.0.fetch_add(1, Ordering::SeqCst);
            text.split_whitespace().count()
        }
        fn accuracy(&self) -> Accuracy {
            Accuracy::Exact
        }
    }

    #[test]
    fn a_message_is_tokenised_once() {
        let inner = Arc::new(Counting::default());
        let c = CachedCounter::new(inner.clone());
        let m = Message::user("a b c");
        assert_eq!(c.count_message(&m), 3);
        let calls = inner.0.load(Ordering::SeqCst);
        for _ in 0..10 {
            assert_eq!(c.count_message(&m), 3);
        }
        assert_eq!(inner.0.load(Ordering::SeqCst), calls);
        assert_eq!(c.count_message(&Message::assistant("a b c")), 3);
        assert_eq!(c.memoised(), 2);
    }

    #[test]
    fn ledger_keeps_a_running_total() {
        let mut l = TokenLedger::new();
        for n in [3, 5, 7] {
            l.push(n);
        }
        assert_eq!(l.total(), 15);
        assert_eq!(l.pop_front(), Some(3));
        assert_eq!(l.remove(1), Some(7));
        assert_eq!(l.total(), 5);
        assert_eq!(l.len(), 1);
    }
}
