//! `llmem demo`: the product's `MemoryManager` on a conversation shipped with llmem, on
//! embedded defaults.
//!
//! Every turn goes to the manager, and each user turn is a request whose prompt it assembles.
//! When the context passes its token threshold, the sliding window compressor folds the oldest
//! turns into a rolling summary (extractive, or the local SmolLM2 through llama.cpp when its
//! assets are installed) and the originals go to long-term memory (embedded by the local MiniLM
//! when installed; facts drawn from the user's turns too). Then each question gets the prompt
//! the manager assembles under the budget: system prompt, summary, the memories recalled for
//! it, recent history and room for the question. The demo reports whether the gold answer made
//! it into that prompt, and the local model answers from it. The savings are reported gross
//! and net of what keeping the memory cost (the summariser's tokens and dollars).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use llmem::SummarizerMode;
use llmem::core::{
    ChatModel, ChatRequest, MemoryStore, Message, Role, Scope, Summarizer, TokenCounter,
};
use llmem::providers::llamacpp::LlamaCppServer;
use llmem::tiers::WarmStore;
use llmem::{Config, MemoryManager, Providers};
use serde::Deserialize;
use serde_json::json;

use super::embedder::{EmbedderMode, embedder};
use super::input;

const CONVERSATION: &str = include_str!("../../../../examples/data/conversation.jsonl");
const QUESTIONS: &str = include_str!("../../../../examples/data/questions.jsonl");
const TENANT: &str = "demo";
/// Tokens of each prompt kept for the answer.
const ANSWER_RESERVE: usize = 64;

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
    /// Vectors for long-term memory from the local ONNX embedder (`auto`: when installed), or
    /// lexical search only.
    #[arg(long, value_enum, default_value_t = EmbedderMode::Auto)]
    pub embedder: EmbedderMode,
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
        args.budget >= 256,
        "--budget {} is too small for a prompt; use at least 256 tokens",
        args.budget
    );

    let counters = super::models::counters(None)?;
    let info = counters.catalog().require(&args.model)?;
    let model_counter = counters.for_model(&info.id)?;
    let counter: Arc<dyn TokenCounter> = model_counter.clone();
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

    let mut config = Config::default();
    config.memory.model = info.id.clone();
    config.memory.max_context_tokens = args.budget;
    config.memory.answer_reserve = ANSWER_RESERVE;
    config.memory.compression_threshold = threshold;
    config.memory.short_term_size = args.keep;
    config.memory.compression_ratio = 0.3;
    // `auto`: the local model's summarizer when it runs (given below), else extractive.
    config.memory.summarizer = SummarizerMode::Auto;
    config.retrieval.k = args.k;
    config.retrieval.max_tokens = args.budget;
    config
        .validate()
        .context("the demo's settings (--budget, --keep, --k)")?;
    let store = Arc::new(WarmStore::in_memory());
    let mut providers = Providers::default()
        .with_counter(counter.clone())
        .with_store(store.clone());
    let vectors = embedder(args.embedder)?;
    if let Some(e) = &vectors {
        providers = providers.with_embedder(e.clone());
    }
    if let (Some(s), Some(chat)) = (&server, &chat) {
        let summarizer: Arc<dyn Summarizer> = Arc::new(s.summarizer(2048)?);
        providers = providers
            .with_summarizer(summarizer)
            .with_chat(chat.clone());
    }
    let mut m = MemoryManager::for_session(config, providers, Scope::session(TENANT, "demo"))?;

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

    // Feed the conversation turn by turn; each user turn is a request, whose prompt the
    // manager assembles (context and the memories recalled for it).
    for (i, msg) in conversation.iter().enumerate() {
        let errors_before = m.stats().summarizer_errors;
        m.add_message(msg.clone(), None).await?;
        let sent = if msg.role == Role::User {
            format!("  prompt {:>4} tok", m.prepare(None).await?.tokens)
        } else {
            String::new()
        };
        let st = m.stats();
        let mut note = String::new();
        if m.was_compressed_last_iteration() {
            note = format!(
                "  compressed: {} tokens saved, {} memories in long-term store{}",
                m.last_compression_savings(),
                st.memories_stored,
                if st.summarizer_errors > errors_before {
                    ", summarizer failed: extractive fallback, originals kept"
                } else {
                    ""
                }
            );
        }
        if !args.quick || !note.is_empty() {
            let date = msg
                .created_at
                .map(|t| t.to_string().chars().take(10).collect::<String>())
                .unwrap_or_default();
            println!(
                "turn {:>3} {date} {:<9} context {:>4}/{:<4} tok{sent}{note}",
                i + 1,
                msg.role.as_str(),
                st.current_tokens,
                threshold,
            );
        }
    }
    let stats = m.stats();
    let price = |t: u64| info.cost(t, 0, 0);
    let gross = if stats.full_history_tokens == 0 {
        0.0
    } else {
        100.0 * (stats.full_history_tokens as f64 - stats.sent_tokens as f64)
            / stats.full_history_tokens as f64
    };
    println!(
        "\n{} requests: llmem sent {} prompt tokens (${:.4}) instead of {} (${:.4}): {gross:.1}% fewer; {} compressions; {} memories in the long-term store",
        stats.requests,
        stats.sent_tokens,
        price(stats.sent_tokens),
        stats.full_history_tokens,
        price(stats.full_history_tokens),
        stats.compression_count,
        store
            .count(&Scope::tenant(TENANT), &llmem::core::Filter::All)
            .await?
    );
    println!(
        "net of what keeping the memory cost ({} tokens in {} summariser and {} fact-extraction calls, ${:.4}{}): {} tokens ({:.1}%) and ${:.4} saved",
        stats.compression_tokens,
        stats.summary_calls,
        stats.fact_calls,
        stats.compression_cost,
        if stats.unpriced_tokens > 0 {
            format!(
                "; {} tokens of a model the catalog does not price, counted at $0",
                stats.unpriced_tokens
            )
        } else {
            String::new()
        },
        stats.net_savings,
        stats.savings_percentage,
        stats.net_cost,
    );

    // Answer the questions from the prompts the manager assembles for them.
    let (mut in_context, mut prompt_tokens) = (0usize, 0usize);
    println!(
        "\nquestions (prompt <= {} tokens, {ANSWER_RESERVE} reserved for the answer):",
        args.budget
    );
    for q in &questions {
        let prepared = m.prepare(Some(&q.question)).await?;
        let mut prompt = prepared.messages;
        prompt.push(Message::user(q.question.clone()));
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
            "- {}  [{} tok, {} memories, answer {} context]",
            q.question,
            tokens,
            prepared.retrieved.len(),
            if found { "in" } else { "NOT in" }
        );
        if !args.quick {
            for h in prepared.retrieved.iter().take(2) {
                let t: String = h.record.text.chars().take(110).collect();
                println!("    retrieved {:.2}: {t}", h.relevance);
            }
        }
        if let Some(model) = &chat {
            let req = ChatRequest::new(prompt)
                .with_max_tokens(ANSWER_RESERVE as u32)
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
        "\nanswer in context for {in_context}/{} questions ({:.0}%), mean prompt {:.0} tokens (full history: {}); {:.1}s",
        questions.len(),
        100.0 * in_context as f64 / n as f64,
        prompt_tokens as f64 / n as f64,
        counter.count_messages(&conversation),
        started.elapsed().as_secs_f64()
    );
    if stats.summarizer_errors > 0 {
        println!(
            "summarizer errors (originals kept, extractive fallback): {}",
            stats.summarizer_errors
        );
    }
    if args.json {
        println!(
            "{}",
            json!({
                "messages": conversation.len(),
                "requests": stats.requests,
                "compressions": stats.compression_count,
                "sent_tokens": stats.sent_tokens,
                "full_history_tokens": stats.full_history_tokens,
                "savings": stats.savings_percentage / 100.0,
                "gross_savings": gross / 100.0,
                "compression_tokens": stats.compression_tokens,
                "summary_calls": stats.summary_calls,
                "compression_cost": stats.compression_cost,
                "unpriced_tokens": stats.unpriced_tokens,
                "net_saved_tokens": stats.net_savings,
                "full_history_cost": stats.full_history_cost,
                "net_cost": stats.net_cost,
                "questions": questions.len(),
                "answer_in_context": in_context as f64 / n as f64,
                "mean_prompt_tokens": prompt_tokens as f64 / n as f64,
                "budget": args.budget,
                "summarizer_errors": stats.summarizer_errors,
            })
        );
    }
    Ok(())
}
