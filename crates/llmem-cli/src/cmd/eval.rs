//! `llmem eval locomo`: recall and context quality on the LoCoMo long-conversation benchmark.
//!
//! For each conversation every turn is fed in order, with its session's date, to the product's
//! [`MemoryManager`] (one per LoCoMo session, the conversation as the user): the window,
//! compression and (with `--facts`) fact extraction run as in an application, and what leaves
//! the window goes to long-term memory with the turn's embedding from the local ONNX embedder,
//! its relative times resolved ("yesterday" → the date) and its neighbours in the lexical key.
//! Each question is asked in a new session of the same user: the manager's search gives the top
//! `--k` memories, and `prepare` gives the prompt it would send under `--budget` tokens (a system
//! line, the recalled memories best first while they fit, room for the question and an answer
//! reserve). `--pipeline store` skips the manager and writes the turns straight into the warm
//! store, with the prompt assembled by the window's [`Layout`]. The figures: evidence recall in
//! the top `--k`, whether the gold answer is in that prompt, its size, retrieval latency and
//! ingest speed, overall and per question category; optionally (`--answer`) the local model
//! answers and is scored by token F1.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use llmem::config::{FactMode, RetrievalScope, SummarizerMode};
use llmem::core::{
    ChatModel, ChatRequest, Embedder, Fusion, KEYWORDS, MemoryRecord, MemoryStore, Message,
    RecordKind, Role, Scope, SearchRequest, TokenCounter,
};
use llmem::longterm::{NEXT_MESSAGES, PREV_MESSAGES};
use llmem::tiers::WarmStore;
use llmem::when::{CivilDate, MONTHS, with_times};
use llmem::window::{Block, Layout};
use llmem::{Config, MemoryManager, Providers};
use nltk_porter::{Mode, PorterStemmer};
use serde_json::{Value, json};

use super::input;

/// Tokens kept free in every prompt for the answer.
const ANSWER_RESERVE: usize = 64;
/// Memories considered for the prompt (best first, while they fit), at least `--k`.
const CANDIDATES: usize = 80;
const SYSTEM: &str = "You answer questions about a long conversation. Below are dated memories \
                      from it. Answer briefly from them; if they do not say, reply that it is not \
                      mentioned.";

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Ingest LoCoMo conversations and measure retrieval recall, answers in context and latency.
    Locomo(Args),
}

#[derive(Debug, clap::Args)]
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
    /// Vectors from the local ONNX embedder (`auto`: when installed), or lexical search only.
    #[arg(long, value_enum, default_value_t = EmbedderMode::Auto)]
    pub embedder: EmbedderMode,
    /// What ingests and retrieves: the product's `MemoryManager` (window, compression, facts,
    /// long-term memory), or the bare warm store with the eval's own keys and fusion.
    #[arg(long, value_enum, default_value_t = Pipeline::Manager)]
    pub pipeline: Pipeline,
    /// With `--pipeline manager`: facts drawn from each turn (`llm`: by the local model).
    #[arg(long, value_enum, default_value_t = FactArg::Off)]
    pub facts: FactArg,
    /// With `--pipeline manager`: broader terms of memories' nouns from WordNet
    /// (`retrieval.taxonomy`: `auto` uses it when `cargo xtask setup wordnet` installed it,
    /// `off`, or a WordNet `dict` directory).
    #[arg(long, default_value = "auto")]
    pub taxonomy: String,
    /// With `--pipeline store`: the weight of the vector ranking in the hybrid fusion (0 =
    /// BM25 only, 1 = vectors only; default 0.3); `rrf` fuses by reciprocal rank instead.
    #[arg(long)]
    pub vector_weight: Option<String>,
    /// Answer each question with the local model (llama.cpp) and score token F1 (slow).
    #[arg(long)]
    pub answer: bool,
    /// With --answer: at most this many questions per conversation.
    #[arg(long)]
    pub answer_limit: Option<usize>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pipeline {
    Manager,
    Store,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FactArg {
    Off,
    Heuristic,
    Llm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedderMode {
    Auto,
    Onnx,
    None,
}

pub async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Locomo(args) => locomo(args).await,
    }
}

/// One LoCoMo conversation, parsed.
#[derive(Debug)]
struct Sample {
    id: String,
    turns: Vec<Turn>,
    questions: Vec<Question>,
}

#[derive(Debug)]
struct Turn {
    dia_id: String,
    session: u32,
    date: CivilDate,
    speaker: String,
    text: String,
}

#[derive(Debug)]
struct Question {
    text: String,
    /// The gold answer (for adversarial questions: none; the right reply is "not mentioned").
    answer: Option<String>,
    evidence: Vec<String>,
    category: u8,
}

const CATEGORIES: [(u8, &str); 5] = [
    (1, "multi-hop"),
    (2, "temporal"),
    (3, "open-domain"),
    (4, "single-hop"),
    (5, "adversarial"),
];

fn category_name(c: u8) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(n, _)| *n == c)
        .map_or("other", |(_, name)| name)
}

