//! Consolidation: a user's old conversation memories, summarised by time window into
//! [`RecordKind::Summary`] records linked to their sources.
//!
//! A window (a day or a week of one session) is consolidated once it holds at least
//! `min_memories` conversation memories older than `older_than` that no summary lists yet.
//! Its summary is written by the configured summariser (a chat model or the ONNX one), with
//! the extractive summariser as the fallback when that fails (nothing is dropped: the sources
//! stay as they are, in their tier). The summary lists its sources' ids in [`SOURCES`] and
//! names its window in [`WINDOW`]; a second run over the same memories writes nothing (the
//! sources are found in an existing summary), and memories added to a window later get a
//! summary of their own. The sources are not rewritten, so consolidation never moves a
//! memory between tiers.
//!
//! In recall a summary gives way to its sources: it is dropped from the candidates when one
//! of its sources is among them ([`crate::longterm::LongTerm::search`]).
//!
//! Run it with [`consolidate`], `llmem consolidate`, or periodically in `llmem serve`
//! (`[consolidation] every_secs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use llmem_core::{
    Embedder, Filter, KEYWORDS, MemoryRecord, MemoryStore, RecordKind, Result, Scope, Summarizer,
    SummaryRequest, Timestamp, TokenCounter,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::when::CivilDate;

/// Metadata key of a summary's sources: the ids of the memories it summarises.
pub const SOURCES: &str = "sources";
/// Metadata key of a summary's window (`2023-05-07`, or `2023-05-01/week`).
pub const WINDOW: &str = "window";

/// How long each window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsolidationWindow {
    #[default]
    Day,
    Week,
}

/// What [`consolidate`] summarises, and how long each summary may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsolidationSettings {
    /// Memories last said more than this many days ago are consolidated.
    pub older_than_days: u64,
    pub window: ConsolidationWindow,
    /// A window needs at least this many memories not yet summarised.
    pub min_memories: usize,
    /// The most tokens of one summary.
    pub max_tokens: usize,
    /// `llmem serve` consolidates every user this often (0: never; `llmem consolidate` runs it
    /// by hand).
    pub every_secs: u64,
}

impl Default for ConsolidationSettings {
    /// A week old, by day, at least 4 memories, 200 tokens, never on a timer.
    fn default() -> Self {
        ConsolidationSettings {
            older_than_days: 7,
            window: ConsolidationWindow::Day,
            min_memories: 4,
            max_tokens: 200,
            every_secs: 0,
        }
    }
}

impl ConsolidationSettings {
    pub fn older_than(&self) -> Duration {
        Duration::from_secs(self.older_than_days.saturating_mul(24 * 3600))
    }

    /// An error naming the key when a setting cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.min_memories < 2 {
            return Err(llmem_core::Error::config(
                "consolidation.min_memories",
                format!(
                    "{} cannot summarise anything: use 2 or more",
                    self.min_memories
                ),
            ));
        }
        if self.max_tokens < 16 {
            return Err(llmem_core::Error::config(
                "consolidation.max_tokens",
                format!(
                    "{} tokens is too short for a summary: use 16 or more",
                    self.max_tokens
                ),
            ));
        }
        Ok(())
    }
}

/// What one run wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Consolidated {
    /// The summaries written, by id.
    pub summaries: Vec<String>,
    /// The memories they summarise.
    pub sources: usize,
    /// Windows whose summariser failed and that the extractive one summarised instead.
    pub fallbacks: usize,
}

/// The window of a memory said at `at`.
fn window_of(at: Timestamp, w: ConsolidationWindow) -> String {
    let d = CivilDate::from_timestamp(at);
    match w {
        ConsolidationWindow::Day => format!("{:04}-{:02}-{:02}", d.year, d.month, d.day),
        ConsolidationWindow::Week => {
            let monday = d.plus_days(-(d.weekday() as i64));
            format!(
                "{:04}-{:02}-{:02}/week",
                monday.year, monday.month, monday.day
            )
        }
    }
}

