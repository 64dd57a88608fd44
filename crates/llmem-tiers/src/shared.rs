//! Memory shared by replicas (feature `lance`): several processes, each with a
//! [`SharedStore`] over one cold tier on object storage ([`ColdConfig::url`]).
//!
//! - **Writes go through.** [`MemoryStore::put`], `delete` and `forget` commit to the shared
//!   Lance dataset before they return (Lance's conditional-put commit; a lost race is
//!   rebased and retried, see [`crate::cold`]). An acknowledged write is in the bucket: a
//!   replica killed the next instant loses nothing.
//! - **Reads come from a cache.** Each replica keeps the dataset's rows in an in-memory
//!   [`WarmStore`] (vector search, BM25, filters) and brings it up to the dataset's latest
//!   version before a read when its view is older than [`SharedConfig::staleness`]
//!   (default [`DEFAULT_STALENESS`]). A replica's own writes are in its cache at once.
//!   **Bound:** a read that starts more than `staleness` after another replica's write was
//!   acknowledged sees it (plus the time of the refresh itself, which the read waits for).
//! - **The refresh is incremental.** Lance fragment ids only grow and a fragment's rows never
//!   change; rows leave a fragment only through its deletion file. So a refresh reads the
//!   rows of fragments it has not seen (one scan over all of them), re-reads only the ids of
//!   fragments whose deletion file changed, and drops from the cache the ids that no fragment
//!   holds any more. The BM25 index and the vectors are updated record by record, never
//!   rebuilt. With [`SharedConfig::cache_dir`] the cache is kept on local disk (a warm-tier log)
//!   with the view it reflects (`view.json`, saved after a refresh at most every 30 s and by
//!   [`MemoryStore::flush`]): a restarted replica reads only the fragments written since, not
//!   the dataset. Records in the cache that the saved view does not account for (written after
//!   it was saved) are dropped at open and read again from their fragments. Without it, the
//!   cache is filled by one scan of the dataset at open.
//! - Not kept: read counts (`accessed_at`, `access_count`) stay in each replica's cache, and
//!   the age thresholds of [`crate::TieredStore`] do not run on shared memory.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow_array::{RecordBatch, StringArray, UInt64Array};
use async_trait::async_trait;
use lance::Dataset;
use llmem_core::{
    Error, Filter, MemoryRecord, MemoryStore, Result, Scope, ScoredRecord, SearchRequest,
    StoreCapabilities, StoreStats,
};
use tokio::sync::OnceCell;

use crate::cold::{col, from_batch, lance_err};
use crate::{ColdConfig, ColdStore, WarmConfig, WarmStore};

/// How old a replica's view of the shared memory may be when a read starts.
pub const DEFAULT_STALENESS: Duration = Duration::from_secs(1);

/// Settings of a [`SharedStore`].
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// The shared dataset: `url` set (object storage); `shared` is set by the store.
    pub cold: ColdConfig,
    /// See [`DEFAULT_STALENESS`].
    pub staleness: Duration,
    /// Fragments past which a write compacts the dataset (default [`COMPACT_AT`]).
    pub compact_at: usize,
    /// Where the cache is kept between runs (see the module docs); `None`: in RAM only.
    pub cache_dir: Option<PathBuf>,
}

impl SharedConfig {
    pub fn new(cold: ColdConfig) -> Self {
        SharedConfig {
            cold,
            staleness: DEFAULT_STALENESS,
            compact_at: COMPACT_AT,
            cache_dir: None,
        }
    }
}

/// What this replica has read of one fragment.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Frag {
    /// The deletion file's (id, read version) when read.
    deletion: Option<(u64, u64)>,
    /// (id, tenant) of its live rows when read.
    rows: Vec<(String, String)>,
}

/// The dataset version the cache reflects and what it read of each fragment.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct View {
    version: u64,
    frags: HashMap<u64, Frag>,
    /// The cache on disk has been checked against this view (see the module docs).
    #[serde(skip)]
    checked: bool,
}

impl View {
    /// The ids of the rows its fragments hold.
    fn held(&self) -> HashSet<&str> {
        self.frags
            .values()
            .flat_map(|f| f.rows.iter().map(|r| r.0.as_str()))
            .collect()
    }
}

/// A fragment's deletion file as a view records it: (id, read version).
fn deletion(m: &lance::table::format::Fragment) -> Option<(u64, u64)> {
    m.deletion_file.as_ref().map(|d| (d.id, d.read_version))
}

/// How often, at most, a replica saves its view after a refresh.
const SAVE_VIEW_EVERY: Duration = Duration::from_secs(30);

