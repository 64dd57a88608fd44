//! `llmem`: the facade. Depend on this crate for the whole product, or on the `llmem-*` crates
//! for just the parts you need.
//!
//! The product, for applications:
//! - [`MemoryManager`]: for an application that owns a conversation: add each message, get a
//!   context under the token budget with the long-term memories the question needs, read the
//!   savings (net of what its own summaries and fact extraction cost) and keep spending under
//!   a `[budget]` ([`BudgetSettings`], [`BudgetScope`]; [`Budgets`] is what managers share).
//! - [`Sessions`]: for a server: many users' [`MemoryManager`]s in one process, isolated and
//!   resumable.
//! - [`Memory`]: for a program that lays out one prompt by hand: named blocks under a budget
//!   that it can summarise, save, load by a query, prune against a question and compile. It
//!   uses the same token counters, compressor and long-term memory ranking as
//!   [`MemoryManager`].
//! - [`Config`]: `llmem.toml` with `LLMEM_*` overrides and presets; [`Plugins`] adds the
//!   provider kinds of the plugin crates a program links, so `llmem.toml` can name them;
//!   [`local_embedder`] is the embedder that needs no server (MiniLM on ONNX Runtime).
//! - [`open_store`], [`open_tiered`]: the long-term store `[tiers]` describes, for tools that
//!   work on the stored memories themselves.
//! - [`VectorModel`]: the model whose vectors a data directory holds (checked when providers
//!   are built from the config); [`reembed()`] embeds every memory again after a change of
//!   model (`llmem reembed`).
//! - [`when`]: dates as people write them, and relative times (`yesterday`) resolved.
//!
//! The parts, re-exported:
//! - [`core`]: messages, records, filters, the plugin traits (`llmem-core`)
//! - [`tokens`]: exact token counting, the model catalog, cost tracking (`llmem-tokens`)
//! - [`window`]: short-term memory and prompt layouts (`llmem-window`)
//! - [`compress`]: compression strategies and summarisers (`llmem-compress`)
//! - [`tiers`]: long-term tiered storage (`llmem-tiers`)
//! - [`providers`]: model providers (`llmem-providers`)
//!
//! Everything else is private. The `internals` feature exposes, under [`internals`], the
//! ranking and prompt-building pieces that the crate's own tests and benches measure; it is not
//! a stable API.

pub use llmem_compress as compress;
pub use llmem_core as core;
pub use llmem_providers as providers;
pub use llmem_tiers as tiers;
pub use llmem_tokens as tokens;
pub use llmem_window as window;

mod config;
mod consolidate;
mod deferred;
mod facts;
mod forget;
mod late;
mod longterm;
mod manager;
mod memory;
mod plugins;
mod reembed;
mod sessions;
mod storage;
mod taxonomy;
pub mod when;

pub use config::{
    BudgetScope, BudgetSettings, Config, FactMode, MemorySettings, RetrievalScope,
    RetrievalSettings, ServerSettings, SummarizerMode, TierSettings, TokenSettings,
};
pub use consolidate::{
    Consolidated, ConsolidationSettings, ConsolidationWindow, SOURCES, WINDOW, consolidate,
    consolidation_users,
};
pub use deferred::{ATTEMPTS, DeferredSettings, DeferredStats, DeferredStore};
pub use forget::{Forgotten, UPDATED_AT, UPDATED_BY, forget_user, update_memory};
pub use llmem_core::{Error, MemoryRecord, Message, Result, Role, Usage};
pub use llmem_window::{Block, Load};
pub use longterm::Recalled;
pub use manager::{Budgets, MemoryManager, Prepared, Providers, SessionState, Stats};
pub use memory::{BlockScope, Loaded, Memory};
pub use plugins::{Plugins, local_embedder};
pub use reembed::{EMBEDDER_FILE, Reembedded, VectorModel, reembed};
pub use sessions::{SessionHandle, Sessions};
pub use storage::{open_store, open_tiered};

/// The pieces behind retrieval and prompt building, for the crate's own tests and benches
/// (feature `internals`; not a stable API).
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::facts::{
        DecidedBy, Decision, Fact, FactOutcome, heuristic_decision, heuristic_facts,
        parse_judgement,
    };
    pub use crate::late::{LateIndex, LateQuery, TokenMatches};
    pub use crate::longterm::{Archive, LongTerm, REPLY_TO, fit_timeline, timeline};
    pub use crate::storage::policy;
    pub use crate::taxonomy::Taxonomy;
}
