//! [`TieredStore`]: one memory over the hot, warm, cold and glacier tiers, with placement,
//! migration, promotion, retention, archiving, snapshots, hybrid search and metrics.
//!
//! Reads: a get and every search hit count as a read of the record, in whichever tier it is.
//! Hot and warm count theirs in RAM (warm logs the access fields in batches); reads of cold
//! and glacier records wait in a pending batch that [`TieredStore::flush_reads`] hands to
//! those tiers in one write each (one Lance merge-insert for cold), when the batch reaches
//! [`READ_FLUSH_AT`] records, before every migration, and when called. Migration ages count
//! from `accessed_at`, so a record that is recalled stays where it is. Reads of a cold or
//! glacier record also count toward its promotion back to warm; those counters are saved in
//! `state_dir` (`tiered-reads.json`) on each flush, so they survive a restart.
//!
//! Forget: [`TieredStore::forget`] runs every tier's forget (`docs/forget.md`) while no record
//! moves between tiers (a lock that stores, moves, updates, snapshots and restores take
//! shared, and a move writes only what its source still holds), and drops the tiered
//! snapshots that name a cold-tier version, which the cold tier's forget cleans up.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
use crate::tier::{ReadMark, Tier, TierKind};
use crate::warm::{HYBRID_CANDIDATES, WarmStore};

/// When records move between tiers: age thresholds for demotion, a read count for promotion.
/// Ages count from a record's last access (`accessed_at`): a get or a search hit is an access.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationPolicy {
    pub hot_to_warm: Option<Duration>,
    pub warm_to_cold: Option<Duration>,
    pub cold_to_glacier: Option<Duration>,
    /// A record read this many times (gets and search hits) while in cold or glacier moves
    /// back to warm; the counts survive a restart where the store has a `state_dir`.
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
        let counts = match &self.state_dir {
            Some(d) if d.join(READS_FILE).exists() => {
                let p = d.join(READS_FILE);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
                serde_json::from_str::<SavedReads>(&text)
                    .map_err(|e| Error::serde(format!("{}", p.display()), e))?
                    .promotion_counts
            }
            _ => HashMap::new(),
        };
        Ok(TieredStore {
            hot,
            levels,
            policy: self.policy,
            reads: Mutex::new(Reads {
                counts,
                ..Reads::default()
            }),
            flushing: tokio::sync::Mutex::new(()),
            snapshots: Mutex::new(snapshots),
            state_dir: self.state_dir,
            moves: tokio::sync::RwLock::new(()),
        })
    }
}

const SNAPSHOTS_FILE: &str = "tiered-snapshots.json";

/// The promotion counters, in `state_dir`.
const READS_FILE: &str = "tiered-reads.json";

/// Pending reads of cold and glacier records past which a read flushes them
/// ([`TieredStore::flush_reads`]).
pub const READ_FLUSH_AT: usize = 1024;

/// Reads counted by a [`TieredStore`].
#[derive(Debug, Default)]
struct Reads {
    /// Reads of records in cold or glacier not yet handed to their tier, by id (with the tier
    /// that held the record at the last of them).
    pending: HashMap<String, (TierKind, ReadMark)>,
    /// Promotion counters: reads of each record while in cold or glacier, since it got there
    /// or since its last promotion.
    counts: HashMap<String, u64>,
    /// Whether `counts` changed since it was last saved.
    dirty: bool,
}

impl Reads {
    /// Puts marks that could not be handed to their tier back, merged with newer ones.
    fn put_back(&mut self, marks: impl IntoIterator<Item = (TierKind, ReadMark)>) {
        for (kind, m) in marks {
            match self.pending.get_mut(&m.id) {
                Some((_, p)) => {
                    p.reads += m.reads;
                    p.at = p.at.max(m.at);
                }
                None => {
                    self.pending.insert(m.id.clone(), (kind, m));
                }
            }
        }
    }
}

/// What `tiered-reads.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedReads {
    /// Record id → reads counted toward its promotion to warm.
    promotion_counts: HashMap<String, u64>,
}

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

