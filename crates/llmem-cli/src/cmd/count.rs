//! `llmem count`: exact (or labelled estimated) token counts of a file for a model.

use std::path::PathBuf;

use anyhow::{Context, Result};
use llmem::core::{Accuracy, TokenCounter};
use serde_json::json;

use super::input;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model whose tokenizer counts (a catalog id or alias, e.g. `gpt-4o`, `llama-3.1-8b`).
    #[arg(long, short)]
    pub model: String,
    /// The file to count (`-` for standard input).
    pub file: PathBuf,
    /// Treat the file as a chat transcript (JSONL of messages) and include the chat framing.
    #[arg(long)]
    pub messages: bool,
    /// Also print the token ids (exact tokenizers only).
    #[arg(long)]
    pub ids: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// A catalog file overriding or adding models (TOML, same shape as the embedded one).
    #[arg(long, env = "LLMEM_CATALOG")]
    pub catalog: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<()> {
    let counters = super::models::counters(args.catalog.as_deref())?;
    let info = counters.catalog().require(&args.model)?;
    let counter = counters.for_model(&info.id)?;
    let text = input::read_text(&args.file)?;
    let (tokens, messages) = if args.messages {
        let msgs = input::parse_transcript(&text, &args.file)?;
        (counter.count_messages(&msgs), Some(msgs.len()))
    } else {
        (counter.count(&text), None)
    };
    let ids = if args.ids {
        Some(counter.encode(&text).with_context(|| {
            format!("`{}` is counted by a calibrated estimate; token ids exist only for exact tokenizers", info.id)
        })?)
    } else {
        None
    };
    let (accuracy, error) = match counter.accuracy() {
        Accuracy::Exact => ("exact", None),
        Accuracy::Estimate { mean_abs_error } => ("estimate", Some(mean_abs_error)),
    };
    let cost = info.cost(tokens as u64, 0, 0);
    if args.json {
        let mut v = json!({
            "model": info.id,
            "tokenizer": counter.tokenizer(),
            "tokens": tokens,
            "accuracy": accuracy,
            "chars": text.chars().count(),
            "bytes": text.len(),
            "context_window": info.context_window,
            "input_cost_usd": cost,
        });
        if let Some(e) = error {
            v["mean_abs_error"] = json!(e);
        }
        if let Some(n) = messages {
            v["messages"] = json!(n);
        }
        if let Some(ids) = &ids {
            v["ids"] = json!(ids);
        }
        println!("{v}");
    } else {
        let label = match error {
            None => "exact".to_owned(),
            Some(e) => format!("estimate, ±{:.0}% typical", e * 100.0),
        };
        let what = messages.map_or(String::new(), |n| format!(" in {n} messages"));
        println!(
            "{tokens} tokens{what} ({}, {}, {label})",
            info.id,
            counter.tokenizer()
        );
        println!(
            "{:.2}% of the {}-token window; ${cost:.6} as input",
            tokens as f64 * 100.0 / info.context_window.max(1) as f64,
            info.context_window
        );
        if let Some(ids) = ids {
            println!("ids: {ids:?}");
        }
    }
    Ok(())
}
