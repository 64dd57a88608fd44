//! The long-term store `[tiers]` describes, for [`crate::MemoryManager`], [`crate::Sessions`]
//! and the command line's store commands, and the data directory's layout:
//!
//! ```text
//! <tiers.dir>/memory/     the warm tier's write-ahead log
//! <tiers.dir>/cold/       the cold tier's Lance dataset (tiers.cold)
//! <tiers.dir>/sessions/   saved sessions (crate::Sessions)
//! <tiers.dir>/snapshots…  the snapshot list (TieredStore)
//! ```
//!
//! Directories written by earlier layouts are moved into place when the store opens
//! ([`migrate_layout`]).
//!
//! - Only the warm tier (the default): a [`WarmStore`], persistent under `tiers.dir/memory`.
//! - With `tiers.cold` or `tiers.glacier`: a [`TieredStore`] over warm (`tiers.dir/memory`),
//!   cold (a Lance dataset in `tiers.dir/cold`) and glacier (`tiers.glacier`). The manager
//!   sees one [`MemoryStore`]: writes go to warm, warm's least recently used records move to
//!   cold past `warm_max_items`, searches span warm and cold, reads of cold or glacier records
//!   count toward promotion, and the age thresholds run when the store opens and then at most
//!   once an hour while it is used.
//!
//! The cold and glacier tiers open asynchronously, so the tiered store opens on first use;
//! [`open_store`] itself stays synchronous like the managers that call it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use llmem_core::{
    Error, Filter, MemoryRecord, MemoryStore, Result, Scope, ScoredRecord, SearchRequest,
    StoreCapabilities, StoreStats,
};
use llmem_tiers::{MigrationPolicy, TieredStore, WarmConfig, WarmStore};
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::config::TierSettings;

/// How often, at most, the age thresholds run.
const MIGRATE_EVERY: Duration = Duration::from_secs(3600);

/// The long-term store `[tiers]` describes: the warm tier alone, or the tiered store (opened
/// on first use).
pub fn open_store(tiers: &TierSettings) -> Result<Arc<dyn MemoryStore>> {
    if tiers.shared {
        return open_shared(tiers);
    }
    let warm = open_warm(tiers)?;
    if !tiers.tiered() {
        return Ok(Arc::new(warm));
    }
    Ok(Arc::new(ConfiguredTiers {
        settings: tiers.clone(),
        warm: Arc::new(warm),
        store: OnceCell::new(),
        migrated: Mutex::new(None),
    }))
}

/// The tiered store `[tiers]` describes, opened now, for tools that work on the tiers
/// themselves (placement, snapshots, metrics: `llmem store`, `search`, `stats`, …); the same
/// directories as [`open_store`], so they see what the managers stored.
pub async fn open_tiered(tiers: &TierSettings) -> Result<TieredStore> {
    if tiers.shared {
        return Err(Error::config(
            "tiers.shared",
            "the tier tools work on one process's tiers; shared memory is read and written \
             through a replica (`llmem serve`: /v1/memories)",
        ));
    }
    assemble(tiers, Arc::new(open_warm(tiers)?)).await
}

/// Brings a data directory of an earlier layout to the current one: the warm tier's log was
/// kept in `warm/` and is now in `memory/`. Does nothing when there is nothing to move or the
/// new place exists already; an error names both paths.
pub(crate) fn migrate_layout(dir: &Path) -> Result<()> {
    let (old, new) = (dir.join("warm"), dir.join("memory"));
    if old.is_dir() && !new.exists() {
        std::fs::rename(&old, &new).map_err(|e| {
            Error::io(
                format!(
                    "moving the warm tier's log from {} to {}",
                    old.display(),
                    new.display()
                ),
                e,
            )
        })?;
        tracing::info!(from = %old.display(), to = %new.display(), "data directory migrated");
    }
    Ok(())
}

/// The warm tier: its write-ahead log in `tiers.dir/memory`, its capacity.
fn open_warm(tiers: &TierSettings) -> Result<WarmStore> {
    let mut cfg = WarmConfig::default();
    if let Some(dir) = &tiers.dir {
        migrate_layout(dir)?;
        cfg = cfg.persist_in(dir.join("memory"));
    }
    if let Some(n) = tiers.warm_max_items {
        cfg = cfg.max_items(n);
    }
    WarmStore::open(cfg)
}

/// Warm with cold and glacier as configured, the migration policy and the snapshot list.
async fn assemble(t: &TierSettings, warm: Arc<WarmStore>) -> Result<TieredStore> {
    let mut b = TieredStore::builder().warm(warm).policy(policy(t));
    if let Some(dir) = &t.dir {
        b = b.state_dir(dir);
    }
    if t.cold || t.cold_url.is_some() {
        b = b.cold(open_cold(t).await?);
    }
    if let Some(url) = &t.glacier {
        b = b.glacier(open_glacier(url).await?);
    }
    b.build()
}

/// The migration policy of `[tiers]` (0 turns a threshold off).
pub fn policy(tiers: &TierSettings) -> MigrationPolicy {
    let hours = |h: u64| (h > 0).then(|| Duration::from_secs(h * 3600));
    MigrationPolicy {
        hot_to_warm: None,
        warm_to_cold: hours(tiers.warm_to_cold_hours),
        cold_to_glacier: hours(tiers.cold_to_glacier_days * 24),
        promote_after_accesses: (tiers.promote_after_reads > 0)
            .then_some(tiers.promote_after_reads),
    }
}

/// Warm, cold and glacier as `[tiers]` says, opened on first use.
#[derive(Debug)]
struct ConfiguredTiers {
    settings: TierSettings,
    warm: Arc<WarmStore>,
    store: OnceCell<TieredStore>,
    /// When the age thresholds last ran.
    migrated: Mutex<Option<Instant>>,
}

