//! The run: its arguments, the manager's settings, the ingest of each conversation through a
//! [`MemoryManager`], each question asked through another (its search and its prompt), the
//! optional answers of the local model, and the per-question details.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use llmem::core::{ChatModel, ChatRequest, Embedder, Message, Scope, TokenCounter};
use llmem::tiers::WarmStore;
use llmem::tokens::Counters;
use llmem::{Config, FactMode, MemoryManager, Providers, RetrievalScope, SummarizerMode};
use serde_json::json;

use crate::locomo::{Sample, category_name, memory_text, read_samples};
use crate::report::{self, Outcome};
use crate::score::{answer_f1, answer_in, gold_items, normalise};

/// Tokens kept free in every prompt for the answer.
const ANSWER_RESERVE: usize = 64;
/// Memories considered for the prompt (best first, while they fit), at least `--k`.
const CANDIDATES: usize = 80;
/// Tokens of prompt per memory considered on the budget curve: a larger budget considers more
/// memories (`budget / 20`, at least [`CANDIDATES`]), or its room could not fill.
const TOKENS_PER_CANDIDATE: usize = 20;
/// Questions of another conversation asked of each one, to measure what the relevance gate lets
/// through when nothing remembered answers them (`off_topic_*`).
const OFF_TOPIC: usize = 40;
/// The cut-offs of the `recall_at_<k>` figures.
pub const RECALL_KS: [usize; 4] = [5, 10, 20, 50];
const SYSTEM: &str = "You answer questions about a long conversation. Below are dated memories \
                      from it. Answer briefly from them; if they do not say, reply that it is not \
                      mentioned.";

/// What to run: the data, the prompt's budget, k, the embedder, facts, answers, and where the
/// figures go.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The LoCoMo JSON file (a list of samples with `conversation` and `qa`).
    #[arg(long, env = "LLMEM_LOCOMO")]
    pub data: PathBuf,
    /// Token budget of each assembled prompt (answer reserve included).
    #[arg(long, default_value_t = 1500)]
    pub budget: usize,
    /// Memories retrieved per question for recall@k.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Write the figures as JSON here (and the plot next to it as .svg unless --plot is given).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the plot (SVG) here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Only these samples (by `sample_id`, repeatable), else all.
    #[arg(long = "sample")]
    pub samples: Vec<String>,
    /// The model whose tokenizer counts the prompt.
    #[arg(long, default_value = "gpt-4o-mini")]
    pub model: String,
    /// Vectors from the local ONNX embedder (`auto`: when installed; `onnx-int8`: on its
    /// quantised model), or lexical search only.
    #[arg(long, value_enum, default_value_t = EmbedderMode::Auto)]
    pub embedder: EmbedderMode,
    /// Whose settings the managers run with: the product's defaults as shipped (only the model
    /// and the budget set), or the eval's (retrieval that fills the prompt: no relevance gate,
    /// 80 candidates, the whole budget; the last 8 turns raw; no facts).
    #[arg(long, value_enum, default_value_t = Settings::Product)]
    pub settings: Settings,
    /// Facts drawn from each turn (`llm`: by the local model), over either settings' own:
    /// the product's `memory.facts` (heuristic), none with the eval's.
    #[arg(long, value_enum)]
    pub facts: Option<FactArg>,
    /// Broader terms of memories' nouns from WordNet (`retrieval.taxonomy`: `auto` uses it when
    /// `cargo xtask setup wordnet` installed it, `off`, or a WordNet `dict` directory).
    #[arg(long, default_value = "auto")]
    pub taxonomy: String,
    /// The prompt budgets of the budget curve: `evidence_in_context` and the prompt's size at
    /// each (comma-separated; `--budget` is measured anyway).
    #[arg(long, value_delimiter = ',', default_value = "1000,1500,3000,6000")]
    pub curve: Vec<usize>,
    /// Consolidate each conversation after ingesting it (`llmem::consolidate`, by day, every
    /// memory old enough, extractive summaries): summaries join the memories searched, and
    /// they count for no evidence turn, so this measures what they cost recall.
    #[arg(long)]
    pub consolidate: bool,
    /// No budget curve: only the prompt at `--budget`.
    #[arg(long)]
    pub no_curve: bool,
    /// Answer each question with the local model (llama.cpp) and score token F1 (slow).
    #[arg(long)]
    pub answer: bool,
    /// With --answer: at most this many questions per conversation.
    #[arg(long)]
    pub answer_limit: Option<usize>,
    /// Embed memories off the request path (`retrieval.deferred_embedding`): each turn is
    /// stored at once and embedded in batches in the background; the questions wait until
    /// every turn has its vector. The report then has the acknowledged and the embedded rate.
    #[arg(long)]
    pub deferred_embedding: bool,
    /// No progress bar, no per-question lines.
    #[arg(long)]
    pub quiet: bool,
    /// Write one JSON line per question here: its sample, category, gold answer, evidence, the
    /// `dia_id`s of the top k, what was found, the prompt as sent, the time taken to search and
    /// to assemble it (`prepare_ms`), and with --answer the model's answer (`prediction`) and
    /// its F1, to see why a question scored as it did.
    #[arg(long)]
    pub details: Option<PathBuf>,
}

