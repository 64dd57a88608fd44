//! [`TieredStore`]: one memory over the hot, warm, cold and glacier tiers, with placement,
//! migration, promotion, retention, archiving, snapshots, hybrid search and metrics.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llmem_core::{
    Error, Filter, MemoryRecord, MemoryStore, Result, Scope, ScoredRecord, SearchRequest,
    StoreCapabilities, StoreStats, Timestamp, new_id,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::hot::HotStore;
use crate::text::fuse;
use crate::tier::{Tier, TierKind};
use crate::warm::{HYBRID_CANDIDATES, WarmStore};

/// When records move between tiers: age thresholds for demotion, a read count for promotion.
/// Ages count from a record's last access (`accessed_at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationPolicy {
    pub hot_to_warm: Option<Duration>,
    pub warm_to_cold: Option<Duration>,
    pub cold_to_glacier: Option<Duration>,
    /// A record read this many times from cold or glacier moves back to warm.
    pub promote_after_accesses: Option<u64>,
}

impl Default for MigrationPolicy {
    /// Demotes hot→warm after 24 h, warm→cold after 72 h, cold→glacier after 30 days;
    /// promotes back to warm after 3 reads.
    fn default() -> Self {
        MigrationPolicy {
            hot_to_warm: Some(Duration::from_secs(24 * 3600)),
            warm_to_cold: Some(Duration::from_secs(72 * 3600)),
            cold_to_glacier: Some(Duration::from_secs(30 * 24 * 3600)),
            promote_after_accesses: Some(3),
        }
    }
}

/// What to delete for good: records created more than `max_age` ago that pass `filter`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    pub max_age: Duration,
    pub filter: Filter,
}

/// Counts of a migration run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// `(from, to, records)` for each move that happened.
    pub moved: Vec<(TierKind, TierKind, usize)>,
}

impl MigrationReport {
    pub fn total(&self) -> usize {
        self.moved.iter().map(|m| m.2).sum()
    }
}

/// Metrics of one tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TierMetrics {
    pub tier: String,
    pub items: u64,
    pub bytes: u64,
    pub capacity_bytes: Option<u64>,
    /// `bytes / capacity_bytes` in percent, when there is a capacity.
    pub usage_percent: Option<f64>,
    /// Reads by id that found the record in this tier.
    pub hits: u64,
    /// Reads by id that looked in this tier and did not find the record.
    pub misses: u64,
    /// Operations timed (the latency percentiles cover the last 4096).
    pub ops: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
}

const LATENCY_WINDOW: usize = 4096;

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    ops: AtomicU64,
    latencies: Mutex<VecDeque<u64>>,
}

impl Counters {
    fn record(&self, started: Instant) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let mut l = self.latencies.lock();
        if l.len() == LATENCY_WINDOW {
            l.pop_front();
        }
        l.push_back(started.elapsed().as_micros() as u64);
    }

    fn percentiles(&self) -> (u64, u64, u64) {
        let mut v: Vec<u64> = self.latencies.lock().iter().copied().collect();
        if v.is_empty() {
            return (0, 0, 0);
        }
        v.sort_unstable();
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        (at(0.50), at(0.95), at(0.99))
    }
}

#[derive(Debug)]
struct Level {
    kind: TierKind,
    store: Arc<dyn Tier>,
    counters: Counters,
}

/// Builds a [`TieredStore`]; only the warm tier is required.
#[derive(Debug, Default)]
pub struct TieredBuilder {
    hot: Option<Arc<HotStore>>,
    warm: Option<Arc<WarmStore>>,
    cold: Option<Arc<dyn Tier>>,
    glacier: Option<Arc<dyn Tier>>,
    policy: MigrationPolicy,
    state_dir: Option<PathBuf>,
}