impl ConfiguredTiers {
    async fn tiers(&self) -> Result<&TieredStore> {
        let store = self
            .store
            .get_or_try_init(|| assemble(&self.settings, self.warm.clone()))
            .await?;
        let due = self
            .migrated
            .lock()
            .is_none_or(|t| t.elapsed() >= MIGRATE_EVERY);
        if due {
            *self.migrated.lock() = Some(Instant::now());
            // A failed migration leaves every record where it was: report it, do not fail
            // the operation that triggered it.
            match store.migrate().await {
                Ok(r) if r.total() > 0 => tracing::info!(moved = r.total(), "tiers migrated"),
                Ok(_) => {}
                Err(e) => tracing::warn!("tier migration failed (records stay put): {e}"),
            }
        }
        Ok(store)
    }
}

/// The cold tier's settings: `tiers.cold_url`, else `<tiers.dir>/cold`.
#[cfg(feature = "lance")]
fn cold_config(t: &TierSettings) -> Result<llmem_tiers::ColdConfig> {
    let mut cfg = match (&t.cold_url, &t.dir) {
        (Some(url), _) => llmem_tiers::ColdConfig::at(url),
        (None, Some(dir)) => llmem_tiers::ColdConfig::new(dir.join("cold")),
        (None, None) => {
            return Err(Error::config(
                "tiers.cold",
                "set tiers.dir (the cold tier lives in <dir>/cold) or tiers.cold_url",
            ));
        }
    };
    cfg.dimensions = Some(t.dimensions);
    cfg.index = llmem_tiers::ColdIndex::parse(&t.cold_index)
        .map_err(|e| Error::config("tiers.cold_index", e.to_string()))?;
    if t.cold_nprobes == 0 {
        return Err(Error::config(
            "tiers.cold_nprobes",
            "0 probes no partition; use at least 1 (20 is the default)",
        ));
    }
    cfg.nprobes = t.cold_nprobes;
    cfg.refine_factor = t.cold_refine_factor;
    Ok(cfg)
}

#[cfg(feature = "lance")]
async fn open_cold(t: &TierSettings) -> Result<Arc<dyn llmem_tiers::Tier>> {
    Ok(Arc::new(
        llmem_tiers::ColdStore::open(cold_config(t)?).await?,
    ))
}

/// Shared memory for replicas (`tiers.shared`): writes go through to `tiers.cold_url`.
#[cfg(feature = "lance")]
fn open_shared(t: &TierSettings) -> Result<Arc<dyn MemoryStore>> {
    let mut cfg = llmem_tiers::SharedConfig::new(cold_config(t)?);
    cfg.staleness = Duration::from_millis(t.shared_staleness_ms);
    // The cache survives a restart in tiers.dir, when one is set.
    cfg.cache_dir = t.dir.as_ref().map(|d| d.join("shared"));
    Ok(Arc::new(llmem_tiers::SharedStore::new(cfg)?))
}

#[cfg(not(feature = "lance"))]
fn open_shared(_: &TierSettings) -> Result<Arc<dyn MemoryStore>> {
    Err(Error::config(
        "tiers.shared",
        "this build has no cold tier to share: build llmem with the `lance` feature",
    ))
}

#[cfg(not(feature = "lance"))]
async fn open_cold(_: &TierSettings) -> Result<Arc<dyn llmem_tiers::Tier>> {
    Err(Error::config(
        "tiers.cold",
        "this build has no cold tier: build llmem with the `lance` feature",
    ))
}

#[cfg(feature = "glacier")]
async fn open_glacier(url: &str) -> Result<Arc<dyn llmem_tiers::Tier>> {
    let cfg = llmem_tiers::GlacierConfig::new(url);
    Ok(Arc::new(llmem_tiers::GlacierStore::open(cfg).await?))
}

#[cfg(not(feature = "glacier"))]
async fn open_glacier(_: &str) -> Result<Arc<dyn llmem_tiers::Tier>> {
    Err(Error::config(
        "tiers.glacier",
        "this build has no glacier tier: build llmem with the `glacier` feature",
    ))
}

#[async_trait]
impl MemoryStore for ConfiguredTiers {
    fn name(&self) -> &str {
        "tiered"
    }

    fn capabilities(&self) -> StoreCapabilities {
        // Warm searches by vector and text; cold and glacier add persistence.
        StoreCapabilities {
            vector_search: true,
            text_search: true,
            persistent: self.settings.dir.is_some(),
            snapshots: true,
        }
    }

    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        self.tiers().await?.put(records).await
    }

    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        MemoryStore::get(self.tiers().await?, scope, ids).await
    }

    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        MemoryStore::delete(self.tiers().await?, scope, ids).await
    }

    async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        MemoryStore::query(self.tiers().await?, scope, filter, limit).await
    }

    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        MemoryStore::count(self.tiers().await?, scope, filter).await
    }

    async fn delete_by_filter(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        MemoryStore::delete_by_filter(self.tiers().await?, scope, filter).await
    }

    async fn forget(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        MemoryStore::forget(self.tiers().await?, scope, filter).await
    }

    async fn search(&self, scope: &Scope, request: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        MemoryStore::search(self.tiers().await?, scope, request).await
    }

    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        self.tiers().await?.scan_all(filter, limit).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.tiers().await?.stats().await
    }

    async fn flush(&self) -> Result<()> {
        // Tiers never opened have nothing to write: do not open them for this.
        match self.store.get() {
            Some(t) => t.flush_reads().await,
            None => Ok(()),
        }
    }
}
