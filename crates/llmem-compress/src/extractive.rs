//! [`ExtractiveSummarizer`]: sentence selection under a token target, with no language model.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use llmem_core::{
    Message, Result, Summarizer, Summary, SummaryRequest, SummaryUsage, TokenCounter,
};
use llmem_window::Compactor;

use crate::text::{content_words, facts, jaccard, normalize, sentences, shingles, transcript_line};

/// Picks the sentences that best represent a text, within a token target, and returns them in
/// their original order. No model, no network: compression works with no provider configured.
///
/// Selection is maximal marginal relevance (MMR) over lexical vectors:
/// - each sentence is a bag of content words (stopwords removed);
/// - its *relevance* is its cosine similarity to the centroid of all sentences (centrality),
///   plus a bonus for facts (numbers, dates, names; see [`crate::facts`]) and for sentences of the
///   previous summary (so a rolling summary keeps its older facts);
/// - it is picked greedily by `λ·relevance − (1−λ)·max similarity to already picked sentences`
///   while it fits the target; exact and near-duplicate sentences (word-shingle Jaccard at or
///   above the redundancy threshold) are never picked twice.
///
/// A line of the form `Speaker: text` keeps its speaker on every sentence picked from it.
#[derive(Debug, Clone)]
pub struct ExtractiveSummarizer {
    counter: Arc<dyn TokenCounter>,
    lambda: f64,
    redundancy: f64,
}

struct Candidate {
    text: String,
    shingles: HashSet<u64>,
    order: usize,
    vec: HashMap<u32, f64>,
    relevance: f64,
    tokens: usize,
}

impl ExtractiveSummarizer {
    /// A summarizer measuring its target with `counter` (λ = 0.6, redundancy threshold 0.6).
    pub fn new(counter: Arc<dyn TokenCounter>) -> Self {
        ExtractiveSummarizer {
            counter,
            lambda: 0.6,
            redundancy: 0.6,
        }
    }

    /// Weight of relevance against novelty in MMR, in `[0, 1]`.
    #[must_use]
    pub fn with_lambda(mut self, lambda: f64) -> Self {
        self.lambda = lambda.clamp(0.0, 1.0);
        self
    }

    /// Shingle Jaccard similarity at or above which two sentences count as the same.
    #[must_use]
    pub fn with_redundancy(mut self, threshold: f64) -> Self {
        self.redundancy = threshold.clamp(0.0, 1.0);
        self
    }

    /// The counter used for the target.
    pub fn counter(&self) -> &Arc<dyn TokenCounter> {
        &self.counter
    }