impl TieredBuilder {
    #[must_use]
    pub fn hot(mut self, hot: Arc<HotStore>) -> Self {
        self.hot = Some(hot);
        self
    }
    #[must_use]
    pub fn warm(mut self, warm: Arc<WarmStore>) -> Self {
        self.warm = Some(warm);
        self
    }
    #[must_use]
    pub fn cold(mut self, cold: Arc<dyn Tier>) -> Self {
        self.cold = Some(cold);
        self
    }
    #[must_use]
    pub fn glacier(mut self, glacier: Arc<dyn Tier>) -> Self {
        self.glacier = Some(glacier);
        self
    }
    #[must_use]
    pub fn policy(mut self, policy: MigrationPolicy) -> Self {
        self.policy = policy;
        self
    }
    /// Where the list of tiered snapshots is kept (else in memory).
    #[must_use]
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Wires LRU demotion (hot → warm → cold) and builds the store.
    pub fn build(self) -> Result<TieredStore> {
        let warm = self
            .warm
            .ok_or_else(|| Error::config("tiers.warm", "a tiered store needs a warm tier"))?;
        if let Some(hot) = &self.hot {
            hot.set_demotion_sink(warm.clone());
        }
        if let Some(cold) = &self.cold {
            let sink: Arc<dyn MemoryStore> = cold.clone();
            warm.set_demotion_sink(sink);
        }
        let hot = self.hot.clone();
        let mut levels = Vec::new();
        let mut add = |kind, store: Arc<dyn Tier>| {
            levels.push(Level {
                kind,
                store,
                counters: Counters::default(),
            })
        };
        if let Some(h) = self.hot {
            add(TierKind::Hot, h);
        }
        add(TierKind::Warm, warm);
        if let Some(c) = self.cold {
            add(TierKind::Cold, c);
        }
        if let Some(g) = self.glacier {
            add(TierKind::Glacier, g);
        }
        let snapshots = match &self.state_dir {
            Some(d) if d.join(SNAPSHOTS_FILE).exists() => {
                let p = d.join(SNAPSHOTS_FILE);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
                serde_json::from_str(&text)
                    .map_err(|e| Error::serde(format!("{}", p.display()), e))?
            }
            _ => HashMap::new(),
        };
        Ok(TieredStore {
            hot,
            levels,
            policy: self.policy,
            access: Mutex::new(HashMap::new()),
            snapshots: Mutex::new(snapshots),
            state_dir: self.state_dir,
        })
    }
}

const SNAPSHOTS_FILE: &str = "tiered-snapshots.json";

/// Whether two copies of a record hold the same version (what a tier may change on the way,
/// like the access time or the embedding's precision, is not compared).
fn same_version(a: &MemoryRecord, b: &MemoryRecord) -> bool {
    a.text == b.text
        && a.kind == b.kind
        && a.session == b.session
        && a.created_at == b.created_at
        && a.metadata == b.metadata
        && a.supersedes == b.supersedes
        && a.superseded_by == b.superseded_by
}

/// The records of several tiers as one list, oldest first, each id once (the warmest copy),
/// at most `limit`.
fn oldest_first(parts: Vec<Vec<MemoryRecord>>, limit: Option<usize>) -> Vec<MemoryRecord> {
    let mut seen = HashSet::new();
    let mut all: Vec<MemoryRecord> = parts
        .into_iter()
        .flatten()
        .filter(|r| seen.insert(r.id.clone()))
        .collect();
    all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    all.truncate(limit.unwrap_or(usize::MAX));
    all
}

/// One long-term memory over several tiers. Every record lives in one tier; new records go to
/// warm unless placed explicitly.
#[derive(Debug)]
pub struct TieredStore {
    hot: Option<Arc<HotStore>>,
    levels: Vec<Level>,
    policy: MigrationPolicy,
    /// Reads of records in cold or glacier, for promotion.
    access: Mutex<HashMap<String, u64>>,
    snapshots: Mutex<HashMap<String, Vec<(TierKind, String)>>>,
    state_dir: Option<PathBuf>,
}

impl TieredStore {
    pub fn builder() -> TieredBuilder {
        TieredBuilder::default()
    }

    /// The tiers configured, warmest first.
    pub fn tiers(&self) -> Vec<TierKind> {
        self.levels.iter().map(|l| l.kind).collect()
    }

    /// The store of one tier.
    pub fn tier(&self, kind: TierKind) -> Option<Arc<dyn Tier>> {
        self.level(kind).map(|l| l.store.clone())
    }

    fn level(&self, kind: TierKind) -> Option<&Level> {
        self.levels.iter().find(|l| l.kind == kind)
    }

    fn level_or_err(&self, kind: TierKind) -> Result<&Level> {
        self.level(kind).ok_or_else(|| {
            Error::config(
                format!("tiers.{kind}"),
                format!("the {kind} tier is not configured"),
            )
        })
    }

    /// Stores a record in warm; returns its id. When this returns `Ok`, the record is durable if
    /// warm has a write-ahead log.
    pub async fn store(&self, record: MemoryRecord) -> Result<String> {
        self.store_in(record, TierKind::Warm).await
    }

