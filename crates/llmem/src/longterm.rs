//! Long-term memory as the manager and [`crate::Memory`] use it: records embedded when an
//! embedder is configured, facts that supersede older ones with the same key, and recall gated
//! by relevance, so that nothing is loaded unless the question needs it.
//!
//! A conversation memory is `who: what was said`, with the message's metadata (an
//! application's ids travel with it, so a memory can be traced to its message), the relative
//! times of the message resolved against its date ([`crate::when`], kept under [`TIMES`] and
//! shown in [`Recalled::line`]), and a lexical key that adds the [`PREV_MESSAGES`] messages
//! before it and the [`NEXT_MESSAGES`] after it: a question is usually answered in the message
//! after it, in words of the messages before, so the answer is found by the question's words.
//! A memory whose message followed a question also names the question's memory
//! ([`REPLY_TO`]), so that late interaction matches the reply with the question's words too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use llmem_compress::ArchiveSink;
use llmem_core::{
    BROADER, ChatModel, Embedded, Embedder, Filter, Fusion, KEYWORDS, MemoryRecord, MemoryStore,
    Message, RecordKind, Result, Role, Scope, ScoredRecord, SearchRequest, Timestamp, TokenCounter,
    TokenVectors, async_trait,
};
use llmem_tiers::text::tokenize;

use crate::config::RetrievalSettings;
use crate::facts::{self, DecidedBy, Decision, Fact, FactOutcome};
use crate::late::{LateIndex, LateQuery, TokenMatches};
use crate::taxonomy::Taxonomy;
use crate::when::{CivilDate, resolve_times};

/// Metadata key of a fact's attribute key (see [`crate::facts`]).
pub const FACT_KEY: &str = "fact_key";
/// Metadata key of a memory's relative times, resolved (`yesterday = 7 May 2023`).
pub const TIMES: &str = "times";
/// Metadata key of a conversation memory whose message followed one that asks something: the
/// id of the question's memory, whose words late interaction matches the reply with too
/// (`retrieval.late_reply_share`). llmem's own: a message's metadata of that name is not copied.
pub const REPLY_TO: &str = "reply_to";
/// Message metadata flag: already in long-term memory (see
/// [`crate::MemoryManager::end_session`]); such a message is not archived again.
pub const ARCHIVED: &str = "archived";
/// Messages before and after a memory's own that join its lexical key.
pub const PREV_MESSAGES: usize = 2;
pub const NEXT_MESSAGES: usize = 1;
/// Candidates a search re-ranks, per memory asked for: enough for the session re-ranking
/// (`retrieval.session_weight`) to see several turns of each session in play.
pub const CANDIDATES: usize = 8;
/// The most candidates late interaction re-ranks (`retrieval.late_interaction`): the first
/// ones by the store's score.
pub const LATE_CANDIDATES: usize = 100;

/// A store, an optional embedder and the retrieval settings.
#[derive(Debug)]
pub struct LongTerm {
    store: Arc<dyn MemoryStore>,
    embedder: Option<Arc<dyn Embedder>>,
    settings: RetrievalSettings,
    /// Broader terms of conversation memories' nouns, stored in their `broader` field
    /// ([`crate::taxonomy`]).
    taxonomy: Option<Arc<Taxonomy>>,
    stored: AtomicU64,
    /// The last question embedded, its vector and token vectors: an application that
    /// searches and then prepares the prompt for the same question embeds it once.
    last_query: parking_lot::Mutex<Option<(String, Embedded)>>,
    /// Memories' token vectors for late interaction (`retrieval.late_interaction`).
    late: Arc<parking_lot::Mutex<LateIndex>>,
    /// The store embeds later ([`LongTerm::deferring`]).
    deferred: bool,
}

/// A memory recalled for a question, with its relevance (cosine, or term overlap).
#[derive(Debug, Clone)]
pub struct Recalled {
    pub record: MemoryRecord,
    pub relevance: f32,
}

impl Recalled {
    /// One line for a prompt: `[8 May 2023] text (yesterday = 7 May 2023)`.
    pub fn line(&self) -> String {
        format!("[{}] {}", self.date().long(), self.said())
    }

    /// The day the memory was said on.
    pub fn date(&self) -> CivilDate {
        CivilDate::from_timestamp(self.record.created_at)
    }

    /// What was said, with its relative times resolved: `text (yesterday = 7 May 2023)`.
    pub fn said(&self) -> String {
        match self.record.metadata.get(TIMES).and_then(|v| v.as_str()) {
            Some(t) if !t.is_empty() => format!("{} ({t})", self.record.text),
            _ => self.record.text.clone(),
        }
    }
}

/// Recalled memories as one block of a prompt: `header`, then the memories oldest first under
/// one line for each day they were said on (`[8 May 2023]`, then `- text` for each), so that
/// a day shared by several memories is written once, and the model reads them as a timeline.
/// Memories of the same moment keep their order in `recalled` (best first).
pub fn timeline<'a>(header: &str, recalled: impl IntoIterator<Item = &'a Recalled>) -> String {
    let mut by_time: Vec<&Recalled> = recalled.into_iter().collect();
    by_time.sort_by_key(|r| r.record.created_at);
    let mut text = header.to_owned();
    let mut day = None;
    for r in by_time {
        let d = r.date();
        if day != Some(d.days()) {
            text.push_str(&day_line(d));
            day = Some(d.days());
        }
        text.push_str(&memory_line(r));
    }
    text
}

