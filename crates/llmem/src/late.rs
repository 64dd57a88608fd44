//! Late interaction: memories re-ranked by how well each word of the question finds its match
//! among a memory's words, in the embedder's token vectors (ColBERT's MaxSim, here over the
//! token states of the same MiniLM run that gives the sentence vector).
//!
//! A sentence vector averages a memory into one point, so "What instruments does Priya
//! play?" lands far from "I've been practising the clarinet a lot": most of either sentence is
//! about something else. Token by token, "instruments" finds "clarinet", "Priya" finds the
//! speaker and "play" finds "practising", and the memory ranks by those matches.
//!
//! A reply is matched with the words of the question it answers too: "Mount Tamalpais, the
//! view was unreal" after "Where did you go hiking last weekend?" is what "Where did Ben go
//! hiking?" asks for, though it says neither "hiking" nor "where". Part of its score
//! (`retrieval.late_reply_share`) takes each question token's best match among the reply's
//! tokens and the question's together ([`TokenMatches::in_reply_to`]).
//!
//! [`LateIndex`] keeps each memory's token vectors, quantised to 8 bits (one scale per token):
//! about 12 KiB for a memory of 30 tokens. It is filled when memories are stored and, for a
//! memory stored before (by another process, or before a restart), the first time a search
//! meets it; past its capacity the oldest entries leave it, to be computed again if needed.
//! The managers built from clones of one [`crate::Providers`] share one index, as they share
//! the store.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use llmem_core::TokenVectors;

/// One memory's token vectors, 8 bits a value, one scale per token.
#[derive(Debug, Clone)]
struct Quantized {
    dim: usize,
    scales: Vec<f32>,
    values: Vec<i8>,
    /// A hash of the text the vectors are of: a memory whose text changed is computed again.
    text: u64,
}

impl Quantized {
    fn new(tokens: &TokenVectors, text: u64) -> Self {
        let dim = tokens.dim();
        let mut scales = Vec::with_capacity(tokens.len());
        let mut values = Vec::with_capacity(tokens.rows().len());
        for row in tokens.rows().chunks(dim) {
            let top = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let scale = if top > 0.0 { top / 127.0 } else { 1.0 };
            scales.push(scale);
            let inv = 1.0 / scale;
            // Rounded half away from zero; `as` saturates at ±127 (|x · inv| ≤ 127).
            values.extend(row.iter().map(|x| {
                let v = x * inv;
                (v + 0.5f32.copysign(v)) as i8
            }));
        }
        Quantized {
            dim,
            scales,
            values,
            text,
        }
    }

    fn bytes(&self) -> usize {
        self.values.len() + 4 * self.scales.len() + 64
    }

    /// [`TokenVectors::max_sim`] of `query` against these vectors, both quantised: 8-bit
    /// products summed in 32 bits, which the compiler vectorises (a float sum it may not
    /// reorder).
    fn max_sim(&self, query: &Quantized) -> f32 {
        self.matches(query).score()
    }

    /// Each token of `query`'s best scaled product with one of these tokens (none when either
    /// is empty or their sizes differ).
    fn matches(&self, query: &Quantized) -> TokenMatches {
        if query.scales.is_empty() || self.scales.is_empty() || query.dim != self.dim {
            return TokenMatches(Vec::new());
        }
        TokenMatches(
            query
                .values
                .chunks(self.dim)
                .zip(&query.scales)
                .map(|(q, qs)| {
                    let best = self
                        .values
                        .chunks(self.dim)
                        .zip(&self.scales)
                        .map(|(d, ds)| ds * dot_i8(q, d) as f32)
                        .fold(f32::NEG_INFINITY, f32::max);
                    qs * best
                })
                .collect(),
        )
    }
}

/// Each question token's best match among one memory's token vectors: their mean is the
/// memory's MaxSim, and a reply's is taken with the question it answers token by token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenMatches(Vec<f32>);

