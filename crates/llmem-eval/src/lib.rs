//! The LoCoMo benchmark harness for llmem: how much of a long conversation the memory gets
//! right, measured as an application would see it.
//!
//! It reads the LoCoMo data ([`locomo`]), then for each conversation feeds every turn in order,
//! with its session's date, to the product's [`MemoryManager`](llmem::MemoryManager) (one per
//! LoCoMo session, the conversation as the user): the window, compression and (with `--facts`)
//! fact extraction run as in an application, and what leaves the window goes to long-term
//! memory with the turn's embedding from the local ONNX embedder, its relative times resolved
//! ("yesterday" → the date) and its neighbours in the lexical key. Each question is asked in a
//! new session of the same user: the manager's search gives the top `--k` memories, and
//! `prepare` gives the prompt it would send under `--budget` tokens (a system line, the
//! recalled memories best first while they fit, room for the question and an answer reserve).
//!
//! It scores ([`score`]) and reports ([`report`]): evidence recall in the top `--k`, whether
//! the gold answer is in that prompt, its size, retrieval latency and ingest speed, overall and
//! per question category, as a table, JSON and an SVG plot; optionally (`--answer`) the local
//! model answers and is scored by the benchmark's token F1.
//!
//! The `llmem-eval` binary runs it (`llmem-eval locomo --data FILE …`), as does `llmem eval
//! locomo` in a CLI built with its `eval` feature. This crate is a tool, not a library for
//! applications: it is not published.

pub mod locomo;
pub mod loo;
pub mod report;
mod run;
pub mod score;

pub use run::{Args, EmbedderMode, FactArg, RECALL_KS, Settings};

/// Runs the LoCoMo benchmark as `args` say: reads the data, ingests and asks through
/// `MemoryManager`, prints the table, and writes the JSON, the plot and the details asked for.
pub async fn run(args: Args) -> anyhow::Result<()> {
    run::locomo(args).await
}
