//! `llmem.toml` and its `LLMEM_*` environment overrides.
//!
//! ```toml
//! preset = "balanced"              # aggressive | balanced | conservative: the base the keys refine
//!
//! [memory]                         # the manager's budget and compression (LLMEM_MEMORY_<KEY> overrides each)
//! enabled = true
//! model = "gpt-4o"                 # tokenizer and prices
//! max_context_tokens = 100000
//! compression_threshold = 40000
//! short_term_size = 20
//! compression_ratio = 0.3
//! compression_strategy = "sliding_window"   # selective | deletion
//! preserve_system_prompts = true
//! preserve_tool_calls = true
//! facts = "heuristic"              # llm | off
//! summarizer = "auto"              # extractive | chat
//!
//! [retrieval]
//! k = 20
//! recall_gate = 0.45               # cosine the best memory needs for a question to recall any
//! recall_floor = 0.0               # cosine each recalled memory needs
//! min_similarity = 0.35            # cosine a block's message needs to stay on Memory::gc
//! min_term_overlap = 0.34          # share of the question's words, without one
//! max_tokens = 1000
//! question_weight = 0.7            # score factor of a memory that only asks
//! session_weight = 0.3             # share of its session's best match a memory gains
//! vector_weight = 0.3              # share of meaning (cosine) against words (BM25) in the search
//! late_interaction = 0.5           # weight of the token-level match (MaxSim) in the re-ranking
//! late_reply_share = 0.6           # share of a reply's match taken with its question's words
//! late_cache_mib = 256             # memory for the memories' token vectors
//! deferred_embedding = false       # store at once, embed in batches in the background
//! embedding_queue = 4096           # records waiting for their vector, at most
//! taxonomy = "auto"                # WordNet dir for broader terms of memories' nouns | off
//! scope = "user"                   # session
//!
//! [tiers]
//! dir = ".llmem"                   # unset: in memory only
//! warm_max_items = 100000          # past it, the least recently used move to cold
//! cold = true                      # a Lance dataset in <dir>/cold (feature `lance`)
//! dimensions = 384                 # the cold tier's vector size: the embedder's
//! glacier = "s3://bucket/llmem"    # the archive: a directory, file://, s3://, gs://, az://
//! warm_to_cold_hours = 72          # unread this long: warm → cold (0: never)
//! cold_to_glacier_days = 30        # unread this long: cold → glacier (0: never)
//! promote_after_reads = 3          # reads that bring a cold or glacier record back to warm
//! cold_index = "ivf_sq"            # ivf_pq | ivf_hnsw_sq | ivf_rq | ivf_flat: the cold tier's vector index
//! cold_nprobes = 20                # IVF partitions a cold query probes, at least
//! cold_refine_factor = 5           # candidates re-ranked exactly per result (0: none)
//!
//! [server]
//! listen = "127.0.0.1:8787"
//! token = "…"                      # clients must send `Authorization: Bearer …`
//!
//! [tokens]
//! catalog = "models.toml"          # your models' windows, prices, tokenizers, over the shipped ones
//!
//! [budget]                         # spending limits: prompts, answers, summaries, fact extraction
//! max_cost_usd = 5.0               # USD at catalog prices (unset: no limit)
//! max_tokens = 2000000             # input + output tokens of every call (unset: no limit)
//! alarm_at = [0.5, 0.8]            # a warning once at each share of a limit (and at 100 %)
//! per = "session"                  # user | total: whose spending a limit caps
//! hard_stop = true                 # past a limit, requests are refused (HTTP 429 in serve)
//!
//! [consolidation]                  # summaries of old conversation memories, by window
//! older_than_days = 7              # memories said longer ago than this
//! window = "day"                   # week: one summary per session and day (or week)
//! min_memories = 4                 # a window needs this many not yet summarised
//! max_tokens = 200                 # the most tokens of one summary
//! every_secs = 0                   # llmem serve runs it this often over every user (0: never)
//!
//! [providers.local]                # named provider tables: built-in kinds or linked plugins'
//! kind = "openai-compatible"
//! base_url = "http://127.0.0.1:8080/v1"
//! model = "local"
//!
//! [chat]                           # a provider table, or the name of one
//! provider = "local"
//!
//! [embedder]
//! kind = "onnx-embedder"
//!
//! [summarizer]                     # a model that only summarises, no server (feature `onnx`)
//! kind = "onnx-lm"
//! model_path = "models/lm/model.onnx"
//! ```
//!
//! Precedence: the preset (if any), then the file, then the environment. Every key is checked:
//! an unknown key or a bad value is an error that names the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use llmem_compress::{Preset, Strategy};
use llmem_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Sections whose keys `LLMEM_<SECTION>_<KEY>` overrides.
const SECTIONS: [&str; 10] = [
    "memory",
    "retrieval",
    "tiers",
    "server",
    "tokens",
    "budget",
    "consolidation",
    "chat",
    "embedder",
    "summarizer",
];

