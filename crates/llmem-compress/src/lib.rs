//! `llmem-compress`: compression of conversation history (seed 002's mid-term memory).
//!
//! - [`Compressor`], implemented by [`MemoryCompressor`] for the three [`Strategy`]s:
//!   `sliding_window` (a rolling summary extended with the newly evicted messages), `selective`
//!   (keep system prompts, tool calls and results, errors, important and keyword messages;
//!   summarise the rest) and `deletion` (drop; the originals go to an [`ArchiveSink`]).
//! - Redundancy removal before summarising: exact and near-duplicate messages (word-shingle
//!   Jaccard), and duplicate sentences inside the extractive summarizer.
//! - Map-reduce summarisation when the input exceeds the summarizer's context window
//!   (seed 000's "paging").
//! - [`ExtractiveSummarizer`]: sentence selection by centrality and MMR under a token target,
//!   with no model; it is the fallback of every LLM summary, and a
//!   [`llmem_window::Compactor`] for layouts.
//! - [`CompressedMemory`] reports tokens before and after, the ratio, message counts and a
//!   [`Quality`] estimate (share of the originals' numbers, dates and names that survive).
//! - [`Compressor::preview`] is a dry run. Failures never lose data: a failing or slow
//!   summarizer falls back to the extractive summary, a failing archive keeps the originals,
//!   and the error is reported in [`CompressedMemory::errors`].
//! - [`Trigger`]s (token threshold, message count, window fraction) and [`Preset`]s with seed
//!   002's numbers.

mod compressor;
mod config;
mod extractive;
mod text;

pub use compressor::{
    Action, ArchiveSink, CompressedMemory, Compressor, DropReason, KeepReason, MemoryCompressor,
    Method, Preview, Quality, SUMMARY_PREFIX, VecArchive,
};
pub use config::{CompressConfig, Preset, Strategy, Trigger, TriggerReason};
pub use extractive::ExtractiveSummarizer;
pub use text::{facts, transcript_line};