/// Whose settings the managers run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Settings {
    /// The eval's: retrieval that fills the prompt.
    Eval,
    /// `Config::default()` as shipped, with the model and the budget.
    Product,
}

impl Settings {
    /// The name `--settings` takes, and the report's `settings`.
    pub fn name(self) -> &'static str {
        match self {
            Settings::Eval => "eval",
            Settings::Product => "product",
        }
    }
}

/// Which facts the manager draws from each turn (`memory.facts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FactArg {
    Off,
    Heuristic,
    Llm,
}

/// Where the memories' vectors come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedderMode {
    // The local ONNX embedder when it is installed, else lexical search only.
    Auto,
    // The local ONNX embedder; an error when it is not installed.
    Onnx,
    // The local ONNX embedder on its quantised model (`quantized = true`).
    OnnxInt8,
    // No vectors: lexical search only.
    None,
}

/// The whole run: reads the data, ingests and asks, prints the table and writes the files.
pub(crate) async fn locomo(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.budget >= 200,
        "--budget {} is too small for a prompt; use at least 200 tokens",
        args.budget
    );
    anyhow::ensure!(args.k >= 1, "--k must be at least 1");
    if let Some(b) = args.curve.iter().find(|b| **b < 200) {
        anyhow::bail!("--curve {b} is too small for a prompt; use budgets of at least 200 tokens");
    }
    let curve: Vec<usize> = if args.no_curve {
        Vec::new()
    } else {
        let mut c = args.curve.clone();
        c.sort_unstable();
        c.dedup();
        c
    };
    let (samples, malformed) = read_samples(&args.data, &args.samples)?;
    let counters = Counters::embedded()?;
    let info = counters.catalog().require(&args.model)?;
    let counter: Arc<dyn TokenCounter> = counters.for_model(&info.id)?;
    let embedder = embedder(args.embedder)?;
    let chat = if args.answer || args.facts == Some(FactArg::Llm) {
        let server = llmem::providers::llamacpp::LlamaCppServer::builder()
            .start()
            .await
            .context("--answer and --facts llm need the local model: run `cargo xtask setup`")?;
        let model: Arc<dyn ChatModel> = Arc::new(server.chat_model()?);
        Some((server, model))
    } else {
        None
    };
    let config = manager_config(&args, &info.id, args.budget)?;
    let turns: usize = samples.iter().map(|s| s.turns.len()).sum();
    let questions: usize = samples.iter().map(|s| s.questions.len()).sum();
    println!(
        "llmem eval locomo: {} conversations, {turns} turns, {questions} questions; budget {} tokens ({}), k {}; pipeline: {}; retrieval: {}{}",
        samples.len(),
        args.budget,
        info.id,
        args.k,
        format_args!(
            "MemoryManager, {} settings (vector weight {}, question weight {}, session weight {}, late interaction {}, reply share {})",
            match args.settings {
                Settings::Eval => "the eval's",
                Settings::Product => "the product's default",
            },
            config.retrieval.vector_weight,
            config.retrieval.question_weight,
            config.retrieval.session_weight,
            config.retrieval.late_interaction,
            config.retrieval.late_reply_share
        ),
        match &embedder {
            Some(e) => format!("hybrid (BM25 + {} vectors)", e.name()),
            None => "BM25 only (no embedder)".into(),
        },
        if malformed > 0 {
            format!("; {malformed} evidence ids that name no turn skipped")
        } else {
            String::new()
        }
    );
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new((turns + questions) as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    };

    let mut providers = Providers::default()
        .with_store(Arc::new(WarmStore::in_memory()))
        .with_counter(counter.clone());
    if let Some(e) = &embedder {
        providers = providers.with_embedder(e.clone());
    }
    if config.retrieval.deferred_embedding && embedder.is_some() {
        providers = providers.with_deferred_embedding(llmem::DeferredSettings {
            queue: config.retrieval.embedding_queue,
            ..llmem::DeferredSettings::default()
        })?;
    }
    if let (Some((_, model)), Some(FactArg::Llm)) = (&chat, args.facts) {
        providers = providers.with_chat(model.clone());
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut details = match &args.details {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("--details: cannot create {}", path.display()))?,
        )),
        None => None,
    };
    let mut ingest_secs = 0.0;
    let mut embedded_secs = 0.0;
    let mut add_ms: Vec<f64> = Vec::new();
    let mut conversation_tokens = Vec::new();
    // Questions of another conversation asked of each one: (memories recalled, prompt tokens).
    let mut off_topic: Vec<(usize, usize, &str)> = Vec::new();
    for (si, sample) in samples.iter().enumerate() {
        bar.set_message(format!("{} ingest", sample.id));
        let started = Instant::now();
        add_ms.extend(ingest_manager(sample, &config, &providers, &bar).await?);
        ingest_secs += started.elapsed().as_secs_f64();
        providers.drain_embeddings().await;
        let secs = started.elapsed().as_secs_f64();
        tracing::debug!(sample = %sample.id, turns = sample.turns.len(), secs, "ingested");
        embedded_secs += secs;
        if args.consolidate
            && let Some(store) = &providers.store
        {
            let settings = llmem::ConsolidationSettings {
                older_than_days: 0,
                ..llmem::ConsolidationSettings::default()
            };
            let out = llmem::consolidate(
                store,
                None,
                providers.embedder.as_ref(),
                counter.clone(),
                &sample.id,
                &settings,
                llmem::core::Timestamp::now(),
            )
            .await?;
            tracing::info!(sample = %sample.id, summaries = out.summaries.len(), sources = out.sources, "consolidated");
        }
        let whole = sample
            .turns
            .iter()
            .map(memory_text)
            .collect::<Vec<_>>()
            .join("\n");
        conversation_tokens.push(counter.count(&whole));
        let everything = normalise(&whole);
        // The product's view of a question: a new session of the same user.
        let mut asker = MemoryManager::for_session(
            config.clone(),
            providers.clone(),
            Scope::session(sample.id.as_str(), "questions"),
        )?;
        asker.add_message(Message::system(SYSTEM), None).await?;
        // The same questions under the curve's other budgets, each a session of its own.
        let mut curve_askers = Vec::new();
        for &b in &curve {
            if b == args.budget {
                continue;
            }
            let mut m = MemoryManager::for_session(
                manager_config(&args, &info.id, b)?,
                providers.clone(),
                Scope::session(sample.id.as_str(), format!("questions-{b}")),
            )?;
            m.add_message(Message::system(SYSTEM), None).await?;
            curve_askers.push((b, m));
        }

        bar.set_message(format!("{} questions", sample.id));
        for (qi, q) in sample.questions.iter().enumerate() {
            let started = Instant::now();
            let hits = asker.search(&q.text, args.k).await?;
            let search_ms = started.elapsed().as_secs_f64() * 1000.0;
            let prepared = Instant::now();
            let ready = asker.prepare(Some(&q.text)).await?;
            let prepare_ms = prepared.elapsed().as_secs_f64() * 1000.0;
            let in_prompt = prompt_ids(&ready.retrieved);
            let evidence_in_context = all_in_prompt(&q.evidence, &in_prompt);
            let mut prompt = ready.messages;
            prompt.push(Message::user(q.text.clone()));
            // Recall at each cut-off, from one wider search.
            let wide = asker.search(&q.text, RECALL_KS[3]).await?;
            let found_at = RECALL_KS.map(|k| found_in(&wide, k, &q.evidence));
            // The budget curve: the evidence in the prompt, and its size, at each budget.
            let mut at_budget = Vec::new();
            for &b in &curve {
                if b == args.budget {
                    let tokens = counter.count_messages(&prompt);
                    at_budget.push((b, evidence_in_context, tokens));
                    continue;
                }
                let Some((_, m)) = curve_askers.iter_mut().find(|(x, _)| *x == b) else {
                    continue;
                };
                let p = m.prepare(Some(&q.text)).await?;
                let mut messages = p.messages;
                messages.push(Message::user(q.text.clone()));
                let tokens = counter.count_messages(&messages);
                at_budget.push((
                    b,
                    all_in_prompt(&q.evidence, &prompt_ids(&p.retrieved)),
                    tokens,
                ));
            }
            // A memory counts for the turn it was said in, or was derived from (a fact keeps
            // its message's `dia_id`).
            let top_ids: Vec<&str> = hits
                .iter()
                .take(args.k)
                .filter_map(|h| h.record.metadata.get("dia_id")?.as_str())
                .collect();
            let top: HashSet<&str> = top_ids.iter().copied().collect();
            let found = q
                .evidence
                .iter()
                .filter(|e| top.contains(e.as_str()))
                .count();
            let context_tokens = counter.count_messages(&prompt);
            let prompt_text: Vec<String> = prompt.iter().map(Message::text).collect();
            let context = normalise(&prompt_text.join("\n"));
            let gold = q.answer.as_deref().map(|a| gold_items(a, q.category));
            let answer_in_context = gold.as_ref().map(|a| answer_in(&context, a));
            let answer_in_conversation = gold.as_ref().map(|a| answer_in(&everything, a));
            let answered = match &chat {
                Some((_, model)) if args.answer && args.answer_limit.is_none_or(|n| qi < n) => {
                    let r = model
                        .chat(
                            ChatRequest::new(prompt)
                                .with_max_tokens(ANSWER_RESERVE as u32)
                                .with_temperature(0.0),
                        )
                        .await
                        .context("the local model failed to answer")?;
                    let pred = r.message.text();
                    let f1 = match &q.answer {
                        Some(gold) => answer_f1(&pred, gold, q.category),
                        None => {
                            // As the benchmark scores an adversarial question.
                            let p = pred.to_lowercase();
                            f64::from(u8::from(
                                p.contains("not mentioned")
                                    || p.contains("no information available"),
                            ))
                        }
                    };
                    Some((f1, pred))
                }
                _ => None,
            };
            let (f1, prediction) = answered.unzip();
            if let Some(out) = &mut details {
                let line = json!({
                    "sample": sample.id,
                    "question": q.text,
                    "category": category_name(q.category),
                    "answer": q.answer,
                    "evidence": q.evidence,
                    "top_k": top_ids,
                    "in_prompt": in_prompt,
                    "top_50": wide.iter().filter_map(|h| h.record.metadata.get("dia_id")?.as_str()).collect::<Vec<_>>(),
                    "evidence_found": found,
                    "evidence_found_at": RECALL_KS.iter().zip(found_at).map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                    "evidence_in_context": evidence_in_context,
                    "budget_curve": at_budget.iter().map(|(b, e, t)| json!({"budget": b, "evidence_in_context": e, "context_tokens": t})).collect::<Vec<_>>(),
                    "answer_in_context": answer_in_context,
                    "answer_in_conversation": answer_in_conversation,
                    "context_tokens": context_tokens,
                    "search_ms": search_ms,
                    "prepare_ms": prepare_ms,
                    "prediction": prediction,
                    "f1": f1,
                    "prompt": prompt_text,
                });
                writeln!(out, "{line}").context("--details: cannot write")?;
            }
            if !args.quiet && bar.is_hidden() {
                println!(
                    "{} q{qi:<3} {:<11} evidence {found}/{} answer {} {context_tokens} tok {search_ms:.1} ms  {}",
                    sample.id,
                    category_name(q.category),
                    q.evidence.len(),
                    match answer_in_context {
                        Some(true) => "in ",
                        Some(false) => "NOT",
                        None => "n/a",
                    },
                    q.text
                );
            }
            outcomes.push(Outcome {
                sample: sample.id.clone(),
                category: q.category,
                evidence: q.evidence.len(),
                evidence_found: found,
                evidence_found_at: found_at,
                evidence_in_context,
                at_budget,
                answer_in_context,
                answer_in_conversation,
                context_tokens,
                search_ms,
                f1,
            });
            bar.inc(1);
        }
        // What the relevance gate lets through for questions this user's memory cannot answer:
        // the first questions of the next conversation (other people, other events).
        if samples.len() > 1 {
            let other = &samples[(si + 1) % samples.len()];
            for q in other.questions.iter().take(OFF_TOPIC) {
                let ready = asker.prepare(Some(&q.text)).await?;
                let mut prompt = ready.messages;
                prompt.push(Message::user(q.text.clone()));
                off_topic.push((
                    ready.retrieved.len(),
                    counter.count_messages(&prompt),
                    sample.id.as_str(),
                ));
            }
        }
    }
    bar.finish_and_clear();
    if let Some(mut out) = details {
        out.flush().context("--details: cannot write")?;
    }

    add_ms.sort_by(f64::total_cmp);
    let mut report = report::report(&outcomes, turns, ingest_secs);
    report.insert(
        "ingest_embedded_turns_per_s".into(),
        json!(turns as f64 / f64::max(embedded_secs, 1e-9)),
    );
    report.insert(
        "add_message_p50_ms".into(),
        json!(report::percentile(&add_ms, 0.5)),
    );
    report.insert(
        "add_message_p95_ms".into(),
        json!(report::percentile(&add_ms, 0.95)),
    );
    report.insert(
        "add_message_p99_ms".into(),
        json!(report::percentile(&add_ms, 0.99)),
    );
    report.insert(
        "add_message_max_ms".into(),
        json!(add_ms.last().copied().unwrap_or(0.0)),
    );
    report.insert(
        "deferred_embedding".into(),
        json!(providers.deferred.as_ref().map(|d| d.queue_stats())),
    );
    if !off_topic.is_empty() {
        let n = off_topic.len() as f64;
        let recalling = |s: Option<&str>| {
            off_topic
                .iter()
                .filter(|(m, _, id)| *m > 0 && s.is_none_or(|s| s == *id))
                .count()
        };
        report.insert("off_topic_questions".into(), json!(off_topic.len()));
        report.insert(
            "off_topic_recalling".into(),
            json!(recalling(None) as f64 / n),
        );
        report.insert(
            "off_topic_memories".into(),
            json!(off_topic.iter().map(|(m, _, _)| *m).sum::<usize>() as f64 / n),
        );
        report.insert(
            "off_topic_context_tokens".into(),
            json!(off_topic.iter().map(|(_, t, _)| *t).sum::<usize>() as f64 / n),
        );
        // Per conversation, the counts (so that leave-one-out pools them).
        if let Some(per) = report.get_mut("per_sample").and_then(|v| v.as_object_mut()) {
            for (id, figures) in per.iter_mut() {
                let asked = off_topic.iter().filter(|(_, _, s)| s == id).count();
                figures["off_topic_questions"] = json!(asked);
                figures["off_topic_recalling_questions"] = json!(recalling(Some(id)));
            }
        }
    }
    report.insert("settings".into(), json!(args.settings.name()));
    report.insert(
        "full_conversation_tokens".into(),
        json!(
            conversation_tokens.iter().sum::<usize>() as f64
                / conversation_tokens.len().max(1) as f64
        ),
    );
    report::print_table(&report, args.k, args.budget);
    report::write(
        &report,
        args.k,
        args.budget,
        args.json.as_deref(),
        args.plot.as_deref(),
    )
}

