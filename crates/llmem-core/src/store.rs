//! The storage trait one memory tier implements.
//!
//! Every call takes a [`Scope`]: a store never returns, counts or deletes a record of another
//! tenant (or, with a session in the scope, another session), whatever the filter says.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::capabilities::StoreCapabilities;
use crate::filter::Filter;
use crate::record::{MemoryRecord, Scope, ScoredRecord};
use crate::{Error, Result};

/// A search: a query vector, a query text, or both (hybrid), the top `k`, and a filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub k: usize,
    #[serde(default = "all")]
    pub filter: Filter,
    /// Include records that a newer version superseded (default false).
    #[serde(default)]
    pub include_superseded: bool,
    /// How a hybrid search (vector and text) merges its two rankings.
    #[serde(default)]
    pub fusion: Fusion,
}

/// How a hybrid search merges the vector ranking with the lexical (BM25) one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fusion {
    /// Reciprocal rank: `Σ 1 / (60 + rank)` over the two rankings; ignores the scores.
    Rrf,
    /// A convex combination of the normalised scores over the candidates of both rankings:
    /// `(1 − w)·bm25 / max bm25 + w·(cos − min cos) / (max cos − min cos)`; a candidate that one
    /// ranking did not return scores 0 on it. `vector_weight` is `w`, within 0..=1.
    Weighted { vector_weight: f32 },
}

impl Fusion {
    /// The default vector weight of [`Fusion::Weighted`]: measured on LoCoMo (docs/eval.md),
    /// where MiniLM vectors alone are much weaker than BM25 but still add to it.
    pub const DEFAULT_VECTOR_WEIGHT: f32 = 0.3;

    /// An error naming the fix when the weight is outside 0..=1.
    pub fn check(&self) -> Result<()> {
        match self {
            Fusion::Weighted { vector_weight: w } if !(0.0..=1.0).contains(w) => {
                Err(Error::invalid(format!(
                    "fusion vector_weight {w} is outside 0..=1; use e.g. {}",
                    Fusion::DEFAULT_VECTOR_WEIGHT
                )))
            }
            _ => Ok(()),
        }
    }
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Weighted {
            vector_weight: Fusion::DEFAULT_VECTOR_WEIGHT,
        }
    }
}

fn all() -> Filter {
    Filter::All
}

impl SearchRequest {
    pub fn vector(v: Vec<f32>, k: usize) -> Self {
        SearchRequest {
            vector: Some(v),
            text: None,
            k,
            filter: Filter::All,
            include_superseded: false,
            fusion: Fusion::default(),
        }
    }

    pub fn text(t: impl Into<String>, k: usize) -> Self {
        SearchRequest {
            vector: None,
            text: Some(t.into()),
            k,
            filter: Filter::All,
            include_superseded: false,
            fusion: Fusion::default(),
        }
    }

    #[must_use]
    pub fn with_filter(mut self, f: Filter) -> Self {
        self.filter = f;
        self
    }

    #[must_use]
    pub fn with_text(mut self, t: impl Into<String>) -> Self {
        self.text = Some(t.into());
        self
    }

    #[must_use]
    pub fn with_vector(mut self, v: Vec<f32>) -> Self {
        self.vector = Some(v);
        self
    }

    #[must_use]
    pub fn with_fusion(mut self, f: Fusion) -> Self {
        self.fusion = f;
        self
    }
}

/// Size and health of one store, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    pub items: u64,
    pub bytes: u64,
    /// Capacity in bytes, when the store has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
}

/// One tier of long-term memory.
#[async_trait]
pub trait MemoryStore: Send + Sync + std::fmt::Debug {
    /// The store's name in the registry and in errors (`warm`, `cold`, …).
    fn name(&self) -> &str;

    fn capabilities(&self) -> StoreCapabilities;

    /// Inserts or replaces records by id. When it returns `Ok`, the records are stored (for a
    /// persistent store: durably).
    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()>;

    /// The records with these ids inside `scope`, in the order asked; unknown ids are skipped.
    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>>;

    /// Deletes the records with these ids inside `scope`; returns how many went.
    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize>;

    /// Every record in `scope` that passes `filter`, oldest first, at most `limit`.
    async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>>;

    /// How many records in `scope` pass `filter`.
    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        Ok(self.query(scope, filter, None).await?.len())
    }

    /// Deletes every record in `scope` that passes `filter`.
    async fn delete_by_filter(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        let ids: Vec<String> = self
            .query(scope, filter, None)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        self.delete(scope, &ids).await
    }

    /// Forgets every record in `scope` that passes `filter`, for good: unlike
    /// [`MemoryStore::delete_by_filter`], which may leave the bytes in a log, an old version
    /// or an archive batch until a later compaction, `forget` returns only once no file or
    /// object of this store holds the records' text any more (logs rewritten, old versions
    /// cleaned up, archive batches rewritten). Returns how many records went. The default is
    /// `delete_by_filter`, right for a store whose deletes leave nothing behind (in RAM).
    async fn forget(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        self.delete_by_filter(scope, filter).await
    }

    /// The best `k` records for the request, best first. Optional.
    async fn search(&self, scope: &Scope, request: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        let _ = (scope, request);
        Err(Error::unsupported("search", self.name()))
    }

    /// Every tenant's records at once, for migration and export. Optional.
    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        let _ = (filter, limit);
        Err(Error::unsupported("scanning all tenants", self.name()))
    }

    async fn stats(&self) -> Result<StoreStats>;

    /// Writes what the store keeps in RAM for later (counters of reads, say) before the
    /// process stops: call it at shutdown, or now and then. Records are never among it: a
    /// `put` is durable when it returns. The default has nothing to write.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// `dyn MemoryStore`.
pub type DynMemoryStore = dyn MemoryStore;

#[async_trait]
impl<T: MemoryStore + ?Sized> MemoryStore for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn capabilities(&self) -> StoreCapabilities {
        (**self).capabilities()
    }
    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        (**self).put(records).await
    }
    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        (**self).get(scope, ids).await
    }
    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        (**self).delete(scope, ids).await
    }
    async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        (**self).query(scope, filter, limit).await
    }
    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        (**self).count(scope, filter).await
    }
    async fn delete_by_filter(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        (**self).delete_by_filter(scope, filter).await
    }
    async fn forget(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        (**self).forget(scope, filter).await
    }
    async fn search(&self, scope: &Scope, request: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        (**self).search(scope, request).await
    }
    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        (**self).scan_all(filter, limit).await
    }
    async fn stats(&self) -> Result<StoreStats> {
        (**self).stats().await
    }
    async fn flush(&self) -> Result<()> {
        (**self).flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_defaults_to_weighted_and_reads_from_json() {
        let r: SearchRequest = serde_json::from_str(r#"{"text": "x", "k": 3}"#)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(r.fusion, Fusion::default());
        let r: SearchRequest =
            serde_json::from_str(r#"{"text": "x", "k": 3, "fusion": {"method": "rrf"}}"#)
                .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(r.fusion, Fusion::Rrf);
        let r: SearchRequest = serde_json::from_str(
            r#"{"text": "x", "k": 3, "fusion": {"method": "weighted", "vector_weight": 0.5}}"#,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(r.fusion, Fusion::Weighted { vector_weight: 0.5 });
        assert!(
            Fusion::Weighted {
                vector_weight: -0.1
            }
            .check()
            .is_err()
        );
        assert!(Fusion::default().check().is_ok());
    }
}
