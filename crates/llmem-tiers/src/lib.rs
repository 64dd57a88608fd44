//! llmem-tiers: tiered long-term memory.
//!
//! - [`HotStore`]: the working set, scored against a query in one pass (CPU, or a
//!   [`VectorScorer`](llmem_core::VectorScorer) engine such as ONNX Runtime on a GPU).
//! - [`WarmStore`]: RAM, exact vector search, BM25, filters, LRU demotion, write-ahead log.
//! - `ColdStore` (feature `lance`): a Lance dataset on disk or object storage, with an ANN
//!   index past a size.
//! - `SharedStore` (feature `lance`): replicas over one cold tier on object storage, writes
//!   through, reads from a cache refreshed incrementally within a staleness bound.
//! - `GlacierStore` (feature `glacier`): zstd (optionally AES-256-GCM) batches on object storage.
//! - [`TieredStore`]: one memory over them, with migration, retention, archive and snapshots.

#[cfg(feature = "lance")]
pub mod cold;
#[cfg(feature = "glacier")]
pub mod glacier;
#[cfg(feature = "glacier")]
mod glacier_index;
pub mod hot;
#[cfg(any(feature = "glacier", feature = "lance"))]
pub mod objects;
#[cfg(feature = "lance")]
pub mod shared;
pub mod text;
pub mod tier;
pub mod tiered;
pub mod vector;
pub mod wal;
pub mod warm;

#[cfg(feature = "lance")]
pub use cold::{ColdConfig, ColdIndex, ColdStore};
#[cfg(feature = "glacier")]
pub use glacier::{GlacierConfig, GlacierStore};
pub use hot::HotStore;
#[cfg(feature = "lance")]
pub use shared::{SharedConfig, SharedStore};
pub use tier::{Candidates, DynTier, ReadMark, Tier, TierKind};
pub use tiered::{
    MigrationPolicy, MigrationReport, RetentionPolicy, TierMetrics, TieredBuilder, TieredStore,
};
pub use warm::{WarmConfig, WarmStore};