/// The manager's settings for the eval: the prompt's budget and answer reserve, a window that
/// compresses at half the budget (extractive summaries, the last 8 turns raw), and retrieval
/// that fills the prompt (no relevance gate: the eval asks only what the conversation says).
/// The retrieval weights come from the `LLMEM_RETRIEVAL_*` variables when they are set
/// (`LLMEM_RETRIEVAL_SESSION_WEIGHT=0`), so that each can be measured without a rebuild;
/// `k`, the gates, the token cap, the scope and the taxonomy are the eval's own.
pub fn manager_config(args: &Args, model: &str, budget: usize) -> Result<Config> {
    let retrieval = std::env::vars().filter(|(k, _)| k.starts_with("LLMEM_RETRIEVAL_"));
    let mut c = Config::from_sources(None, retrieval).context("the LLMEM_RETRIEVAL_* variables")?;
    c.memory.model = model.to_owned();
    c.retrieval.deferred_embedding |= args.deferred_embedding;
    c.memory.max_context_tokens = budget;
    c.memory.answer_reserve = ANSWER_RESERVE;
    c.memory.compression_threshold = budget / 2;
    let facts = args.facts.map(|f| match f {
        FactArg::Off => FactMode::Off,
        FactArg::Heuristic => FactMode::Heuristic,
        FactArg::Llm => FactMode::Llm,
    });
    if args.settings == Settings::Product {
        // The shipped defaults: the relevance gate, k, the retrieval's token cap, heuristic
        // facts, the summariser; only what a budget of this size forces is set.
        c.retrieval.max_tokens = c.retrieval.max_tokens.min(budget);
        if let Some(f) = facts {
            c.memory.facts = f;
        }
        c.validate()?;
        return Ok(c);
    }
    c.memory.short_term_size = 8;
    c.memory.summarizer = SummarizerMode::Extractive;
    c.memory.facts = facts.unwrap_or(FactMode::Off);
    c.retrieval.k = CANDIDATES.max(args.k).max(budget / TOKENS_PER_CANDIDATE);
    c.retrieval.recall_gate = 0.0;
    c.retrieval.recall_floor = 0.0;
    c.retrieval.min_similarity = 0.0;
    c.retrieval.min_term_overlap = 0.0;
    c.retrieval.max_tokens = budget;
    c.retrieval.scope = RetrievalScope::User;
    c.retrieval.taxonomy = args.taxonomy.clone();
    c.validate()?;
    Ok(c)
}

