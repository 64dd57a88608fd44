//! What a tier adds to [`MemoryStore`]: snapshots, and the names of the four tiers.

use std::sync::Arc;

use async_trait::async_trait;
use llmem_core::{Error, MemoryStore, Result};
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
}