/// The sections that hold a provider table (or `provider = "<name>"` of `[providers]`).
pub(crate) const PROVIDER_SECTIONS: [&str; 3] = ["chat", "embedder", "summarizer"];

/// `LLMEM_*` variables that belong to other parts of llmem (and its test harness), not to this
/// file.
const NOT_SETTINGS: [&str; 3] = ["TIERS_CHILD_DIR", "TIERS_CHILD_TIER", "CONFIG"];

/// Optional string settings (absent from the defaults, so their type is not known from them).
const STRING_KEYS: [&str; 7] = [
    "server.token",
    "server.keys_file",
    "tiers.dir",
    "tiers.glacier",
    "tiers.cold_url",
    "tiers.sessions_url",
    "tokens.catalog",
];

/// Keys of provider tables whose values are numbers or booleans; every other provider key read
/// from the environment is a string (a key or a model name made of digits stays a string).
const PROVIDER_NUMBERS: [&str; 8] = [
    "timeout_secs",
    "requests_per_second",
    "max_attempts",
    "dimensions",
    "batch_size",
    "threads",
    "max_length",
    "send_dimensions",
];

/// Everything a [`crate::MemoryManager`] and `llmem serve` are configured with.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The preset the other keys refine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    pub memory: MemorySettings,
    pub retrieval: RetrievalSettings,
    pub tiers: TierSettings,
    pub server: ServerSettings,
    pub tokens: TokenSettings,
    /// Spending limits, their alarms and what happens past them.
    pub budget: BudgetSettings,
    /// Summaries of old conversation memories by time window ([`crate::consolidate()`]).
    pub consolidation: crate::consolidate::ConsolidationSettings,
    /// Named provider tables (`[providers.<name>]`, each with its `kind`), which `[chat]`,
    /// `[embedder]` and `[summarizer]` can name with `provider = "<name>"`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, toml::Table>,
    /// The chat model (the upstream of `llmem serve`, the LLM of `compile`, fact extraction
    /// and summaries): a provider table (`kind = …`), or `provider = "<name>"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<toml::Table>,
    /// The embedder for long-term memories: a provider table (`kind = "onnx-embedder"`, …), or
    /// `provider = "<name>"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedder: Option<toml::Table>,
    /// A model that writes the summaries instead of the chat model (`kind = "onnx-lm"`, …), or
    /// `provider = "<name>"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summarizer: Option<toml::Table>,
}

/// Token counting and prices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// A catalog file in the shipped catalog's format whose models are added to it or replace
    /// its entries of the same name (context windows, prices, tokenizers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<PathBuf>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Provider tables may hold keys: show their kinds only.
        let kind = |t: &Option<toml::Table>| {
            t.as_ref().map(|t| {
                t.get("kind")
                    .or_else(|| t.get("provider"))
                    .map(ToString::to_string)
                    .unwrap_or_default()
            })
        };
        f.debug_struct("Config")
            .field("preset", &self.preset)
            .field("memory", &self.memory)
            .field("retrieval", &self.retrieval)
            .field("tiers", &self.tiers)
            .field("server", &self.server)
            .field("tokens", &self.tokens)
            .field("budget", &self.budget)
            .field("consolidation", &self.consolidation)
            .field(
                "providers",
                &self
                    .providers
                    .iter()
                    .map(|(name, t)| (name, kind(&Some(t.clone()))))
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("chat", &kind(&self.chat))
            .field("embedder", &kind(&self.embedder))
            .field("summarizer", &kind(&self.summarizer))
            .finish()
    }
}

/// Spending limits (`[budget]`): what a session, a user or the whole process may spend on
/// model calls (prompts and answers at `memory.model`'s prices, summaries and fact extraction
/// at their models' prices), warnings on the way, and a hard stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSettings {
    /// The limit in USD, at the catalog's prices; unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// The limit in tokens (input and output of every call, summaries and fact extraction
    /// included); unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Shares of a limit, in (0, 1], at which a warning is logged, once each (100 % always
    /// warns too).
    pub alarm_at: Vec<f64>,
    /// Whose spending a limit caps.
    pub per: BudgetScope,
    /// Past a limit, requests are refused ([`llmem_core::Error::BudgetExceeded`], HTTP 429 in
    /// `llmem serve`); false: the warnings only.
    pub hard_stop: bool,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            max_cost_usd: None,
            max_tokens: None,
            alarm_at: vec![0.5, 0.8],
            per: BudgetScope::Session,
            hard_stop: true,
        }
    }
}

