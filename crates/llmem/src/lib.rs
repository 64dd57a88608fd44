//! `llmem`: the facade. Depend on this crate for the whole product, or on the `llmem-*` crates
//! for just the parts you need; everything here is a re-export.
//!
//! - [`core`]: messages, records, filters, the plugin traits (`llmem-core`)
//! - [`tokens`]: exact token counting, the model catalog, cost tracking (`llmem-tokens`)
//! - [`window`]: short-term memory and prompt layouts (`llmem-window`)
//! - [`compress`]: compression strategies and summarisers (`llmem-compress`)
//! - [`tiers`]: long-term tiered storage (`llmem-tiers`)
//! - [`providers`]: model providers (`llmem-providers`)

pub use llmem_compress as compress;
pub use llmem_core as core;
pub use llmem_providers as providers;
pub use llmem_tiers as tiers;
pub use llmem_tokens as tokens;
pub use llmem_window as window;

pub use llmem_core::{Error, MemoryRecord, Message, Result, Role};