    /// Stores a record in the given tier.
    pub async fn store_in(&self, record: MemoryRecord, tier: TierKind) -> Result<String> {
        let id = record.id.clone();
        self.store_batch_in(vec![record], tier).await?;
        Ok(id)
    }

    /// Stores records in warm.
    pub async fn store_batch(&self, records: Vec<MemoryRecord>) -> Result<()> {
        self.store_batch_in(records, TierKind::Warm).await
    }

    /// Stores records in the given tier, removing older copies with the same ids from the others.
    pub async fn store_batch_in(&self, records: Vec<MemoryRecord>, tier: TierKind) -> Result<()> {
        let target = self.level_or_err(tier)?;
        // Ids are unique across tenants: never take over another tenant's record in any tier
        // (the target tier checks its own records in `put`).
        for l in self.levels.iter().filter(|l| l.kind != tier) {
            crate::tier::check_owners(&*l.store, &records).await?;
        }
        let mut by_tenant: HashMap<&str, Vec<String>> = HashMap::new();
        for r in &records {
            by_tenant
                .entry(r.tenant.as_str())
                .or_default()
                .push(r.id.clone());
        }
        // The older copies in other tiers, found before the write: the write itself may demote
        // some of the new records onward (a batch larger than warm's capacity), and those
        // must not be taken for older copies afterwards.
        let mut stale = Vec::new();
        for l in self.levels.iter().filter(|l| l.kind != tier) {
            for (tenant, ids) in &by_tenant {
                let scope = Scope::tenant(*tenant);
                let found: Vec<String> = l
                    .store
                    .get(&scope, ids)
                    .await?
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                if !found.is_empty() {
                    stale.push((l, scope, found));
                }
            }
        }
        let new: HashMap<String, MemoryRecord> = if stale.is_empty() {
            HashMap::new()
        } else {
            records.iter().map(|r| (r.id.clone(), r.clone())).collect()
        };
        let t = Instant::now();
        target.store.put(records).await?;
        target.counters.record(t);
        // One record, one tier: drop the older copies. A copy is older when the target tier
        // now holds the id, or when it differs from what was written (a record demoted during
        // the write replaced the copy of the tier it went to, and that copy is the new one).
        for (l, scope, ids) in stale {
            let in_target: HashSet<String> = target
                .store
                .get(&scope, &ids)
                .await?
                .into_iter()
                .map(|r| r.id)
                .collect();
            let older: Vec<String> = l
                .store
                .get(&scope, &ids)
                .await?
                .into_iter()
                .filter(|r| {
                    in_target.contains(&r.id) || new.get(&r.id).is_none_or(|n| !same_version(r, n))
                })
                .map(|r| r.id)
                .collect();
            if !older.is_empty() {
                l.store.delete(&scope, &older).await?;
            }
        }
        Ok(())
    }

    /// Finds a record by id in `scope`, warmest tier first; with its tier.
    pub async fn locate(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<Option<(TierKind, MemoryRecord)>> {
        let ids = [id.to_owned()];
        for l in &self.levels {
            let t = Instant::now();
            let got = l.store.get(scope, &ids).await?;
            l.counters.record(t);
            if let Some(r) = got.into_iter().next() {
                l.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some((l.kind, r)));
            }
            l.counters.misses.fetch_add(1, Ordering::Relaxed);
        }
        Ok(None)
    }

    /// A record by id; a read from cold or glacier counts toward promotion to warm.
    pub async fn get(&self, scope: &Scope, id: &str) -> Result<Option<MemoryRecord>> {
        Ok(self
            .get_many(scope, &[id.to_owned()])
            .await?
            .into_iter()
            .next())
    }