/// A day's line of a [`timeline`], newline first: `\n[8 May 2023]`.
fn day_line(d: CivilDate) -> String {
    format!("\n[{}]", d.long())
}

/// A memory's line of a [`timeline`], newline first: `\n- text (yesterday = 7 May 2023)`.
fn memory_line(r: &Recalled) -> String {
    format!("\n- {}", r.said())
}

/// The memories of `hits`, best first, that fit in `room` tokens as one [`timeline`] system
/// message, and that message (`None` when not even the first fits). Memories are taken while
/// the whole message's exact count fits, as counting the message again for each memory would
/// decide, but at about the cost of one count of it: each memory's lines are counted on their
/// own as it is added (its day's line too, when the day is new), and the whole message only
/// when that sum reaches `room`, and once at the end, since a token can span two lines.
pub fn fit_timeline(
    counter: &dyn TokenCounter,
    header: &str,
    hits: impl IntoIterator<Item = Recalled>,
    room: usize,
) -> (Vec<Recalled>, Option<Message>) {
    let exact = |r: &[Recalled]| {
        let m = Message::system(timeline(header, r));
        (counter.count_message(&m), m)
    };
    let mut taken = Vec::new();
    let mut days = HashSet::new();
    let mut estimate = counter.count_message(&Message::system(header));
    for h in hits {
        let date = h.date();
        let day = date.days();
        let mut lines = counter.count(&memory_line(&h));
        if !days.contains(&day) {
            lines += counter.count(&day_line(date));
        }
        taken.push(h);
        if estimate + lines > room {
            let (tokens, _) = exact(&taken);
            if tokens > room {
                taken.pop();
                break;
            }
            estimate = tokens;
        } else {
            estimate += lines;
        }
        days.insert(day);
    }
    while !taken.is_empty() {
        let (tokens, message) = exact(&taken);
        if tokens <= room {
            return (taken, Some(message));
        }
        taken.pop();
    }
    (taken, None)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl LongTerm {
    pub fn new(
        store: Arc<dyn MemoryStore>,
        embedder: Option<Arc<dyn Embedder>>,
        settings: RetrievalSettings,
    ) -> Self {
        let late = Arc::new(parking_lot::Mutex::new(LateIndex::new(
            settings.late_cache_mib.saturating_mul(1 << 20),
        )));
        LongTerm {
            store,
            embedder,
            settings,
            taxonomy: None,
            stored: AtomicU64::new(0),
            last_query: parking_lot::Mutex::new(None),
            late,
            deferred: false,
        }
    }

    /// Keeps memories' token vectors in `index`, shared with other handles on the same store,
    /// rather than in an index of its own; its capacity is raised to `late_cache_mib`.
    pub fn with_late_index(mut self, index: Arc<parking_lot::Mutex<LateIndex>>) -> Self {
        index
            .lock()
            .reserve(self.settings.late_cache_mib.saturating_mul(1 << 20));
        self.late = index;
        self
    }

    /// Stores with each conversation memory the broader terms of its nouns ([`BROADER`]).
    pub fn with_taxonomy(mut self, taxonomy: Option<Arc<Taxonomy>>) -> Self {
        self.taxonomy = taxonomy;
        self
    }

    pub fn taxonomy(&self) -> Option<&Arc<Taxonomy>> {
        self.taxonomy.as_ref()
    }

    pub fn store(&self) -> &Arc<dyn MemoryStore> {
        &self.store
    }

    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// The query's embedding (none without an embedder); the last one is remembered.
    pub async fn embed_query(&self, query: &str) -> Result<Option<Vec<f32>>> {
        Ok(self.embed_query_tokens(query).await?.map(|e| e.vector))
    }

    /// The query's embedding with its token vectors when the embedder gives them (and late
    /// interaction is on); the last one is remembered.
    async fn embed_query_tokens(&self, query: &str) -> Result<Option<Embedded>> {
        let Some(e) = &self.embedder else {
            return Ok(None);
        };
        if let Some((q, v)) = &*self.last_query.lock()
            && q == query
        {
            return Ok(Some(v.clone()));
        }
        let texts = [query.to_owned()];
        let v = if self.late_on() {
            e.embed_with_tokens(&texts).await?.pop()
        } else {
            e.embed(&texts).await?.pop().map(|vector| Embedded {
                vector,
                tokens: None,
            })
        };
        if let Some(v) = &v {
            *self.last_query.lock() = Some((query.to_owned(), v.clone()));
        }
        Ok(v)
    }

    fn late_on(&self) -> bool {
        self.settings.late_interaction > 0.0 && self.settings.late_cache_mib > 0
    }

    /// Memories whose token vectors late interaction holds, and the bytes they take.
    #[cfg(feature = "internals")]
    pub fn late_index_size(&self) -> (usize, usize) {
        let l = self.late.lock();
        (l.len(), l.used())
    }

    /// Records stored through this handle since it was made.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// The store embeds what it is given without a vector ([`crate::DeferredStore`]):
    /// [`LongTerm::remember`] stores records as they are.
    #[must_use]
    pub fn deferring(mut self, on: bool) -> Self {
        self.deferred = on;
        self
    }

    /// Embeds (when an embedder is set, and the store does not embed later) and stores
    /// `records`; Ok means stored.
    pub async fn remember(&self, mut records: Vec<MemoryRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(e) = self.embedder.as_ref().filter(|_| !self.deferred) {
            let texts: Vec<String> = records.iter().map(|r| r.text.clone()).collect();
            if self.late_on() {
                let embedded = e.embed_with_tokens(&texts).await?;
                let mut late = self.late.lock();
                for (r, v) in records.iter_mut().zip(embedded) {
                    if let Some(t) = &v.tokens {
                        late.insert(&r.id, &r.text, t);
                    }
                    r.embedding = Some(v.vector);
                }
            } else {
                for (r, v) in records.iter_mut().zip(e.embed(&texts).await?) {
                    r.embedding = Some(v);
                }
            }
        }
        let n = records.len() as u64;
        self.store.put(records).await?;
        self.stored.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Stores facts said at `at` in `scope`, with `source`, the metadata of the message they
    /// come from (its ids), each decided against the live facts of the same tenant closest to
    /// it ([`facts::FACT_CANDIDATES`] found by the store's text search for its words and those
    /// its cues look for, and the facts of this batch before it):
    /// - by its words ([`facts::heuristic_decision`]): a repeat of a live fact is not stored
    ///   again (NOOP, unless it has relative times: the same words on another day are another
    ///   event); a correction supersedes the fact it corrects, a negation or an ending the facts
    ///   it negates; else it is added;
    /// - with `judge` (`memory.facts = "llm"`), by the model, shown the
    ///   [`facts::JUDGE_CANDIDATES`] closest store facts ([`facts::llm_judgement`]); an answer
    ///   that is not a decision, or not a plausible one ([`facts::plausible`]), or a failed call,
    ///   leaves it to the words: a fact is never dropped for the model's sake;
    /// - in both, a fact whose key matches live facts' (see [`crate::facts`]) supersedes them,
    ///   unless it is a NOOP.
    ///
    /// A superseded fact is kept, with `superseded_by`; the new one names the first it
    /// supersedes (`supersedes`), has their texts in its lexical key (so that "dentist" finds
    /// "Actually it's Tuesday, not Monday"), and its decision under [`facts::FACT_CHANGE`] and
    /// [`facts::FACT_DECIDED_BY`]. Returns what became of each fact, in order.
    pub async fn remember_facts(
        &self,
        scope: &Scope,
        facts: Vec<Fact>,
        at: Timestamp,
        source: &serde_json::Map<String, serde_json::Value>,
        judge: Option<&dyn ChatModel>,
    ) -> Result<Vec<FactOutcome>> {
        let tenant = Scope::tenant(scope.tenant.clone());
        let mut records: Vec<MemoryRecord> = Vec::new();
        let mut old: Vec<MemoryRecord> = Vec::new();
        let mut outcomes = Vec::new();
        for f in facts {
            let mut r = record(scope, f.text.clone(), RecordKind::Knowledge, at);
            stamp(&mut r, source, &f.text, at, &[]);
            r = r.with_metadata("role", "user");
            let found = self.close_facts(&tenant, &f.text, &old).await;
            // The words see this batch's facts too, newest first.
            let mut close: Vec<MemoryRecord> = records
                .iter()
                .filter(|b| !b.is_superseded())
                .cloned()
                .chain(found.iter().cloned())
                .collect();
            close.sort_by_key(|r| std::cmp::Reverse(r.created_at));
            let texts: Vec<&str> = close.iter().map(|c| c.text.as_str()).collect();
            let repeat_ok = times_of(&f.text, at).is_none();
            let (mut decision, picked) = facts::heuristic_decision(&f.text, &texts, repeat_ok);
            let mut chosen: Vec<MemoryRecord> = picked.iter().map(|&i| close[i].clone()).collect();
            let mut by = DecidedBy::Words;
            let mut model_answer = None;
            let shown: Vec<&str> = found
                .iter()
                .take(facts::JUDGE_CANDIDATES)
                .map(|c| c.text.as_str())
                .collect();
            if let Some(model) = judge.filter(|_| !shown.is_empty()) {
                match facts::llm_judgement(model, &f.text, &shown).await {
                    Ok((answer, Some(d))) if facts::plausible(d, &f.text, &shown) => {
                        decision = d.0;
                        chosen =
                            d.1.and_then(|i| found.get(i).cloned())
                                .into_iter()
                                .collect();
                        by = DecidedBy::Model;
                        model_answer = Some(answer);
                    }
                    Ok((answer, _)) => {
                        tracing::debug!(%answer, fact = %f.text, "the chat model's answer is not a decision; the words decide");
                        model_answer = Some(answer);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the chat model could not decide on a fact; the words decide")
                    }
                }
            }
            if decision != Decision::Noop
                && let Some(key) = &f.key
            {
                for k in self.keyed_facts(&tenant, key, &records, &old).await? {
                    if !chosen.iter().any(|c| c.id == k.id) {
                        chosen.push(k);
                    }
                }
                if decision == Decision::Add && !chosen.is_empty() {
                    decision = Decision::Update;
                    by = DecidedBy::Key;
                }
                r = r.with_metadata(FACT_KEY, key.clone());
            }
            let mut outcome = FactOutcome {
                text: f.text,
                decision,
                decided_by: by,
                id: None,
                superseded: Vec::new(),
                model_answer,
            };
            if decision == Decision::Noop {
                outcomes.push(outcome);
                continue;
            }
            for mut prev in chosen {
                if let Some(b) = records.iter_mut().find(|b| b.id == prev.id) {
                    b.superseded_by = Some(r.id.clone());
                } else {
                    prev.superseded_by = Some(r.id.clone());
                    old.push(prev.clone());
                }
                r.supersedes.get_or_insert_with(|| prev.id.clone());
                add_to_key(&mut r, &prev.text);
                outcome.superseded.push(prev.id);
            }
            r = r
                .with_metadata(facts::FACT_CHANGE, decision.as_str())
                .with_metadata(facts::FACT_DECIDED_BY, by.as_str());
            outcome.id = Some(r.id.clone());
            outcomes.push(outcome);
            records.push(r);
        }
        // The new facts first: if the process dies between the two writes, both versions are
        // live (nothing lost), never neither.
        self.remember(records).await?;
        if !old.is_empty() {
            self.store.put(old).await?;
        }
        Ok(outcomes)
    }

    /// The live facts (knowledge records) of `tenant` closest to a new fact `text`, best first,
    /// less those superseded in this batch (`old`): the store's text search for its words and
    /// the words its cues look for. A store that cannot search, or fails to, gives none (the
    /// fact is then compared with nothing, and kept).
    async fn close_facts(
        &self,
        tenant: &Scope,
        text: &str,
        old: &[MemoryRecord],
    ) -> Vec<MemoryRecord> {
        let req = SearchRequest::text(facts::change_query(text), facts::FACT_CANDIDATES)
            .with_filter(Filter::eq("kind", RecordKind::Knowledge.as_str()));
        match self.store.search(tenant, &req).await {
            Ok(hits) => hits
                .into_iter()
                .map(|h| h.record)
                .filter(|r| !r.is_superseded() && !old.iter().any(|o| o.id == r.id))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no facts to compare a new fact with");
                Vec::new()
            }
        }
    }

    /// The live facts of `tenant` with the attribute key `key`: the store's and this batch's
    /// (`batch`), less those superseded in this batch (`old`).
    async fn keyed_facts(
        &self,
        tenant: &Scope,
        key: &str,
        batch: &[MemoryRecord],
        old: &[MemoryRecord],
    ) -> Result<Vec<MemoryRecord>> {
        let live = |r: &MemoryRecord| !r.is_superseded() && !old.iter().any(|o| o.id == r.id);
        let mut out: Vec<MemoryRecord> = batch
            .iter()
            .filter(|b| live(b) && b.metadata.get(FACT_KEY).and_then(|v| v.as_str()) == Some(key))
            .cloned()
            .collect();
        let stored = self
            .store
            .query(
                tenant,
                &Filter::eq(format!("metadata.{FACT_KEY}"), key.to_owned()),
                None,
            )
            .await?;
        out.extend(stored.into_iter().filter(|r| live(r)));
        Ok(out)
    }

    /// The `k` memories of `scope` that best match `query`: the store's hybrid ranking (lexical,
    /// and by vector with an embedder, `vector_weight` of it by vector) over
    /// [`CANDIDATES`]`·k` candidates, re-ranked.
    /// - By late interaction, with an embedder that gives token vectors: the first
    ///   [`LATE_CANDIDATES`] gain `late_interaction` times their token-level match with the
    ///   question ([`crate::late`]), scaled to [0, 1] over them; `late_reply_share` of a
    ///   reply's match is taken with the tokens of the question it answers too.
    /// - By what kind of turn each memory is: one that only asks (its text ends with a
    ///   question mark) has its score scaled by `question_weight`. A question is answered in
    ///   the turn after it, which is the memory to find, while the question itself repeats the
    ///   words of whoever asks about it later.
    /// - By its session: each score gains `session_weight` times the best candidate score of
    ///   the memory's session (a memory without a session is a session of its own).
    ///   A question is usually about one conversation, and the turn that answers it often
    ///   shares fewer of its words than a turn of another session does.
    ///
    /// - A consolidation summary ([`crate::consolidate()`]) gives way to its own sources: it
    ///   is dropped when one of them is among the candidates, so it is recalled only for what
    ///   its sources no longer answer themselves.
    ///
    /// - A memory that repeats one ranked above it on the same day (a fact below the turn it
    ///   was drawn from, a turn stored twice) is left out, as [`LongTerm::recall`] leaves it
    ///   out: the `k` are `k` different things said.
    ///
    /// No relevance gate (see [`LongTerm::recall`]).
    pub async fn search(&self, scope: &Scope, query: &str, k: usize) -> Result<Vec<ScoredRecord>> {
        let mut req = SearchRequest::text(query.to_owned(), k.saturating_mul(CANDIDATES))
            .with_fusion(Fusion::Weighted {
                vector_weight: self.settings.vector_weight,
            });
        let embedded = self.embed_query_tokens(query).await?;
        if let Some(e) = &embedded {
            req = req.with_vector(e.vector.clone());
        }
        let mut hits = self.store.search(scope, &req).await?;
        crate::consolidate::drop_covered_summaries(&mut hits);
        if let Some(q) = embedded.as_ref().and_then(|e| e.tokens.as_ref())
            && self.late_on()
        {
            self.late_rerank(scope, &mut hits, q).await;
        }
        let w = self.settings.question_weight;
        if w != 1.0 {
            for h in &mut hits {
                if asks(&h.record.text) {
                    h.score *= w;
                }
            }
        }
        by_session(&mut hits, self.settings.session_weight);
        // Stable: ties keep the store's order.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        // A memory that repeats one ranked above it on the same day (a fact below the turn it
        // was drawn from, a turn stored twice) takes no place of its own, as in `recall`: the
        // top k are k different things said.
        let mut top: Vec<ScoredRecord> = Vec::with_capacity(k.min(hits.len()));
        for h in hits {
            if top.len() == k {
                break;
            }
            if !repeats(&h.record, top.iter().map(|t| &t.record)) {
                top.push(h);
            }
        }
        Ok(top)
    }

    /// Computes and keeps the token vectors of memories (id, text) in one embedder call; a
    /// failure is logged and leaves them out (late interaction then passes them by).
    async fn keep_token_vectors(&self, memories: Vec<(String, String)>) {
        let Some(e) = self.embedder.as_ref().filter(|_| !memories.is_empty()) else {
            return;
        };
        let texts: Vec<String> = memories.iter().map(|(_, t)| t.clone()).collect();
        match e.embed_with_tokens(&texts).await {
            Ok(embedded) => {
                let mut late = self.late.lock();
                for ((id, text), v) in memories.iter().zip(embedded) {
                    if let Some(t) = &v.tokens {
                        late.insert(id, text, t);
                    }
                }
            }
            // The search still answers: those memories gain nothing this time.
            Err(err) => tracing::warn!(
                error = %err,
                memories = texts.len(),
                "late interaction: the embedder failed on memories without token vectors"
            ),
        }
    }

    /// Adds to the first [`LATE_CANDIDATES`] hits (the store's order) `late_interaction`
    /// times their MaxSim with `query`, scaled to [0, 1] over them; a reply's MaxSim takes
    /// `late_reply_share` of it with the tokens of the question it answers ([`REPLY_TO`]).
    /// The token vectors of a hit, or of a question a hit replies to, that the index does not
    /// hold are computed first (one embedder call for the hits, one for the questions, read
    /// from the store); a hit the embedder gives none for, or fails on, gains nothing, and
    /// one whose question's vectors are missing (not given, or the store or the embedder
    /// failed) is matched alone (a failure is logged, and the search goes on).
    async fn late_rerank(&self, scope: &Scope, hits: &mut [ScoredRecord], query: &TokenVectors) {
        let n = hits.len().min(LATE_CANDIDATES);
        let head = &mut hits[..n];
        let missing: Vec<(String, String)> = {
            let late = self.late.lock();
            head.iter()
                .filter(|h| !late.has(&h.record.id, &h.record.text))
                .map(|h| (h.record.id.clone(), h.record.text.clone()))
                .collect()
        };
        self.keep_token_vectors(missing).await;
        let share = self.settings.late_reply_share;
        // The question each candidate replies to, when replies are matched with theirs.
        let replies_to: Vec<Option<&str>> = head
            .iter()
            .map(|h| {
                (share > 0.0)
                    .then(|| h.record.metadata.get(REPLY_TO)?.as_str())
                    .flatten()
            })
            .collect();
        let absent: Vec<String> = {
            let late = self.late.lock();
            let mut ids: Vec<String> = replies_to
                .iter()
                .flatten()
                .filter(|id| !late.holds(id))
                .map(|id| (*id).to_owned())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        if !absent.is_empty() {
            match self.store.get(scope, &absent).await {
                Ok(questions) => {
                    self.keep_token_vectors(
                        questions.into_iter().map(|r| (r.id, r.text)).collect(),
                    )
                    .await;
                }
                // The replies are matched alone this time.
                Err(err) => tracing::warn!(
                    error = %err,
                    questions = absent.len(),
                    "late interaction: reading the questions that candidates reply to failed"
                ),
            }
        }
        let query = LateQuery::new(query);
        let scores: Vec<Option<f32>> = {
            let late = self.late.lock();
            // Each memory's matches once, a question's shared by the candidates and its
            // replies.
            let mut matches: HashMap<&str, Option<TokenMatches>> = head
                .iter()
                .map(|h| (h.record.id.as_str(), late.matches(&h.record.id, &query)))
                .collect();
            for &q in replies_to.iter().flatten() {
                matches.entry(q).or_insert_with(|| late.matches(q, &query));
            }
            head.iter()
                .zip(&replies_to)
                .map(|(h, asked)| {
                    let own = matches.get(h.record.id.as_str())?.as_ref()?;
                    Some(match asked.and_then(|q| matches.get(q)?.as_ref()) {
                        Some(q) => own.in_reply_to(q, share),
                        None => own.score(),
                    })
                })
                .collect()
        };
        let (lo, hi) = scores
            .iter()
            .flatten()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| {
                (lo.min(s), hi.max(s))
            });
        let span = (hi - lo).max(1e-6);
        let w = self.settings.late_interaction;
        for (h, s) in head.iter_mut().zip(scores) {
            if let Some(s) = s {
                h.score += w * (s - lo) / span;
            }
        }
    }

    /// The memories of `scope` relevant to `query`, best first: at most `k`, each passing the
    /// relevance gate, and none already said in `context` (the texts of the messages in the
    /// prompt: a fact taken from a message still in the window is not loaded again) or by a
    /// memory recalled before it on the same day (a fact and the turn it was drawn from take
    /// one of the `k`, not two).
    ///
    /// The gate, with an embedder: the question recalls anything only when the best cosine
    /// among its candidates reaches `recall_gate` (it is about something remembered), and then
    /// each memory needs `recall_floor`. A question's own evidence is often far from it by
    /// cosine (a reply that names what was asked about in other words) while its best
    /// candidate is close: judging the question by its best match and taking the rest in the
    /// search's order keeps that evidence, and a question about nothing remembered still
    /// recalls nothing. Without vectors (no embedder, or a memory still waiting for its own),
    /// a memory needs `min_term_overlap` of the question's words.
    pub async fn recall(
        &self,
        scope: &Scope,
        query: &str,
        k: usize,
        context: &[String],
    ) -> Result<Vec<Recalled>> {
        let terms: HashSet<String> = tokenize(query).into_iter().collect();
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let qv = self.embed_query(query).await?;
        let hits = self.search(scope, query, k * 3).await?;
        // Each candidate's cosine with the question, once: the gate reads their best.
        let cosines: Vec<Option<f32>> = hits
            .iter()
            .map(|h| match (&qv, &h.record.embedding) {
                (Some(q), Some(v)) if q.len() == v.len() => Some(dot(q, v)),
                _ => None,
            })
            .collect();
        let best = cosines.iter().flatten().copied().reduce(f32::max);
        let about_memory = best.is_none_or(|b| b >= self.settings.recall_gate);
        let mut out: Vec<Recalled> = Vec::new();
        for (h, cosine) in hits.into_iter().zip(cosines) {
            if h.record.is_superseded()
                || already_said(&h.record.text, context)
                || repeats(&h.record, out.iter().map(|r| &r.record))
            {
                continue;
            }
            let (relevance, passes) = match cosine {
                Some(c) => (c, about_memory && c >= self.settings.recall_floor),
                None => {
                    let o = overlap(&terms, &h.record.search_text());
                    (o, o >= self.settings.min_term_overlap)
                }
            };
            if passes {
                out.push(Recalled {
                    record: h.record,
                    relevance,
                });
            }
            if out.len() == k {
                break;
            }
        }
        Ok(out)
    }
}

/// Adds to each hit's score `weight` times the best score among the hits of its session (a
/// hit without a session is a session of its own).
fn by_session(hits: &mut [ScoredRecord], weight: f32) {
    if weight == 0.0 {
        return;
    }
    let mut best: HashMap<&str, f32> = HashMap::new();
    for h in hits.iter() {
        if let Some(s) = &h.record.session {
            let b = best.entry(s.as_str()).or_insert(h.score);
            *b = b.max(h.score);
        }
    }
    let gain: Vec<f32> = hits
        .iter()
        .map(|h| weight * h.record.session.as_deref().map_or(h.score, |s| best[s]))
        .collect();
    for (h, g) in hits.iter_mut().zip(gain) {
        h.score += g;
    }
}

/// Whether `text` only asks: it ends with a question mark (closing quotes and brackets aside).
fn asks(text: &str) -> bool {
    text.trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | ']'))
        .ends_with('?')
}