impl BudgetSettings {
    /// Whether a limit is set.
    pub fn limited(&self) -> bool {
        self.max_cost_usd.is_some() || self.max_tokens.is_some()
    }
}

/// Whose spending a `[budget]` limit caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// Each session on its own; saved with the session, so it holds across restarts.
    Session,
    /// Each user's sessions together, in this process (since it started).
    User,
    /// Every session of the process together (since it started).
    Total,
}

impl BudgetScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Session => "session",
            BudgetScope::User => "user",
            BudgetScope::Total => "total",
        }
    }
}

/// The manager's context budget, compression and fact extraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    /// Off: messages pass through unmanaged (no compression, no facts, no retrieval).
    pub enabled: bool,
    /// The model whose tokenizer counts and whose prices cost.
    pub model: String,
    /// The model's context budget for one request, answer reserve included.
    pub max_context_tokens: usize,
    /// Compress when the context holds more tokens than this.
    pub compression_threshold: usize,
    /// Recent messages always kept raw.
    pub short_term_size: usize,
    /// Summaries aim at this share of what they replace (0.3 = 30 %).
    pub compression_ratio: f64,
    pub compression_strategy: Strategy,
    pub preserve_system_prompts: bool,
    pub preserve_tool_calls: bool,
    /// Tokens kept free for the answer.
    pub answer_reserve: usize,
    /// How facts are drawn from user messages into long-term memory.
    pub facts: FactMode,
    /// Who writes summaries.
    pub summarizer: SummarizerMode,
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            enabled: true,
            model: "gpt-4o".into(),
            max_context_tokens: 100_000,
            compression_threshold: 40_000,
            short_term_size: 20,
            compression_ratio: 0.3,
            compression_strategy: Strategy::SlidingWindow,
            preserve_system_prompts: true,
            preserve_tool_calls: true,
            answer_reserve: 1024,
            facts: FactMode::Heuristic,
            summarizer: SummarizerMode::Auto,
        }
    }
}

/// How facts are extracted from user messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactMode {
    /// First-person statements, sentence by sentence (see [`crate::facts`]); no model call.
    Heuristic,
    /// The chat model lists the facts; the heuristic when it fails.
    Llm,
    /// No fact extraction (messages still reach long-term memory when compressed away).
    Off,
}

/// Who writes summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummarizerMode {
    /// The chat model when one is configured, else extractive.
    Auto,
    /// Extractive (no model call).
    Extractive,
    /// The chat model (an error at start-up if none is configured).
    Chat,
}

