//! `llmem`: the facade. Depend on this crate for the whole product, or on the `llmem-*` crates
//! for just the parts you need.
//!
//! The product:
//! - [`MemoryManager`]: one conversation's memory (seed 002's API over seed 001's tiers): add
//!   messages, get a budgeted context with the relevant long-term memories, see the savings.
//! - [`Sessions`]: many users' sessions in one process, isolated and resumable.
//! - [`Memory`]: seed 000's manual blocks: `summarize`, `save`/`load`, `gc`, `compile`.
//! - [`Config`]: `llmem.toml` with `LLMEM_*` overrides and presets.
//! - [`tiered`]: the long-term store `[tiers]` describes (warm, or warm over cold and glacier).
//! - [`when`]: dates as people say them, and relative times (`yesterday`) resolved.
//! - [`taxonomy`]: broader terms of memories' nouns from WordNet ("violin" → "instrument").
//! - [`late`]: late interaction, memories re-ranked by their token vectors' match with a
//!   question.
//!
//! The parts, re-exported:
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

pub mod config;
pub mod facts;
pub mod late;
pub mod longterm;
pub mod manager;
pub mod memory;
pub mod sessions;
pub mod taxonomy;
pub mod tiered;
pub mod when;

pub use config::Config;
pub use llmem_core::{Error, MemoryRecord, Message, Result, Role, Usage};
pub use llmem_window::{Block, Load};
pub use manager::{MemoryManager, Prepared, Providers, SessionState, Stats};
pub use memory::{BlockScope, Loaded, Memory};
pub use sessions::{SessionHandle, Sessions};