/// The `dia_id`s a memory counts for: the turn it was said in, or that it was derived from (a
/// fact keeps its message's `dia_id`; a record may list several in `dia_ids`).
fn dia_ids(record: &llmem::MemoryRecord) -> Vec<&str> {
    let mut ids: Vec<&str> = record
        .metadata
        .get("dia_id")
        .and_then(|v| v.as_str())
        .into_iter()
        .collect();
    if let Some(list) = record.metadata.get("dia_ids").and_then(|v| v.as_array()) {
        ids.extend(list.iter().filter_map(|v| v.as_str()));
    }
    ids
}

/// How many of `evidence` the first `k` hits count for.
fn found_in(hits: &[llmem::core::ScoredRecord], k: usize, evidence: &[String]) -> usize {
    let top: HashSet<&str> = hits
        .iter()
        .take(k)
        .flat_map(|h| dia_ids(&h.record))
        .collect();
    evidence.iter().filter(|e| top.contains(e.as_str())).count()
}

/// The turns the memories that entered a prompt count for (their `dia_id`s).
fn prompt_ids(retrieved: &[llmem::Recalled]) -> Vec<&str> {
    retrieved.iter().flat_map(|r| dia_ids(&r.record)).collect()
}

/// Whether every evidence turn is among `in_prompt` ([`prompt_ids`]); `None` for a question
/// without evidence.
fn all_in_prompt(evidence: &[String], in_prompt: &[&str]) -> Option<bool> {
    if evidence.is_empty() {
        return None;
    }
    let inside: HashSet<&str> = in_prompt.iter().copied().collect();
    Some(evidence.iter().all(|e| inside.contains(e.as_str())))
}