/// Reads and checks a LoCoMo file; errors name the sample and field that is wrong.
fn read_samples(path: &Path, only: &[String]) -> Result<(Vec<Sample>, usize)> {
    let text = input::read_text(path)?;
    let v: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON; expected the LoCoMo list of samples",
            path.display()
        )
    })?;
    let Some(list) = v.as_array() else {
        bail!(
            "{}: expected a JSON list of samples with `conversation` and `qa`",
            path.display()
        );
    };
    let mut out = Vec::new();
    let mut malformed = 0;
    for (i, s) in list.iter().enumerate() {
        let id = s["sample_id"]
            .as_str()
            .map_or_else(|| format!("#{i}"), str::to_owned);
        if !only.is_empty() && !only.contains(&id) {
            continue;
        }
        let conv = s["conversation"]
            .as_object()
            .with_context(|| format!("sample {id}: `conversation` is missing or not an object"))?;
        let mut sessions: Vec<u32> = conv
            .keys()
            .filter_map(|k| k.strip_prefix("session_")?.parse().ok())
            .collect();
        sessions.sort_unstable();
        let mut turns = Vec::new();
        for n in sessions {
            let key = format!("session_{n}_date_time");
            let when = conv
                .get(&key)
                .and_then(Value::as_str)
                .with_context(|| format!("sample {id}: `{key}` is missing"))?;
            let date = parse_locomo_date(when)
                .with_context(|| format!("sample {id}: `{key}` = {when:?}"))?;
            for t in conv[&format!("session_{n}")]
                .as_array()
                .into_iter()
                .flatten()
            {
                let (Some(dia), Some(speaker), Some(text)) = (
                    t["dia_id"].as_str(),
                    t["speaker"].as_str(),
                    t["text"].as_str(),
                ) else {
                    bail!(
                        "sample {id}, session {n}: a turn lacks `dia_id`, `speaker` or `text`: {t}"
                    );
                };
                let mut text = text.to_owned();
                if let Some(c) = t["blip_caption"].as_str() {
                    text.push_str(&format!(" [shares a photo: {c}]"));
                }
                turns.push(Turn {
                    dia_id: dia.to_owned(),
                    session: n,
                    date,
                    speaker: speaker.to_owned(),
                    text,
                });
            }
        }
        let known: HashSet<&str> = turns.iter().map(|t| t.dia_id.as_str()).collect();
        let mut questions = Vec::new();
        for q in s["qa"].as_array().into_iter().flatten() {
            let Some(text) = q["question"].as_str() else {
                bail!("sample {id}: a qa item has no `question`: {q}");
            };
            let category = q["category"].as_u64().unwrap_or(0) as u8;
            let answer = match &q["answer"] {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            };
            let mut evidence = Vec::new();
            for e in q["evidence"].as_array().into_iter().flatten() {
                for part in e.as_str().unwrap_or_default().split([';', ',']) {
                    let part = part.trim();
                    if known.contains(part) {
                        evidence.push(part.to_owned());
                    } else if !part.is_empty() {
                        malformed += 1;
                    }
                }
            }
            questions.push(Question {
                text: text.to_owned(),
                answer: if category == 5 { None } else { answer },
                evidence,
                category,
            });
        }
        out.push(Sample {
            id,
            turns,
            questions,
        });
    }
    if out.is_empty() {
        bail!(
            "no samples to evaluate in {}{}",
            path.display(),
            if only.is_empty() {
                String::new()
            } else {
                format!(" (asked for {})", only.join(", "))
            }
        );
    }
    Ok((out, malformed))
}

/// A LoCoMo session date: `1:56 pm on 8 May, 2023`.
fn parse_locomo_date(s: &str) -> Result<CivilDate> {
    let bad = || anyhow::anyhow!("expected a date like `1:56 pm on 8 May, 2023`");
    let (clock, day) = s.split_once(" on ").ok_or_else(bad)?;
    let mut c = clock.split_whitespace();
    let (hm, ampm) = (c.next().ok_or_else(bad)?, c.next().unwrap_or("am"));
    let (h, mi) = hm.split_once(':').ok_or_else(bad)?;
    let (mut h, mi): (u32, u32) = (h.parse()?, mi.parse()?);
    if ampm.eq_ignore_ascii_case("pm") && h < 12 {
        h += 12;
    } else if ampm.eq_ignore_ascii_case("am") && h == 12 {
        h = 0;
    }
    let parts: Vec<&str> = day
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    let [d, month, y] = parts[..] else {
        return Err(bad());
    };
    let m = MONTHS
        .iter()
        .position(|n| n.eq_ignore_ascii_case(month))
        .ok_or_else(bad)? as u32
        + 1;
    let date = CivilDate {
        year: y.parse()?,
        month: m,
        day: d.parse()?,
        minute: h * 60 + mi,
    };
    if date.day == 0 || date.day > 31 || h > 23 || mi > 59 {
        return Err(bad());
    }
    Ok(date)
}