/// The ids among `ids` that `store` holds, whatever the tenant, from what the tier keeps at
/// hand (RAM, the glacier manifest, an id-only Lance scan): [`Tier::foreign_ids`] for a tenant
/// that no record can have (a record's tenant is never empty).
async fn held_ids(store: &dyn Tier, ids: &[String]) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(1000) {
        out.extend(store.foreign_ids("", chunk).await?);
    }
    Ok(out)
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
    /// Pending reads and promotion counters (see the module docs).
    reads: Mutex<Reads>,
    /// One flush of the reads at a time (the counters file is written in order).
    flushing: tokio::sync::Mutex<()>,
    snapshots: Mutex<HashMap<String, Vec<(TierKind, String)>>>,
    state_dir: Option<PathBuf>,
    /// Held shared by whatever writes a record into a tier (stores, moves between tiers,
    /// updates, snapshots and restores) and exclusively by [`TieredStore::forget`], so that a
    /// record on its way from one tier to another cannot land behind a forget that already
    /// passed the tier it goes to. Never taken twice by one call.
    moves: tokio::sync::RwLock<()>,
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
        let _moving = self.moves.read().await;
        self.store_batch_unlocked(records, tier).await
    }

    /// [`TieredStore::store_batch_in`] for a caller that holds `moves` already.
    async fn store_batch_unlocked(&self, records: Vec<MemoryRecord>, tier: TierKind) -> Result<()> {
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
        let mut reads = Vec::new();
        for id in ids {
            if let Some((kind, rec)) = found.remove(id) {
                if matches!(kind, TierKind::Cold | TierKind::Glacier) {
                    reads.push((kind, rec.clone()));
                }
                out.push(rec);
            }
        }
        self.count_reads(reads).await?;
        Ok(out)
    }

    /// Counts reads of records found in cold or glacier (hot and warm count their own): each
    /// joins the pending batch and grows its promotion counter; the records whose counter
    /// reaches the policy's count move to warm (one move per tier). Flushes the pending batch
    /// once it holds [`READ_FLUSH_AT`] records.
    async fn count_reads(&self, found: Vec<(TierKind, MemoryRecord)>) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let limit = self.policy.promote_after_accesses;
        let mut promote: BTreeMap<TierKind, Vec<MemoryRecord>> = BTreeMap::new();
        let mut promoting = HashSet::new();
        let flush = {
            let mut guard = self.reads.lock();
            let r = &mut *guard;
            for (kind, rec) in found {
                if !matches!(kind, TierKind::Cold | TierKind::Glacier) {
                    continue;
                }
                let (k, mark) = r.pending.entry(rec.id.clone()).or_insert_with(|| {
                    (
                        kind,
                        ReadMark {
                            id: rec.id.clone(),
                            tenant: rec.tenant.clone(),
                            reads: 0,
                            at: now,
                        },
                    )
                });
                *k = kind;
                mark.reads += 1;
                mark.at = now;
                let unapplied = mark.reads;
                let n = r.counts.entry(rec.id.clone()).or_default();
                *n += 1;
                let n = *n;
                r.dirty = true;
                if limit.is_some_and(|l| n >= l) && promoting.insert(rec.id.clone()) {
                    let mut p = rec;
                    // Cold has the reads flushed before in its count; glacier keeps none.
                    p.access_count += if kind == TierKind::Glacier {
                        n
                    } else {
                        unapplied
                    };
                    p.accessed_at = now;
                    promote.entry(kind).or_default().push(p);
                }
            }
            r.pending.len() >= READ_FLUSH_AT
        };
        for (kind, recs) in promote {
            let ids: Vec<String> = recs.iter().map(|r| r.id.clone()).collect();
            self.move_records(kind, TierKind::Warm, recs).await?;
            let mut r = self.reads.lock();
            for id in &ids {
                r.pending.remove(id);
                r.counts.remove(id);
            }
            tracing::debug!(n = ids.len(), from = %kind, "promoted to warm after reads");
        }
        if flush {
            self.flush_reads().await?;
        }
        Ok(())
    }

    /// Hands the reads counted since the last flush to their tiers, one write each: cold moves
    /// `accessed_at` up and grows `access_count` in one Lance merge-insert, warm appends one
    /// `touch` entry to its write-ahead log (glacier keeps no access times: its records are
    /// not rewritten for a read). Then saves the promotion counters in `state_dir`. Runs by
    /// itself once [`READ_FLUSH_AT`] cold or glacier records are pending and before every
    /// migration; call it before shutting down so that the latest reads are kept (a crash
    /// loses at most the reads since the last flush, never a record).
    pub async fn flush_reads(&self) -> Result<()> {
        let _one = self.flushing.lock().await;
        let pending = std::mem::take(&mut self.reads.lock().pending);
        let mut by_kind: BTreeMap<TierKind, Vec<ReadMark>> = BTreeMap::new();
        for (_, (kind, mark)) in pending {
            by_kind.entry(kind).or_default().push(mark);
        }
        for l in &self.levels {
            let marks = by_kind.remove(&l.kind).unwrap_or_default();
            let done = if marks.is_empty() {
                Ok(())
            } else {
                l.store.record_reads(&marks).await
            };
            if let Err(e) = done {
                let mut r = self.reads.lock();
                r.put_back(marks.into_iter().map(|m| (l.kind, m)));
                r.put_back(
                    std::mem::take(&mut by_kind)
                        .into_iter()
                        .flat_map(|(k, v)| v.into_iter().map(move |m| (k, m))),
                );
                return Err(e);
            }
            l.store.flush_reads().await?;
        }
        self.save_counts()
    }

    /// Writes the promotion counters to `state_dir` when they changed (a new file, fsynced,
    /// renamed over the old one).
    fn save_counts(&self) -> Result<()> {
        let Some(d) = &self.state_dir else {
            return Ok(());
        };
        let saved = {
            let mut r = self.reads.lock();
            if !r.dirty {
                return Ok(());
            }
            r.dirty = false;
            SavedReads {
                promotion_counts: r.counts.clone(),
            }
        };
        let p = d.join(READS_FILE);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(d)?;
            let tmp = p.with_extension("json.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&saved)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)?;
            if let Ok(dir) = std::fs::File::open(d) {
                dir.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            self.reads.lock().dirty = true;
            Error::io(format!("writing {}", p.display()), e)
        })
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
        // Held until the old version is written back, so that a forget cannot pass between.
        let _moving = self.moves.read().await;
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
        self.store_batch_unlocked(vec![new], TierKind::Warm).await?;
        old.superseded_by = Some(id.clone());
        let l = self.level_or_err(kind)?;
        l.store.put(vec![old]).await?;
        Ok(id)
    }

    /// Deletes records by id from every tier; returns how many went.
    pub async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        {
            let mut r = self.reads.lock();
            for id in ids {
                r.pending.remove(id);
                if r.counts.remove(id).is_some() {
                    r.dirty = true;
                }
            }
        }
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

    /// Vector, text or hybrid search over every tier, glacier included. Each tier offers its
    /// best candidates per ranking ([`Tier::candidates`]; glacier its best `k`, from its index,
    /// reading back only the batches that hold them); vector scores (cosine) and BM25 scores
    /// are merged per kind across tiers, and a hybrid request fuses the two global rankings as
    /// `req.fusion` says. Each hit returned counts as a read of the record in its tier (see
    /// the module docs): a recalled record is not demoted for age, and a cold or glacier
    /// record read `promote_after_accesses` times moves back to warm.
    pub async fn search(&self, scope: &Scope, req: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        let hybrid = req.vector.is_some() && req.text.is_some();
        let n = if hybrid {
            (req.k * 4).max(HYBRID_CANDIDATES)
        } else {
            req.k
        };
        let mut by_vec = Vec::new();
        let mut by_text = Vec::new();
        for l in &self.levels {
            // Glacier reads its records back from object storage: its best k per ranking.
            let want = if l.kind == TierKind::Glacier {
                req.k
            } else {
                n
            };
            let t = Instant::now();
            let c = l.store.candidates(scope, req, want).await?;
            l.counters.record(t);
            by_vec.extend(c.by_vector.into_iter().map(|h| (l.kind, h)));
            by_text.extend(c.by_text.into_iter().map(|h| (l.kind, h)));
        }
        // Best first; an id in two tiers (a move a crash interrupted) once, the warmer copy.
        let rank = |mut v: Vec<(TierKind, ScoredRecord)>| {
            v.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
            let mut seen = HashSet::new();
            v.retain(|h| seen.insert(h.1.record.id.clone()));
            v
        };
        let (by_vec, by_text) = (rank(by_vec), rank(by_text));
        let hits: Vec<(TierKind, ScoredRecord)> = if !hybrid {
            let mut hits = if req.vector.is_some() {
                by_vec
            } else {
                by_text
            };
            hits.truncate(req.k);
            hits
        } else {
            let mut recs: HashMap<String, (TierKind, MemoryRecord)> = HashMap::new();
            let mut lists = Vec::new();
            for list in [by_vec, by_text] {
                lists.push(
                    list.iter()
                        .map(|h| (h.1.record.id.clone(), h.1.score))
                        .collect::<Vec<_>>(),
                );
                for (kind, h) in list {
                    let e = recs
                        .entry(h.record.id.clone())
                        .or_insert((kind, h.record.clone()));
                    if kind < e.0 {
                        *e = (kind, h.record);
                    }
                }
            }
            fuse(&lists[0], &lists[1], req.fusion, req.k)?
                .into_iter()
                .filter_map(|(id, score)| {
                    let (kind, record) = recs.remove(&id)?;
                    Some((kind, ScoredRecord { record, score }))
                })
                .collect()
        };
        self.count_hits(&hits).await?;
        Ok(hits.into_iter().map(|h| h.1).collect())
    }

    /// Counts search hits as reads: hot and warm touch theirs in RAM, cold and glacier ones
    /// join the pending batch ([`TieredStore::count_reads`]).
    async fn count_hits(&self, hits: &[(TierKind, ScoredRecord)]) -> Result<()> {
        let now = Timestamp::now();
        let mut cold = Vec::new();
        for l in &self.levels {
            let mine = hits.iter().filter(|h| h.0 == l.kind);
            match l.kind {
                TierKind::Hot | TierKind::Warm => {
                    let marks: Vec<ReadMark> = mine
                        .map(|h| ReadMark {
                            id: h.1.record.id.clone(),
                            tenant: h.1.record.tenant.clone(),
                            reads: 1,
                            at: now,
                        })
                        .collect();
                    if !marks.is_empty() {
                        l.store.record_reads(&marks).await?;
                    }
                }
                TierKind::Cold | TierKind::Glacier => {
                    cold.extend(mine.map(|h| (l.kind, h.1.record.clone())));
                }
            }
        }
        self.count_reads(cold).await
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
        let _moving = self.moves.read().await;
        let (src, dst) = (self.level_or_err(from)?, self.level_or_err(to)?);
        // Only what the source still holds: the caller read these copies before the lock, and
        // a forget (or a delete) may have passed since; its records must not land in `to`.
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let held = held_ids(&*src.store, &ids).await?;
        let mut records = records;
        records.retain(|r| held.contains(&r.id));
        if records.is_empty() {
            return Ok(0);
        }
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
    /// threshold move to the next configured tier. The pending reads are flushed first
    /// ([`TieredStore::flush_reads`]), so a search hit or a get counts as an access.
    pub async fn migrate_at(&self, now: Timestamp) -> Result<MigrationReport> {
        // Reads first, so that no record read since its last access time was written moves.
        self.flush_reads().await?;
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
        let _moving = self.moves.read().await;
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
        let _moving = self.moves.read().await;
        let parts = self
            .snapshots
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: format!(
                    "snapshot `{id}` (unknown, or taken before a forget, which drops the \
                     snapshots holding a cold-tier version)"
                ),
            })?;
        for (kind, sid) in parts {
            self.level_or_err(kind)?.store.restore(&sid).await?;
        }
        Ok(())
    }

    /// Forgets the records of `scope` passing `filter` in every tier, warmest first, for good:
    /// each tier's [`MemoryStore::forget`] (write-ahead log rewritten, Lance versions cleaned
    /// up, archive batches rewritten; see `docs/forget.md`). Returns how many records went (a
    /// record caught in two tiers mid-move counts twice). No store, move, update, snapshot or
    /// restore runs meanwhile, so a record in transit cannot land in a tier after its forget.
    ///
    /// Snapshots: warm's and glacier's lose the forgotten records; the cold tier keeps only its
    /// current Lance version, so the tiered snapshots that name a cold version are dropped
    /// (when a cold tier is configured; first, even if the forget then fails) and
    /// [`TieredStore::restore`] answers not found for them. A forget that fails part-way may
    /// have forgotten some tiers already; running it again completes it.
    pub async fn forget(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        let _exclusive = self.moves.write().await;
        // First, so that no snapshot listed after a crash names a version the cold tier's
        // forget has cleaned up.
        if self.level(TierKind::Cold).is_some() {
            self.drop_snapshots_with(TierKind::Cold)?;
        }
        let mut n = 0;
        for l in &self.levels {
            let t = Instant::now();
            n += l.store.forget(scope, filter).await?;
            l.counters.record(t);
        }
        Ok(n)
    }

    /// Drops the tiered snapshots that have a part in tier `kind`; saves the list (atomically:
    /// a new file renamed over the old one).
    fn drop_snapshots_with(&self, kind: TierKind) -> Result<()> {
        let mut snaps = self.snapshots.lock();
        let before = snaps.len();
        snaps.retain(|_, parts| parts.iter().all(|(k, _)| *k != kind));
        if snaps.len() == before {
            return Ok(());
        }
        tracing::info!(
            dropped = before - snaps.len(),
            "forget: dropped the snapshots holding a cold-tier version"
        );
        let Some(d) = &self.state_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(d)
            .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        let p = d.join(SNAPSHOTS_FILE);
        let tmp = p.with_extension("json.tmp");
        let text = serde_json::to_string(&*snaps).map_err(|e| Error::serde("snapshot list", e))?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)?;
            if let Ok(dir) = std::fs::File::open(d) {
                dir.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| Error::io(format!("forget: rewriting {}", p.display()), e))
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
/// tiers (glacier included, through its index), deletes reach every tier.
#[async_trait::async_trait]
impl MemoryStore for TieredStore {
    fn name(&self) -> &str {
        "tiered"
    }

    fn capabilities(&self) -> StoreCapabilities {
        let mut caps = StoreCapabilities::default();
        for l in &self.levels {
            let c = l.store.capabilities();
            caps.vector_search |= c.vector_search;
            caps.text_search |= c.text_search;
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

    async fn forget(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        TieredStore::forget(self, scope, filter).await
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

    /// [`TieredStore::flush_reads`]: the reads counted since the last flush.
    async fn flush(&self) -> Result<()> {
        self.flush_reads().await
    }
}