    /// The records with these ids in `scope`, in the order asked (unknown ids skipped), each
    /// from the warmest tier that holds it; reads from cold or glacier count toward promotion.
    pub async fn get_many(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        let mut found: HashMap<String, (TierKind, MemoryRecord)> = HashMap::new();
        for l in &self.levels {
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !found.contains_key(*id))
                .cloned()
                .collect();
            if missing.is_empty() {
                break;
            }
            let t = Instant::now();
            let got = l.store.get(scope, &missing).await?;
            l.counters.record(t);
            l.counters
                .hits
                .fetch_add(got.len() as u64, Ordering::Relaxed);
            l.counters
                .misses
                .fetch_add((missing.len() - got.len()) as u64, Ordering::Relaxed);
            for r in got {
                found.insert(r.id.clone(), (l.kind, r));
            }
        }
        let mut out = Vec::with_capacity(found.len());
        for id in ids {
            if let Some((kind, rec)) = found.remove(id) {
                self.count_read(kind, &rec).await?;
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Counts a read of `rec` found in `kind`; past the policy's count, moves it to warm.
    async fn count_read(&self, kind: TierKind, rec: &MemoryRecord) -> Result<()> {
        let (TierKind::Cold | TierKind::Glacier, Some(limit)) =
            (kind, self.policy.promote_after_accesses)
        else {
            return Ok(());
        };
        let n = {
            let mut a = self.access.lock();
            let n = a.entry(rec.id.clone()).or_default();
            *n += 1;
            *n
        };
        if n >= limit {
            let mut promoted = rec.clone();
            promoted.access_count += n;
            promoted.accessed_at = Timestamp::now();
            self.move_records(kind, TierKind::Warm, vec![promoted])
                .await?;
            self.access.lock().remove(&rec.id);
            tracing::debug!(id = %rec.id, from = %kind, "promoted to warm after {n} reads");
        }
        Ok(())
    }

    pub async fn exists(&self, scope: &Scope, id: &str) -> Result<bool> {
        Ok(self.locate(scope, id).await?.is_some())
    }

    /// Replaces record `old_id` by `new`: `new` is stored (in warm) with `supersedes = old_id`,
    /// and the old version stays where it is, findable by id, with `superseded_by` set. Searches
    /// skip superseded records unless asked. Returns the new id.
    pub async fn update(
        &self,
        scope: &Scope,
        old_id: &str,
        mut new: MemoryRecord,
    ) -> Result<String> {
        let (kind, mut old) = self
            .locate(scope, old_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("record `{old_id}` in tenant `{}`", scope.tenant),
            })?;
        if new.id == old.id {
            new.id = new_id();
        }
        new.tenant = old.tenant.clone();
        if new.session.is_none() {
            new.session = old.session.clone();
        }
        new.supersedes = Some(old.id.clone());
        let id = new.id.clone();
        self.store(new).await?;
        old.superseded_by = Some(id.clone());
        let l = self.level_or_err(kind)?;
        l.store.put(vec![old]).await?;
        Ok(id)
    }

    /// Deletes records by id from every tier; returns how many went.
    pub async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        let mut n = 0;
        for l in &self.levels {
            let t = Instant::now();
            n += l.store.delete(scope, ids).await?;
            l.counters.record(t);
        }
        Ok(n)
    }

    pub async fn delete_by_filter(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        let mut n = 0;
        for l in &self.levels {
            n += l.store.delete_by_filter(scope, filter).await?;
        }
        Ok(n)
    }

