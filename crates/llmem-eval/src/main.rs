//! `llmem-eval`: the benchmark harness's command line (`llmem-eval locomo --data FILE …`).
//! It parses the command line, sets up logging and maps errors to exit codes, as `llmem` does.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// llmem-eval: measure llmem's memory on a benchmark.
#[derive(Debug, Parser)]
#[command(name = "llmem-eval", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `llmem=debug`); also read from `LLMEM_LOG`.
    #[arg(long, global = true, env = "LLMEM_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest LoCoMo conversations and measure retrieval recall, answers in context and latency.
    Locomo(llmem_eval::Args),
    /// Leave-one-conversation-out: each retrieval weight value counts only if the one chosen
    /// on the other conversations holds on the held-out one.
    Loo(llmem_eval::loo::LooArgs),
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
            Command::Locomo(args) => llmem_eval::run(args).await,
            Command::Loo(args) => tokio::task::spawn_blocking(move || llmem_eval::loo::run(&args))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r),
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
