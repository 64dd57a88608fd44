//! What a tier adds to [`MemoryStore`]: snapshots, and the names of the four tiers.

use std::sync::Arc;

use async_trait::async_trait;
use llmem_core::{Error, Filter, MemoryRecord, MemoryStore, Result};
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
}

/// Refuses `records` whose ids `tier` holds for another tenant.
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
}