impl TokenMatches {
    /// MaxSim: the mean of the question tokens' best matches (0 without any).
    pub fn score(&self) -> f32 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().sum::<f32>() / self.0.len() as f32
    }

    /// The MaxSim of a reply (these matches) with `share` of it taken against the reply's and
    /// `question`'s tokens together: each question token's best match in either. A question
    /// of another query (another length) leaves the reply's own score.
    pub fn in_reply_to(&self, question: &TokenMatches, share: f32) -> f32 {
        if question.0.len() != self.0.len() || self.0.is_empty() {
            return self.score();
        }
        let total: f32 = self
            .0
            .iter()
            .zip(&question.0)
            .map(|(&own, &q)| (1.0 - share) * own + share * own.max(q))
            .sum();
        total / self.0.len() as f32
    }
}

/// The dot product of two 8-bit vectors, 16 lanes at a time (which the compiler turns into
/// vector instructions).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    const LANES: usize = 16;
    let (xs, ys) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: i32 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    let mut acc = [0i32; LANES];
    for (x, y) in xs.zip(ys) {
        for i in 0..LANES {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// A question's token vectors, quantised once for the scoring of many memories.
#[derive(Debug, Clone)]
pub struct LateQuery(Quantized);

impl LateQuery {
    pub fn new(tokens: &TokenVectors) -> Self {
        LateQuery(Quantized::new(tokens, 0))
    }
}

/// A hash of `text`, to tell whether stored vectors are still a memory's.
pub fn text_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Memories' token vectors by record id, within a capacity in bytes.
#[derive(Debug, Default)]
pub struct LateIndex {
    capacity: usize,
    used: usize,
    by_id: HashMap<String, Quantized>,
    /// Ids in the order they came in: the first leave first.
    order: VecDeque<String>,
}

impl LateIndex {
    /// An index that holds at most `capacity` bytes of vectors.
    pub fn new(capacity: usize) -> Self {
        LateIndex {
            capacity,
            used: 0,
            by_id: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Raises the capacity to `capacity` bytes if it is lower (the largest any user of a
    /// shared index asks for).
    pub fn reserve(&mut self, capacity: usize) {
        self.capacity = self.capacity.max(capacity);
    }

    /// Keeps `tokens`, the token vectors of record `id` whose text is `text`.
    pub fn insert(&mut self, id: &str, text: &str, tokens: &TokenVectors) {
        let q = Quantized::new(tokens, text_hash(text));
        if q.bytes() > self.capacity {
            return;
        }
        match self.by_id.insert(id.to_owned(), q) {
            Some(old) => self.used -= old.bytes(),
            None => self.order.push_back(id.to_owned()),
        }
        self.used += self.by_id[id].bytes();
        while self.used > self.capacity {
            let Some(first) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_id.remove(&first) {
                self.used -= gone.bytes();
            }
        }
    }

    /// Whether the index holds vectors of record `id` with text `text`.
    pub fn has(&self, id: &str, text: &str) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|q| q.text == text_hash(text))
    }

    /// The late-interaction score of `query` against record `id` (none when the index does
    /// not hold it).
    pub fn score(&self, id: &str, query: &LateQuery) -> Option<f32> {
        self.by_id.get(id).map(|q| q.max_sim(&query.0))
    }

    /// Each token of `query`'s best match among record `id`'s token vectors (none when the
    /// index does not hold it): [`TokenMatches::score`] is [`LateIndex::score`].
    pub fn matches(&self, id: &str, query: &LateQuery) -> Option<TokenMatches> {
        self.by_id.get(id).map(|q| q.matches(&query.0))
    }

    /// Whether the index holds vectors of record `id` (of whatever text).
    pub fn holds(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Bytes of vectors held.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(rows: &[&[f32]]) -> TokenVectors {
        TokenVectors::new(rows[0].len(), rows.concat()).unwrap()
    }

    #[test]
    fn max_sim_takes_each_query_tokens_best_match() {
        let doc = tokens(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0]]);
        // One query token matches a doc token exactly, the other is halfway between the
        // doc's two tokens and the third axis.
        let q = tokens(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, 1.0]]);
        let exact = q.max_sim(&doc);
        assert!(
            (exact - (1.0 + 0.5f32.sqrt()) / 2.0).abs() < 1e-6,
            "{exact}"
        );
        let mut index = LateIndex::new(1 << 20);
        index.insert("a", "text", &doc);
        let lq = LateQuery::new(&q);
        let quantised = index.score("a", &lq).unwrap();
        assert!((quantised - exact).abs() < 0.01, "{quantised} vs {exact}");
        // A document without the first direction scores lower.
        index.insert("b", "other", &tokens(&[&[0.0, 0.0, 1.0]]));
        assert!(index.score("b", &lq).unwrap() < quantised);
        assert_eq!(index.score("c", &lq), None);
    }

    /// A query token that the reply does not match but the question before it does gains
    /// `share` of the difference; a token the reply matches best keeps its own match.
    #[test]
    fn a_reply_is_matched_with_its_question_by_the_share() {
        let reply = tokens(&[&[1.0, 0.0, 0.0]]);
        let question = tokens(&[&[0.0, 1.0, 0.0], &[0.6, 0.0, 0.8]]);
        let q = tokens(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0]]);
        let mut index = LateIndex::new(1 << 20);
        index.insert("reply", "Mount Tamalpais.", &reply);
        index.insert("question", "Where did you hike?", &question);
        let lq = LateQuery::new(&q);
        let own = index.score("reply", &lq).unwrap();
        assert!((own - 0.5).abs() < 0.01, "{own}");
        let mine = index.matches("reply", &lq).unwrap();
        let asked = index.matches("question", &lq).unwrap();
        assert!((mine.score() - own).abs() < 1e-6);
        for share in [0.0, 0.6, 1.0] {
            let s = mine.in_reply_to(&asked, share);
            // Token 1: the reply's own 1.0; token 2: 0 alone, 1.0 with the question.
            let want = (1.0 + share) / 2.0;
            assert!((s - want).abs() < 0.01, "share {share}: {s} vs {want}");
        }
        let other = index
            .matches("question", &LateQuery::new(&tokens(&[&[0.0, 0.0, 1.0]])))
            .unwrap();
        assert_eq!(
            mine.in_reply_to(&other, 0.6),
            own,
            "matches of another question leave the reply's own score"
        );
        assert_eq!(index.matches("gone", &lq), None);
        assert!(index.holds("question") && !index.holds("gone"));
    }

    #[test]
    fn a_changed_text_is_not_held() {
        let mut index = LateIndex::new(1 << 20);
        index.insert("a", "old text", &tokens(&[&[1.0, 0.0]]));
        assert!(index.has("a", "old text"));
        assert!(!index.has("a", "new text"));
        index.insert("a", "new text", &tokens(&[&[0.0, 1.0]]));
        assert!(index.has("a", "new text"));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn the_oldest_leave_past_the_capacity() {
        let t = tokens(&[&[1.0; 8], &[0.5; 8]]);
        let one = Quantized::new(&t, 0).bytes();
        let mut index = LateIndex::new(3 * one);
        for id in ["a", "b", "c", "d"] {
            index.insert(id, id, &t);
        }
        assert_eq!(index.len(), 3);
        assert!(!index.has("a", "a"));
        assert!(index.has("d", "d"));
        assert_eq!(index.used(), 3 * one);
        // Replacing an entry does not count it twice.
        index.insert("d", "d", &t);
        assert_eq!(index.used(), 3 * one);
    }

    #[test]
    fn empty_or_mismatched_vectors_score_zero() {
        let doc = tokens(&[&[1.0, 0.0]]);
        let empty = TokenVectors::new(2, Vec::new()).unwrap();
        assert_eq!(empty.max_sim(&doc), 0.0);
        assert_eq!(doc.max_sim(&empty), 0.0);
        let other = tokens(&[&[1.0, 0.0, 0.0]]);
        assert_eq!(other.max_sim(&doc), 0.0);
        let mut index = LateIndex::new(1 << 20);
        index.insert("a", "a", &doc);
        assert_eq!(index.score("a", &LateQuery::new(&other)), Some(0.0));
        assert_eq!(index.score("a", &LateQuery::new(&empty)), Some(0.0));
        assert!(TokenVectors::new(0, vec![]).is_err());
        assert!(TokenVectors::new(3, vec![1.0; 4]).is_err());
    }
}
