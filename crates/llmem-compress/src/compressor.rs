//! The [`Compressor`] trait and [`MemoryCompressor`], which implements the three strategies.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use llmem_core::{
    ChatSummarizer, Error, Message, Result, Role, Summarizer, SummaryRequest, SummaryUsage,
    TokenCounter, Usage,
};
use serde::Serialize;

use crate::config::{CompressConfig, Strategy};
use crate::extractive::ExtractiveSummarizer;
use crate::text::{facts, jaccard, normalize, shingles, transcript_line, words};

/// Text put before a summary in the system message that carries it into the context.
pub const SUMMARY_PREFIX: &str = "Previous conversation summary: ";

/// Receives the originals of messages removed from the context (deleted, deduplicated or
/// summarised), e.g. a long-term store. If it fails, the compression keeps the originals.
#[async_trait]
pub trait ArchiveSink: Send + Sync + std::fmt::Debug {
    /// Stores `messages` (oldest first).
    async fn archive(&self, messages: &[Message]) -> Result<()>;
}

/// An [`ArchiveSink`] in memory, for tests and previews.
#[derive(Debug, Default)]
pub struct VecArchive {
    messages: Mutex<Vec<Message>>,
}

impl VecArchive {
    /// Everything archived so far.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl ArchiveSink for VecArchive {
    async fn archive(&self, messages: &[Message]) -> Result<()> {
        let mut m = self
            .messages
            .lock()
            .map_err(|_| Error::storage("memory archive", "lock poisoned"))?;
        m.extend_from_slice(messages);
        Ok(())
    }
}

/// Why a message stays as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// A system prompt (with `preserve_system`).
    System,
    /// `metadata.pinned = true`.
    Pinned,
    /// One of the last `keep_recent` messages (widened to whole tool groups).
    Recent,
    /// The most recent user message, always kept.
    LatestUser,
    /// A tool call or tool result ([`Strategy::Selective`]).
    ToolCall,
    /// Mentions an error, exception, failure or traceback, or has `metadata.error = true`
    /// ([`Strategy::Selective`]).
    Error,
    /// `metadata.important = true` ([`Strategy::Selective`]).
    Important,
    /// Contains a configured keyword ([`Strategy::Selective`]).
    Keyword,
}

/// Why a message leaves the context without being summarised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DropReason {
    /// Same words as message `of`.
    Duplicate {
        /// Index of the message it repeats.
        of: usize,
    },
    /// Word-shingle Jaccard similarity `similarity` to message `of`.
    NearDuplicate {
        /// Index of the message it nearly repeats.
        of: usize,
        /// Jaccard similarity of their word 3-shingles.
        similarity: f64,
    },
    /// Removed by [`Strategy::Deletion`].
    Deleted,
}

/// What compression does to one message.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Stays as it is.
    Keep {
        /// Why.
        reason: KeepReason,
    },
    /// Folded into the summary.
    Summarize,
    /// A summary from an earlier compression (`metadata.summary = true`), extended and replaced.
    PreviousSummary,
    /// Leaves the context without being summarised (to the archive, when one is configured).
    Drop {
        /// Why.
        reason: DropReason,
    },
}

/// A dry run: what would be kept, summarised and dropped, and the sizes involved.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// The strategy planned.
    pub strategy: Strategy,
    /// One action per input message, in order.
    pub actions: Vec<Action>,
    /// Tokens of each input message.
    pub message_tokens: Vec<usize>,
    /// Tokens of the whole input, request framing included.
    pub original_tokens: usize,
    /// Tokens of the messages kept.
    pub kept_tokens: usize,
    /// Tokens of the messages (and previous summary) to be summarised.
    pub summarize_tokens: usize,
    /// Tokens of the messages dropped.
    pub dropped_tokens: usize,
    /// The length asked of the summary.
    pub summary_target_tokens: usize,
    /// Roughly what the compressed context will cost.
    pub estimated_tokens: usize,
}

impl Preview {
    /// How many messages get `action`-like treatment: (kept, summarised, dropped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for a in &self.actions {
            match a {
                Action::Keep { .. } => c.0 += 1,
                Action::Summarize | Action::PreviousSummary => c.1 += 1,
                Action::Drop { .. } => c.2 += 1,
            }
        }
        c
    }
}