/// Retrieval from long-term memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalSettings {
    /// Memories considered per question.
    pub k: usize,
    /// With an embedder: a question recalls memories only when the best of its candidates
    /// reaches this cosine similarity with it (the question is about something remembered);
    /// otherwise it recalls none. 0 turns the gate off.
    pub recall_gate: f32,
    /// With an embedder: the cosine similarity each memory a question recalls needs, once the
    /// question passes `recall_gate`.
    pub recall_floor: f32,
    /// With an embedder: the cosine similarity with the question that a message of a
    /// [`crate::Memory`] block needs to stay on `gc`.
    pub min_similarity: f32,
    /// Without one: only if it shares at least this share of the question's content words.
    pub min_term_overlap: f32,
    /// Token cap of the retrieved memories in one request.
    pub max_tokens: usize,
    /// Score factor of a memory that only asks (its text ends with a question mark), in
    /// (0, 1]: the answer is in the turn after a question, so questions rank lower. 1 turns
    /// it off.
    pub question_weight: f32,
    /// Session context, in [0, 1]: a memory's score gains this share of the best score among
    /// the candidates of its session, so that a turn of the
    /// session a question is about outranks a turn elsewhere that shares as many of its words.
    /// 0 turns it off.
    pub session_weight: f32,
    /// Hybrid search, in [0, 1]: a candidate's score is `(1 − w)` times its BM25 score and `w`
    /// times its cosine with the question, each normalised over the candidates
    /// ([`llmem_core::Fusion::Weighted`]). 0 ranks by words alone, 1 by meaning alone; without
    /// an embedder it is words alone whatever the weight.
    pub vector_weight: f32,
    /// Late interaction, in [0, 1]: with an embedder that gives token vectors (the local ONNX
    /// one), the best candidates' scores gain this weight times their token-level match with
    /// the question ([`crate::late`]), scaled to [0, 1] over the candidates. 0 turns it off.
    pub late_interaction: f32,
    /// Late interaction of a reply, in [0, 1]: this share of the token-level match of a
    /// memory whose message followed a question is taken against the reply's and the
    /// question's tokens together (each question word's best match in either), so that a
    /// reply is found by the words of what it answers. 0 matches a reply alone.
    pub late_reply_share: f32,
    /// Memory for the memories' token vectors, in MiB (about 12 KiB a memory of 30 tokens);
    /// past it the oldest are dropped and computed again when a search meets them.
    pub late_cache_mib: usize,
    /// Broader terms of conversation memories' nouns, searched with their words at a lower
    /// weight ([`crate::taxonomy`]): `auto` (WordNet from the cache directory when
    /// `cargo xtask setup wordnet` installed it, else none), `off`, or a WordNet `dict`
    /// directory.
    pub taxonomy: String,
    /// Whose memories a question sees: the user's (every session) or the session's only.
    pub scope: RetrievalScope,
    /// Embed long-term memories off the request path ([`crate::DeferredStore`]): a memory is
    /// stored at once, searchable by its words, and by meaning once its batch is embedded in
    /// the background (with `tiers.dir`, a journal re-queues what a stopped process left).
    pub deferred_embedding: bool,
    /// With `deferred_embedding`: records waiting for their vector, at most; a write past it
    /// waits for room.
    pub embedding_queue: usize,
}

impl Default for RetrievalSettings {
    fn default() -> Self {
        RetrievalSettings {
            k: 20,
            recall_gate: 0.45,
            recall_floor: 0.0,
            min_similarity: 0.35,
            min_term_overlap: 0.34,
            max_tokens: 1000,
            question_weight: 0.7,
            session_weight: 0.3,
            vector_weight: llmem_core::Fusion::DEFAULT_VECTOR_WEIGHT,
            late_interaction: 0.5,
            late_reply_share: 0.6,
            late_cache_mib: 256,
            taxonomy: "auto".into(),
            scope: RetrievalScope::User,
            deferred_embedding: false,
            embedding_queue: 4096,
        }
    }
}

/// Whose long-term memories a question sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrievalScope {
    User,
    Session,
}

/// Where long-term memory and sessions live: the warm tier alone (the default), or warm over
/// a cold Lance dataset and a glacier archive (see [`crate::open_store`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierSettings {
    /// Directory of the warm tier's write-ahead log, the cold tier and the saved sessions;
    /// unset keeps everything in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Warm-tier capacity in records: past it the least recently used move to cold (without a
    /// cold tier, a write past it is refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_max_items: Option<usize>,
    /// The cold tier: a Lance dataset in `<dir>/cold` (needs `dir` and the `lance` feature).
    pub cold: bool,
    /// The size of the cold tier's vectors: the embedder's output (384 for the local MiniLM).
    pub dimensions: usize,
    /// The glacier archive (feature `glacier`): a directory, `file://…`, `s3://bucket/prefix`
    /// (endpoint and credentials from the `AWS_*` environment), `gs://…`, `az://…`; encrypted
    /// when `LLMEM_GLACIER_KEY` holds a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub glacier: Option<String>,
    /// Hours without a read after which a warm record moves to cold; 0: never.
    pub warm_to_cold_hours: u64,
    /// Days without a read after which a cold record moves to glacier; 0: never.
    pub cold_to_glacier_days: u64,
    /// Reads that bring a record back from cold or glacier to warm; 0: never.
    pub promote_after_reads: u64,
    /// The cold tier on object storage instead of `<dir>/cold` (feature `lance`):
    /// `s3://bucket/prefix` (endpoint and credentials from the `AWS_*` environment, as for
    /// glacier), `gs://…`, `az://…`. Turns the cold tier on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_url: Option<String>,
    /// Replicas: several `llmem serve` processes share one memory (docs/deployment.md).
    /// Memories are written through to the cold tier at `cold_url` before a write is
    /// acknowledged, and read from a cache at most `shared_staleness_ms` old; sessions are
    /// objects under `sessions_url`, written with conditional puts. Needs both URLs on object
    /// storage; no warm log, no glacier.
    pub shared: bool,
    /// Where shared sessions are kept (with `shared`): `s3://bucket/prefix`, `gs://…`, `az://…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_url: Option<String>,
    /// With `shared`: how old a replica's view of the memory may be when a read starts, in
    /// milliseconds.
    pub shared_staleness_ms: u64,
    /// The cold tier's vector index: `ivf_pq`, `ivf_sq`, `ivf_hnsw_sq`, `ivf_rq` or `ivf_flat`
    /// (docs/benchmarks.md has the sweep that chose the default).
    pub cold_index: String,
    /// IVF partitions a cold query probes, at least (a sixteenth of them when that is more).
    pub cold_nprobes: usize,
    /// Candidates a cold query re-ranks exactly, per result (0: none).
    pub cold_refine_factor: u32,
}