/// One replica's handle on shared memory (see the module docs).
#[derive(Debug)]
pub struct SharedStore {
    cfg: SharedConfig,
    cold: OnceCell<ColdStore>,
    cache: WarmStore,
    view: tokio::sync::Mutex<View>,
    /// When the last refresh started.
    fresh_at: parking_lot::Mutex<Option<Instant>>,
    /// This replica's own writes, in its cache before any refresh has seen their fragment:
    /// (id, tenant, a version at or after their commit). A refresh at that version or later
    /// that finds no fragment holding one drops it (it was deleted or forgotten meanwhile,
    /// perhaps by another replica, before this one ever read its fragment).
    unseen: parking_lot::Mutex<Vec<(String, String, u64)>>,
    compacted_at: parking_lot::Mutex<Option<Instant>>,
    /// When the view was last saved (`cache_dir`).
    saved_at: parking_lot::Mutex<Option<Instant>>,
}

/// Past this many fragments (one per write) a replica compacts the dataset after a write.
pub const COMPACT_AT: usize = 128;

/// Reads counted in a refresh, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    /// Fragments read whole (new since the last refresh).
    pub fragments_read: usize,
    /// Fragments whose ids were read again (rows deleted there).
    pub fragments_rechecked: usize,
    /// Records added or replaced in the cache.
    pub upserted: usize,
    /// Records dropped from the cache.
    pub removed: usize,
}