/// The memory's text: who said what, when, with relative times resolved.
fn memory_text(t: &Turn) -> String {
    format!(
        "[{}] {}: {}",
        t.date.long(),
        t.speaker,
        with_times(&t.text, t.date.timestamp())
    )
}

/// Lower case, punctuation and articles removed, single spaces, padded with one space at each
/// end so that `contains` matches whole words only. Dates compare by their parts, not the way
/// they are written: a number and a word written together are two words ("14September"), an
/// ordinal is its number ("13th"), and a month before its day ("February 24, 2023") is put
/// after it ("24 february 2023"), as the benchmark's own bag-of-words F1 would match them.
fn normalise(s: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for w in s
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let w = w.to_lowercase();
        if is_article(&w) {
            continue;
        }
        for part in digit_runs(&w) {
            match words.last() {
                Some(n) if is_ordinal_suffix(part) && n.bytes().all(|b| b.is_ascii_digit()) => {}
                _ => words.push(part.to_owned()),
            }
        }
    }
    let mut i = 1;
    while i < words.len() {
        let day =
            words[i].len() <= 2 && words[i].parse::<u8>().is_ok_and(|d| (1..=31).contains(&d));
        if day && MONTHS.iter().any(|m| m.eq_ignore_ascii_case(&words[i - 1])) {
            words.swap(i - 1, i);
            i += 1;
        }
        i += 1;
    }
    let mut out = String::from(" ");
    for w in &words {
        out.push_str(w);
        out.push(' ');
    }
    out
}

/// A word split where digits meet letters: "14september" is "14", "september".
fn digit_runs(w: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut prev: Option<bool> = None;
    for (i, c) in w.char_indices() {
        let digit = c.is_ascii_digit();
        if prev.is_some_and(|p| p != digit) {
            parts.push(&w[start..i]);
            start = i;
        }
        prev = Some(digit);
    }
    parts.push(&w[start..]);
    parts
}

/// The words both answer tests leave out, as the benchmark's normalisation does.
fn is_article(w: &str) -> bool {
    matches!(w, "a" | "an" | "the" | "and")
}

fn is_ordinal_suffix(w: &str) -> bool {
    matches!(w, "st" | "nd" | "rd" | "th")
}

/// The items of a gold answer: a multi-hop answer is a list ("pottery, camping, swimming"),
/// split at its commas as the benchmark's own scorer splits it; any other answer is one item.
fn answer_items(answer: &str, category: u8) -> Vec<&str> {
    if category == 1 {
        answer.split(',').filter(|p| !p.trim().is_empty()).collect()
    } else {
        vec![answer]
    }
}

/// A gold answer's items ([`answer_items`]), normalised: what it must be found by.
fn gold_items(answer: &str, category: u8) -> Vec<String> {
    answer_items(answer, category)
        .into_iter()
        .map(normalise)
        .filter(|p| !p.trim().is_empty())
        .collect()
}

/// Token F1 of an answer as the benchmark scores it (LoCoMo's `task_eval/evaluation.py`): a
/// multi-hop answer's items each take their best F1 against the prediction's comma-separated
/// parts, and the answer scores their mean; an open-domain answer is its first alternative
/// (before any `;`); any other answer is [`token_f1`] of the whole.
fn answer_f1(pred: &str, gold: &str, category: u8) -> f64 {
    // An open-domain answer may give alternatives after a semicolon; the scorer takes the first.
    let gold = match category {
        3 => gold.split(';').next().unwrap_or(gold).trim(),
        _ => gold,
    };
    let items = answer_items(gold, category);
    if category != 1 || items.is_empty() {
        return token_f1(pred, gold);
    }
    let parts: Vec<&str> = pred.split(',').collect();
    items
        .iter()
        .map(|g| parts.iter().map(|p| token_f1(p, g)).fold(0.0, f64::max))
        .sum::<f64>()
        / items.len() as f64
}

/// Whether every item of a gold answer is in `text` (normalised), as whole words; an empty
/// answer is.
fn answer_in(text: &str, items: &[String]) -> bool {
    items.iter().all(|i| text.contains(i.as_str()))
}

/// Token F1 between a prediction and the gold answer, on the benchmark's tokens
/// ([`scored_tokens`]).
fn token_f1(pred: &str, gold: &str) -> f64 {
    let p = scored_tokens(pred);
    let mut g = scored_tokens(gold);
    if p.is_empty() || g.is_empty() {
        return f64::from(u8::from(p.is_empty() && g.is_empty()));
    }
    let (np, ng) = (p.len() as f64, g.len() as f64);
    let mut common = 0.0;
    for w in &p {
        if let Some(i) = g.iter().position(|x| x == w) {
            g.swap_remove(i);
            common += 1.0;
        }
    }
    if common == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (common / np, common / ng);
    2.0 * precision * recall / (precision + recall)
}