/// Whether `text` asks something, wherever in it ("What did you paint? I'd love to see it."):
/// the message after it is a reply.
fn has_question(text: &str) -> bool {
    text.contains('?')
}

/// Whether `text` (a memory, perhaps `who: …`) is said in one of `context`'s texts.
fn already_said(text: &str, context: &[String]) -> bool {
    let bare = said(text);
    !bare.is_empty() && context.iter().any(|c| c.contains(bare) || c.contains(text))
}

/// What `text` says, without the `speaker: ` it may start with.
fn said(text: &str) -> &str {
    match text.split_once(": ") {
        Some((who, said)) if who.len() <= 64 && !who.contains('\n') => said,
        _ => text,
    }
    .trim()
}

/// Whether `record` says nothing that one of `recalled` does not already say on the same day:
/// a fact and the turn it was drawn from, or a turn stored twice. The same words on another day
/// are another event, and stay.
fn repeats<'a>(record: &MemoryRecord, recalled: impl Iterator<Item = &'a MemoryRecord>) -> bool {
    let bare = said(&record.text);
    let day = CivilDate::from_timestamp(record.created_at);
    !bare.is_empty()
        && recalled
            .filter(|r| CivilDate::from_timestamp(r.created_at) == day)
            .any(|r| said(&r.text).contains(bare))
}

