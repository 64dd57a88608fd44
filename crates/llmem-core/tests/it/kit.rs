//! The test kit run against small reference implementations written here, so the suites
//! themselves are exercised (and would catch a store that leaks across tenants).

use std::sync::Mutex;

use llmem_core::test_kit::{store_conformance, token_counter_conformance};
use llmem_core::{
    Accuracy, Filter, MemoryRecord, MemoryStore, Result, Scope, ScoredRecord, SearchRequest,
    StoreCapabilities, StoreStats, TokenCounter, async_trait,
};

/// A minimal linear-scan store; `leaky` forgets tenancy in `get`, which the kit must catch.
#[derive(Debug, Default)]
struct ScanStore {
    rows: Mutex<Vec<MemoryRecord>>,
    leaky: bool,
}

#[async_trait]
impl MemoryStore for ScanStore {
    fn name(&self) -> &str {
        "scan"
    }
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities {
            vector_search: true,
            ..Default::default()
        }
    }
    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        let mut rows = self.rows.lock().unwrap();
        for r in records {
            rows.retain(|x| x.id != r.id);
            rows.push(r);
        }
        Ok(())
    }
    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        let rows = self.rows.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| {
                rows.iter()
                    .find(|r| &r.id == id && (self.leaky || r.in_scope(scope)))
                    .cloned()
            })
            .collect())
    }
    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        let mut rows = self.rows.lock().unwrap();
        let before = rows.len();
        rows.retain(|r| !(ids.contains(&r.id) && r.in_scope(scope)));
        Ok(before - rows.len())
    }
    async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        let mut out: Vec<_> = self
            .rows
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.in_scope(scope) && filter.matches(r))
            .cloned()
            .collect();
        out.sort_by_key(|r| r.created_at);
        out.truncate(limit.unwrap_or(usize::MAX));
        Ok(out)
    }
    async fn search(&self, scope: &Scope, req: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        let q = req.vector.clone().unwrap_or_default();
        let mut out: Vec<ScoredRecord> = self
            .query(scope, &req.filter, None)
            .await?
            .into_iter()
            .map(|r| {
                let score = r
                    .embedding
                    .as_ref()
                    .map_or(0.0, |e| e.iter().zip(&q).map(|(a, b)| a * b).sum());
                ScoredRecord { record: r, score }
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out.truncate(req.k);
        Ok(out)
    }
    async fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            items: self.rows.lock().unwrap().len() as u64,
            ..Default::default()
        })
    }
}

#[tokio::test]
async fn a_correct_store_passes_the_store_suite() {
    store_conformance(&ScanStore::default()).await;
}

#[tokio::test]
async fn a_store_that_leaks_across_tenants_fails_it() {
    let leaky = ScanStore {
        leaky: true,
        ..Default::default()
    };
    let caught = tokio::spawn(async move { store_conformance(&leaky).await }).await;
    let err = caught.unwrap_err();
    let msg = err.into_panic();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("other tenants"), "{msg}");
}

#[derive(Debug)]
struct Chars;
impl TokenCounter for Chars {
    fn model(&self) -> &str {
        "chars/4"
    }
    fn count(&self, text: &str) -> usize {
        text.chars().count().div_ceil(4)
    }
    fn accuracy(&self) -> Accuracy {
        Accuracy::Estimate {
            mean_abs_error: 0.3,
        }
    }
}

#[test]
fn a_simple_counter_passes_the_counter_suite() {
    token_counter_conformance(&Chars);
}