    /// A summary of `text` (extending `previous`, if given) in at most `max_tokens` tokens.
    /// Returns an empty string when `max_tokens` cannot hold even one sentence.
    pub fn summarize_text(&self, previous: Option<&str>, text: &str, max_tokens: usize) -> String {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut cands: Vec<Candidate> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut order = 0usize;
        let mut add =
            |label: Option<&str>, sentence: &str, boost: f64, cands: &mut Vec<Candidate>| {
                let norm = normalize(sentence);
                if norm.is_empty() || !seen.insert(norm) {
                    return;
                }
                let mut vec: HashMap<u32, f64> = HashMap::new();
                for w in content_words(sentence) {
                    let n = vocab.len() as u32;
                    let id = *vocab.entry(w).or_insert(n);
                    *vec.entry(id).or_default() += 1.0;
                }
                let norm2 = vec.values().map(|v| v * v).sum::<f64>().sqrt();
                if norm2 > 0.0 {
                    for v in vec.values_mut() {
                        *v /= norm2;
                    }
                }
                let text = match label {
                    Some(l) => format!("{l}: {sentence}"),
                    None => sentence.to_owned(),
                };
                let fact_bonus = 0.05 * (facts(sentence).len().min(4) as f64);
                let tokens = self.counter.count(&text) + 1;
                let shingles = shingles(sentence, 3);
                cands.push(Candidate {
                    text,
                    shingles,
                    order,
                    vec,
                    relevance: fact_bonus + boost,
                    tokens,
                });
                order += 1;
            };
        if let Some(prev) = previous {
            for s in sentences(prev) {
                add(None, s, 0.2, &mut cands);
            }
        }
        for line in text.lines() {
            let (label, body) = split_label(line);
            for s in sentences(body) {
                add(label, s, 0.0, &mut cands);
            }
        }
        if cands.is_empty() {
            return String::new();
        }
        // Centrality: cosine to the centroid of all sentence vectors.
        let mut centroid: HashMap<u32, f64> = HashMap::new();
        for c in &cands {
            for (k, v) in &c.vec {
                *centroid.entry(*k).or_default() += v;
            }
        }
        let cn = centroid
            .values()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        for c in &mut cands {
            c.relevance += dot(&c.vec, &centroid) / cn;
        }
        let mut picked: Vec<usize> = Vec::new();
        let mut max_sim = vec![0.0f64; cands.len()];
        let mut blocked = vec![false; cands.len()];
        let mut used = 0usize;
        loop {
            let mut best: Option<(usize, f64)> = None;
            for (i, c) in cands.iter().enumerate() {
                if blocked[i] || used + c.tokens > max_tokens {
                    continue;
                }
                let score = self.lambda * c.relevance - (1.0 - self.lambda) * max_sim[i];
                if best.is_none_or(|(_, b)| score > b) {
                    best = Some((i, score));
                }
            }
            let Some((i, _)) = best else { break };
            blocked[i] = true;
            picked.push(i);
            used += cands[i].tokens;
            for j in 0..cands.len() {
                if blocked[j] {
                    continue;
                }
                if jaccard(&cands[i].shingles, &cands[j].shingles) >= self.redundancy {
                    blocked[j] = true;
                    continue;
                }
                let s = dot(&cands[i].vec, &cands[j].vec);
                if s > max_sim[j] {
                    max_sim[j] = s;
                }
            }
        }
        picked.sort_by_key(|&i| cands[i].order);
        let mut out: Vec<&str> = picked.iter().map(|&i| cands[i].text.as_str()).collect();
        // The per-sentence counts are close to the count of the joined text; make sure.
        while !out.is_empty() && self.counter.count(&out.join("\n")) > max_tokens {
            out.pop();
        }
        out.join("\n")
    }
}

fn dot(a: &HashMap<u32, f64>, b: &HashMap<u32, f64>) -> f64 {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small
        .iter()
        .filter_map(|(k, v)| large.get(k).map(|w| v * w))
        .sum()
}

/// `("Caroline", "text")` for `Caroline: text` when the label is short and looks like a name or a
/// role; otherwise no label.
fn split_label(line: &str) -> (Option<&str>, &str) {
    if let Some((label, body)) = line.split_once(": ") {
        let ok = !label.is_empty()
            && label.len() <= 40
            && !label.contains(['.', '!', '?', ':'])
            && label.split_whitespace().count() <= 4;
        if ok {
            return (Some(label), body);
        }
    }
    (None, line)
}

#[async_trait]
impl Summarizer for ExtractiveSummarizer {
    fn name(&self) -> &str {
        "extractive"
    }

    /// Unbounded: sentence selection has no input limit.
    fn context_window(&self) -> usize {
        usize::MAX
    }

    async fn summarize(&self, request: SummaryRequest) -> Result<String> {
        Ok(self.summarize_text(
            request.previous_summary.as_deref(),
            &request.text,
            request.max_tokens,
        ))
    }

    /// Spends nothing: no model runs (usage zero, model `extractive`).
    async fn summarize_with_usage(&self, request: SummaryRequest) -> Result<Summary> {
        Ok(Summary {
            text: self.summarize(request).await?,
            usage: SummaryUsage::free("extractive"),
        })
    }
}

/// Lets a [`llmem_window::Layout`] block with `Overflow::Summarize` fold its evicted messages
/// into a rolling extractive summary.
impl Compactor for ExtractiveSummarizer {
    fn compact(
        &self,
        previous: Option<&str>,
        evicted: &[Message],
        max_tokens: usize,
    ) -> Result<String> {
        let text: Vec<String> = evicted.iter().map(transcript_line).collect();
        Ok(self.summarize_text(previous, &text.join("\n"), max_tokens))
    }
}