/// How the summary was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Method {
    /// Nothing needed summarising.
    None,
    /// The LLM summarizer named `summarizer`.
    Abstractive {
        /// The summarizer's name.
        summarizer: String,
    },
    /// Sentence selection, with no model (configured so, or as the fallback).
    Extractive,
    /// Compression failed and the originals were kept; see `errors`.
    KeptOriginals,
}

/// Share of the originals' facts (numbers, dates, names; see [`facts`]) found in the
/// compressed context: `facts_kept / facts_total` (1.0 when the originals have none). A cheap,
/// model-free proxy for what a reader can still answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    /// Distinct facts in the originals.
    pub facts_total: usize,
    /// Of those, how many appear in the compressed context.
    pub facts_kept: usize,
    /// `facts_kept / facts_total`, in `[0, 1]`.
    pub score: f64,
}

impl Quality {
    /// Compares the facts of `before` and `after`.
    pub fn measure(before: &[Message], after: &[Message]) -> Quality {
        let text = |ms: &[Message]| {
            ms.iter()
                .map(transcript_line)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let f0 = facts(&text(before));
        let f1 = facts(&text(after));
        let kept = f0.iter().filter(|f| f1.contains(*f)).count();
        let score = if f0.is_empty() {
            1.0
        } else {
            kept as f64 / f0.len() as f64
        };
        Quality {
            facts_total: f0.len(),
            facts_kept: kept,
            score,
        }
    }
}

/// What a compression's summariser calls spent: tokens in and out, all calls together, and the
/// model that made them. A call that failed or timed out spent what the provider says it did,
/// which llmem does not learn: it is not counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SummarizerSpend {
    /// The model that wrote, as the summariser named it (the last call's); `None` when no
    /// summariser call succeeded.
    pub model: Option<String>,
    /// Input and output tokens of the successful calls.
    pub usage: Usage,
    /// Calls that returned a summary.
    pub calls: usize,
    /// Of those, how many did not report their tokens: the compressor counted them itself (the
    /// prompt [`ChatSummarizer::prompt`] sends and the answer), with its own counter.
    pub estimated_calls: usize,
}

impl SummarizerSpend {
    /// Input plus output tokens.
    pub fn tokens(&self) -> u64 {
        self.usage.input_tokens + self.usage.output_tokens
    }

    fn add(&mut self, usage: &SummaryUsage, estimate: impl FnOnce() -> Usage) {
        let u = match usage.tokens {
            Some(u) => u,
            None => {
                self.estimated_calls += 1;
                estimate()
            }
        };
        self.usage.input_tokens += u.input_tokens;
        self.usage.output_tokens += u.output_tokens;
        self.usage.cached_input_tokens += u.cached_input_tokens;
        self.calls += 1;
        self.model = Some(usage.model.clone());
    }
}

/// The result of a compression, with its statistics.
#[derive(Debug, Clone, Serialize)]
pub struct CompressedMemory {
    /// The compressed context, ready to send.
    pub messages: Vec<Message>,
    /// The summary text, when one was made.
    pub summary: Option<String>,
    /// The strategy used.
    pub strategy: Strategy,
    /// Tokens of the input, counted by the compressor's counter.
    pub original_tokens: usize,
    /// Tokens of [`CompressedMemory::messages`].
    pub compressed_tokens: usize,
    /// `compressed_tokens / original_tokens`.
    pub ratio: f64,
    /// `original_tokens - compressed_tokens`.
    pub saved_tokens: usize,
    /// Messages in the input.
    pub messages_before: usize,
    /// Messages in the output.
    pub messages_after: usize,
    /// Messages folded into the summary (a previous summary included).
    pub summarized: usize,
    /// Messages dropped (duplicates, deleted).
    pub dropped: usize,
    /// Messages handed to the archive sink.
    pub archived: usize,
    /// How many of the originals' facts survive.
    pub quality: Quality,
    /// How the summary was made.
    pub method: Method,
    /// Calls made to the LLM summarizer (map and reduce rounds).
    pub summarizer_calls: usize,
    /// What those calls spent (tokens in and out, the model), for the caller to count and price.
    pub summarizer_spend: SummarizerSpend,
    /// What went wrong on the way (summarizer errors, timeouts, archive failures); the
    /// compression still returned a usable context and lost nothing.
    pub errors: Vec<String>,
}

