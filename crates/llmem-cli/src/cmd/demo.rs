//! `llmem demo`: the whole pipeline on a conversation shipped with llmem, on embedded defaults.
//!
//! Every turn goes into the context; when the context passes its token threshold the sliding
//! window compressor folds the oldest turns into a rolling summary (extractive, or the local
//! SmolLM2 through llama.cpp when its assets are installed) and hands the originals to the
//! long-term store. Then each question gets a prompt assembled under the budget: system prompt,
//! summary, the memories retrieved for it, recent history and the question; the demo reports
//! whether the gold answer made it into that prompt, and the local model answers from it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use llmem::compress::{
    ArchiveSink, CompressConfig, Compressor, MemoryCompressor, Strategy, Trigger,
};
use llmem::core::{
    ChatModel, ChatRequest, MemoryRecord, MemoryStore, Message, RecordKind, Role, Scope,
    SearchRequest, Summarizer, TokenCounter, async_trait,
};
use llmem::providers::llamacpp::LlamaCppServer;
use llmem::tiers::WarmStore;
use llmem::window::{Layout, Load};
use serde::Deserialize;
use serde_json::json;

use super::input;

const CONVERSATION: &str = include_str!("../../../../examples/data/conversation.jsonl");
const QUESTIONS: &str = include_str!("../../../../examples/data/questions.jsonl");
const TENANT: &str = "demo";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSONL transcript instead of the shipped conversation.
    #[arg(long)]
    pub conversation: Option<PathBuf>,
    /// JSONL of {"question", "answer"} instead of the shipped questions.
    #[arg(long)]
    pub questions: Option<PathBuf>,
    /// The model whose tokenizer and prices are used.
    #[arg(long, default_value = "gpt-4o")]
    pub model: String,
    /// Token budget of each prompt sent to the model (answer reserve included).
    #[arg(long, default_value_t = 900)]
    pub budget: usize,
    /// Messages kept raw at the end of the context.
    #[arg(long, default_value_t = 6)]
    pub keep: usize,
    /// Memories retrieved for each question.
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// Use the local SmolLM2 (llama.cpp) to summarise and answer: `auto` when installed.
    #[arg(long, value_enum, default_value_t = Llm::Auto)]
    pub llm: Llm,
    /// No local model; prints less (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object with the totals at the end.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Llm {
    Auto,
    On,
    Off,
}

#[derive(Debug, Deserialize)]
struct Question {
    question: String,
    answer: String,
}

/// Stores every message that leaves the context as a conversation memory.
#[derive(Debug)]
struct StoreArchive {
    store: Arc<WarmStore>,
}

#[async_trait]
impl ArchiveSink for StoreArchive {
    async fn archive(&self, messages: &[Message]) -> llmem::Result<()> {
        let records = messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| {
                let mut r = MemoryRecord::new(TENANT, format!("{}: {}", m.role.as_str(), m.text()))
                    .with_kind(RecordKind::Conversation)
                    .with_metadata("role", m.role.as_str());
                if let Some(at) = m.created_at {
                    r = r.with_created_at(at).with_metadata("date", at.to_string());
                }
                r
            })
            .collect();
        self.store.put(records).await
    }
}

fn normalise(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
}