/// The relative times of `text` said at `at`, resolved, as one metadata value.
pub fn times_of(text: &str, at: Timestamp) -> Option<String> {
    let t = resolve_times(text, CivilDate::from_timestamp(at));
    (!t.is_empty()).then(|| t.join("; "))
}

/// Whether a message becomes a memory when it leaves the window: said (not a system prompt,
/// not empty) and not stored already.
pub fn to_archive(m: &Message) -> bool {
    m.role != Role::System && !m.flag(ARCHIVED) && !m.text().trim().is_empty()
}

/// Stamps a memory of `text`, said at `at`: the metadata of the message it comes from
/// (`source`, less llmem's own keys), its resolved times, and a lexical key of `key` (the
/// words it should also be found by) with its date and times.
fn stamp(
    r: &mut MemoryRecord,
    source: &serde_json::Map<String, serde_json::Value>,
    text: &str,
    at: Timestamp,
    key: &[&str],
) {
    for (k, v) in source {
        if k != ARCHIVED && k != KEYWORDS && k != BROADER && k != REPLY_TO {
            r.metadata.insert(k.clone(), v.clone());
        }
    }
    let times = times_of(text, at);
    let date = CivilDate::from_timestamp(at).long();
    let dated = match &times {
        Some(t) => format!("{date}; {t}"),
        None => date,
    };
    let mut words = key.join("\n");
    if !words.is_empty() {
        words.push('\n');
    }
    words.push_str(&dated);
    r.metadata.insert(KEYWORDS.into(), words.into());
    if let Some(t) = times {
        r.metadata.insert(TIMES.into(), t.into());
    }
}