/// Compresses a conversation. Implementations never lose data: when something fails they keep
/// the originals (or fall back to a model-free summary) and report the error in the result.
#[async_trait]
pub trait Compressor: Send + Sync + std::fmt::Debug {
    /// The strategy name.
    fn name(&self) -> &str;

    /// What [`Compressor::compress`] would do, without doing it.
    fn preview(&self, messages: &[Message]) -> Result<Preview>;

    /// Compresses `messages`.
    async fn compress(&self, messages: &[Message]) -> Result<CompressedMemory>;
}

/// The three [`Strategy`]s (sliding window, selective, deletion) over one configuration:
/// redundancy removal, then a summary (LLM through [`Summarizer`] with map-reduce chunking, or
/// [`ExtractiveSummarizer`]), an optional [`ArchiveSink`] for everything that leaves the context.
#[derive(Debug, Clone)]
pub struct MemoryCompressor {
    config: CompressConfig,
    counter: Arc<dyn TokenCounter>,
    extractive: ExtractiveSummarizer,
    summarizer: Option<Arc<dyn Summarizer>>,
    archive: Option<Arc<dyn ArchiveSink>>,
}

impl MemoryCompressor {
    /// A compressor counting with `counter`; without a summarizer it summarises extractively.
    pub fn new(config: CompressConfig, counter: Arc<dyn TokenCounter>) -> Result<Self> {
        config.validate()?;
        Ok(MemoryCompressor {
            extractive: ExtractiveSummarizer::new(counter.clone())
                .with_redundancy(config.near_duplicate.min(0.6)),
            config,
            counter,
            summarizer: None,
            archive: None,
        })
    }

    /// Summarise with `summarizer` (an LLM); the extractive summarizer stays as the fallback.
    #[must_use]
    pub fn with_summarizer(mut self, summarizer: Arc<dyn Summarizer>) -> Self {
        self.summarizer = Some(summarizer);
        self
    }