impl Default for TierSettings {
    /// The tier thresholds: warm → cold after 72 h, cold → glacier after 30 days, back to
    /// warm after 3 reads; only the warm tier configured.
    fn default() -> Self {
        TierSettings {
            dir: None,
            warm_max_items: None,
            cold: false,
            dimensions: 384,
            glacier: None,
            warm_to_cold_hours: 72,
            cold_to_glacier_days: 30,
            promote_after_reads: 3,
            cold_url: None,
            shared: false,
            sessions_url: None,
            shared_staleness_ms: 1000,
            cold_index: "ivf_sq".into(),
            cold_nprobes: 20,
            cold_refine_factor: 5,
        }
    }
}

impl TierSettings {
    /// More than the warm tier is configured.
    pub fn tiered(&self) -> bool {
        self.cold || self.cold_url.is_some() || self.glacier.is_some()
    }
}

/// `llmem serve`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: String,
    /// Clients must send `Authorization: Bearer <token>`; unset accepts any client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The API keys file (`llmem keys add`); default `<tiers.dir>/keys.json`. Once it holds a
    /// key, every call needs one and each key reaches only its own tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<PathBuf>,
    /// Sessions kept open in memory; the least recently used beyond this are saved and closed.
    pub max_open_sessions: usize,
    /// How often changed sessions are written to disk (and fsynced), off the request path;
    /// everything is also written on shutdown.
    pub flush_interval_ms: u64,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long an upstream model may take to answer before the client gets a 503.
    pub upstream_timeout_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8787".into(),
            token: None,
            keys_file: None,
            max_open_sessions: 1024,
            flush_interval_ms: 200,
            max_body_bytes: 8 * 1024 * 1024,
            upstream_timeout_secs: 300,
        }
    }
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("keys_file", &self.keys_file)
            .field("max_open_sessions", &self.max_open_sessions)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("upstream_timeout_secs", &self.upstream_timeout_secs)
            .finish()
    }
}

impl Config {
    /// The preset's compression threshold, ratio, kept turns and strategy over the defaults.
    pub fn preset(preset: Preset) -> Self {
        let (threshold, ratio, keep, strategy) = preset.numbers();
        let mut c = Config {
            preset: Some(preset),
            ..Config::default()
        };
        c.memory.compression_threshold = threshold;
        c.memory.compression_ratio = ratio;
        c.memory.short_term_size = keep;
        c.memory.compression_strategy = strategy;
        c
    }

