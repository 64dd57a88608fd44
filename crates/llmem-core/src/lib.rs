//! `llmem-core`: the small, stable crate every llmem crate and third-party plugin depends on.
//!
//! It holds the shared types ([`Message`], [`MemoryRecord`], [`Filter`], [`Timestamp`]), the
//! plugin traits ([`TokenCounter`], [`ChatModel`], [`Embedder`], [`Summarizer`],
//! [`MemoryStore`], [`VectorScorer`]) with their [`Capabilities`], the one [`Error`] type, and a [`Registry`] of
//! named factories. With the `test-kit` feature it exports the conformance suites every
//! implementation runs against itself.
//!
//! It does no I/O and depends on no network, ML or storage crate.

pub mod capabilities;
pub mod error;
pub mod filter;
pub mod message;
pub mod provider;
pub mod record;
pub mod registry;
pub mod scorer;
pub mod store;
pub mod time;
pub mod tokens;
pub mod wire;

#[cfg(feature = "test-kit")]
pub mod test_kit;

pub use async_trait::async_trait;
pub use capabilities::{Capabilities, StoreCapabilities};
pub use error::{Error, Result};
pub use filter::{CmpOp, Filter};
pub use message::{ContentPart, ImageUrl, Message, Role, ToolCall};
pub use provider::{
    ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, ChatSummarizer, DynChatModel,
    DynEmbedder, DynSummarizer, Embedded, Embedder, Summarizer, Summary, SummaryRequest,
    SummaryUsage, TokenVectors, ToolCallDelta, ToolCallPieces, ToolSpec, Usage,
};
pub use record::{
    BROADER, BROADER_WEIGHT, KEYWORDS, MemoryRecord, RecordKind, Scope, ScoredRecord, TEXT_WEIGHT,
    new_id, search_fields, search_key,
};
pub use registry::{Factory, Registry};
pub use scorer::VectorScorer;
pub use store::{DynMemoryStore, Fusion, MemoryStore, SearchRequest, StoreStats};
pub use time::Timestamp;
pub use tokens::{Accuracy, TokenCounter};
