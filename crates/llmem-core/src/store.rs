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
        }
    }

    pub fn text(t: impl Into<String>, k: usize) -> Self {
        SearchRequest {
            vector: None,
            text: Some(t.into()),
            k,
            filter: Filter::All,
            include_superseded: false,
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
    async fn search(&self, scope: &Scope, request: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        (**self).search(scope, request).await
    }
    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        (**self).scan_all(filter, limit).await
    }
    async fn stats(&self) -> Result<StoreStats> {
        (**self).stats().await
    }
}
