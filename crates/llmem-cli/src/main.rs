//! The llmem command line: count tokens, compress transcripts, store and search memories, demo,
//! evaluate, chat, and serve memory as an OpenAI-compatible proxy.
//!
//! Each subcommand lives in its own module under `cmd/` with an `Args` struct and an async
//! `run`; this file only parses the command line, sets up logging and maps errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// llmem: keep every LLM request inside its token budget, at the lowest cost.
#[derive(Debug, Parser)]
#[command(name = "llmem", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `llmem=debug`); also read from `LLMEM_LOG`.
    #[arg(long, global = true, env = "LLMEM_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Count the tokens of a file (text, or a JSONL chat transcript with --messages) for a model.
    Count(cmd::count::Args),
    /// Compress a JSONL chat transcript to a token budget (sliding_window, selective, deletion).
    Compress(cmd::compress::Args),
    /// List the models of the catalog with context sizes and prices.
    Models(cmd::models::Args),
    /// Run the whole pipeline on a shipped conversation: budgets, compressions, savings, retrieval.
    Demo(cmd::demo::Args),
    /// Measure memory on a benchmark: `llmem eval locomo --data FILE --budget N --k K --json OUT`.
    #[cfg(feature = "eval")]
    #[command(subcommand)]
    Eval(cmd::eval::Cmd),
    /// Remember a text in the tiered long-term memory (`--dir`, default ./.llmem).
    Store(cmd::store::StoreArgs),
    /// Search the long-term memory (BM25 over the text; hybrid with --vector).
    Search(cmd::store::SearchArgs),
    /// Import records from a JSONL file into the long-term memory, with progress.
    Import(cmd::store::ImportArgs),
    /// Export a tenant's records as JSONL.
    Export(cmd::store::ExportArgs),
    /// Take a snapshot of the long-term memory, or restore one.
    Snapshot(cmd::store::SnapshotArgs),
    /// Items, bytes and usage per memory tier.
    Stats(cmd::store::StatsArgs),
    /// Move a tenant's records matching a filter to the glacier tier (`--glacier URL`).
    Archive(cmd::store::ArchiveArgs),
    /// Forget a user's memories for good, in every tier and saved session (`--filter JSON`).
    Forget(cmd::store::ForgetArgs),
    /// Replace a memory's text; the earlier version is kept as history.
    Update(cmd::store::UpdateArgs),
    /// Summarise old conversation memories by day or week into summaries linked to them.
    Consolidate(cmd::store::ConsolidateArgs),
    /// Embed every memory again with the configured embedder, after a change of model.
    Reembed(cmd::reembed::Args),
    /// Chat with a configured model through llmem's memory (interactive; /stats, /quit).
    Chat(cmd::chat::Args),
    /// An OpenAI-compatible proxy that gives any app memory: change only its base URL.
    Serve(cmd::serve::Args),
    /// Serve the long-term memory to MCP clients on stdin/stdout (remember, recall, update, forget).
    Mcp(cmd::mcp::Args),
    /// API keys of `llmem serve`: add (prints the key once), list, revoke.
    #[command(subcommand)]
    Keys(cmd::keys::Cmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Count(args) => cmd::count::run(args).await,
            Command::Compress(args) => cmd::compress::run(args).await,
            Command::Models(args) => cmd::models::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            #[cfg(feature = "eval")]
            Command::Eval(cmd) => cmd::eval::run(cmd).await,
            Command::Store(args) => cmd::store::store(args).await,
            Command::Search(args) => cmd::store::search(args).await,
            Command::Import(args) => cmd::store::import(args).await,
            Command::Export(args) => cmd::store::export(args).await,
            Command::Snapshot(args) => cmd::store::snapshot(args).await,
            Command::Stats(args) => cmd::store::stats(args).await,
            Command::Archive(args) => cmd::store::archive(args).await,
            Command::Forget(args) => cmd::store::forget(args).await,
            Command::Update(args) => cmd::store::update(args).await,
            Command::Consolidate(args) => cmd::store::consolidate(args).await,
            Command::Reembed(args) => cmd::reembed::run(args).await,
            Command::Chat(args) => cmd::chat::run(args).await,
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Mcp(args) => cmd::mcp::run(args).await,
            Command::Keys(cmd) => cmd::keys::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
