//! `llmem-tokens`: exact per-model token counting, the model catalog, cost and budget tracking.
//!
//! - [`Counters`] gives the [`ModelCounter`] for a model name: tiktoken encodings for OpenAI
//!   (exact), a `tokenizer.json` for open models (exact), calibrated estimates for Anthropic and
//!   Gemini (labelled as such), each with its chat format's per-message and per-request framing.
//! - [`Catalog`] holds context sizes, output limits and prices (`data/catalog.toml`), overridable.
//! - [`CostTracker`] prices requests (estimated or actual usage), tracks compression savings and
//!   fires [`BudgetAlarm`]s.
//! - [`CachedCounter`] and [`TokenLedger`] make counting incremental.

pub mod catalog;
pub mod cost;
pub mod counter;
pub mod ledger;
pub mod o200k;

pub use catalog::{Catalog, ChatFormat, Lookup, ModelInfo, Provider, TokenizerSpec};
pub use cost::{
    Budget, BudgetAlarm, BudgetKind, CostTotals, CostTracker, ModelTotals, Recorded, RequestRecord,
    UsageSource,
};
pub use counter::{Counters, ModelCounter, cache_dir, estimate, tokenizer_dir};
pub use ledger::{CachedCounter, TokenLedger, message_key};