impl SharedStore {
    /// A store over `cfg.cold`; the dataset is opened (and the cache filled) on first use,
    /// so that this stays synchronous.
    pub fn new(mut cfg: SharedConfig) -> Result<Self> {
        if cfg.cold.url.is_none() {
            return Err(llmem_core::Error::config(
                "tiers.cold_url",
                "shared memory needs the cold tier on object storage (s3://, gs://, az://): \
                 replicas on several machines cannot share a local directory",
            ));
        }
        cfg.cold.shared = true;
        let mut warm = WarmConfig::default().named("shared-cache");
        let mut view = View::default();
        if let Some(dir) = &cfg.cache_dir {
            warm = warm.persist_in(dir.join("cache"));
            // A view that cannot be read is no view: the cache is emptied at the first refresh
            // and filled again from the dataset.
            view = std::fs::read(dir.join("view.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
        }
        Ok(SharedStore {
            cache: WarmStore::open(warm)?,
            cfg,
            cold: OnceCell::new(),
            view: tokio::sync::Mutex::new(view),
            fresh_at: parking_lot::Mutex::new(None),
            unseen: parking_lot::Mutex::new(Vec::new()),
            compacted_at: parking_lot::Mutex::new(None),
            saved_at: parking_lot::Mutex::new(None),
        })
    }

    async fn cold(&self) -> Result<&ColdStore> {
        self.cold
            .get_or_try_init(|| ColdStore::open(self.cfg.cold.clone()))
            .await
    }

    /// Compacts the dataset when it has more than [`SharedConfig::compact_at`] fragments, at most once a
    /// minute per replica. The write that triggers it is already committed: a failure (a
    /// conflict with another replica's compaction) is logged, and the next write tries again.
    async fn compact_now_and_then(&self, cold: &ColdStore) {
        if cold.fragments().await <= self.cfg.compact_at
            || self
                .compacted_at
                .lock()
                .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        *self.compacted_at.lock() = Some(Instant::now());
        let t = Instant::now();
        match cold.compact().await {
            Ok(n) => tracing::info!(
                fragments = n,
                ms = t.elapsed().as_millis() as u64,
                "shared memory compacted"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "shared memory: compaction failed (the next write tries again)")
            }
        }
    }

    /// Drops from the cache kept on disk the records `view` does not account for (nor this
    /// replica's writes since it opened); returns how many. A view that names a record the
    /// cache lacks (a cache directory removed by hand) is dropped, so that the first refresh
    /// reads the whole dataset.
    async fn check_cache(&self, view: &mut View) -> Result<usize> {
        let cached = self.cache.scan_all(&Filter::All, None).await?;
        let ids: HashSet<&str> = cached.iter().map(|r| r.id.as_str()).collect();
        let complete = view
            .frags
            .values()
            .all(|f| f.rows.iter().all(|r| ids.contains(r.0.as_str())));
        if !complete {
            tracing::warn!(
                "shared memory: the cache on disk misses records its view names; reading the dataset again"
            );
            *view = View::default();
        }
        let written: HashSet<String> = self.unseen.lock().iter().map(|u| u.0.clone()).collect();
        let held = view.held();
        let unknown: Vec<(String, String)> = cached
            .into_iter()
            .filter(|r| !held.contains(r.id.as_str()) && !written.contains(&r.id))
            .map(|r| (r.id, r.tenant))
            .collect();
        self.uncache(unknown).await
    }

    /// Drops these (id, tenant) from the cache; returns how many were there.
    async fn uncache(&self, rows: Vec<(String, String)>) -> Result<usize> {
        let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
        for (id, tenant) in rows {
            by_tenant.entry(tenant).or_default().push(id);
        }
        let mut n = 0;
        for (tenant, ids) in by_tenant {
            n += self.cache.delete(&Scope::tenant(tenant), &ids).await?;
        }
        Ok(n)
    }

    /// Saves `view` next to the cache (`cache_dir`), through a temporary file.
    fn save_view(&self, view: &View) -> Result<()> {
        let Some(dir) = &self.cfg.cache_dir else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(view).map_err(|e| Error::serde("shared view", e))?;
        let (tmp, path) = (dir.join("view.json.tmp"), dir.join("view.json"));
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("saving {}", path.display()), e))?;
        *self.saved_at.lock() = Some(Instant::now());
        Ok(())
    }

    /// The staleness bound of reads.
    pub fn staleness(&self) -> Duration {
        self.cfg.staleness
    }

    /// The dataset version the cache reflects.
    pub async fn version(&self) -> u64 {
        self.view.lock().await.version
    }

    async fn fresh(&self) -> Result<()> {
        let stale = self
            .fresh_at
            .lock()
            .is_none_or(|t| t.elapsed() >= self.cfg.staleness);
        if stale {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Brings the cache to the dataset's latest version now (see the module docs).
    pub async fn refresh(&self) -> Result<Refreshed> {
        let started = Instant::now();
        let mut view = self.view.lock().await;
        // Another read refreshed while this one waited for the lock.
        if self.fresh_at.lock().is_some_and(|t| t >= started) {
            return Ok(Refreshed::default());
        }
        let mut out = Refreshed::default();
        if !view.checked {
            out.removed += self.check_cache(&mut view).await?;
            view.checked = true;
        }
        let Some(ds) = self.cold().await?.latest().await? else {
            *self.fresh_at.lock() = Some(started);
            return Ok(out);
        };
        if ds.version().version == view.version {
            *self.fresh_at.lock() = Some(started);
            return Ok(out);
        }
        let frags = ds.get_fragments();
        let current: HashSet<u64> = frags.iter().map(|f| f.id() as u64).collect();
        let mut maybe_gone: Vec<(String, String)> = Vec::new();
        let gone_frags: Vec<u64> = view
            .frags
            .keys()
            .filter(|id| !current.contains(id))
            .copied()
            .collect();
        for id in gone_frags {
            if let Some(f) = view.frags.remove(&id) {
                maybe_gone.extend(f.rows);
            }
        }
        let (mut new, mut changed) = (Vec::new(), Vec::new());
        for f in &frags {
            let meta = f.metadata();
            match view.frags.get(&(f.id() as u64)) {
                None => new.push(meta.clone()),
                Some(known) if known.deletion != deletion(meta) => changed.push(meta.clone()),
                Some(_) => {}
            }
        }
        if !new.is_empty() {
            out.fragments_read = new.len();
            // Recorded only once their rows are read: a failed read leaves them new.
            let entries: Vec<(u64, Option<(u64, u64)>)> =
                new.iter().map(|m| (m.id, deletion(m))).collect();
            let b = scan_fragments(&ds, new, None).await?;
            let (records, addrs) = (from_batch(&b)?, row_addresses(&b)?);
            for (id, deletion) in entries {
                view.frags.entry(id).or_insert(Frag {
                    deletion,
                    rows: Vec::new(),
                });
            }
            for (r, a) in records.iter().zip(&addrs) {
                if let Some(f) = view.frags.get_mut(&(a >> 32)) {
                    f.rows.push((r.id.clone(), r.tenant.clone()));
                }
            }
            out.upserted = records.len();
            self.cache.put(records).await?;
        }
        if !changed.is_empty() {
            out.fragments_rechecked = changed.len();
            let b = scan_fragments(&ds, changed.clone(), Some(&["id", "tenant"])).await?;
            let (ids, tenants) = (
                col::<StringArray>(&b, "id")?,
                col::<StringArray>(&b, "tenant")?,
            );
            let mut live: HashMap<u64, Vec<(String, String)>> = HashMap::new();
            for (i, addr) in row_addresses(&b)?.into_iter().enumerate() {
                live.entry(addr >> 32)
                    .or_default()
                    .push((ids.value(i).to_owned(), tenants.value(i).to_owned()));
            }
            for m in changed {
                if let Some(f) = view.frags.get_mut(&m.id) {
                    let now = live.remove(&m.id).unwrap_or_default();
                    let keep: HashSet<&str> = now.iter().map(|r| r.0.as_str()).collect();
                    maybe_gone.extend(
                        f.rows
                            .iter()
                            .filter(|r| !keep.contains(r.0.as_str()))
                            .cloned(),
                    );
                    f.rows = now;
                    f.deletion = deletion(&m);
                }
            }
        }
        let version = ds.version().version;
        maybe_gone.extend(
            self.unseen
                .lock()
                .extract_if(.., |(_, _, v)| *v <= version)
                .map(|(id, tenant, _)| (id, tenant)),
        );
        if !maybe_gone.is_empty() {
            let held = view.held();
            maybe_gone.retain(|(id, _)| !held.contains(id.as_str()));
            out.removed += self.uncache(maybe_gone).await?;
        }
        view.version = version;
        *self.fresh_at.lock() = Some(started);
        let due = self
            .saved_at
            .lock()
            .is_none_or(|t| t.elapsed() >= SAVE_VIEW_EVERY);
        if due {
            self.save_view(&view)?;
        }
        tracing::debug!(version = view.version, ?out, "shared memory refreshed");
        Ok(out)
    }
}

/// The live rows of `frags` (deleted rows left out), all columns or `columns`, with their row
/// addresses (`_rowaddr`: the fragment id in the high 32 bits).
async fn scan_fragments(
    ds: &Dataset,
    frags: Vec<lance::table::format::Fragment>,
    columns: Option<&[&str]>,
) -> Result<RecordBatch> {
    let mut scan = ds.scan();
    scan.with_fragments(frags);
    scan.with_row_address();
    if let Some(c) = columns {
        scan.project(c).map_err(|e| lance_err("scan", e))?;
    }
    scan.try_into_batch()
        .await
        .map_err(|e| lance_err("reading changed fragments", e))
}

/// The `_rowaddr` column of a [`scan_fragments`] batch.
fn row_addresses(b: &RecordBatch) -> Result<Vec<u64>> {
    Ok(col::<UInt64Array>(b, "_rowaddr")?.values().to_vec())
}

#[async_trait]
impl MemoryStore for SharedStore {
    fn name(&self) -> &str {
        "shared"
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities {
            vector_search: true,
            text_search: true,
            persistent: true,
            snapshots: false,
        }
    }

    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let records = crate::tier::last_write_wins(records);
        let cold = self.cold().await?;
        // An id another tenant holds is refused, as in every tier (checked on this replica's
        // view). Records this replica knows are merged on `id` (an update always follows a
        // read, which brought the record here); the others, fresh ids, are appended without
        // reading the dataset.
        crate::tier::check_owners(&self.cache, &records).await?;
        let mut by_tenant: HashMap<&str, Vec<String>> = HashMap::new();
        for r in &records {
            by_tenant.entry(&r.tenant).or_default().push(r.id.clone());
        }
        let mut known = HashSet::new();
        for (tenant, ids) in by_tenant {
            for r in self.cache.get(&Scope::tenant(tenant), &ids).await? {
                known.insert(r.id);
            }
        }
        let (update, new): (Vec<MemoryRecord>, Vec<MemoryRecord>) =
            records.iter().cloned().partition(|r| known.contains(&r.id));
        if !update.is_empty() {
            cold.put(update).await?;
        }
        if !new.is_empty() {
            cold.append_new(new).await?;
        }
        let v = cold.version().await;
        self.unseen
            .lock()
            .extend(records.iter().map(|r| (r.id.clone(), r.tenant.clone(), v)));
        self.cache.put(records).await?;
        self.compact_now_and_then(cold).await;
        Ok(())
    }

    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        self.fresh().await?;
        self.cache.get(scope, ids).await
    }

    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        let n = self.cold().await?.delete(scope, ids).await?;
        self.cache.delete(scope, ids).await?;
        Ok(n)
    }

    async fn forget(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        let n = self.cold().await?.forget(scope, filter).await?;
        self.cache.forget(scope, filter).await?;
        Ok(n)
    }

    async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        self.fresh().await?;
        self.cache.query(scope, filter, limit).await
    }

    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        self.fresh().await?;
        self.cache.count(scope, filter).await
    }

    async fn search(&self, scope: &Scope, request: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        self.fresh().await?;
        self.cache.search(scope, request).await
    }

    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        self.fresh().await?;
        self.cache.scan_all(filter, limit).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.fresh().await?;
        self.cache.stats().await
    }

    /// Saves the view the cache reflects (`cache_dir`), so that a restart reads only what
    /// was written since.
    async fn flush(&self) -> Result<()> {
        let view = self.view.lock().await;
        if view.checked {
            self.save_view(&view)?;
        }
        Ok(())
    }
}
