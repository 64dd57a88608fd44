//! What a tier adds to [`MemoryStore`]: snapshots, and the names of the four tiers.

use std::sync::Arc;

use async_trait::async_trait;
use llmem_core::{
    Error, Filter, MemoryRecord, MemoryStore, Result, Scope, ScoredRecord, SearchRequest, Timestamp,
};
use serde::{Deserialize, Serialize};

/// The four tiers, warmest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierKind {
    Hot,
    Warm,
    Cold,
    Glacier,
}

impl TierKind {
    pub const ALL: [TierKind; 4] = [
        TierKind::Hot,
        TierKind::Warm,
        TierKind::Cold,
        TierKind::Glacier,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TierKind::Hot => "hot",
            TierKind::Warm => "warm",
            TierKind::Cold => "cold",
            TierKind::Glacier => "glacier",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "hot" => TierKind::Hot,
            "warm" => TierKind::Warm,
            "cold" => TierKind::Cold,
            "glacier" => TierKind::Glacier,
            other => {
                return Err(Error::invalid(format!(
                    "unknown tier `{other}`; use hot, warm, cold or glacier"
                )));
            }
        })
    }
}

impl std::fmt::Display for TierKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads of one record counted by a [`TieredStore`](crate::TieredStore) (search hits and gets),
/// handed to its tier in a batch by [`Tier::record_reads`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReadMark {
    pub id: String,
    pub tenant: String,
    /// Reads since the last batch.
    pub reads: u64,
    /// When the last of them happened.
    pub at: Timestamp,
}

/// What one tier offers a search that spans tiers: its best records by vector and by text,
/// each list best first with that kind's scores (cosine, BM25).
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub by_vector: Vec<ScoredRecord>,
    pub by_text: Vec<ScoredRecord>,
}

/// A tier: a [`MemoryStore`] that may also take snapshots and roll back to them.
#[async_trait]
pub trait Tier: MemoryStore {
    /// Records the current contents; returns an id for [`Tier::restore`].
    async fn snapshot(&self) -> Result<String> {
        Err(Error::unsupported("snapshots", self.name()))
    }

    /// Puts the contents back as they were at snapshot `id`.
    async fn restore(&self, id: &str) -> Result<()> {
        let _ = id;
        Err(Error::unsupported("snapshots", self.name()))
    }

    /// The ids among `ids` that this tier holds for a tenant other than `tenant`. Record ids
    /// are unique across tenants, so a write must never take over one of those.
    async fn foreign_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let f = Filter::parse(&serde_json::json!({ "id": { "$in": ids } }))?;
        Ok(self
            .scan_all(&f, None)
            .await?
            .into_iter()
            .filter(|r| r.tenant != tenant)
            .map(|r| r.id)
            .collect())
    }

    /// The best `n` records for `req` by its vector and the best `n` by its text (whichever
    /// the request has and the tier can search), without counting them as reads: a search
    /// over several tiers ranks these, then hands the hits it keeps to
    /// [`Tier::record_reads`]. The default runs [`MemoryStore::search`] once per kind.
    async fn candidates(&self, scope: &Scope, req: &SearchRequest, n: usize) -> Result<Candidates> {
        let caps = self.capabilities();
        let mut out = Candidates::default();
        if let Some(v) = &req.vector
            && caps.vector_search
        {
            let r = SearchRequest {
                vector: Some(v.clone()),
                text: None,
                k: n,
                ..req.clone()
            };
            out.by_vector = self.search(scope, &r).await?;
        }
        if let Some(q) = &req.text
            && caps.text_search
        {
            let r = SearchRequest {
                vector: None,
                text: Some(q.clone()),
                k: n,
                ..req.clone()
            };
            out.by_text = self.search(scope, &r).await?;
        }
        Ok(out)
    }

    /// Counts reads: each record still held (same id and tenant) gets `accessed_at` moved up
    /// to the mark's time and `reads` added to its `access_count`; other marks are skipped. A
    /// tier that writes to storage for this does it in one batch per call. The default keeps
    /// nothing (a tier whose own reads already count, or that keeps no access times).
    async fn record_reads(&self, reads: &[ReadMark]) -> Result<()> {
        let _ = reads;
        Ok(())
    }

    /// Makes the reads counted in RAM so far durable (one write), where the tier keeps them
    /// in RAM first. The default has nothing to write.
    async fn flush_reads(&self) -> Result<()> {
        Ok(())
    }
}

/// Refuses `records` whose ids `tier` holds for another tenant.
/// A batch with one record per id: the last one written (last write wins within a batch).
#[cfg_attr(not(feature = "lance"), allow(dead_code))]
pub(crate) fn last_write_wins(records: Vec<MemoryRecord>) -> Vec<MemoryRecord> {
    let mut seen = std::collections::HashSet::new();
    let mut records: Vec<MemoryRecord> = records
        .into_iter()
        .rev()
        .filter(|r| seen.insert(r.id.clone()))
        .collect();
    records.reverse();
    records
}

pub(crate) async fn check_owners(
    tier: &(impl Tier + ?Sized),
    records: &[MemoryRecord],
) -> Result<()> {
    let mut by_tenant: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for r in records {
        by_tenant
            .entry(r.tenant.as_str())
            .or_default()
            .push(r.id.clone());
    }
    for (tenant, ids) in by_tenant {
        if let Some(id) = tier.foreign_ids(tenant, &ids).await?.into_iter().next() {
            return Err(taken(&id));
        }
    }
    Ok(())
}

/// The error for a write that reuses another tenant's record id.
pub(crate) fn taken(id: &str) -> Error {
    Error::invalid(format!(
        "record id `{id}` is already used by another tenant; record ids are unique across tenants"
    ))
}

/// `dyn Tier`.
pub type DynTier = dyn Tier;

#[async_trait]
impl<T: Tier + ?Sized> Tier for Arc<T> {
    async fn snapshot(&self) -> Result<String> {
        (**self).snapshot().await
    }
    async fn restore(&self, id: &str) -> Result<()> {
        (**self).restore(id).await
    }
    async fn foreign_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<String>> {
        (**self).foreign_ids(tenant, ids).await
    }
    async fn candidates(&self, scope: &Scope, req: &SearchRequest, n: usize) -> Result<Candidates> {
        (**self).candidates(scope, req, n).await
    }
    async fn record_reads(&self, reads: &[ReadMark]) -> Result<()> {
        (**self).record_reads(reads).await
    }
    async fn flush_reads(&self) -> Result<()> {
        (**self).flush_reads().await
    }
}