    /// Parses `llmem.toml` text (no environment).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::from_sources(Some(text), std::iter::empty::<(String, String)>())
    }

    /// The file at `path` (if any), then the process's `LLMEM_*` variables.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let text = match path {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| Error::io(format!("reading config {}", p.display()), e))?,
            ),
            None => None,
        };
        Self::from_sources(text.as_deref(), std::env::vars())
    }

    /// The config file named by `--config`, else `$LLMEM_CONFIG`, else `./llmem.toml` when it
    /// exists, else none; then the environment.
    pub fn discover(explicit: Option<&Path>) -> Result<Self> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("LLMEM_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("llmem.toml")).filter(|p| p.exists()));
        Self::load(path.as_deref())
    }

    /// The preset, `toml` over it, then the `LLMEM_*` entries of `env` over both; checked.
    pub fn from_sources(
        toml: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let file: toml::Table = match toml {
            Some(t) => t.parse().map_err(|e: toml::de::Error| {
                let msg = e.message().to_owned();
                Error::config(
                    msg.split('`').nth(1).unwrap_or("llmem.toml").to_owned(),
                    format!("llmem.toml: {msg}"),
                )
            })?,
            None => toml::Table::new(),
        };
        let overrides = env_table(env)?;
        let preset_value = overrides.get("preset").or_else(|| file.get("preset"));
        let base = match preset_value {
            Some(v) => Config::preset(decode::<Preset>("preset", v.clone())?),
            None => Config::default(),
        };
        let mut table = toml::Table::try_from(&base)
            .map_err(|e| Error::serde("serialising the default config", e))?;
        merge(&mut table, file);
        merge(&mut table, overrides);
        let config: Config = decode("", toml::Value::Table(table))?;
        config.validate()?;
        Ok(config)
    }

    /// Range checks, each naming its key.
    pub fn validate(&self) -> Result<()> {
        let m = &self.memory;
        let bad = |key: &str, msg: String| Err(Error::config(key, msg));
        if m.max_context_tokens < 256 {
            return bad(
                "memory.max_context_tokens",
                format!("{} is too small; use at least 256", m.max_context_tokens),
            );
        }
        if m.compression_threshold == 0 || m.compression_threshold > m.max_context_tokens {
            return bad(
                "memory.compression_threshold",
                format!(
                    "{} must be positive and at most memory.max_context_tokens ({})",
                    m.compression_threshold, m.max_context_tokens
                ),
            );
        }
        if !(m.compression_ratio > 0.0 && m.compression_ratio <= 1.0) {
            return bad(
                "memory.compression_ratio",
                format!(
                    "{} is outside (0, 1]; 0.3 compresses to 30 %",
                    m.compression_ratio
                ),
            );
        }
        if m.answer_reserve >= m.max_context_tokens {
            return bad(
                "memory.answer_reserve",
                format!(
                    "{} leaves no room for the prompt in memory.max_context_tokens ({})",
                    m.answer_reserve, m.max_context_tokens
                ),
            );
        }
        let sv = &self.server;
        for (key, value, least) in [
            ("server.max_open_sessions", sv.max_open_sessions as u64, 1),
            ("server.flush_interval_ms", sv.flush_interval_ms, 1),
            ("server.max_body_bytes", sv.max_body_bytes as u64, 1024),
            ("server.upstream_timeout_secs", sv.upstream_timeout_secs, 1),
        ] {
            if value < least {
                return bad(key, format!("{value} is too small; use at least {least}"));
            }
        }
        let r = &self.retrieval;
        // Values in [0, 1]: the key, the value, what it is, and a hint.
        let unit = [
            (
                "retrieval.recall_gate",
                r.recall_gate,
                "a cosine similarity",
                "; 0 lets every question recall",
            ),
            (
                "retrieval.recall_floor",
                r.recall_floor,
                "a cosine similarity",
                "",
            ),
            (
                "retrieval.min_similarity",
                r.min_similarity,
                "a cosine similarity",
                "",
            ),
            (
                "retrieval.min_term_overlap",
                r.min_term_overlap,
                "a share",
                "",
            ),
            (
                "retrieval.session_weight",
                r.session_weight,
                "a share",
                "; 0 leaves sessions out of the ranking",
            ),
            (
                "retrieval.vector_weight",
                r.vector_weight,
                "a weight",
                "; 0 ranks by words alone, 1 by meaning alone",
            ),
            (
                "retrieval.late_interaction",
                r.late_interaction,
                "a weight",
                "; 0 turns late interaction off",
            ),
            (
                "retrieval.late_reply_share",
                r.late_reply_share,
                "a share",
                "; 0 matches a reply by its own words alone",
            ),
        ];
        for (key, value, what, hint) in unit {
            if !(0.0..=1.0).contains(&value) {
                return bad(key, format!("{value} is not {what} in [0, 1]{hint}"));
            }
        }
        if !(r.question_weight > 0.0 && r.question_weight <= 1.0) {
            return bad(
                "retrieval.question_weight",
                format!(
                    "{} is not a factor in (0, 1]; 1 leaves questions unweighted",
                    r.question_weight
                ),
            );
        }
        if r.deferred_embedding && r.embedding_queue == 0 {
            return bad(
                "retrieval.embedding_queue",
                "0 leaves no room for a record waiting for its vector; use at least 1 \
                 (4096 is the default), or set retrieval.deferred_embedding = false"
                    .into(),
            );
        }
        if r.deferred_embedding && self.tiers.shared {
            return bad(
                "retrieval.deferred_embedding",
                "is not supported with tiers.shared: replicas write the shared dataset \
                 directly; set retrieval.deferred_embedding = false"
                    .into(),
            );
        }
        if r.taxonomy.trim().is_empty() {
            return bad(
                "retrieval.taxonomy",
                "is empty; use `auto`, `off` or a WordNet `dict` directory".into(),
            );
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "server.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:8787",
                    self.server.listen
                ),
            );
        }
        for (name, table) in &self.providers {
            match table.get("kind") {
                Some(toml::Value::String(k)) if !k.trim().is_empty() => {}
                _ => {
                    return bad(
                        &format!("providers.{name}.kind"),
                        "missing: each [providers.<name>] table names its `kind` (openai, anthropic, onnx-embedder, a plugin's kind, …)".into(),
                    );
                }
            }
        }
        for section in PROVIDER_SECTIONS {
            self.provider_table(section)?;
        }
        if m.summarizer == SummarizerMode::Chat && self.chat.is_none() {
            return bad(
                "memory.summarizer",
                "`chat` needs a [chat] provider table".into(),
            );
        }
        if m.facts == FactMode::Llm && self.chat.is_none() {
            return bad("memory.facts", "`llm` needs a [chat] provider table".into());
        }
        let b = &self.budget;
        if let Some(max) = b.max_cost_usd
            && !(max.is_finite() && max > 0.0)
        {
            return bad(
                "budget.max_cost_usd",
                format!("{max} is not a positive number of dollars; leave it unset for no limit"),
            );
        }
        if b.max_tokens == Some(0) {
            return bad(
                "budget.max_tokens",
                "0 allows nothing; leave it unset for no limit".into(),
            );
        }
        if let Some(a) = b.alarm_at.iter().find(|a| !(**a > 0.0 && **a <= 1.0)) {
            return bad(
                "budget.alarm_at",
                format!("{a} is not a share of the limit in (0, 1]; 0.8 warns at 80 %"),
            );
        }
        self.consolidation.validate()?;
        let t = &self.tiers;
        let on_objects = |u: &Option<String>| {
            u.as_deref().is_some_and(|u| {
                ["s3://", "gs://", "az://", "abfs://", "abfss://", "azure://"]
                    .iter()
                    .any(|p| u.starts_with(p))
            })
        };
        if let Some(u) = &t.cold_url
            && (u.trim().is_empty() || !u.contains("://"))
        {
            return bad(
                "tiers.cold_url",
                format!(
                    "`{u}` is not a URL; give s3://bucket/prefix, gs://…, az://… (or set tiers.cold for <tiers.dir>/cold)"
                ),
            );
        }
        if t.cold_url.is_some() && !cfg!(feature = "lance") {
            return bad(
                "tiers.cold_url",
                "this build has no cold tier: build llmem with the `lance` feature".into(),
            );
        }
        if t.shared {
            if !on_objects(&t.cold_url) {
                return bad(
                    "tiers.shared",
                    "replicas share memory through object storage: set tiers.cold_url to s3://bucket/prefix (or gs://, az://)".into(),
                );
            }
            if !on_objects(&t.sessions_url) {
                return bad(
                    "tiers.shared",
                    "replicas share sessions through object storage: set tiers.sessions_url to s3://bucket/prefix (or gs://, az://), next to tiers.cold_url".into(),
                );
            }
            if t.glacier.is_some() {
                return bad(
                    "tiers.glacier",
                    "shared memory has no glacier tier yet (its manifest has one writer): remove tiers.glacier or tiers.shared".into(),
                );
            }
            if t.shared_staleness_ms == 0 {
                return bad(
                    "tiers.shared_staleness_ms",
                    "0 would read the bucket before every read; 1000 (one second) is the default"
                        .into(),
                );
            }
        } else if t.sessions_url.is_some() {
            return bad(
                "tiers.sessions_url",
                "only replicas (tiers.shared = true) keep sessions on object storage; without it they are in <tiers.dir>/sessions".into(),
            );
        }
        if t.cold && t.dir.is_none() {
            return bad(
                "tiers.cold",
                "the cold tier lives in <tiers.dir>/cold: set tiers.dir".into(),
            );
        }
        if t.cold && !cfg!(feature = "lance") {
            return bad(
                "tiers.cold",
                "this build has no cold tier: build llmem with the `lance` feature".into(),
            );
        }
        if t.cold && t.dimensions == 0 {
            return bad(
                "tiers.dimensions",
                "0 is not a vector size; use the embedder's (384 for MiniLM)".into(),
            );
        }
        if let Some(g) = &t.glacier {
            if g.trim().is_empty() {
                return bad(
                    "tiers.glacier",
                    "empty; give a directory or an s3://, gs://, az:// URL".into(),
                );
            }
            if !cfg!(feature = "glacier") {
                return bad(
                    "tiers.glacier",
                    "this build has no glacier tier: build llmem with the `glacier` feature".into(),
                );
            }
        }
        Ok(())
    }

    /// The provider table of `section` (`chat`, `embedder` or `summarizer`): the section's own
    /// table, or the `[providers.<name>]` table it names with `provider = "<name>"`, with the
    /// section's other keys over it. `None` when the section is absent; an error names an
    /// unknown provider and lists the known ones.
    pub fn provider_table(&self, section: &str) -> Result<Option<toml::Table>> {
        let table = match section {
            "chat" => &self.chat,
            "embedder" => &self.embedder,
            "summarizer" => &self.summarizer,
            other => {
                return Err(Error::invalid(format!(
                    "`{other}` holds no provider; use one of {}",
                    PROVIDER_SECTIONS.join(", ")
                )));
            }
        };
        let Some(table) = table else {
            return Ok(None);
        };
        let Some(reference) = table.get("provider") else {
            if !table.contains_key("kind") {
                return Err(Error::config(
                    format!("{section}.kind"),
                    format!(
                        "missing: [{section}] needs `kind = \"…\"` or `provider = \"<name>\"` naming a [providers.<name>] table"
                    ),
                ));
            }
            return Ok(Some(table.clone()));
        };
        let Some(name) = reference.as_str() else {
            return Err(Error::config(
                format!("{section}.provider"),
                format!("{reference} is not a name; write provider = \"<name>\""),
            ));
        };
        let Some(named) = self.providers.get(name) else {
            let known: Vec<&str> = self.providers.keys().map(String::as_str).collect();
            return Err(Error::config(
                format!("{section}.provider"),
                format!(
                    "no [providers.{name}] table; {}",
                    if known.is_empty() {
                        "add one, with its `kind`".to_owned()
                    } else {
                        format!("known: {}", known.join(", "))
                    }
                ),
            ));
        };
        let mut out = named.clone();
        for (k, v) in table {
            if k != "provider" {
                out.insert(k.clone(), v.clone());
            }
        }
        Ok(Some(out))
    }

    /// The config as TOML (provider tables included: do not log it).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::serde("writing the config", e))
    }
}