    /// Hand every message that leaves the context to `archive`.
    #[must_use]
    pub fn with_archive(mut self, archive: Arc<dyn ArchiveSink>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &CompressConfig {
        &self.config
    }

    fn plan(&self, messages: &[Message]) -> Result<Preview> {
        let cfg = &self.config;
        let n = messages.len();
        let tokens: Vec<usize> = messages
            .iter()
            .map(|m| self.counter.count_message(m))
            .collect();
        let mut actions = vec![Action::Summarize; n];
        for (i, m) in messages.iter().enumerate() {
            if m.role == Role::System && m.flag("summary") {
                actions[i] = Action::PreviousSummary;
            } else if m.role == Role::System && cfg.preserve_system {
                actions[i] = Action::Keep {
                    reason: KeepReason::System,
                };
            } else if m.flag("pinned") {
                actions[i] = Action::Keep {
                    reason: KeepReason::Pinned,
                };
            }
        }
        // The recent window, widened so that it never starts inside a tool group.
        let mut start = n.saturating_sub(cfg.keep_recent);
        while start > 0 && start < n && messages[start].role == Role::Tool {
            start -= 1;
        }
        for a in &mut actions[start..] {
            if *a == Action::Summarize {
                *a = Action::Keep {
                    reason: KeepReason::Recent,
                };
            }
        }
        if let Some(u) = messages.iter().rposition(|m| m.role == Role::User)
            && actions[u] == Action::Summarize
        {
            actions[u] = Action::Keep {
                reason: KeepReason::LatestUser,
            };
        }
        match cfg.strategy {
            Strategy::SlidingWindow => {}
            Strategy::Selective => self.select(messages, &mut actions),
            Strategy::Deletion => {
                for a in &mut actions {
                    if matches!(a, Action::Summarize | Action::PreviousSummary) {
                        *a = Action::Drop {
                            reason: DropReason::Deleted,
                        };
                    }
                }
            }
        }
        unify_tool_groups(messages, &mut actions);
        dedup(messages, &mut actions, cfg.near_duplicate);
        let mut p = self.sizes(cfg.strategy, actions, tokens);
        if let Some(budget) = cfg.budget {
            self.fit(messages, &mut p, budget)?;
        }
        Ok(p)
    }

    fn select(&self, messages: &[Message], actions: &mut [Action]) {
        let keywords: Vec<String> = self
            .config
            .keywords
            .iter()
            .map(|k| k.to_lowercase())
            .collect();
        for (i, m) in messages.iter().enumerate() {
            if actions[i] != Action::Summarize {
                continue;
            }
            let text = m.text();
            let ws: HashSet<String> = words(&text).into_iter().collect();
            let reason = if self.config.preserve_tool_calls
                && (m.role == Role::Tool || !m.tool_calls.is_empty())
            {
                Some(KeepReason::ToolCall)
            } else if m.flag("important") {
                Some(KeepReason::Important)
            } else if ws.iter().any(|w| {
                w.starts_with("error")
                    || w.starts_with("exception")
                    || w == "traceback"
                    || w == "failed"
                    || w == "panic"
            }) || m.flag("error")
            {
                Some(KeepReason::Error)
            } else if keywords.iter().any(|k| {
                if k.contains(' ') {
                    text.to_lowercase().contains(k)
                } else {
                    ws.contains(k)
                }
            }) {
                Some(KeepReason::Keyword)
            } else {
                None
            };
            if let Some(reason) = reason {
                actions[i] = Action::Keep { reason };
            }
        }
    }

    fn sizes(&self, strategy: Strategy, actions: Vec<Action>, tokens: Vec<usize>) -> Preview {
        let overhead = self.counter.request_overhead();
        let (mut kept, mut summ, mut dropped) = (0, 0, 0);
        for (a, t) in actions.iter().zip(&tokens) {
            match a {
                Action::Keep { .. } => kept += t,
                Action::Summarize | Action::PreviousSummary => summ += t,
                Action::Drop { .. } => dropped += t,
            }
        }
        let target = if summ == 0 {
            0
        } else {
            ((summ as f64 * self.config.compression_ratio).ceil() as usize)
                .max(self.config.min_summary_tokens)
                .min(summ)
        };
        let framing = if summ == 0 {
            0
        } else {
            self.counter.count_message(&Message::system(SUMMARY_PREFIX))
        };
        Preview {
            strategy,
            original_tokens: tokens.iter().sum::<usize>() + overhead,
            kept_tokens: kept,
            summarize_tokens: summ,
            dropped_tokens: dropped,
            summary_target_tokens: target,
            estimated_tokens: kept + target + framing + overhead,
            actions,
            message_tokens: tokens,
        }
    }

    /// Moves the oldest recent messages (whole tool groups) out until the estimate fits `budget`,
    /// then shrinks the summary target to what is left.
    fn fit(&self, messages: &[Message], p: &mut Preview, budget: usize) -> Result<()> {
        let leave = match self.config.strategy {
            Strategy::Deletion => Action::Drop {
                reason: DropReason::Deleted,
            },
            _ => Action::Summarize,
        };
        let min_summary = |p: &Preview| {
            if p.summarize_tokens == 0 {
                0
            } else {
                self.config.min_summary_tokens.min(p.summarize_tokens)
            }
        };
        loop {
            let overhead = self.counter.request_overhead();
            let framing = self.counter.count_message(&Message::system(SUMMARY_PREFIX));
            let summary_part = if p.summarize_tokens == 0 {
                0
            } else {
                framing + min_summary(p)
            };
            if p.kept_tokens + overhead + summary_part <= budget {
                let room = budget.saturating_sub(p.kept_tokens + overhead + framing);
                if p.summarize_tokens > 0 {
                    p.summary_target_tokens = p.summary_target_tokens.min(room);
                }
                p.estimated_tokens = p.kept_tokens
                    + overhead
                    + if p.summarize_tokens == 0 {
                        0
                    } else {
                        framing + p.summary_target_tokens
                    };
                return Ok(());
            }
            // The oldest recent message (and the rest of its tool group) leaves.
            let Some(i) = p.actions.iter().position(|a| {
                *a == Action::Keep {
                    reason: KeepReason::Recent,
                }
            }) else {
                return Err(Error::TokenLimit {
                    what: "the compressed context (system prompts, pinned and preserved messages and the latest user message must stay; raise --budget)".into(),
                    needed: p.kept_tokens + overhead + summary_part,
                    limit: budget,
                });
            };
            let mut j = i + 1;
            while j < messages.len() && messages[j].role == Role::Tool {
                j += 1;
            }
            let actions = std::mem::take(&mut p.actions);
            let mut actions = actions;
            for a in &mut actions[i..j] {
                if *a
                    == (Action::Keep {
                        reason: KeepReason::Recent,
                    })
                {
                    *a = leave;
                }
            }
            *p = self.sizes(p.strategy, actions, std::mem::take(&mut p.message_tokens));
        }
    }

    /// Summarises `text` (extending `previous`) into at most `target` tokens with the LLM
    /// summarizer, chunking into map-reduce rounds when the input exceeds its context window.
    async fn abstractive(
        &self,
        s: &dyn Summarizer,
        previous: Option<String>,
        lines: Vec<String>,
        target: usize,
        calls: &mut usize,
        spend: &mut SummarizerSpend,
    ) -> Result<String> {
        // Room for the text in one call: the window minus the prompt, the previous summary and
        // the answer.
        let prev_tokens = previous.as_deref().map_or(0, |p| self.counter.count(p));
        let capacity = s
            .context_window()
            .saturating_sub(256 + target + prev_tokens);
        if capacity < 64 {
            return Err(Error::invalid(format!(
                "summarizer `{}` has a context window of {} tokens, too small for a {target}-token summary",
                s.name(),
                s.context_window()
            )));
        }
        let partial = target.min(capacity / 2).max(16);
        let mut units = lines;
        for _round in 0..12 {
            let chunks = pack(self.counter.as_ref(), &units, capacity);
            if chunks.len() <= 1 {
                let text = chunks.into_iter().next().unwrap_or_default();
                let req = SummaryRequest {
                    text,
                    previous_summary: previous,
                    max_tokens: target,
                    instructions: Some("Keep every name, number and date.".into()),
                };
                return self.call(s, req, calls, spend).await;
            }
            let mut next = Vec::with_capacity(chunks.len());
            for text in chunks {
                let req = SummaryRequest {
                    text,
                    previous_summary: None,
                    max_tokens: partial,
                    instructions: Some("This is one part of a longer conversation. Keep every name, number and date.".into()),
                };
                let out = self.call(s, req, calls, spend).await?;
                // A partial that overshoots would stop the rounds from converging: trim it.
                let out = if self.counter.count(&out) > partial {
                    self.extractive.summarize_text(None, &out, partial)
                } else {
                    out
                };
                next.push(out);
            }
            units = next;
        }
        Err(Error::invalid(
            "map-reduce summarization did not converge in 12 rounds",
        ))
    }

    /// One summariser call; what it spent is added to `spend` (counted here when the
    /// summariser does not say).
    async fn call(
        &self,
        s: &dyn Summarizer,
        req: SummaryRequest,
        calls: &mut usize,
        spend: &mut SummarizerSpend,
    ) -> Result<String> {
        *calls += 1;
        let asked = req.clone();
        match tokio::time::timeout(self.config.timeout, s.summarize_with_usage(req)).await {
            Ok(Ok(summary)) => {
                spend.add(&summary.usage, || Usage {
                    input_tokens: self.counter.count_messages(&ChatSummarizer::prompt(&asked))
                        as u64,
                    output_tokens: self.counter.count(&summary.text) as u64,
                    cached_input_tokens: 0,
                });
                Ok(summary.text)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout {
                what: format!("summarizer `{}`", s.name()),
                after: self.config.timeout,
            }),
        }
    }
}

/// Packs lines into chunks of at most `capacity` tokens, splitting lines that are longer.
fn pack(counter: &dyn TokenCounter, lines: &[String], capacity: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut cur = String::new();
    let mut cur_tokens = 0;
    for line in lines {
        let t = counter.count(line) + 1;
        let pieces = if t > capacity {
            counter.split(line, capacity.saturating_sub(1).max(1))
        } else {
            vec![line.clone()]
        };
        for piece in pieces {
            let t = counter.count(&piece) + 1;
            if cur_tokens + t > capacity && !cur.is_empty() {
                chunks.push(std::mem::take(&mut cur));
                cur_tokens = 0;
            }
            if !cur.is_empty() {
                cur.push('\n');
            }
            cur.push_str(&piece);
            cur_tokens += t;
        }
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    chunks
}

/// Marks exact and near-duplicate messages among those to summarise as dropped. Candidates
/// are found through an index of shingles, so this stays near-linear in the input.
/// A tool call and its results stay or go together: if any of them is kept, all are (a result
/// without its call, or a call without its results, is an HTTP 400 at every provider).
fn unify_tool_groups(messages: &[Message], actions: &mut [Action]) {
    let mut i = 0;
    while i < messages.len() {
        let calls = &messages[i].tool_calls;
        let mut j = i + 1;
        if !calls.is_empty() {
            while j < messages.len()
                && messages[j].role == Role::Tool
                && messages[j]
                    .tool_call_id
                    .as_ref()
                    .is_some_and(|id| calls.iter().any(|c| &c.id == id))
            {
                j += 1;
            }
            if actions[i..j]
                .iter()
                .any(|a| matches!(a, Action::Keep { .. }))
            {
                for a in &mut actions[i..j] {
                    if !matches!(a, Action::Keep { .. }) {
                        *a = Action::Keep {
                            reason: KeepReason::ToolCall,
                        };
                    }
                }
            }
        }
        i = j;
    }
}

fn dedup(messages: &[Message], actions: &mut [Action], threshold: f64) {
    let mut exact: HashMap<String, usize> = HashMap::new();
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut sets: HashMap<usize, HashSet<u64>> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        if actions[i] != Action::Summarize {
            continue;
        }
        let text = m.text();
        let norm = normalize(&text);
        if norm.is_empty() {
            continue;
        }
        if let Some(&of) = exact.get(&norm) {
            actions[i] = Action::Drop {
                reason: DropReason::Duplicate { of },
            };
            continue;
        }
        exact.insert(norm, i);
        let sh = shingles(&text, 3);
        if threshold < 1.0 && sh.len() >= 3 {
            let mut seen = HashSet::new();
            let mut best: Option<(usize, f64)> = None;
            for h in &sh {
                for &j in index.get(h).map(Vec::as_slice).unwrap_or_default() {
                    if seen.insert(j)
                        && let Some(other) = sets.get(&j)
                    {
                        let sim = jaccard(&sh, other);
                        if sim >= threshold && best.is_none_or(|(_, b)| sim > b) {
                            best = Some((j, sim));
                        }
                    }
                }
            }
            if let Some((of, similarity)) = best {
                actions[i] = Action::Drop {
                    reason: DropReason::NearDuplicate { of, similarity },
                };
                continue;
            }
        }
        for h in &sh {
            let posting = index.entry(*h).or_default();
            // Very common shingles say little about duplication; cap their postings.
            if posting.len() < 64 {
                posting.push(i);
            }
        }
        sets.insert(i, sh);
    }
}

fn summary_text(m: &Message) -> String {
    let t = m.text();
    t.strip_prefix(SUMMARY_PREFIX)
        .map(str::to_owned)
        .unwrap_or(t)
}

#[async_trait]
impl Compressor for MemoryCompressor {
    fn name(&self) -> &str {
        self.config.strategy.as_str()
    }

