//! Long-term memory as the manager and [`crate::Memory`] use it: records embedded when an
//! embedder is configured, facts that supersede older ones with the same key, and recall gated
//! by relevance, so that nothing is loaded unless the question needs it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use llmem_compress::ArchiveSink;
use llmem_core::{
    Embedder, Filter, MemoryRecord, MemoryStore, Message, RecordKind, Result, Role, Scope,
    ScoredRecord, SearchRequest, Timestamp, async_trait,
};
use llmem_tiers::text::tokenize;

use crate::config::RetrievalSettings;
use crate::facts::Fact;

/// Metadata key of a fact's attribute key (see [`crate::facts`]).
pub const FACT_KEY: &str = "fact_key";

/// A store, an optional embedder and the retrieval settings.
#[derive(Debug)]
pub struct LongTerm {
    store: Arc<dyn MemoryStore>,
    embedder: Option<Arc<dyn Embedder>>,
    settings: RetrievalSettings,
    stored: AtomicU64,
}

/// A memory recalled for a question, with its relevance (cosine, or term overlap).
#[derive(Debug, Clone)]
pub struct Recalled {
    pub record: MemoryRecord,
    pub relevance: f32,
}

impl Recalled {
    /// One line for a prompt: `[2023-05-08] text`.
    pub fn line(&self) -> String {
        let date = self.record.created_at.to_rfc3339();
        format!("[{}] {}", date.get(..10).unwrap_or(&date), self.record.text)
    }
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
        LongTerm {
            store,
            embedder,
            settings,
            stored: AtomicU64::new(0),
        }
    }

    pub fn store(&self) -> &Arc<dyn MemoryStore> {
        &self.store
    }

    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    pub fn settings(&self) -> &RetrievalSettings {
        &self.settings
    }

    /// Records stored through this handle since it was made.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Embeds (when an embedder is set) and stores `records`; Ok means stored.
    pub async fn remember(&self, mut records: Vec<MemoryRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(e) = &self.embedder {
            let texts: Vec<String> = records.iter().map(|r| r.text.clone()).collect();
            for (r, v) in records.iter_mut().zip(e.embed(&texts).await?) {
                r.embedding = Some(v);
            }
        }
        let n = records.len() as u64;
        self.store.put(records).await?;
        self.stored.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Stores facts said at `at` in `scope`; a fact whose key matches a live fact of the same
    /// tenant supersedes it (the old one keeps its id and gains `superseded_by`). Returns the
    /// new ids.
    pub async fn remember_facts(
        &self,
        scope: &Scope,
        facts: Vec<Fact>,
        at: Timestamp,
    ) -> Result<Vec<String>> {
        let mut records = Vec::new();
        let mut old = Vec::new();
        for f in facts {
            let mut r =
                record(scope, f.text, RecordKind::Knowledge, at).with_metadata("role", "user");
            if let Some(key) = f.key {
                let tenant = Scope::tenant(scope.tenant.clone());
                let live = self
                    .store
                    .query(
                        &tenant,
                        &Filter::eq(format!("metadata.{FACT_KEY}"), key.clone()),
                        None,
                    )
                    .await?;
                for mut prev in live.into_iter().filter(|p| !p.is_superseded()) {
                    prev.superseded_by = Some(r.id.clone());
                    r.supersedes = Some(prev.id.clone());
                    old.push(prev);
                }
                r = r.with_metadata(FACT_KEY, key);
            }
            records.push(r);
        }
        let ids = records.iter().map(|r| r.id.clone()).collect();
        // The new facts first: if the process dies between the two writes, both versions are
        // live (nothing lost), never neither.
        self.remember(records).await?;
        if !old.is_empty() {
            self.store.put(old).await?;
        }
        Ok(ids)
    }

    /// The memories of `scope` relevant to `query`, best first: at most `k`, each passing the
    /// relevance gate (cosine ≥ `min_similarity` with an embedder, else term overlap ≥
    /// `min_term_overlap`), and none already said in `context` (the texts of the messages in
    /// the prompt: a fact taken from a message still in the window is not loaded again).
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
        let qv = match &self.embedder {
            Some(e) => e.embed(&[query.to_owned()]).await?.pop(),
            None => None,
        };
        let mut req = SearchRequest::text(query.to_owned(), k * 3);
        if let Some(v) = &qv {
            req = req.with_vector(v.clone());
        }
        let hits: Vec<ScoredRecord> = self.store.search(scope, &req).await?;
        let mut out = Vec::new();
        for h in hits {
            if h.record.is_superseded() || already_said(&h.record.text, context) {
                continue;
            }
            let relevance = match (&qv, &h.record.embedding) {
                (Some(q), Some(v)) if q.len() == v.len() => dot(q, v),
                _ => overlap(&terms, &h.record.search_text()),
            };
            let gate = if qv.is_some() && h.record.embedding.is_some() {
                self.settings.min_similarity
            } else {
                self.settings.min_term_overlap
            };
            if relevance >= gate {
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

/// Whether `text` (a memory, perhaps `role: …`) is said in one of `context`'s texts.
fn already_said(text: &str, context: &[String]) -> bool {
    let bare = ["user: ", "assistant: ", "tool: "]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .unwrap_or(text)
        .trim();
    !bare.is_empty() && context.iter().any(|c| c.contains(bare))
}

/// Share of `terms` (a question's content words) found in `text`.
pub fn overlap(terms: &HashSet<String>, text: &str) -> f32 {
    if terms.is_empty() {
        return 0.0;
    }
    let have: HashSet<String> = tokenize(text).into_iter().collect();
    terms.iter().filter(|t| have.contains(*t)).count() as f32 / terms.len() as f32
}

/// A record of `kind` said at `at` in `scope` (tenant and session).
pub fn record(scope: &Scope, text: String, kind: RecordKind, at: Timestamp) -> MemoryRecord {
    let mut r = MemoryRecord::new(scope.tenant.clone(), text)
        .with_kind(kind)
        .with_created_at(at);
    if let Some(s) = &scope.session {
        r = r.with_session(s.clone());
    }
    r
}

/// The messages a compressor lets go, stored as conversation memories of one scope.
#[derive(Debug)]
pub struct Archive {
    pub longterm: Arc<LongTerm>,
    pub scope: Scope,
}

#[async_trait]
impl ArchiveSink for Archive {
    async fn archive(&self, messages: &[Message]) -> Result<()> {
        let records = messages
            .iter()
            .filter(|m| m.role != Role::System && !m.text().trim().is_empty())
            .map(|m| {
                let at = m.created_at.unwrap_or_else(Timestamp::now);
                record(
                    &self.scope,
                    format!("{}: {}", m.role.as_str(), m.text()),
                    RecordKind::Conversation,
                    at,
                )
                .with_metadata("role", m.role.as_str())
            })
            .collect();
        self.longterm.remember(records).await
    }
}
