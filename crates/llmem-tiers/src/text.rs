//! Lexical search: a tokeniser with light stemming and a BM25 inverted index, plus reciprocal-rank
//! fusion of lexical and vector rankings for hybrid search.

use std::collections::HashMap;
use std::hash::Hash;

use llmem_core::{Fusion, Result};

use crate::vector::TopK;

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;
/// BM25 length normalisation.
const B: f32 = 0.75;

const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "but",
    "by",
    "for",
    "if",
    "in",
    "into",
    "is",
    "it",
    "of",
    "on",
    "or",
    "so",
    "such",
    "that",
    "the",
    "their",
    "then",
    "there",
    "these",
    "they",
    "this",
    "to",
    "was",
    "were",
    "will",
    "with",
    "i",
    "my",
    "me",
    "we",
    "our",
    "you",
    "your",
    "he",
    "she",
    "him",
    "her",
    "his",
    "hers",
    "its",
    "them",
    "us",
    "what",
    "which",
    "who",
    "whom",
    "when",
    "where",
    "why",
    "how",
    "do",
    "does",
    "did",
    "done",
    "have",
    "has",
    "had",
    "been",
    "being",
    "am",
    "can",
    "could",
    "would",
    "should",
    "from",
    "about",
    "than",
    "too",
    "very",
    "just",
    "also",
    "some",
    "any",
    "all",
    "both",
    "each",
    "other",
    "more",
    "most",
    "own",
    "same",
    "only",
    "up",
    "out",
    "over",
    "again",
    "further",
    "once",
    "here",
    "those",
    "yours",
    "ours",
    "theirs",
    "myself",
    "yourself",
    "itself",
    "themselves",
    "while",
    "because",
    "until",
    "s",
    "t",
    "ll",
    "re",
    "ve",
    "d",
    "m",
    "don",
    "didn",
    "doesn",
    "isn",
    "wasn",
    "aren",
    "weren",
];

/// Lower-case alphanumeric words, stop words dropped, lightly stemmed (plural and -ing/-ed endings).
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

/// A deliberately small suffix stripper (a subset of Porter step 1): enough to match
/// `squirrels`/`squirrel` and `moved`/`moving` without a dictionary.
pub fn stem(w: &str) -> String {
    let n = w.chars().count();
    if n <= 3 {
        return w.to_owned();
    }
    for (suffix, replacement, min_stem) in [
        ("sses", "ss", 2),
        ("ies", "y", 2),
        ("ing", "", 3),
        ("ed", "", 3),
        ("ss", "ss", 2),
        ("s", "", 3),
    ] {
        if let Some(stem) = w.strip_suffix(suffix)
            && stem.chars().count() >= min_stem
        {
            return format!("{stem}{replacement}");
        }
    }
    w.to_owned()
}

/// The terms of weighted fields with their frequencies, and the document's length (BM25F: a
/// word of a field of weight `w` counts `w` times, in its frequency and in the length).
pub fn term_freqs(fields: &[(&str, f32)]) -> (Vec<(String, f32)>, f32) {
    let mut tf: HashMap<String, f32> = HashMap::new();
    let mut len = 0.0f32;
    for (text, weight) in fields {
        for t in tokenize(text) {
            *tf.entry(t).or_default() += weight;
            len += weight;
        }
    }
    (tf.into_iter().collect(), len)
}

/// A BM25 inverted index over documents keyed by `K`.
#[derive(Debug, Clone)]
pub struct TextIndex<K: Hash + Eq + Clone> {
    postings: HashMap<String, HashMap<K, f32>>,
    doc_len: HashMap<K, f32>,
    doc_terms: HashMap<K, Vec<String>>,
    total_len: f64,
}

impl<K: Hash + Eq + Clone> Default for TextIndex<K> {
    fn default() -> Self {
        TextIndex {
            postings: HashMap::new(),
            doc_len: HashMap::new(),
            doc_terms: HashMap::new(),
            total_len: 0.0,
        }
    }
}