pub async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let conversation = match &args.conversation {
        Some(p) => input::read_transcript(p)?,
        None => input::parse_transcript(
            CONVERSATION,
            std::path::Path::new("examples/data/conversation.jsonl"),
        )?,
    };
    let questions_text = match &args.questions {
        Some(p) => input::read_text(p)?,
        None => QUESTIONS.to_owned(),
    };
    let questions: Vec<Question> = questions_text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!(
                    "questions line {}: expected {{\"question\", \"answer\"}}",
                    i + 1
                )
            })
        })
        .collect::<Result<_>>()?;
    anyhow::ensure!(
        args.budget >= 200,
        "--budget {} is too small for a prompt; use at least 200 tokens",
        args.budget
    );

    let counters = super::models::counters(None)?;
    let info = counters.catalog().require(&args.model)?;
    let model_counter = counters.for_model(&info.id)?;
    let counter: Arc<dyn TokenCounter> = model_counter.clone();
    let answer_reserve = 64;
    // The context (system + summary + recent turns) may use this much of each prompt; the
    // rest is for retrieved memories, the question and the answer.
    let threshold = args.budget * 11 / 20;

    let server = match (args.llm, args.quick) {
        (Llm::Off, _) | (Llm::Auto, true) => None,
        (mode, _) => match LlamaCppServer::builder().start().await {
            Ok(s) => Some(s),
            Err(e) if mode == Llm::Auto => {
                eprintln!("(no local model: {e}; summarising extractively, no generated answers)");
                None
            }
            Err(e) => return Err(e).context("starting the local llama.cpp server (--llm on)"),
        },
    };
    let chat: Option<Arc<dyn ChatModel>> = match &server {
        Some(s) => Some(Arc::new(s.chat_model()?)),
        None => None,
    };

    let store = Arc::new(WarmStore::in_memory());
    let config = CompressConfig {
        strategy: Strategy::SlidingWindow,
        keep_recent: args.keep,
        compression_ratio: 0.3,
        budget: Some(threshold),
        ..CompressConfig::default()
    };
    let mut compressor =
        MemoryCompressor::new(config, counter.clone())?.with_archive(Arc::new(StoreArchive {
            store: store.clone(),
        }));
    if let Some(s) = &server {
        let summarizer: Arc<dyn Summarizer> = Arc::new(s.summarizer(2048)?);
        compressor = compressor.with_summarizer(summarizer);
    }
    let trigger = Trigger {
        token_threshold: Some(threshold),
        ..Trigger::default()
    };

    println!(
        "llmem demo: {} messages, {} questions; model {} ({}), prompt budget {} tokens, context threshold {threshold}, keep {} raw; summaries: {}",
        conversation.len(),
        questions.len(),
        info.id,
        model_counter.tokenizer(),
        args.budget,
        args.keep,
        if server.is_some() {
            "SmolLM2-135M via llama.cpp"
        } else {
            "extractive"
        }
    );

    // Feed the conversation turn by turn.
    let mut context: Vec<Message> = Vec::new();
    let (mut full_history, mut sent_total, mut full_total) = (0usize, 0usize, 0usize);
    let (mut compressions, mut requests) = (0usize, 0usize);
    let mut errors = Vec::new();
    for (i, m) in conversation.iter().enumerate() {
        full_history += counter.count_message(m);
        context.push(m.clone());
        let mut note = String::new();
        let tokens = counter.count_messages(&context);
        if let Some(reason) = trigger.check(tokens, context.len()) {
            let out = compressor.compress(&context).await?;
            compressions += 1;
            errors.extend(out.errors.iter().cloned());
            note = format!(
                "  compressed ({reason:?}): {} -> {} msgs, {} -> {} tokens, {} archived, quality {:.2}{}",
                out.messages_before,
                out.messages_after,
                out.original_tokens,
                out.compressed_tokens,
                out.archived,
                out.quality.score,
                if out.errors.is_empty() {
                    String::new()
                } else {
                    format!(", fell back: {}", out.errors.join("; "))
                }
            );
            context = out.messages;
        }
        let now = counter.count_messages(&context);
        if m.role == Role::User {
            // Each user turn is a request: what llmem sends vs. the whole history.
            requests += 1;
            sent_total += now;
            full_total += full_history + counter.request_overhead();
        }
        if !args.quick || !note.is_empty() {
            let date = m
                .created_at
                .map(|t| t.to_string().chars().take(10).collect::<String>())
                .unwrap_or_default();
            println!(
                "turn {:>3} {date} {:<9} context {:>4}/{:<4} tok  full history {:>5} tok{note}",
                i + 1,
                m.role.as_str(),
                now,
                threshold,
                full_history
            );
        }
    }
    let price = |t: usize| info.cost(t as u64, 0, 0);
    println!(
        "\n{requests} requests: llmem sent {sent_total} prompt tokens (${:.4}) instead of {full_total} (${:.4}): {:.1}% saved; {compressions} compressions; {} memories in the long-term store",
        price(sent_total),
        price(full_total),
        100.0 * (1.0 - sent_total as f64 / full_total.max(1) as f64),
        store
            .count(&Scope::tenant(TENANT), &llmem::core::Filter::All)
            .await?
    );

    // Answer the questions from assembled prompts.
    let scope = Scope::tenant(TENANT);
    let summary: Vec<Message> = context
        .iter()
        .filter(|m| m.role == Role::System)
        .skip(1)
        .cloned()
        .collect();
    let system = context.iter().find(|m| m.role == Role::System).cloned();
    let recent: Vec<Message> = context
        .iter()
        .filter(|m| m.role != Role::System)
        .cloned()
        .collect();
    let (mut in_context, mut prompt_tokens) = (0usize, 0usize);
    println!(
        "\nquestions (prompt <= {} tokens, {answer_reserve} reserved for the answer):",
        args.budget
    );
    for q in &questions {
        let mut layout = Layout::chat(counter.clone(), args.budget, answer_reserve)?;
        if let Some(s) = &system {
            layout.push("system", s.clone())?;
        }
        for s in &summary {
            layout.push("summary", s.clone())?;
        }
        let hits = store
            .search(&scope, &SearchRequest::text(q.question.clone(), args.k))
            .await?;
        let memories: Vec<Message> = hits
            .iter()
            .map(|h| {
                let date = h
                    .record
                    .metadata
                    .get("date")
                    .and_then(|d| d.as_str())
                    .map(|d| d.chars().take(10).collect::<String>());
                Message::system(match date {
                    Some(d) => format!("Memory ({d}) {}", h.record.text),
                    None => format!("Memory: {}", h.record.text),
                })
            })
            .collect();
        layout.load("retrieved", memories, Load::FillFree)?;
        for m in &recent {
            layout.push("history", m.clone())?;
        }
        layout.push("question", Message::user(q.question.clone()))?;
        let prompt = layout.render();
        let tokens = counter.count_messages(&prompt);
        prompt_tokens += tokens;
        let text = normalise(
            &prompt
                .iter()
                .map(Message::text)
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let found = text.contains(&normalise(&q.answer));
        in_context += usize::from(found);
        println!(
            "- {}  [{} tok, answer {} context]",
            q.question,
            tokens,
            if found { "in" } else { "NOT in" }
        );
        if !args.quick {
            for h in hits.iter().take(2) {
                let t: String = h.record.text.chars().take(110).collect();
                println!("    retrieved {:.2}: {t}", h.score);
            }
        }
        if let Some(model) = &chat {
            let req = ChatRequest::new(prompt)
                .with_max_tokens(answer_reserve as u32)
                .with_temperature(0.0);
            match model.chat(req).await {
                Ok(r) => println!(
                    "    SmolLM2: {}",
                    r.message.text().trim().replace('\n', " ")
                ),
                Err(e) => println!("    (the local model failed: {e})"),
            }
        }
    }
    let n = questions.len().max(1);
    println!(
        "\nanswer in context for {in_context}/{} questions ({:.0}%), mean prompt {:.0} tokens (full history: {full_history}); {:.1}s",
        questions.len(),
        100.0 * in_context as f64 / n as f64,
        prompt_tokens as f64 / n as f64,
        started.elapsed().as_secs_f64()
    );
    if !errors.is_empty() {
        println!(
            "summarizer errors (originals kept, extractive fallback): {}",
            errors.len()
        );
    }
    if args.json {
        println!(
            "{}",
            json!({
                "messages": conversation.len(),
                "requests": requests,
                "compressions": compressions,
                "sent_tokens": sent_total,
                "full_history_tokens": full_total,
                "savings": 1.0 - sent_total as f64 / full_total.max(1) as f64,
                "questions": questions.len(),
                "answer_in_context": in_context as f64 / n as f64,
                "mean_prompt_tokens": prompt_tokens as f64 / n as f64,
                "budget": args.budget,
                "summarizer_errors": errors.len(),
            })
        );
    }
    Ok(())
}
