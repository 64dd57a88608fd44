//! `llmem eval locomo` (with the `eval` feature): the LoCoMo benchmark harness of the
//! `llmem-eval` crate, run from the CLI; `llmem-eval locomo` is the same command.

use anyhow::Result;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Ingest LoCoMo conversations and measure retrieval recall, answers in context and latency.
    Locomo(llmem_eval::Args),
}

pub async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Locomo(args) => llmem_eval::run(args).await,
    }
}