/// Share of `terms` (a question's content words) found in `text`.
pub fn overlap(terms: &HashSet<String>, text: &str) -> f32 {
    if terms.is_empty() {
        return 0.0;
    }
    let have: HashSet<String> = tokenize(text).into_iter().collect();
    terms.iter().filter(|t| have.contains(*t)).count() as f32 / terms.len() as f32
}

/// A record of `kind` said at `at` in `scope` (tenant and session). It was last accessed now,
/// when it is stored: tier migration counts age from the last access, so memories of an old
/// conversation imported today do not go straight to the archive.
pub fn record(scope: &Scope, text: String, kind: RecordKind, at: Timestamp) -> MemoryRecord {
    let mut r = MemoryRecord::new(scope.tenant.clone(), text)
        .with_kind(kind)
        .with_created_at(at);
    r.accessed_at = Timestamp::now();
    if let Some(s) = &scope.session {
        r = r.with_session(s.clone());
    }
    r
}

/// The messages a compressor lets go (and those a session ends with), stored as conversation
/// memories of one scope: `who: text` (the message's name, else its role), dated, with the
/// message's metadata, resolved times, the neighbouring messages in the lexical key, and the
/// id of the question a message replies to ([`REPLY_TO`]).
#[derive(Debug)]
pub struct Archive {
    longterm: Arc<LongTerm>,
    scope: Scope,
    recent: Mutex<Recent>,
}

