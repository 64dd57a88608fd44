//! `llmem-compress`: compression of conversation history that has left the raw window.
//!
//! - [`Compressor`], implemented by [`MemoryCompressor`] for the three [`Strategy`]s:
//!   `sliding_window` (a rolling summary extended with the newly evicted messages), `selective`
//!   (keep system prompts, tool calls and results, errors, important and keyword messages;
//!   summarise the rest) and `deletion` (drop; the originals go to an [`ArchiveSink`]).
//! - Redundancy removal before summarising: exact and near-duplicate messages (word-shingle
//!   Jaccard), and duplicate sentences inside the extractive summarizer.
//! - Map-reduce summarisation when the input exceeds the summarizer's context window
//!   (the input is split into chunks, each summarised, then the summaries combined).
//! - [`ExtractiveSummarizer`]: sentence selection by centrality and MMR under a token target,
//!   with no model; it is the fallback of every LLM summary, and a
//!   [`llmem_window::Compactor`] for layouts.
//! - [`CompressedMemory`] reports tokens before and after, the ratio, message counts and a
//!   [`Quality`] estimate (share of the originals' numbers, dates and names that survive).
//! - [`Compressor::preview`] is a dry run. Failures never lose data: a failing or slow
//!   summarizer falls back to the extractive summary, a failing archive keeps the originals,
//!   and the error is reported in [`CompressedMemory::errors`].
//! - [`Trigger`]s (token threshold, message count, window fraction) and [`Preset`]s
//!   (aggressive, balanced, conservative) with fixed threshold, ratio and kept turns.
//!
//! ```
//! # use std::sync::Arc;
//! # use llmem_core::{Accuracy, Message, TokenCounter};
//! # #[derive(Debug)] struct Words;
//! # impl TokenCounter for Words {
//! #     fn model(&self) -> &str { "words" }
//! #     fn count(&self, t: &str) -> usize { t.split_whitespace().count() }
//! #     fn accuracy(&self) -> Accuracy { Accuracy::Exact }
//! # }
//! use llmem_compress::{Compressor, MemoryCompressor, Preset, Strategy};
//! let mut history = vec![Message::system("You help Kha learn AI engineering.")];
//! for i in 0..40 {
//!     history.push(Message::user(format!("Step {i}: I tried restarting the server on port {}.", 8000 + i)));
//!     history.push(Message::assistant(format!("Noted step {i}. The API still fails with code 500.")));
//! }
//! let compressor = MemoryCompressor::new(Preset::Aggressive.config(), Arc::new(Words))?;
//! let plan = compressor.preview(&history)?;           // dry run: nothing happens yet
//! assert_eq!(plan.strategy, Strategy::SlidingWindow);
//! let rt = tokio::runtime::Runtime::new().map_err(|e| llmem_core::Error::io("runtime", e))?;
//! let out = rt.block_on(compressor.compress(&history))?;
//! assert!(out.compressed_tokens < out.original_tokens);
//! assert_eq!(out.messages.len(), 1 + 1 + 10);         // system, summary, the last 10 raw
//! # Ok::<(), llmem_core::Error>(())
//! ```

mod compressor;
mod config;
mod extractive;
mod text;

pub use compressor::{
    Action, ArchiveSink, CompressedMemory, Compressor, DropReason, KeepReason, MemoryCompressor,
    Method, Preview, Quality, SUMMARY_PREFIX, SummarizerSpend, VecArchive,
};
pub use config::{CompressConfig, Preset, Strategy, Trigger, TriggerReason};
pub use extractive::ExtractiveSummarizer;
pub use text::{facts, transcript_line};