/// The words the benchmark's F1 compares (its `normalize_answer`, then NLTK's Porter stemmer):
/// lower case, ASCII punctuation deleted (so "Potter's" is "potters", one word), the words
/// "a", "an", "the" and "and" taken out wherever they stand between word boundaries, and each
/// word left stemmed ("paintings" is "paint").
fn scored_tokens(s: &str) -> Vec<String> {
    static STEMMER: std::sync::OnceLock<PorterStemmer> = std::sync::OnceLock::new();
    let stemmer = STEMMER.get_or_init(|| PorterStemmer::new(Mode::Nltk));
    let text: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let mut words = Vec::new();
    for token in text.split_whitespace() {
        // Runs of word characters and of others, as a regex's `\b` sees them; an article run
        // becomes a space, which splits the token there.
        let mut word = String::new();
        let mut run = String::new();
        let mut in_word = None;
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        for c in token.chars().chain(std::iter::once(' ')) {
            let w = is_word(c);
            if in_word.is_some_and(|was| was != w) || c == ' ' {
                if in_word == Some(true) && is_article(&run) {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                } else {
                    word.push_str(&run);
                }
                run.clear();
            }
            run.push(c);
            in_word = Some(w);
        }
        if !word.is_empty() {
            words.push(word);
        }
    }
    words.into_iter().map(|w| stemmer.stem(&w)).collect()
}