/// What the next batch's lexical keys need from the last one.
#[derive(Debug, Default)]
struct Recent {
    /// The last [`PREV_MESSAGES`] texts archived.
    texts: VecDeque<String>,
    /// The last record stored, whose key still lacks the message after it.
    last_id: Option<String>,
}

impl Archive {
    pub fn new(longterm: Arc<LongTerm>, scope: Scope) -> Self {
        Archive {
            longterm,
            scope,
            recent: Mutex::new(Recent::default()),
        }
    }
}

/// Adds `words` to a record's lexical key.
fn add_to_key(r: &mut MemoryRecord, words: &str) {
    let key = match r.metadata.get(KEYWORDS).and_then(|v| v.as_str()) {
        Some(k) if !k.is_empty() => format!("{k}\n{words}"),
        _ => words.to_owned(),
    };
    r.metadata.insert(KEYWORDS.into(), key.into());
}

#[async_trait]
impl ArchiveSink for Archive {
    async fn archive(&self, messages: &[Message]) -> Result<()> {
        let said: Vec<&Message> = messages.iter().filter(|m| to_archive(m)).collect();
        if said.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = said.iter().map(|m| m.text()).collect();
        let (before, previous): (Vec<String>, Option<String>) = self
            .recent
            .lock()
            .map(|mut r| (r.texts.iter().cloned().collect(), r.last_id.take()))
            .unwrap_or_default();
        let all: Vec<&str> = before.iter().chain(&texts).map(String::as_str).collect();
        let mut records: Vec<MemoryRecord> = said
            .iter()
            .enumerate()
            .map(|(j, m)| {
                let at = m.created_at.unwrap_or_else(Timestamp::now);
                let who = m.name.as_deref().unwrap_or(m.role.as_str());
                let mut r = record(
                    &self.scope,
                    format!("{who}: {}", texts[j]),
                    RecordKind::Conversation,
                    at,
                );
                let me = before.len() + j;
                let mut key: Vec<&str> = all[me.saturating_sub(PREV_MESSAGES)..me].to_vec();
                key.extend(all.iter().skip(me + 1).take(NEXT_MESSAGES));
                if let Some(own) = m.metadata.get(KEYWORDS).and_then(|v| v.as_str()) {
                    key.push(own);
                }
                stamp(&mut r, &m.metadata, &texts[j], at, &key);
                if let Some(t) = self.longterm.taxonomy() {
                    let broader = t.broader(&texts[j]);
                    if !broader.is_empty() {
                        r.metadata.insert(BROADER.into(), broader.join(" ").into());
                    }
                }
                r.with_metadata("role", m.role.as_str())
            })
            .collect();
        // A message that follows a question replies to it (the previous batch's last message
        // for the first of this one).
        let mut asked = previous
            .clone()
            .filter(|_| before.last().is_some_and(|t| has_question(t)));
        for (r, text) in records.iter_mut().zip(&texts) {
            if let Some(q) = asked.take() {
                r.metadata.insert(REPLY_TO.into(), q.into());
            }
            if has_question(text) {
                asked = Some(r.id.clone());
            }
        }
        let last = records.last().map(|r| r.id.clone());
        self.longterm.remember(records).await?;
        // The last record of the previous batch gets this batch's first message in its key.
        if let (Some(id), Some(next)) = (previous, texts.first()) {
            let store = self.longterm.store();
            let mut prev = store.get(&self.scope, &[id]).await?;
            for r in &mut prev {
                add_to_key(r, next);
            }
            if !prev.is_empty() {
                store.put(prev).await?;
            }
        }
        if let Ok(mut recent) = self.recent.lock() {
            for t in texts {
                recent.texts.push_back(t);
                if recent.texts.len() > PREV_MESSAGES {
                    recent.texts.pop_front();
                }
            }
            recent.last_id = last;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(text: &str, session: Option<&str>, score: f32) -> ScoredRecord {
        let mut record = MemoryRecord::new("u", text);
        record.session = session.map(str::to_owned);
        ScoredRecord { record, score }
    }

    fn ranked(weight: f32) -> Vec<String> {
        let mut hits = vec![
            hit("the lake trip", Some("s1"), 1.0),
            hit("a movie", Some("s2"), 0.8),
            hit("a first fish", Some("s1"), 0.75),
            hit("no session", None, 0.78),
        ];
        by_session(&mut hits, weight);
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.into_iter().map(|h| h.record.text).collect()
    }

    fn said_on(text: &str, date: (i32, u32, u32, u32), times: Option<&str>) -> Recalled {
        let mut record = MemoryRecord::new("u", text);
        let (year, month, day, minute) = date;
        record.created_at = CivilDate {
            year,
            month,
            day,
            minute,
        }
        .timestamp();
        if let Some(t) = times {
            record = record.with_metadata(TIMES, t);
        }
        Recalled {
            record,
            relevance: 1.0,
        }
    }

    /// Oldest first, each day written once (whatever the hour), memories of one moment in their
    /// given order, resolved times after the text.
    #[test]
    fn the_timeline_writes_each_day_once() {
        let recalled = [
            said_on(
                "B: the lake",
                (2023, 5, 8, 600),
                Some("yesterday = 7 May 2023"),
            ),
            said_on("A: a movie", (2023, 5, 20, 0), None),
            said_on("A: a fish", (2023, 5, 8, 900), None),
            said_on("B: a boat", (2023, 5, 8, 600), None),
        ];
        assert_eq!(
            timeline("Memories:", &recalled),
            "Memories:\n[8 May 2023]\n- B: the lake (yesterday = 7 May 2023)\n- B: a boat\n\
             - A: a fish\n[20 May 2023]\n- A: a movie"
        );
        assert_eq!(timeline("Memories:", &[]), "Memories:");
    }

    /// The prompt takes the longest run of memories, best first, whose whole timeline fits,
    /// at every room from nothing to all of them: what counting the timeline again for each
    /// memory gives.
    #[test]
    fn the_prompt_takes_memories_while_the_whole_timeline_fits() {
        let (counter, _) = crate::manager::model_counter("gpt-4o-mini", None)
            .unwrap_or_else(|e| unreachable!("the embedded o200k counter: {e}"));
        let words = [
            "lake",
            "sunrise",
            "pottery",
            "camping",
            "the kids",
            "a charity race",
        ];
        let hits: Vec<Recalled> = (0..18u32)
            .map(|i| {
                let text = format!(
                    "{}: I went to {} with {} friends{}",
                    if i % 2 == 0 { "Melanie" } else { "Caroline" },
                    words[i as usize % words.len()],
                    i + 1,
                    "!".repeat(i as usize % 3)
                );
                let times = (i % 4 == 0).then_some("yesterday = 7 May 2023");
                said_on(&text, (2023, 5 + i % 3, 1 + (i * 7) % 28, i * 50), times)
            })
            .collect();
        let header = "Memories:";
        let all = counter.count_message(&Message::system(timeline(header, &hits)));
        for room in 0..=all + 2 {
            let (taken, message) = fit_timeline(counter.as_ref(), header, hits.clone(), room);
            let mut naive = 0;
            while naive < hits.len()
                && counter.count_message(&Message::system(timeline(header, &hits[..=naive])))
                    <= room
            {
                naive += 1;
            }
            assert_eq!(taken.len(), naive, "room {room}");
            match message {
                Some(m) => {
                    assert_eq!(m.text(), timeline(header, &hits[..naive]));
                    assert!(counter.count_message(&m) <= room);
                }
                None => assert_eq!(naive, 0, "room {room}"),
            }
        }
    }

    /// A memory of the session with the best match overtakes a slightly better match of
    /// another session; one without a session counts as its own; 0 leaves the order.
    #[test]
    fn the_best_session_lifts_its_memories() {
        assert_eq!(
            ranked(0.3),
            ["the lake trip", "a first fish", "a movie", "no session"]
        );
        assert_eq!(
            ranked(0.0),
            ["the lake trip", "a movie", "no session", "a first fish"]
        );
    }
}