    pub async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        let mut n = 0;
        for l in &self.levels {
            n += l.store.count(scope, filter).await?;
        }
        Ok(n)
    }

    /// Records in `scope` passing `filter` from every tier, oldest first, at most `limit`.
    pub async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        let mut parts = Vec::new();
        for l in &self.levels {
            let t = Instant::now();
            parts.push(l.store.query(scope, filter, limit).await?);
            l.counters.record(t);
        }
        Ok(oldest_first(parts, limit))
    }

    /// Vector, text or hybrid search over the searchable tiers (not glacier, which is an
    /// archive). Vector scores (cosine) and BM25 scores are merged per kind across tiers; a
    /// hybrid request fuses the two global rankings as `req.fusion` says.
    pub async fn search(&self, scope: &Scope, req: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        let hybrid = req.vector.is_some() && req.text.is_some();
        let n = if hybrid {
            (req.k * 4).max(HYBRID_CANDIDATES)
        } else {
            req.k
        };
        let mut by_vec = Vec::new();
        let mut by_text = Vec::new();
        for l in self.levels.iter().filter(|l| l.kind != TierKind::Glacier) {
            let caps = l.store.capabilities();
            let t = Instant::now();
            if let Some(v) = &req.vector
                && caps.vector_search
            {
                let r = SearchRequest {
                    vector: Some(v.clone()),
                    text: None,
                    k: n,
                    ..req.clone()
                };
                by_vec.extend(l.store.search(scope, &r).await?);
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
                by_text.extend(l.store.search(scope, &r).await?);
            }
            l.counters.record(t);
        }
        let rank = |mut v: Vec<ScoredRecord>| {
            v.sort_by(|a, b| b.score.total_cmp(&a.score));
            let mut seen = HashSet::new();
            v.retain(|h| seen.insert(h.record.id.clone()));
            v
        };
        let (by_vec, by_text) = (rank(by_vec), rank(by_text));
        if !hybrid {
            let mut hits = if req.vector.is_some() {
                by_vec
            } else {
                by_text
            };
            hits.truncate(req.k);
            return Ok(hits);
        }
        let mut recs: HashMap<String, MemoryRecord> = HashMap::new();
        let mut lists = Vec::new();
        for list in [by_vec, by_text] {
            lists.push(
                list.iter()
                    .map(|h| (h.record.id.clone(), h.score))
                    .collect::<Vec<_>>(),
            );
            for h in list {
                recs.entry(h.record.id.clone()).or_insert(h.record);
            }
        }
        Ok(fuse(&lists[0], &lists[1], req.fusion, req.k)?
            .into_iter()
            .filter_map(|(id, score)| {
                Some(ScoredRecord {
                    record: recs.remove(&id)?,
                    score,
                })
            })
            .collect())
    }

    /// Moves records between tiers: written to `to`, then removed from `from`.
    pub async fn move_records(
        &self,
        from: TierKind,
        to: TierKind,
        records: Vec<MemoryRecord>,
    ) -> Result<usize> {
        if records.is_empty() || from == to {
            return Ok(0);
        }
        let (src, dst) = (self.level_or_err(from)?, self.level_or_err(to)?);
        let n = records.len();
        let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
        for r in &records {
            by_tenant
                .entry(r.tenant.clone())
                .or_default()
                .push(r.id.clone());
        }
        dst.store.put(records).await?;
        for (tenant, ids) in by_tenant {
            src.store.delete(&Scope::tenant(tenant), &ids).await?;
        }
        Ok(n)
    }

    /// Runs the age thresholds of the policy as of now.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        self.migrate_at(Timestamp::now()).await
    }

    /// Runs the age thresholds as of `now`: records not accessed for longer than a tier's
    /// threshold move to the next configured tier.
    pub async fn migrate_at(&self, now: Timestamp) -> Result<MigrationReport> {
        let mut report = MigrationReport::default();
        let steps = [
            (TierKind::Hot, TierKind::Warm, self.policy.hot_to_warm),
            (TierKind::Warm, TierKind::Cold, self.policy.warm_to_cold),
            (
                TierKind::Cold,
                TierKind::Glacier,
                self.policy.cold_to_glacier,
            ),
        ];
        for (from, to, age) in steps {
            let (Some(age), Some(src), Some(_)) = (age, self.level(from), self.level(to)) else {
                continue;
            };
            let cutoff = now.0 - age.as_millis() as i64;
            let old: Vec<MemoryRecord> = src
                .store
                .scan_all(&Filter::All, None)
                .await?
                .into_iter()
                .filter(|r| r.accessed_at.0 < cutoff)
                .collect();
            let n = self.move_records(from, to, old).await?;
            if n > 0 {
                report.moved.push((from, to, n));
            }
        }
        Ok(report)
    }

    /// Pushes all but the `keep` records most similar to `query` out of the hot tier into warm.
    pub async fn gc(&self, scope: &Scope, query: &[f32], keep: usize) -> Result<usize> {
        let hot = self.level_or_err(TierKind::Hot)?;
        let Some(hot_store) = self.hot_store() else {
            return Ok(0);
        };
        let ids = hot_store.gc_candidates(scope, query, keep).await?;
        let recs = hot.store.get(scope, &ids).await?;
        self.move_records(TierKind::Hot, TierKind::Warm, recs).await
    }

    fn hot_store(&self) -> Option<&HotStore> {
        self.hot.as_deref()
    }

    /// Deletes, in every tier and for every tenant, the records older than the policy's age
    /// that pass its filter; returns how many went.
    pub async fn retention(&self, policy: &RetentionPolicy) -> Result<usize> {
        self.retention_at(policy, Timestamp::now()).await
    }

    pub async fn retention_at(&self, policy: &RetentionPolicy, now: Timestamp) -> Result<usize> {
        let cutoff = now.0 - policy.max_age.as_millis() as i64;
        let mut n = 0;
        for l in &self.levels {
            let old: Vec<MemoryRecord> = l
                .store
                .scan_all(&policy.filter, None)
                .await?
                .into_iter()
                .filter(|r| r.created_at.0 < cutoff)
                .collect();
            let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
            for r in old {
                by_tenant.entry(r.tenant).or_default().push(r.id);
            }
            for (tenant, ids) in by_tenant {
                n += l.store.delete(&Scope::tenant(tenant), &ids).await?;
            }
        }
        Ok(n)
    }

    /// Moves the records of `scope` passing `filter` from every other tier to glacier.
    pub async fn archive(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        self.level_or_err(TierKind::Glacier)?;
        let mut n = 0;
        for l in self.levels.iter().filter(|l| l.kind != TierKind::Glacier) {
            let recs = l.store.query(scope, filter, None).await?;
            n += self.move_records(l.kind, TierKind::Glacier, recs).await?;
        }
        Ok(n)
    }

    /// Snapshots every tier that supports it; returns an id for [`TieredStore::restore`].
    pub async fn snapshot(&self) -> Result<String> {
        let mut parts = Vec::new();
        for l in &self.levels {
            if l.store.capabilities().snapshots {
                parts.push((l.kind, l.store.snapshot().await?));
            }
        }
        let id = new_id();
        let mut snaps = self.snapshots.lock();
        snaps.insert(id.clone(), parts);
        if let Some(d) = &self.state_dir {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
            let p = d.join(SNAPSHOTS_FILE);
            let text =
                serde_json::to_string(&*snaps).map_err(|e| Error::serde("snapshot list", e))?;
            std::fs::write(&p, text)
                .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
        Ok(id)
    }

    /// Rolls every snapshotted tier back to snapshot `id`.
    pub async fn restore(&self, id: &str) -> Result<()> {
        let parts = self
            .snapshots
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: format!("snapshot `{id}`"),
            })?;
        for (kind, sid) in parts {
            self.level_or_err(kind)?.store.restore(&sid).await?;
        }
        Ok(())
    }

    /// Items, bytes, usage, hits/misses and latency percentiles of each tier.
    pub async fn metrics(&self) -> Result<Vec<TierMetrics>> {
        let mut out = Vec::new();
        for l in &self.levels {
            let s = l.store.stats().await?;
            let (p50, p95, p99) = l.counters.percentiles();
            out.push(TierMetrics {
                tier: l.kind.as_str().to_owned(),
                items: s.items,
                bytes: s.bytes,
                capacity_bytes: s.capacity_bytes,
                usage_percent: s
                    .capacity_bytes
                    .filter(|c| *c > 0)
                    .map(|c| s.bytes as f64 * 100.0 / c as f64),
                hits: l.counters.hits.load(Ordering::Relaxed),
                misses: l.counters.misses.load(Ordering::Relaxed),
                ops: l.counters.ops.load(Ordering::Relaxed),
                p50_us: p50,
                p95_us: p95,
                p99_us: p99,
            });
        }
        Ok(out)
    }
}