/// What one question measured.
#[derive(Debug, Clone)]
struct Outcome {
    category: u8,
    evidence: usize,
    evidence_found: usize,
    /// `None` for adversarial questions.
    answer_in_context: Option<bool>,
    /// Whether the gold answer is anywhere in the conversation's memories (the ceiling of
    /// `answer_in_context`: what sending everything would score).
    answer_in_conversation: Option<bool>,
    context_tokens: usize,
    search_ms: f64,
    f1: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The figures of a set of outcomes (the JSON keys of the issue).
fn summarise(outcomes: &[&Outcome]) -> serde_json::Map<String, Value> {
    let evidence: usize = outcomes.iter().map(|o| o.evidence).sum();
    let found: usize = outcomes.iter().map(|o| o.evidence_found).sum();
    let answerable: Vec<bool> = outcomes
        .iter()
        .filter_map(|o| o.answer_in_context)
        .collect();
    let anywhere: Vec<bool> = outcomes
        .iter()
        .filter_map(|o| o.answer_in_conversation)
        .collect();
    let mut ms: Vec<f64> = outcomes.iter().map(|o| o.search_ms).collect();
    ms.sort_by(f64::total_cmp);
    let n = outcomes.len().max(1) as f64;
    let mut m = serde_json::Map::new();
    m.insert("questions".into(), json!(outcomes.len()));
    m.insert(
        "recall_at_k".into(),
        json!(if evidence == 0 {
            Value::Null
        } else {
            json!(found as f64 / evidence as f64)
        }),
    );
    let share = |xs: &[bool]| {
        if xs.is_empty() {
            Value::Null
        } else {
            json!(xs.iter().filter(|x| **x).count() as f64 / xs.len() as f64)
        }
    };
    m.insert("answer_in_context".into(), share(&answerable));
    m.insert("answer_in_full_conversation".into(), share(&anywhere));
    m.insert(
        "mean_context_tokens".into(),
        json!(outcomes.iter().map(|o| o.context_tokens).sum::<usize>() as f64 / n),
    );
    m.insert("search_p50_ms".into(), json!(percentile(&ms, 0.5)));
    m.insert("search_p95_ms".into(), json!(percentile(&ms, 0.95)));
    let f1: Vec<f64> = outcomes.iter().filter_map(|o| o.f1).collect();
    if !f1.is_empty() {
        m.insert(
            "answer_f1".into(),
            json!(f1.iter().sum::<f64>() / f1.len() as f64),
        );
    }
    m
}

async fn locomo(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.budget >= 200,
        "--budget {} is too small for a prompt; use at least 200 tokens",
        args.budget
    );
    anyhow::ensure!(args.k >= 1, "--k must be at least 1");
    let fusion = match (&args.vector_weight, args.pipeline) {
        (Some(_), Pipeline::Manager) => bail!(
            "--vector-weight applies to --pipeline store; the manager fuses as its store does (weighted, vector weight {})",
            Fusion::DEFAULT_VECTOR_WEIGHT
        ),
        (None, _) => Fusion::default(),
        (Some(w), _) if w.eq_ignore_ascii_case("rrf") => Fusion::Rrf,
        (Some(w), _) => {
            let weight: f32 = w.parse().map_err(|_| {
                anyhow::anyhow!("--vector-weight {w:?}: expected a number within 0..=1 or `rrf`")
            })?;
            let f = Fusion::Weighted {
                vector_weight: weight,
            };
            f.check().context("--vector-weight")?;
            f
        }
    };
    let (samples, malformed) = read_samples(&args.data, &args.samples)?;
    let counters = super::models::counters(None)?;
    let info = counters.catalog().require(&args.model)?;
    let counter: Arc<dyn TokenCounter> = counters.for_model(&info.id)?;
    let embedder = embedder(args.embedder)?;
    let chat = if args.answer || args.facts == FactArg::Llm {
        let server = llmem::providers::llamacpp::LlamaCppServer::builder()
            .start()
            .await
            .context("--answer and --facts llm need the local model: run `cargo xtask setup`")?;
        let model: Arc<dyn ChatModel> = Arc::new(server.chat_model()?);
        Some((server, model))
    } else {
        None
    };
    let config = manager_config(&args, &info.id)?;
    let turns: usize = samples.iter().map(|s| s.turns.len()).sum();
    let questions: usize = samples.iter().map(|s| s.questions.len()).sum();
    println!(
        "llmem eval locomo: {} conversations, {turns} turns, {questions} questions; budget {} tokens ({}), k {}; pipeline: {}; retrieval: {}{}",
        samples.len(),
        args.budget,
        info.id,
        args.k,
        match args.pipeline {
            Pipeline::Manager => format!(
                "MemoryManager (question weight {}, session weight {}, late interaction {}, reply share {})",
                config.retrieval.question_weight,
                config.retrieval.session_weight,
                config.retrieval.late_interaction,
                config.retrieval.late_reply_share
            ),
            Pipeline::Store => "warm store".into(),
        },
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

    let store = Arc::new(WarmStore::in_memory());
    let mut providers = Providers::default()
        .with_store(store.clone())
        .with_counter(counter.clone());
    if let Some(e) = &embedder {
        providers = providers.with_embedder(e.clone());
    }
    if let (Some((_, model)), FactArg::Llm) = (&chat, args.facts) {
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
    for sample in &samples {
        bar.set_message(format!("{} ingest", sample.id));
        let started = Instant::now();
        match args.pipeline {
            Pipeline::Manager => ingest_manager(sample, &config, &providers, &bar).await?,
            Pipeline::Store => ingest_store(sample, &store, embedder.as_ref(), &bar).await?,
        }
        ingest_secs += started.elapsed().as_secs_f64();
        let everything = normalise(
            &sample
                .turns
                .iter()
                .map(memory_text)
                .collect::<Vec<_>>()
                .join("\n"),
        );
        // The product's view of a question: a new session of the same user.
        let mut asker = match args.pipeline {
            Pipeline::Manager => {
                let mut m = MemoryManager::for_session(
                    config.clone(),
                    providers.clone(),
                    Scope::session(sample.id.as_str(), "questions"),
                )?;
                m.add_message(Message::system(SYSTEM), None).await?;
                Some(m)
            }
            Pipeline::Store => None,
        };

        bar.set_message(format!("{} questions", sample.id));
        for (qi, q) in sample.questions.iter().enumerate() {
            let started = Instant::now();
            let ((hits, search), prompt, prepare_ms) = match &mut asker {
                Some(m) => {
                    let hits = m.search(&q.text, args.k).await?;
                    let search = started.elapsed();
                    let prepared = Instant::now();
                    let mut prompt = m.prepare(Some(&q.text)).await?.messages;
                    let prepare_ms = prepared.elapsed().as_secs_f64() * 1000.0;
                    prompt.push(Message::user(q.text.clone()));
                    ((hits, search), prompt, prepare_ms)
                }
                None => {
                    let mut req = SearchRequest::text(q.text.clone(), CANDIDATES.max(args.k))
                        .with_fusion(fusion);
                    if let Some(e) = &embedder {
                        req.vector = e.embed(std::slice::from_ref(&q.text)).await?.pop();
                    }
                    let scope = Scope::tenant(sample.id.as_str());
                    let hits = store.search(&scope, &req).await?;
                    let search = started.elapsed();
                    let assembled = Instant::now();
                    let prompt = assemble(
                        &counter,
                        args.budget,
                        hits.iter().map(|h| h.record.text.as_str()),
                        &q.text,
                    )?;
                    let prepare_ms = assembled.elapsed().as_secs_f64() * 1000.0;
                    ((hits, search), prompt, prepare_ms)
                }
            };
            let search_ms = search.as_secs_f64() * 1000.0;
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
                    "evidence_found": found,
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
                category: q.category,
                evidence: q.evidence.len(),
                evidence_found: found,
                answer_in_context,
                answer_in_conversation,
                context_tokens,
                search_ms,
                f1,
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if let Some(mut out) = details {
        out.flush().context("--details: cannot write")?;
    }

    let mut report = summarise(&outcomes.iter().collect::<Vec<_>>());
    report.insert(
        "ingest_turns_per_s".into(),
        json!(turns as f64 / ingest_secs.max(1e-9)),
    );
    let mut per = BTreeMap::new();
    for (c, name) in CATEGORIES {
        let these: Vec<&Outcome> = outcomes.iter().filter(|o| o.category == c).collect();
        if !these.is_empty() {
            per.insert(name.to_owned(), Value::Object(summarise(&these)));
        }
    }
    report.insert("per_category".into(), json!(per));
    print_table(&report, args.k, args.budget);

    let json_path = args.json.clone();
    if let Some(path) = &json_path {
        write_file(path, &serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = args
        .plot
        .clone()
        .or_else(|| json_path.map(|p| p.with_extension("svg")))
    {
        write_file(&path, &plot_svg(&report, args.k, args.budget))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The manager's settings for the eval: the prompt's budget and answer reserve, a window that
/// compresses at half the budget (extractive summaries, the last 8 turns raw), and retrieval
/// that fills the prompt (no relevance gate: the eval asks only what the conversation says).
/// The retrieval weights come from the `LLMEM_RETRIEVAL_*` variables when they are set
/// (`LLMEM_RETRIEVAL_SESSION_WEIGHT=0`), so that each can be measured without a rebuild;
/// `k`, the gates, the token cap, the scope and the taxonomy are the eval's own.
fn manager_config(args: &Args, model: &str) -> Result<Config> {
    let retrieval = std::env::vars().filter(|(k, _)| k.starts_with("LLMEM_RETRIEVAL_"));
    let mut c = Config::from_sources(None, retrieval).context("the LLMEM_RETRIEVAL_* variables")?;
    c.memory.model = model.to_owned();
    c.memory.max_context_tokens = args.budget;
    c.memory.answer_reserve = ANSWER_RESERVE;
    c.memory.compression_threshold = args.budget / 2;
    c.memory.short_term_size = 8;
    c.memory.summarizer = SummarizerMode::Extractive;
    c.memory.facts = match args.facts {
        FactArg::Off => FactMode::Off,
        FactArg::Heuristic => FactMode::Heuristic,
        FactArg::Llm => FactMode::Llm,
    };
    c.retrieval.k = CANDIDATES.max(args.k);
    c.retrieval.min_similarity = 0.0;
    c.retrieval.min_term_overlap = 0.0;
    c.retrieval.max_tokens = args.budget;
    c.retrieval.scope = RetrievalScope::User;
    c.retrieval.taxonomy = args.taxonomy.clone();
    c.validate()?;
    Ok(c)
}

/// Feeds every turn through a `MemoryManager`, one manager per LoCoMo session (the user is the
/// conversation), each ended when its session ends so its last turns reach long-term memory.
async fn ingest_manager(
    sample: &Sample,
    config: &Config,
    providers: &Providers,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
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
            m.add_message(message, None).await?;
            bar.inc(1);
        }
        m.end_session().await?;
    }
    Ok(())
}

/// Stores every turn straight into the warm store: the text, the embedding of what was said (a
/// date in it only blurs the meaning), and a lexical key with the neighbouring turns of the
/// session, as the manager's archive builds it ([`PREV_MESSAGES`], [`NEXT_MESSAGES`]).
async fn ingest_store(
    sample: &Sample,
    store: &WarmStore,
    embedder: Option<&Arc<dyn Embedder>>,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    for batch in sample.turns.chunk_by(|a, b| a.session == b.session) {
        let keys: Vec<String> = batch
            .iter()
            .map(|t| format!("{}: {}", t.speaker, t.text))
            .collect();
        let vectors = match embedder {
            Some(e) => Some(e.embed(&keys).await?),
            None => None,
        };
        let records: Vec<MemoryRecord> = batch
            .iter()
            .enumerate()
            .map(|(j, t)| {
                let mut r = MemoryRecord::new(sample.id.as_str(), memory_text(t))
                    .with_id(format!("{}/{}", sample.id, t.dia_id))
                    .with_session(format!("session_{}", t.session))
                    .with_kind(RecordKind::Conversation)
                    .with_metadata("dia_id", t.dia_id.as_str())
                    .with_metadata("speaker", t.speaker.as_str())
                    .with_metadata("date", t.date.long())
                    .with_created_at(t.date.timestamp());
                let neighbours: Vec<&str> = (j.saturating_sub(PREV_MESSAGES)..=j + NEXT_MESSAGES)
                    .filter(|&n| n != j)
                    .filter_map(|n| batch.get(n))
                    .map(|n| n.text.as_str())
                    .collect();
                if !neighbours.is_empty() {
                    r = r.with_metadata(KEYWORDS, neighbours.join("\n"));
                }
                if let Some(v) = &vectors {
                    r = r.with_embedding(v[j].clone());
                }
                r
            })
            .collect();
        store.put(records).await?;
        bar.inc(batch.len() as u64);
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The prompt the product would send: the system line, the memories best first while they fit,
/// the question, and the answer reserve, under `budget` tokens counted by the model's tokenizer.
fn assemble<'a>(
    counter: &Arc<dyn TokenCounter>,
    budget: usize,
    memories: impl Iterator<Item = &'a str>,
    question: &str,
) -> Result<Vec<Message>> {
    let mut layout = Layout::new(counter.clone(), budget)
        .with_block(Block::new("system").with_role(Role::System).protected())?
        .with_block(Block::new("retrieved").with_role(Role::System))?
        .with_block(Block::new("question").with_role(Role::User))?
        .with_block(Block::reserve("answer", ANSWER_RESERVE))?;
    layout.push("system", Message::system(SYSTEM))?;
    layout.push("question", Message::user(question))?;
    // One message of memory lines: the free space minus the message's own framing.
    let framing = counter.count_message(&Message::system("Memories:"));
    let mut room = layout.free_memory().saturating_sub(framing);
    let mut text = String::from("Memories:");
    for m in memories {
        let t = counter.count(&format!("\n{m}"));
        if t <= room {
            text.push('\n');
            text.push_str(m);
            room -= t;
        }
    }
    // Token boundaries can merge across lines: the layout has the last word (it rejects a
    // message over the budget), and then the last lines go until it fits.
    let mut lines: Vec<&str> = text.lines().collect();
    loop {
        match layout.push("retrieved", Message::system(lines.join("\n"))) {
            Ok(_) => break,
            Err(_) if lines.len() > 1 => {
                lines.pop();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(layout.render())
}

#[cfg(feature = "onnx")]
pub(crate) fn embedder(mode: EmbedderMode) -> Result<Option<Arc<dyn Embedder>>> {
    use llmem::providers::onnx::OnnxEmbedder;
    match mode {
        EmbedderMode::None => Ok(None),
        EmbedderMode::Onnx => Ok(Some(Arc::new(
            OnnxEmbedder::builder()
                .build()
                .context("--embedder onnx: the local embedder")?,
        ))),
        EmbedderMode::Auto => match OnnxEmbedder::builder().build() {
            Ok(e) => Ok(Some(Arc::new(e))),
            Err(e) => {
                eprintln!("(no local embedder: {e}; lexical search only)");
                Ok(None)
            }
        },
    }
}

#[cfg(not(feature = "onnx"))]
pub(crate) fn embedder(mode: EmbedderMode) -> Result<Option<Arc<dyn Embedder>>> {
    match mode {
        EmbedderMode::Onnx => bail!(
            "--embedder onnx: this llmem was built without the `onnx` feature; rebuild with `--features onnx`"
        ),
        EmbedderMode::Auto => {
            eprintln!("(built without the `onnx` feature: lexical search only)");
            Ok(None)
        }
        EmbedderMode::None => Ok(None),
    }
}

fn fmt_opt(v: &Value, pct: bool) -> String {
    match v.as_f64() {
        Some(x) if pct => format!("{:.1}%", 100.0 * x),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

fn print_table(report: &serde_json::Map<String, Value>, k: usize, budget: usize) {
    println!(
        "\n{:<12} {:>9} {:>11} {:>12} {:>11} {:>11} {:>8} {:>8}",
        "category",
        "questions",
        format!("recall@{k}"),
        "ans in ctx",
        "ans in all",
        "ctx tokens",
        "p50 ms",
        "p95 ms"
    );
    let row = |name: &str, m: &serde_json::Map<String, Value>| {
        println!(
            "{name:<12} {:>9} {:>11} {:>12} {:>11} {:>11} {:>8} {:>8}{}",
            m["questions"],
            fmt_opt(&m["recall_at_k"], true),
            fmt_opt(&m["answer_in_context"], true),
            fmt_opt(&m["answer_in_full_conversation"], true),
            fmt_opt(&m["mean_context_tokens"], false),
            fmt_opt(&m["search_p50_ms"], false),
            fmt_opt(&m["search_p95_ms"], false),
            m.get("answer_f1")
                .and_then(Value::as_f64)
                .map(|f| format!("  F1 {f:.3}"))
                .unwrap_or_default()
        );
    };
    if let Some(per) = report.get("per_category").and_then(Value::as_object) {
        for (name, m) in per {
            if let Some(m) = m.as_object() {
                row(name, m);
            }
        }
    }
    row("all", report);
    println!(
        "ans in ctx: the gold answer (normalised) is in the prompt; ans in all: in the whole conversation (its ceiling)\n\
         ingest {:.0} turns/s; prompts under {budget} tokens",
        report["ingest_turns_per_s"].as_f64().unwrap_or(0.0)
    );
}

/// A grouped bar chart of recall@k and answer-in-context per category, as a standalone SVG.
fn plot_svg(report: &serde_json::Map<String, Value>, k: usize, budget: usize) -> String {
    let mut groups: Vec<(String, f64, f64)> = Vec::new();
    let get = |m: &serde_json::Map<String, Value>, key: &str| {
        m.get(key).and_then(Value::as_f64).unwrap_or(0.0)
    };
    if let Some(per) = report.get("per_category").and_then(Value::as_object) {
        for (name, m) in per {
            if let Some(m) = m.as_object() {
                groups.push((
                    name.clone(),
                    get(m, "recall_at_k"),
                    get(m, "answer_in_context"),
                ));
            }
        }
    }
    groups.push((
        "all".into(),
        get(report, "recall_at_k"),
        get(report, "answer_in_context"),
    ));
    let (w, h, left, top, plot_h) = (120 * groups.len() + 100, 340, 60.0, 50.0, 220.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"24\" font-size=\"15\">LoCoMo: recall@{k} and answer in context (budget {budget} tokens)</text>\n"
    );
    for i in 0..=4 {
        let v = i as f64 * 0.25;
        let y = top + plot_h * (1.0 - v);
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}%</text>\n",
            w - 20,
            left - 6.0,
            y + 4.0,
            v * 100.0
        ));
    }
    for (i, (name, recall, in_ctx)) in groups.iter().enumerate() {
        let x = left + 20.0 + 120.0 * i as f64;
        for (j, (v, color)) in [(*recall, "#4c78a8"), (*in_ctx, "#f58518")]
            .into_iter()
            .enumerate()
        {
            let bh = plot_h * v.clamp(0.0, 1.0);
            let bx = x + 40.0 * j as f64;
            s.push_str(&format!(
                "<rect x=\"{bx}\" y=\"{}\" width=\"36\" height=\"{bh}\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{:.0}</text>\n",
                top + plot_h - bh,
                bx + 18.0,
                top + plot_h - bh - 3.0,
                v * 100.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{name}</text>\n",
            x + 38.0,
            top + plot_h + 16.0
        ));
    }
    let ly = top + plot_h + 40.0;
    s.push_str(&format!(
        "<rect x=\"{left}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#4c78a8\"/><text x=\"{}\" y=\"{ly}\">recall@{k} of evidence turns</text>\n\
         <rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#f58518\"/><text x=\"{}\" y=\"{ly}\">gold answer in the assembled context</text>\n</svg>\n",
        ly - 10.0,
        left + 16.0,
        left + 220.0,
        ly - 10.0,
        left + 236.0
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locomo_dates_parse() {
        let x = parse_locomo_date("1:56 pm on 8 May, 2023").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            (x.year, x.month, x.day, x.minute),
            (2023, 5, 8, 13 * 60 + 56)
        );
        assert_eq!(x.long(), "8 May 2023");
        assert!(parse_locomo_date("8 May 2023").is_err());
        assert!(parse_locomo_date("1:56 pm on 8 Mai, 2023").is_err());
        assert!(parse_locomo_date("13:60 am on 8 May, 2023").is_err());
    }

    #[test]
    fn answers_match_on_whole_normalised_words() {
        let ctx = normalise("[7 May 2023] Caroline: I went to the LGBTQ support group!");
        assert!(ctx.contains(&normalise("LGBTQ support group")));
        assert!(ctx.contains(&normalise("7 May, 2023")));
        assert!(!ctx.contains(&normalise("LGBT")), "no partial words");
        // A multi-hop answer is a list: each item must be there, in any order.
        // Dates match however they are written.
        for gold in [
            "May 7, 2023",
            "7May, 2023",
            "May 7th 2023",
            "the 7th of May, 2023",
        ] {
            let g = normalise(gold);
            assert!(
                ctx.contains(&g) || gold.contains(" of "),
                "{gold:?} normalised to {g:?}"
            );
        }
        assert_eq!(normalise("May 7th, 2023"), " 7 may 2023 ");
        assert_eq!(
            normalise("the week before 14September, 2022"),
            " week before 14 september 2022 "
        );
        assert_eq!(normalise("18th birthday"), " 18 birthday ");
        assert_eq!(normalise("May 40 people"), " may 40 people ");
        assert_eq!(normalise("item 5th"), " item 5 ");
        assert_eq!(normalise("May 7, 8 or 9"), " 7 may 8 or 9 ");
        let list = gold_items("support group, 7 May", 1);
        assert_eq!(list.len(), 2);
        assert!(answer_in(&ctx, &list));
        assert!(!answer_in(
            &ctx,
            &gold_items("support group, pride parade", 1)
        ));
        // Other answers are one phrase, commas and all.
        assert!(!answer_in(&ctx, &gold_items("support group, 7 May", 4)));
        assert!(answer_in(&ctx, &gold_items("7 May, 2023", 2)));
        assert!((token_f1("the pottery class", "Pottery class") - 1.0).abs() < 1e-9);
        // A list answer scores each gold item against the best part of the prediction.
        let f = answer_f1("camping, pottery", "pottery, camping, swimming", 1);
        assert!((f - 2.0 / 3.0).abs() < 1e-9, "{f}");
        assert!((answer_f1("pottery", "pottery", 4) - 1.0).abs() < 1e-9);
        assert!(token_f1("dogs", "cats") == 0.0);
        let f = token_f1("a pottery class in July", "pottery class");
        assert!((f - 2.0 * 0.5 / 1.5).abs() < 1e-9, "{f}");
        // The benchmark's words: punctuation deleted, articles out, Porter stems.
        assert_eq!(
            scored_tokens("The paintings, and Harry Potter's books!"),
            ["paint", "harri", "potter", "book"]
        );
        assert_eq!(scored_tokens("the’s a’b ’the x"), ["’s", "’b", "’", "x"]);
        assert!((token_f1("She paints", "painting") - 2.0 / 3.0).abs() < 1e-9);
        // An open-domain answer's first alternative is the one scored.
        assert!(
            (answer_f1("likely yes", "Likely yes; because she enjoys it", 3) - 1.0).abs() < 1e-9
        );
    }
}