    fn preview(&self, messages: &[Message]) -> Result<Preview> {
        self.plan(messages)
    }

    async fn compress(&self, messages: &[Message]) -> Result<CompressedMemory> {
        let p = self.plan(messages)?;
        let mut errors = Vec::new();
        let mut calls = 0;
        let mut spend = SummarizerSpend::default();
        let removed: Vec<Message> = messages
            .iter()
            .zip(&p.actions)
            .filter(|(_, a)| !matches!(a, Action::Keep { .. } | Action::PreviousSummary))
            .map(|(m, _)| m.clone())
            .collect();
        let originals = |errors: Vec<String>, calls, spend| {
            self.finish(
                messages,
                messages.to_vec(),
                None,
                &p,
                Method::KeptOriginals,
                0,
                (calls, spend),
                errors,
            )
        };
        let mut archived = 0;
        if let Some(archive) = &self.archive
            && !removed.is_empty()
        {
            let r = tokio::time::timeout(self.config.timeout, archive.archive(&removed)).await;
            match r {
                Ok(Ok(())) => archived = removed.len(),
                Ok(Err(e)) => {
                    errors.push(format!("archive failed, originals kept: {e}"));
                    return Ok(originals(errors, 0, SummarizerSpend::default()));
                }
                Err(_) => {
                    errors.push(format!(
                        "archive timed out after {:?}, originals kept",
                        self.config.timeout
                    ));
                    return Ok(originals(errors, 0, SummarizerSpend::default()));
                }
            }
        }
        let to_summarize: Vec<&Message> = messages
            .iter()
            .zip(&p.actions)
            .filter(|(_, a)| **a == Action::Summarize)
            .map(|(m, _)| m)
            .collect();
        let previous: Vec<String> = messages
            .iter()
            .zip(&p.actions)
            .filter(|(_, a)| **a == Action::PreviousSummary)
            .map(|(m, _)| summary_text(m))
            .collect();
        let previous = if previous.is_empty() {
            None
        } else {
            Some(previous.join("\n"))
        };
        let mut method = Method::None;
        let mut summary = None;
        if !to_summarize.is_empty() || (previous.is_some() && p.strategy != Strategy::Deletion) {
            let lines: Vec<String> = to_summarize.iter().map(|m| transcript_line(m)).collect();
            let target = p.summary_target_tokens;
            let mut text = None;
            if let Some(s) = &self.summarizer {
                match self
                    .abstractive(
                        s.as_ref(),
                        previous.clone(),
                        lines.clone(),
                        target,
                        &mut calls,
                        &mut spend,
                    )
                    .await
                {
                    Ok(t) => {
                        let t = if self.counter.count(&t) > target {
                            errors.push(format!(
                                "summarizer `{}` overshot {target} tokens; trimmed extractively",
                                s.name()
                            ));
                            self.extractive.summarize_text(None, &t, target)
                        } else {
                            t
                        };
                        if !t.trim().is_empty() {
                            method = Method::Abstractive {
                                summarizer: s.name().to_owned(),
                            };
                            text = Some(t);
                        }
                    }
                    Err(e) => errors.push(format!(
                        "summarizer `{}` failed, used the extractive summarizer: {e}",
                        s.name()
                    )),
                }
            }
            if text.is_none() {
                let t =
                    self.extractive
                        .summarize_text(previous.as_deref(), &lines.join("\n"), target);
                if t.trim().is_empty() {
                    errors.push(format!("no summary fits {target} tokens; originals kept"));
                    return Ok(originals(errors, calls, spend));
                }
                method = Method::Extractive;
                text = Some(t);
            }
            summary = text;
        }
        let mut out = Vec::with_capacity(messages.len());
        let mut placed = false;
        for (m, a) in messages.iter().zip(&p.actions) {
            match a {
                Action::Keep { .. } => out.push(m.clone()),
                Action::Summarize | Action::PreviousSummary => {
                    if !placed && let Some(s) = &summary {
                        out.push(
                            Message::system(format!("{SUMMARY_PREFIX}{s}"))
                                .with_metadata("summary", true)
                                .with_metadata("summarized_messages", to_summarize.len()),
                        );
                        placed = true;
                    }
                }
                Action::Drop { .. } => {}
            }
        }
        Ok(self.finish(
            messages,
            out,
            summary,
            &p,
            method,
            archived,
            (calls, spend),
            errors,
        ))
    }
}

impl MemoryCompressor {
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        before: &[Message],
        after: Vec<Message>,
        summary: Option<String>,
        p: &Preview,
        method: Method,
        archived: usize,
        (calls, spend): (usize, SummarizerSpend),
        errors: Vec<String>,
    ) -> CompressedMemory {
        let original = self.counter.count_messages(before);
        let compressed = self.counter.count_messages(&after);
        let kept_originals = method == Method::KeptOriginals;
        let (_, summarized, dropped) = if kept_originals {
            (0, 0, 0)
        } else {
            p.counts()
        };
        CompressedMemory {
            quality: Quality::measure(before, &after),
            summary,
            strategy: p.strategy,
            original_tokens: original,
            compressed_tokens: compressed,
            ratio: if original == 0 {
                1.0
            } else {
                compressed as f64 / original as f64
            },
            saved_tokens: original.saturating_sub(compressed),
            messages_before: before.len(),
            messages_after: after.len(),
            summarized,
            dropped,
            archived,
            method,
            summarizer_calls: calls,
            summarizer_spend: spend,
            errors,
            messages: after,
        }
    }
}