/// The tiered store is itself a [`MemoryStore`], so whatever takes one (the facade's long-term
/// memory, a plugin) can run over every tier: writes go to warm, reads and searches span the
/// tiers (search skips glacier, an archive), deletes reach every tier.
#[async_trait::async_trait]
impl MemoryStore for TieredStore {
    fn name(&self) -> &str {
        "tiered"
    }

    fn capabilities(&self) -> StoreCapabilities {
        let mut caps = StoreCapabilities::default();
        for l in &self.levels {
            let c = l.store.capabilities();
            if l.kind != TierKind::Glacier {
                caps.vector_search |= c.vector_search;
                caps.text_search |= c.text_search;
            }
            caps.persistent |= c.persistent;
            caps.snapshots |= c.snapshots;
        }
        caps
    }

    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        self.store_batch(records).await
    }

    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        self.get_many(scope, ids).await
    }

    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        TieredStore::delete(self, scope, ids).await
    }

    async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        TieredStore::query(self, scope, filter, limit).await
    }

    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        TieredStore::count(self, scope, filter).await
    }

    async fn delete_by_filter(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        TieredStore::delete_by_filter(self, scope, filter).await
    }

    async fn search(&self, scope: &Scope, request: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        TieredStore::search(self, scope, request).await
    }

    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        let mut parts = Vec::new();
        for l in &self.levels {
            parts.push(l.store.scan_all(filter, limit).await?);
        }
        Ok(oldest_first(parts, limit))
    }

    async fn stats(&self) -> Result<StoreStats> {
        let mut total = StoreStats::default();
        for l in &self.levels {
            let s = l.store.stats().await?;
            total.items += s.items;
            total.bytes += s.bytes;
        }
        Ok(total)
    }
}