/// Feeds every turn through a `MemoryManager`, one manager per LoCoMo session (the user is the
/// conversation), each ended when its session ends so its last turns reach long-term memory.
/// Returns the time each `add_message` took, in ms.
pub async fn ingest_manager(
    sample: &Sample,
    config: &Config,
    providers: &Providers,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<f64>> {
    let mut took = Vec::with_capacity(sample.turns.len());
    for session in sample.turns.chunk_by(|a, b| a.session == b.session) {
        let Some(first) = session.first() else {
            continue;
        };
        let mut m = MemoryManager::for_session(
            config.clone(),
            providers.clone(),
            Scope::session(sample.id.as_str(), format!("session_{}", first.session)),
        )?;
        for t in session {
            let message = Message::user(t.text.clone())
                .with_name(t.speaker.clone())
                .with_created_at(t.date.timestamp())
                .with_metadata("dia_id", t.dia_id.clone());
            let t = Instant::now();
            m.add_message(message, None).await?;
            took.push(t.elapsed().as_secs_f64() * 1e3);
            bar.inc(1);
        }
        m.end_session().await?;
    }
    Ok(took)
}

/// The embedder `mode` asks for: the local ONNX embedder, or none (lexical search only).
pub fn embedder(mode: EmbedderMode) -> Result<Option<Arc<dyn Embedder>>> {
    Ok(match mode {
        EmbedderMode::None => None,
        EmbedderMode::Onnx => Some(llmem::local_embedder().context("--embedder onnx")?),
        EmbedderMode::OnnxInt8 => Some(quantized_embedder().context("--embedder onnx-int8")?),
        EmbedderMode::Auto => match llmem::local_embedder() {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("(no local embedder: {e}; lexical search only)");
                None
            }
        },
    })
}

/// The local embedder on the default model's quantised copy.
#[cfg(feature = "onnx")]
fn quantized_embedder() -> Result<Arc<dyn Embedder>> {
    use llmem::providers::onnx::OnnxEmbedder;
    Ok(Arc::new(
        OnnxEmbedder::builder().with_quantized(true).build()?,
    ))
}

#[cfg(not(feature = "onnx"))]
fn quantized_embedder() -> Result<Arc<dyn Embedder>> {
    anyhow::bail!("this build has no local embedder: build llmem-eval with the `onnx` feature")
}
