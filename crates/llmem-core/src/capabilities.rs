//! What a plugin can do. Optional trait methods default to `Error::Unsupported`; a plugin says up
//! front which ones it implements so hosts can pick a fallback without trying.

use serde::{Deserialize, Serialize};

/// Capabilities of a model provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub chat: bool,
    pub streaming: bool,
    pub tools: bool,
    pub embeddings: bool,
    /// Exact server-side token counting (Anthropic's `count_tokens`).
    pub token_count: bool,
    /// Runs on this machine (no network).
    pub local: bool,
}

/// Capabilities of a memory store (one tier).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCapabilities {
    /// `search` with a query vector.
    pub vector_search: bool,
    /// `search` with query text (BM25 or similar).
    pub text_search: bool,
    /// Survives a restart of the process.
    pub persistent: bool,
    /// `snapshot`/`restore`.
    pub snapshots: bool,
}
