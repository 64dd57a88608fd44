//! The hot tier: the working set (what is in the model's context) with its embeddings in one
//! contiguous matrix, scored against a query in a single pass.
//!
//! It is a [`WarmStore`] named `hot` with a small capacity, so it inherits the filters, LRU
//! demotion (to warm) and the exact, auto-vectorised CPU scoring. With a [`VectorScorer`]
//! ([`HotStore::with_scorer`]) the scoring runs on that engine instead: the matrix is loaded
//! into it when it changes and each query only sends the query vector. `llmem-providers`'
//! `onnx::OnnxScorer` is such an engine on ONNX Runtime, on the GPU with its `cuda` feature
//! where a GPU is present, on the CPU otherwise.

use std::sync::Arc;

use async_trait::async_trait;
use llmem_core::{
    Filter, MemoryRecord, MemoryStore, Result, Scope, ScoredRecord, SearchRequest,
    StoreCapabilities, StoreStats, VectorScorer,
};
use parking_lot::Mutex;

use crate::tier::Tier;
use crate::warm::{WarmConfig, WarmStore};

/// The hot tier.
#[derive(Debug)]
pub struct HotStore {
    inner: WarmStore,
    engine: Option<Engine>,
}

#[derive(Debug)]
struct Engine {
    scorer: Arc<dyn VectorScorer>,
    /// The generation of the matrix the scorer holds.
    loaded: Mutex<Option<u64>>,
}

impl HotStore {
    /// A hot tier holding at most `max_items` records.
    pub fn new(max_items: usize) -> Result<Self> {
        Ok(HotStore {
            inner: WarmStore::open(WarmConfig::default().named("hot").max_items(max_items))?,
            engine: None,
        })
    }

    /// Scores the working set on `scorer` (see the module docs) instead of the CPU loop.
    #[must_use]
    pub fn with_scorer(mut self, scorer: Arc<dyn VectorScorer>) -> Self {
        self.set_scorer(scorer);
        self
    }

    /// Like [`with_scorer`](Self::with_scorer), in place.
    pub fn set_scorer(&mut self, scorer: Arc<dyn VectorScorer>) {
        self.engine = Some(Engine {
            scorer,
            loaded: Mutex::new(None),
        });
    }

    /// The engine that scores the working set: `"cpu"`, or the scorer's name.
    pub fn scorer_name(&self) -> &str {
        self.engine.as_ref().map_or("cpu", |e| e.scorer.name())
    }

    /// Where records pushed out of the working set go (the warm tier).
    pub fn set_demotion_sink(&self, sink: Arc<dyn MemoryStore>) {
        self.inner.set_demotion_sink(sink);
    }

    /// Cosine similarity of `query` with every record of the working set in `scope`, best first.
    pub fn score(&self, scope: &Scope, query: &[f32]) -> Result<Vec<(String, f32)>> {
        let Some(engine) = &self.engine else {
            return self.inner.score_all(scope, query);
        };
        self.inner
            .score_with(scope, query, |rows, dim, generation| {
                let mut loaded = engine.loaded.lock();
                if *loaded != Some(generation) {
                    *loaded = None;
                    engine.scorer.load(rows, dim)?;
                    *loaded = Some(generation);
                }
                engine.scorer.score(query)
            })
    }

    /// The ids that a `gc(query)` keeping the `keep` most relevant records would push out:
    /// the least similar to `query` (records without an embedding go first).
    pub async fn gc_candidates(
        &self,
        scope: &Scope,
        query: &[f32],
        keep: usize,
    ) -> Result<Vec<String>> {
        let scored = self.score(scope, query)?;
        let kept: std::collections::HashSet<&str> = scored
            .iter()
            .take(keep)
            .map(|(id, _)| id.as_str())
            .collect();
        let all = self.inner.query(scope, &Filter::All, None).await?;
        Ok(all
            .into_iter()
            .map(|r| r.id)
            .filter(|id| !kept.contains(id.as_str()))
            .collect())
    }
}

#[async_trait]
impl MemoryStore for HotStore {
    fn name(&self) -> &str {
        "hot"
    }
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        self.inner.put(records).await
    }
    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        self.inner.get(scope, ids).await
    }
    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        self.inner.delete(scope, ids).await
    }
    async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        self.inner.query(scope, filter, limit).await
    }
    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        self.inner.count(scope, filter).await
    }
    async fn search(&self, scope: &Scope, request: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        self.inner.search(scope, request).await
    }
    /// The hot tier keeps nothing on disk; its forget is warm's: the records go, and so do
    /// their copies in the snapshots it holds in RAM.
    async fn forget(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        self.inner.forget(scope, filter).await
    }
    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        self.inner.scan_all(filter, limit).await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }
}

#[async_trait]
impl Tier for HotStore {
    async fn snapshot(&self) -> Result<String> {
        self.inner.snapshot().await
    }
    async fn restore(&self, id: &str) -> Result<()> {
        self.inner.restore(id).await
    }
    async fn foreign_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<String>> {
        self.inner.foreign_ids(tenant, ids).await
    }
    async fn candidates(
        &self,
        scope: &Scope,
        req: &SearchRequest,
        n: usize,
    ) -> Result<crate::tier::Candidates> {
        self.inner.candidates(scope, req, n).await
    }
    async fn record_reads(&self, reads: &[crate::tier::ReadMark]) -> Result<()> {
        self.inner.record_reads(reads).await
    }
}
