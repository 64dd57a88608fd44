//! `llmem compress`: compress a chat transcript to a token budget and show the savings.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use llmem::Message;
use llmem::compress::{
    Action, CompressConfig, CompressedMemory, Compressor, MemoryCompressor, Preview, Strategy,
};
use llmem::core::{ChatSummarizer, TokenCounter};
use serde_json::json;

use super::input;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How to compress: sliding_window (rolling summary of the old turns), selective (keep
    /// system, tool calls, errors, important and keyword messages; summarise the rest) or
    /// deletion (drop the old turns).
    #[arg(long, default_value = "sliding_window", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// The compressed context must fit this many tokens.
    #[arg(long)]
    pub budget: usize,
    /// The model whose tokenizer counts.
    #[arg(long, short, default_value = "gpt-4o")]
    pub model: String,
    /// Show what would be kept, summarised and dropped, without compressing.
    #[arg(long)]
    pub preview: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Messages at the end kept raw.
    #[arg(long, default_value_t = 20)]
    pub keep_recent: usize,
    /// Target size of the summary relative to what it replaces.
    #[arg(long, default_value_t = 0.3)]
    pub ratio: f64,
    /// Keep messages containing this word (selective; repeatable).
    #[arg(long = "keyword")]
    pub keywords: Vec<String>,
    /// Also write the compressed transcript here, as JSONL.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Summarise with the LLM of this OpenAI-compatible server (e.g. `http://127.0.0.1:8080/v1`)
    /// instead of the extractive summarizer; if it fails, the extractive summary is used and a
    /// warning printed.
    #[arg(long)]
    pub llm_url: Option<String>,
    /// The model name sent to `--llm-url`.
    #[arg(long, default_value = "default")]
    pub llm_model: String,
    /// The context window of the `--llm-url` model, in tokens (larger inputs are map-reduced).
    #[arg(long, default_value_t = 8192)]
    pub llm_context: usize,
    /// Seconds allowed for each summarizer call.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// A catalog file overriding or adding models.
    #[arg(long, env = "LLMEM_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// The transcript: one OpenAI-shaped message per line (JSONL), or a JSON array; `-` for stdin.
    pub file: PathBuf,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse().map_err(|e: llmem::Error| e.to_string())
}

pub async fn run(args: Args) -> Result<()> {
    let counters = super::models::counters(args.catalog.as_deref())?;
    let info = counters.catalog().require(&args.model)?;
    let counter: Arc<dyn TokenCounter> = counters.for_model(&info.id)?;
    let messages = input::read_transcript(&args.file)?;
    anyhow::ensure!(
        !messages.is_empty(),
        "`{}` holds no messages",
        args.file.display()
    );
    let config = CompressConfig {
        strategy: args.strategy,
        budget: Some(args.budget),
        keep_recent: args.keep_recent,
        compression_ratio: args.ratio,
        keywords: args.keywords.clone(),
        timeout: std::time::Duration::try_from_secs_f64(args.timeout)
            .context("--timeout must be a positive number of seconds")?,
        ..CompressConfig::default()
    };
    let mut compressor = MemoryCompressor::new(config, counter.clone())?;
    if let Some(url) = &args.llm_url {
        let model: Arc<dyn llmem::core::ChatModel> = Arc::new(
            llmem::providers::openai::OpenAiBuilder::compatible(url.clone())
                .with_model(args.llm_model.clone())
                .build()?,
        );
        compressor =
            compressor.with_summarizer(Arc::new(ChatSummarizer::new(model, args.llm_context)));
    }
    if args.preview {
        let p = compressor
            .preview(&messages)
            .context("cannot plan the compression")?;
        print_preview(&args, &messages, &p)?;
        return Ok(());
    }
    let out = compressor
        .compress(&messages)
        .await
        .context("compression failed")?;
    if let Some(path) = &args.output {
        let mut f = std::fs::File::create(path)
            .with_context(|| format!("cannot create `{}`", path.display()))?;
        for m in &out.messages {
            writeln!(f, "{}", serde_json::to_string(m)?)?;
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(
                &json!({"model": info.id, "budget": args.budget, "result": out})
            )?
        );
    } else {
        print_result(&info.id, args.budget, &out);
    }
    Ok(())
}

fn short(text: &str, n: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}

fn label(m: &Message) -> String {
    match &m.name {
        Some(n) => format!("{} ({n})", m.role),
        None => m.role.to_string(),
    }
}

fn print_preview(args: &Args, messages: &[Message], p: &Preview) -> Result<()> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string(
                &json!({"model": args.model, "budget": args.budget, "preview": p})
            )?
        );
        return Ok(());
    }
    println!(
        "{:>5}  {:<24} {:>6}  {:<22} text",
        "#", "role", "tokens", "action"
    );
    for (i, ((m, a), t)) in messages
        .iter()
        .zip(&p.actions)
        .zip(&p.message_tokens)
        .enumerate()
    {
        let action = match a {
            Action::Keep { reason } => format!("keep ({})", json!(reason).as_str().unwrap_or("?")),
            Action::Summarize => "summarize".to_owned(),
            Action::PreviousSummary => "extend summary".to_owned(),
            Action::Drop { reason } => {
                format!("drop ({})", json!(reason)["kind"].as_str().unwrap_or("?"))
            }
        };
        println!(
            "{i:>5}  {:<24} {t:>6}  {action:<22} {}",
            short(&label(m), 24),
            short(&m.text(), 60)
        );
    }
    let (kept, summarized, dropped) = p.counts();
    println!(
        "\npreview ({}): keep {kept} messages ({} tokens), summarize {summarized} ({} tokens into ~{}), drop {dropped} ({} tokens)",
        p.strategy, p.kept_tokens, p.summarize_tokens, p.summary_target_tokens, p.dropped_tokens
    );
    println!(
        "{} -> ~{} tokens (budget {}), about {:.1}% saved; nothing was changed",
        p.original_tokens,
        p.estimated_tokens,
        args.budget,
        100.0 * (1.0 - p.estimated_tokens as f64 / p.original_tokens.max(1) as f64)
    );
    Ok(())
}

fn print_result(model: &str, budget: usize, out: &CompressedMemory) {
    for m in &out.messages {
        println!("[{}] {}", label(m), m.text());
    }
    println!();
    println!(
        "{} ({model}): {} -> {} tokens (budget {budget}), saved {} ({:.1}%); {} -> {} messages ({} summarized, {} dropped)",
        out.strategy,
        out.original_tokens,
        out.compressed_tokens,
        out.saved_tokens,
        100.0 * (1.0 - out.ratio),
        out.messages_before,
        out.messages_after,
        out.summarized,
        out.dropped,
    );
    println!(
        "quality: {}/{} facts kept ({:.0}%); summary: {}",
        out.quality.facts_kept,
        out.quality.facts_total,
        100.0 * out.quality.score,
        json!(out.method)["kind"].as_str().unwrap_or("?")
    );
    for e in &out.errors {
        println!("warning: {e}");
    }
}