/// Deserialises `value`, naming the key path of any error (under `prefix`).
fn decode<T: serde::de::DeserializeOwned>(prefix: &str, value: toml::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix, inner.as_str()) {
            (p, ".") => p.to_owned(),
            ("", i) => i.to_owned(),
            (p, i) => format!("{p}.{i}"),
        };
        let msg = e.into_inner().to_string();
        // An unknown key is reported at its parent: name the key itself.
        let key = match msg.strip_prefix("unknown field `") {
            Some(rest) => {
                let field = rest.split('`').next().unwrap_or_default();
                if path.is_empty() || path == "." {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                }
            }
            None => path,
        };
        Error::config(key, msg)
    })
}

/// Overlays `over` on `base`, table by table.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `LLMEM_PRESET` and `LLMEM_<SECTION>_<KEY>` as a table; an unknown key surfaces when the
/// table is checked.
fn env_table(env: impl IntoIterator<Item = (String, String)>) -> Result<toml::Table> {
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| Error::serde("serialising the default config", e))?;
    let mut out = toml::Table::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("LLMEM_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&rest) {
            continue;
        }
        if rest == "PRESET" {
            out.insert("preset".into(), toml::Value::String(raw));
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            lower
                .strip_prefix(s)
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*s, k))
        }) else {
            continue; // another part of llmem's variable (LLMEM_LOG, LLMEM_CACHE_DIR, …)
        };
        if key.is_empty() {
            return Err(Error::config(
                name.clone(),
                format!(
                    "{name} names no key; use LLMEM_{}_<KEY>",
                    section.to_uppercase()
                ),
            ));
        }
        let provider = PROVIDER_SECTIONS.contains(&section);
        let known_string = defaults
            .get(section)
            .and_then(|s| s.get(key))
            .is_some_and(toml::Value::is_str)
            || STRING_KEYS.contains(&format!("{section}.{key}").as_str())
            || (provider && !PROVIDER_NUMBERS.contains(&key));
        let value = if known_string {
            toml::Value::String(raw)
        } else {
            env_value(&raw)
        };
        if let toml::Value::Table(t) = out
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            t.insert(key.to_owned(), value);
        }
    }
    Ok(out)
}

/// An environment value as TOML: a number, a boolean, an array…, else the string itself.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}