/// Consolidates `user`'s conversation memories older than the settings say, as of `now` (see
/// the module docs). `summarizer` writes the summaries (the extractive one over `counter`
/// when `None`, and whenever it fails); `embedder`, when given, embeds them.
pub async fn consolidate(
    store: &Arc<dyn MemoryStore>,
    summarizer: Option<&Arc<dyn Summarizer>>,
    embedder: Option<&Arc<dyn Embedder>>,
    counter: Arc<dyn TokenCounter>,
    user: &str,
    settings: &ConsolidationSettings,
    now: Timestamp,
) -> Result<Consolidated> {
    settings.validate()?;
    let scope = Scope::tenant(user);
    let cutoff = now.0 - settings.older_than().as_millis() as i64;
    let summaries = store
        .query(&scope, &Filter::eq("kind", "summary"), None)
        .await?;
    let summarised: HashSet<&str> = summaries.iter().flat_map(sources).collect();
    let mut windows: BTreeMap<(Option<String>, String), Vec<MemoryRecord>> = BTreeMap::new();
    for r in store
        .query(&scope, &Filter::eq("kind", "conversation"), None)
        .await?
    {
        if r.is_superseded() || r.created_at.0 >= cutoff || summarised.contains(r.id.as_str()) {
            continue;
        }
        windows
            .entry((r.session.clone(), window_of(r.created_at, settings.window)))
            .or_default()
            .push(r);
    }
    let extractive = llmem_compress::ExtractiveSummarizer::new(counter);
    let mut out = Consolidated::default();
    for ((session, window), mut sources) in windows {
        if sources.len() < settings.min_memories {
            continue;
        }
        sources.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let text = sources
            .iter()
            .map(|r| r.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let request = SummaryRequest {
            text: text.clone(),
            previous_summary: None,
            max_tokens: settings.max_tokens,
            instructions: Some(
                "Keep every name, number, date, plan and decision; one plain paragraph.".into(),
            ),
        };
        let written = match summarizer {
            Some(s) => match s.summarize(request).await {
                Ok(t) if !t.trim().is_empty() => Some(t),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(user, %window, error = %e, "the summariser failed; the extractive one summarises this window");
                    None
                }
            },
            None => None,
        };
        let summary = match written {
            Some(t) => t,
            None => {
                if summarizer.is_some() {
                    out.fallbacks += 1;
                }
                extractive.summarize_text(None, &text, settings.max_tokens)
            }
        };
        let last = sources.last().map_or(now, |r| r.created_at);
        let first = sources.first().map_or(now, |r| r.created_at);
        let mut r = MemoryRecord::new(user, summary.trim())
            .with_kind(RecordKind::Summary)
            .with_created_at(last);
        if let Some(s) = &session {
            r = r.with_session(s.clone());
        }
        let ids: Vec<Value> = sources
            .iter()
            .map(|s| Value::String(s.id.clone()))
            .collect();
        r.metadata.insert(SOURCES.into(), Value::Array(ids));
        r.metadata.insert(WINDOW.into(), window.clone().into());
        let (a, b) = (
            CivilDate::from_timestamp(first).long(),
            CivilDate::from_timestamp(last).long(),
        );
        let dated = if a == b { a } else { format!("{a} to {b}") };
        r.metadata.insert(KEYWORDS.into(), dated.into());
        if let Some(e) = embedder {
            r.embedding = e.embed(std::slice::from_ref(&r.text)).await?.pop();
        }
        out.sources += sources.len();
        out.summaries.push(r.id.clone());
        store.put(vec![r]).await?;
    }
    Ok(out)
}

/// The ids a record lists in [`SOURCES`] (a consolidation summary's sources).
pub(crate) fn sources(r: &MemoryRecord) -> impl Iterator<Item = &str> {
    r.metadata
        .get(SOURCES)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Drops from `hits` every summary with one of its [`SOURCES`] among them: the sources say
/// the same in their own words and count for their own turns, and a summary next to them
/// would only take the place of another memory in the prompt.
pub(crate) fn drop_covered_summaries(hits: &mut Vec<llmem_core::ScoredRecord>) {
    if !hits.iter().any(|h| h.record.kind == RecordKind::Summary) {
        return;
    }
    let ids: HashSet<String> = hits.iter().map(|h| h.record.id.clone()).collect();
    hits.retain(|h| {
        h.record.kind != RecordKind::Summary || !sources(&h.record).any(|id| ids.contains(id))
    });
}

/// Every user (tenant) with conversation memories in `store`, for a periodic run over all.
pub async fn consolidation_users(store: &dyn MemoryStore) -> Result<Vec<String>> {
    let mut users: Vec<String> = store
        .scan_all(&Filter::eq("kind", "conversation"), None)
        .await?
        .into_iter()
        .map(|r| r.tenant)
        .collect();
    users.sort();
    users.dedup();
    Ok(users)
}