impl<K: Hash + Eq + Clone> TextIndex<K> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    /// Indexes `text` under `key`, replacing what was there.
    pub fn insert(&mut self, key: K, text: &str) {
        self.insert_fields(key, &[(text, 1.0)]);
    }

    /// Indexes weighted fields under `key`, replacing what was there (BM25F: a word of a field
    /// of weight `w` counts `w` times, in its frequency and in the document's length).
    pub fn insert_fields(&mut self, key: K, fields: &[(&str, f32)]) {
        let (tf, len) = term_freqs(fields);
        self.insert_terms(key, tf, len);
    }

    /// Indexes a document given as its terms with their (weighted) frequencies and its length,
    /// as [`term_freqs`] makes them, replacing what was there.
    pub fn insert_terms(&mut self, key: K, tf: Vec<(String, f32)>, len: f32) {
        self.remove(&key);
        for (term, n) in &tf {
            self.postings
                .entry(term.clone())
                .or_default()
                .insert(key.clone(), *n);
        }
        self.total_len += f64::from(len);
        self.doc_len.insert(key.clone(), len);
        self.doc_terms
            .insert(key, tf.into_iter().map(|(t, _)| t).collect());
    }

    /// A document's terms with their frequencies, and its length (what
    /// [`insert_terms`](Self::insert_terms) takes back).
    pub fn terms_of(&self, key: &K) -> Option<(Vec<(&str, f32)>, f32)> {
        let terms = self.doc_terms.get(key)?;
        let tf = terms
            .iter()
            .filter_map(|t| Some((t.as_str(), *self.postings.get(t)?.get(key)?)))
            .collect();
        Some((tf, self.doc_len.get(key).copied().unwrap_or(0.0)))
    }

    pub fn remove(&mut self, key: &K) {
        let Some(terms) = self.doc_terms.remove(key) else {
            return;
        };
        for t in terms {
            if let Some(p) = self.postings.get_mut(&t) {
                p.remove(key);
                if p.is_empty() {
                    self.postings.remove(&t);
                }
            }
        }
        if let Some(l) = self.doc_len.remove(key) {
            self.total_len = (self.total_len - f64::from(l)).max(0.0);
        }
    }

    /// The best `k` documents for `query` among those `accept` lets through, best first.
    pub fn search(&self, query: &str, k: usize, accept: impl Fn(&K) -> bool) -> Vec<(K, f32)> {
        let n = self.doc_len.len() as f32;
        if n == 0.0 {
            return Vec::new();
        }
        let avg = (self.total_len as f32 / n).max(1.0);
        let mut terms = tokenize(query);
        terms.sort();
        terms.dedup();
        let mut scores: HashMap<&K, f32> = HashMap::new();
        for term in &terms {
            let Some(post) = self.postings.get(term) else {
                continue;
            };
            let df = post.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for (key, &tf) in post {
                let dl = self.doc_len.get(key).copied().unwrap_or(0.0);
                *scores.entry(key).or_default() +=
                    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * dl / avg));
            }
        }
        let mut top = TopK::new(k);
        for (key, s) in scores {
            if s > top.threshold() && accept(key) {
                top.push(key.clone(), s);
            }
        }
        top.into_sorted()
    }
}

/// Fuses a vector ranking and a lexical one (each best first, with its scores: cosine and
/// BM25) as `fusion` says; the top `k`, best first. An invalid fusion (a weight outside 0..=1)
/// is an error that names the fix.
pub fn fuse<K: Hash + Eq + Clone>(
    by_vec: &[(K, f32)],
    by_text: &[(K, f32)],
    fusion: Fusion,
    k: usize,
) -> Result<Vec<(K, f32)>> {
    fusion.check()?;
    let w = match fusion {
        Fusion::Weighted { vector_weight } => vector_weight,
        _ => {
            let keys = |l: &[(K, f32)]| l.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
            return Ok(rrf(&[keys(by_vec), keys(by_text)], k));
        }
    };
    let (lo, hi) = by_vec
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x.1), hi.max(x.1))
        });
    let span = (hi - lo).max(1e-6);
    let top = by_text.iter().map(|x| x.1).fold(0.0f32, f32::max).max(1e-6);
    Ok(sum_top(
        by_vec
            .iter()
            .map(|(key, s)| (key.clone(), w * (s - lo) / span))
            .chain(
                by_text
                    .iter()
                    .map(|(key, s)| (key.clone(), (1.0 - w) * s / top)),
            ),
        k,
    ))
}

/// Sums the scores of each key (keys kept in first-seen order, so that ties keep it) and
/// returns the top `k`, best first.
fn sum_top<K: Hash + Eq + Clone>(
    scored: impl IntoIterator<Item = (K, f32)>,
    k: usize,
) -> Vec<(K, f32)> {
    let mut fused: HashMap<K, f32> = HashMap::new();
    let mut order: Vec<K> = Vec::new();
    for (key, s) in scored {
        *fused.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            0.0
        }) += s;
    }
    let mut top = TopK::new(k);
    for key in order {
        let s = fused.get(&key).copied().unwrap_or(0.0);
        top.push(key, s);
    }
    top.into_sorted()
}

/// Reciprocal-rank fusion constant (Cormack et al. 2009).
pub const RRF_K: f32 = 60.0;

/// Fuses ranked lists (best first) by reciprocal rank: `Σ 1 / (RRF_K + rank)`; best first.
pub fn rrf<K: Hash + Eq + Clone>(lists: &[Vec<K>], k: usize) -> Vec<(K, f32)> {
    sum_top(
        lists.iter().flat_map(|list| {
            list.iter()
                .enumerate()
                .map(|(rank, key)| (key.clone(), 1.0 / (RRF_K + rank as f32 + 1.0)))
        }),
        k,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercase_stemmed_and_without_stop_words() {
        assert_eq!(
            tokenize("The Squirrels moved to Lisbon!"),
            vec!["squirrel", "mov", "lisbon"]
        );
        assert_eq!(stem("moving"), "mov");
        assert_eq!(stem("class"), "class");
        assert_eq!(stem("ponies"), "pony");
    }

    #[test]
    fn bm25_prefers_rare_terms_and_forgets_removed_docs() {
        let mut ix = TextIndex::new();
        ix.insert(1, "the cat sat on the mat");
        ix.insert(2, "the dog sat on the log");
        ix.insert(3, "cats and dogs and a zebra");
        let hits = ix.search("zebra cat", 3, |_| true);
        assert_eq!(hits[0].0, 3, "{hits:?}");
        assert_eq!(hits.len(), 2);
        let hits = ix.search("zebra cat", 3, |k| *k != 3);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1]);
        ix.remove(&3);
        assert!(ix.search("zebra", 3, |_| true).is_empty());
        ix.insert(1, "replaced text");
        assert!(ix.search("mat", 3, |_| true).is_empty());
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn a_weighted_field_outranks_the_same_words_in_another() {
        let mut ix = TextIndex::new();
        // Two documents of the same words: one says "pottery" itself, the other only in its key.
        ix.insert_fields(1, &[("we talked", 3.0), ("I love pottery", 1.0)]);
        ix.insert_fields(2, &[("I love pottery", 3.0), ("we talked", 1.0)]);
        ix.insert(3, "nothing to see");
        let hits = ix.search("pottery", 3, |_| true);
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            vec![2, 1],
            "{hits:?}"
        );
        // Weight 1 everywhere is plain BM25 over the joined text.
        let mut plain = TextIndex::new();
        plain.insert_fields(1, &[("we talked", 1.0), ("I love pottery", 1.0)]);
        plain.insert(2, "I love pottery\nwe talked");
        let hits = plain.search("pottery", 2, |_| true);
        assert!((hits[0].1 - hits[1].1).abs() < 1e-6, "{hits:?}");
    }

    #[test]
    fn rrf_rewards_agreement() {
        let fused = rrf(&[vec!["a", "b", "c"], vec!["b", "d", "e"]], 4);
        assert_eq!(fused[0].0, "b", "{fused:?}");
        assert_eq!(fused.len(), 4);
    }
}
