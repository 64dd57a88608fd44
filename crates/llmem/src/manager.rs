//! [`MemoryManager`]: one conversation's memory: a raw window, compression, facts and tiered
//! long-term memory behind one budgeted context.
//!
//! Every message goes into the context (the raw window). When the context passes
//! `memory.compression_threshold` tokens, the compressor folds the oldest messages into a
//! rolling summary (a system message, extended rather than restarted) and hands the originals
//! to long-term memory *before* they leave the context. User messages also yield facts
//! ([`crate::facts`]), stored with their date; a fact that updates an attribute supersedes the
//! old one. [`MemoryManager::context_for_llm`] returns the context plus, only when they pass
//! the relevance gate, the long-term memories the current question needs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use llmem_compress::{CompressConfig, Compressor, MemoryCompressor, Trigger};
use llmem_core::{
    ChatModel, ChatSummarizer, Embedder, Error, MemoryStore, Message, Result, Role, Scope,
    ScoredRecord, Summarizer, Timestamp, TokenCounter, Usage,
};
use llmem_core::{Filter, MemoryRecord};
use llmem_tokens::{Budget, BudgetAlarm, CostTracker, RequestRecord, UsageSource};
use llmem_tokens::{CachedCounter, Catalog, Counters, ModelInfo};
use serde::{Deserialize, Serialize};

use crate::config::{BudgetScope, Config, FactMode, RetrievalScope, SummarizerMode};
use crate::deferred::{DeferredSettings, DeferredStore};
use crate::facts;
use crate::late::LateIndex;
use crate::longterm::{ARCHIVED, Archive, LongTerm, Recalled, fit_timeline, to_archive};
use crate::plugins::Plugins;
use crate::taxonomy::Taxonomy;
use llmem_compress::ArchiveSink;

/// The models and stores a manager uses; what is `None` is built from the config (or left
/// out: no chat model means extractive summaries and heuristic facts).
#[derive(Debug, Clone, Default)]
pub struct Providers {
    /// Counts tokens; default: the catalog's counter for `memory.model`.
    pub counter: Option<Arc<dyn TokenCounter>>,
    /// For LLM summaries, LLM facts, `compile` and as `llmem serve`'s upstream.
    pub chat: Option<Arc<dyn ChatModel>>,
    /// Writes summaries; default: the chat model (per `memory.summarizer`), else extractive.
    pub summarizer: Option<Arc<dyn Summarizer>>,
    /// Embeds long-term memories; none: lexical retrieval only.
    pub embedder: Option<Arc<dyn Embedder>>,
    /// Long-term memory; default: what `[tiers]` describes ([`crate::open_store`]).
    pub store: Option<Arc<dyn MemoryStore>>,
    /// Memories' token vectors for late interaction ([`crate::late`]): the managers built from
    /// clones of these providers share it, as they share the store.
    pub late: Arc<parking_lot::Mutex<LateIndex>>,
    /// The spending of `budget.per = "user"` and `"total"` budgets, which the managers built
    /// from clones of these providers share, and the alarms and refusals of every budget.
    pub budgets: Budgets,
    /// The embedding queue in front of `store` ([`Providers::with_deferred_embedding`]):
    /// managers then store memories without waiting for their vectors.
    pub deferred: Option<Arc<DeferredStore>>,
}

/// Budgets shared by managers (`budget.per = "user"` or `"total"`: one [`CostTracker`] per
/// user, or one for all), and counters of the alarms fired and the requests refused by every
/// manager built from the same [`Providers`] (for metrics). Cheap to clone; clones share.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    inner: Arc<BudgetsInner>,
}

#[derive(Debug, Default)]
struct BudgetsInner {
    trackers: parking_lot::Mutex<std::collections::HashMap<String, CostTracker>>,
    alarms: std::sync::atomic::AtomicU64,
    refusals: std::sync::atomic::AtomicU64,
}

impl Budgets {
    /// Budget alarms fired so far (each threshold of each budget fires once).
    pub fn alarms(&self) -> u64 {
        self.inner.alarms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests refused because a budget was used up.
    pub fn refusals(&self) -> u64 {
        self.inner
            .refusals
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The tracker of `key`, made by `make` on first use.
    fn shared(&self, key: &str, make: impl FnOnce() -> Result<CostTracker>) -> Result<CostTracker> {
        let mut t = self.inner.trackers.lock();
        if let Some(c) = t.get(key) {
            return Ok(c.clone());
        }
        let c = make()?;
        t.insert(key.to_owned(), c.clone());
        Ok(c)
    }
}

impl Providers {
    /// Builds what the config names with the built-in provider kinds: `[chat]`, `[embedder]`
    /// and `[summarizer]`, and the store from `[tiers]`.
    pub fn from_config(config: &Config) -> Result<Self> {
        Self::from_config_with(config, &Plugins::builtin())
    }

    /// Builds what the config names with the kinds of `plugins` (the built-in ones plus those
    /// of the plugin crates the program links).
    /// With `retrieval.deferred_embedding` and an embedder, the store is behind an embedding
    /// queue ([`Providers::with_deferred_embedding`]; its journal in `<tiers.dir>`).
    /// With an embedder and `tiers.dir`, the directory must hold that model's vectors (or
    /// none yet): another model's is an error that says to run [`crate::reembed()`].
    pub fn from_config_with(config: &Config, plugins: &Plugins) -> Result<Self> {
        let providers = Providers {
            chat: plugins.chat_model(config)?,
            embedder: plugins.embedder(config)?,
            summarizer: plugins.summarizer(config)?,
            store: Some(crate::storage::open_store(&config.tiers)?),
            ..Providers::default()
        };
        // The data directory's vectors must be this embedder's (crate::reembed).
        if let (Some(e), Some(dir)) = (&providers.embedder, &config.tiers.dir) {
            crate::reembed::VectorModel::of(config, &**e)?.check(dir)?;
        }
        let r = &config.retrieval;
        if !r.deferred_embedding || providers.embedder.is_none() {
            return Ok(providers);
        }
        providers.with_deferred_embedding(DeferredSettings {
            queue: r.embedding_queue,
            journal: config
                .tiers
                .dir
                .as_ref()
                .map(|d| d.join("embedding-queue.log")),
            ..DeferredSettings::default()
        })
    }

    /// Puts the store behind an embedding queue ([`DeferredStore`]): the managers built from
    /// these providers store a memory at once and its vector is set by a background task, in
    /// batches. Needs an embedder and a store, and a tokio runtime to run the task on.
    pub fn with_deferred_embedding(mut self, settings: DeferredSettings) -> Result<Self> {
        let (Some(embedder), Some(store)) = (&self.embedder, &self.store) else {
            return Err(Error::config(
                "retrieval.deferred_embedding",
                "needs an embedder ([embedder]) and a store to put the queue in front of",
            ));
        };
        let deferred = DeferredStore::open(
            store.clone(),
            embedder.clone(),
            Some(self.late.clone()),
            &settings,
        )?;
        self.store = Some(deferred.clone());
        self.deferred = Some(deferred);
        Ok(self)
    }

    /// Waits until every memory stored so far has its vector (at once without a queue).
    pub async fn drain_embeddings(&self) {
        if let Some(d) = &self.deferred {
            d.drain().await;
        }
    }

    #[must_use]
    pub fn with_counter(mut self, c: Arc<dyn TokenCounter>) -> Self {
        self.counter = Some(c);
        self
    }
    #[must_use]
    pub fn with_chat(mut self, c: Arc<dyn ChatModel>) -> Self {
        self.chat = Some(c);
        self
    }
    #[must_use]
    pub fn with_summarizer(mut self, s: Arc<dyn Summarizer>) -> Self {
        self.summarizer = Some(s);
        self
    }
    #[must_use]
    pub fn with_embedder(mut self, e: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(e);
        self
    }
    #[must_use]
    pub fn with_store(mut self, s: Arc<dyn MemoryStore>) -> Self {
        self.store = Some(s);
        self
    }
}

/// A session's statistics: tokens counted and sent, compressions, savings and cost, and what
/// they are made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Tokens in the context now.
    pub current_tokens: usize,
    /// Messages added.
    pub messages: u64,
    /// Contexts handed out ([`MemoryManager::context_for_llm`] calls).
    pub requests: u64,
    /// Prompt tokens of those contexts (the provider's count where it was reported).
    pub sent_tokens: u64,
    /// Prompt tokens the whole history would have taken each time.
    pub full_history_tokens: u64,
    pub compression_count: u64,
    /// Tokens llmem's own model calls spent keeping the memory, input + output:
    /// `summary_tokens + fact_tokens` (summariser calls and, with `memory.facts = "llm"`,
    /// fact extraction), as the providers reported them (else llmem's count). Sessions saved
    /// by earlier builds hold here the context's tokens before and after each LLM
    /// compression instead, from those compressions.
    pub compression_tokens: u64,
    /// Of `compression_tokens`, those of summariser calls (all map-reduce rounds).
    #[serde(default)]
    pub summary_tokens: u64,
    /// Of `compression_tokens`, those of fact extraction by the chat model.
    #[serde(default)]
    pub fact_tokens: u64,
    /// Summariser calls that returned (an extractive summary makes none).
    #[serde(default)]
    pub summary_calls: u64,
    /// Fact-extraction calls to the chat model that returned.
    #[serde(default)]
    pub fact_calls: u64,
    /// Of those calls, how many reported no usage: their tokens are llmem's count.
    #[serde(default)]
    pub estimated_calls: u64,
    /// USD of those calls, each at its model's catalog prices (the model the answer names); a
    /// model the catalog does not know costs 0 here, its tokens are in `unpriced_tokens`.
    #[serde(default)]
    pub compression_cost: f64,
    /// Of `compression_tokens`, those of models the catalog does not know (priced at 0).
    #[serde(default)]
    pub unpriced_tokens: u64,
    /// Answer tokens (the provider's count where reported, else llmem's).
    #[serde(default)]
    pub output_tokens: u64,
    /// `full_history_tokens - sent_tokens - compression_tokens`: tokens saved, net of what
    /// keeping the memory spent.
    pub net_savings: i64,
    /// `net_savings` as a share of `full_history_tokens`, in percent.
    pub savings_percentage: f64,
    /// USD: prompts and answers at `memory.model`'s prices (actual usage where reported),
    /// plus `compression_cost`.
    pub total_cost: f64,
    /// USD the whole history would have cost in prompts.
    pub full_history_cost: f64,
    /// `full_history_cost` minus the prompt cost actually paid and minus `compression_cost`:
    /// the dollars saved, net of what keeping the memory cost.
    pub net_cost: f64,
    /// Facts extracted into long-term memory.
    pub facts: u64,
    /// Records this session wrote to long-term memory (facts and compressed-away messages).
    pub memories_stored: u64,
    /// Memories loaded into contexts.
    pub retrieved: u64,
    /// Summaries that fell back to extractive (the originals were kept).
    pub summarizer_errors: u64,
    /// Budget alarms this session's spending fired (`[budget] alarm_at`, and 100 %).
    #[serde(default)]
    pub budget_alarms: u64,
    /// Requests refused here because the budget was used up (`budget.hard_stop`).
    #[serde(default)]
    pub budget_refusals: u64,
}

/// `theirs + (mine − base)` for every number of a JSON object; other values from `theirs`.
fn merge_counters(
    base: &serde_json::Value,
    mine: &serde_json::Value,
    theirs: &serde_json::Value,
) -> serde_json::Value {
    use serde_json::Value;
    let (Value::Object(t), Value::Object(m)) = (theirs, mine) else {
        return theirs.clone();
    };
    let mut out = t.clone();
    for (k, tv) in t {
        let (Some(mv), bv) = (m.get(k), base.get(k)) else {
            continue;
        };
        let merged = match (tv, mv, bv) {
            (Value::Number(tn), Value::Number(mn), Some(Value::Number(bn))) => {
                match (tn.as_i64(), mn.as_i64(), bn.as_i64()) {
                    (Some(t), Some(m), Some(b)) => {
                        let v = t as i128 + m as i128 - b as i128;
                        if tn.is_u64() {
                            Value::from(v.max(0) as u64)
                        } else {
                            Value::from(v as i64)
                        }
                    }
                    _ => Value::from(
                        tn.as_f64().unwrap_or(0.0) + mn.as_f64().unwrap_or(0.0)
                            - bn.as_f64().unwrap_or(0.0),
                    ),
                }
            }
            _ => continue,
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

/// What a session keeps across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionState {
    pub tenant: String,
    pub session: Option<String>,
    pub context: Vec<Message>,
    pub summary: Option<String>,
    pub history_tokens: u64,
    pub stats: Stats,
    /// Prompt tokens of the last context handed out, until its usage is known.
    pub pending_prompt: Option<u64>,
    pub prompt_cost: f64,
    pub last_compression_savings: usize,
    pub was_compressed_last_iteration: bool,
}

impl SessionState {
    /// Three-way merge of a session two processes changed from the same `base` (replicas,
    /// [`crate::Sessions`] with `tiers.shared`): `mine` and `theirs`. No message is lost:
    ///
    /// - the messages `mine` added (not in `base`, not in `theirs`) join `theirs`' context,
    ///   all in time order; when only `mine` compressed (its summary changed, theirs did not),
    ///   `mine`'s summary and context are kept and `theirs`' new messages join them instead
    ///   (the messages compression took out of the context are in long-term memory);
    /// - counters (tokens, costs, statistics) are `theirs + (mine − base)`;
    /// - the rest (pending prompt, last compression) is `mine`'s, the latest change here.
    pub fn merge(base: &SessionState, mine: &SessionState, theirs: &SessionState) -> SessionState {
        let key = |m: &Message| serde_json::to_string(m).unwrap_or_default();
        let keys = |s: &SessionState| -> std::collections::HashSet<String> {
            s.context.iter().map(key).collect()
        };
        let (base_keys, mine_keys, their_keys) = (keys(base), keys(mine), keys(theirs));
        let (mut out, extra, seen) =
            if mine.summary != base.summary && theirs.summary == base.summary {
                let mut out = mine.clone();
                out.history_tokens = theirs.history_tokens;
                out.stats = theirs.stats.clone();
                out.prompt_cost = theirs.prompt_cost;
                (out, &theirs.context, &mine_keys)
            } else {
                (theirs.clone(), &mine.context, &their_keys)
            };
        out.context.extend(
            extra
                .iter()
                .filter(|m| {
                    let k = key(m);
                    !base_keys.contains(&k) && !seen.contains(&k)
                })
                .cloned(),
        );
        out.context
            .sort_by_key(|m| m.created_at.map_or(i64::MIN, |t| t.0));
        let num = |v: u64| v as i128;
        out.history_tokens = (num(theirs.history_tokens) + num(mine.history_tokens)
            - num(base.history_tokens))
        .max(0) as u64;
        out.prompt_cost = theirs.prompt_cost + mine.prompt_cost - base.prompt_cost;
        if let (Ok(b), Ok(m), Ok(t)) = (
            serde_json::to_value(&base.stats),
            serde_json::to_value(&mine.stats),
            serde_json::to_value(&theirs.stats),
        ) && let Ok(stats) = serde_json::from_value(merge_counters(&b, &m, &t))
        {
            out.stats = stats;
        }
        out.pending_prompt = mine.pending_prompt;
        out.last_compression_savings = mine.last_compression_savings;
        out.was_compressed_last_iteration = mine.was_compressed_last_iteration;
        out
    }

    /// A session saved by [`MemoryManager::persist_to`].
    pub(crate) fn read(path: &Path) -> Result<SessionState> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading session {}", path.display()), e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::serde(format!("session file {}", path.display()), e))
    }

    /// Saves it to `path` through a temporary file, synced to disk with `sync`.
    pub(crate) fn write_to(&self, path: &Path, sync: bool) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::serde("session state", e))?;
        if sync {
            write_synced(path, &bytes)
        } else {
            write_atomic(path, &bytes)
        }
    }
}

/// A context for one request.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The messages to send.
    pub messages: Vec<Message>,
    /// Their tokens (framing included).
    pub tokens: usize,
    /// The long-term memories loaded into them.
    pub retrieved: Vec<Recalled>,
}

/// One conversation's memory (one user's session).
#[derive(Debug)]
pub struct MemoryManager {
    config: Config,
    scope: Scope,
    recall_scope: Scope,
    counter: Arc<dyn TokenCounter>,
    model: ModelInfo,
    compressor: MemoryCompressor,
    trigger: Trigger,
    longterm: Arc<LongTerm>,
    archive: Arc<Archive>,
    chat: Option<Arc<dyn ChatModel>>,
    /// The compressor without its LLM summariser, for when the budget is used up.
    extractive: MemoryCompressor,
    /// Prices llmem's own calls (summaries, facts) at their models.
    catalog: Arc<Catalog>,
    /// The spending this session counts against (its own, its user's or the process's).
    budget: CostTracker,
    budgets: Budgets,
    state: SessionState,
    state_path: Option<PathBuf>,
    /// Saves are left to [`MemoryManager::flush`] (write-behind) instead of made per change.
    deferred: bool,
    /// A change not yet written (deferred saves only).
    dirty: bool,
}

/// The counters of the shipped catalog, or of the shipped catalog with `tokens.catalog` over
/// it, made once per process and catalog file (so each model's tokenizer is built once,
/// however many sessions open).
fn counters(catalog: Option<&Path>) -> Result<Arc<Counters>> {
    type Made = parking_lot::Mutex<Vec<(Option<PathBuf>, Arc<Counters>)>>;
    static MADE: OnceLock<Made> = OnceLock::new();
    let made = MADE.get_or_init(Made::default);
    let key = catalog.map(Path::to_path_buf);
    if let Some((_, c)) = made.lock().iter().find(|(k, _)| *k == key) {
        return Ok(c.clone());
    }
    let mut c = Catalog::embedded()?;
    if let Some(path) = catalog {
        c = c.with_overrides(path)?;
    }
    let c = Arc::new(Counters::new(Arc::new(c)));
    made.lock().push((key, c.clone()));
    Ok(c)
}

/// The catalog entry of `model`, and its counter behind a [`CachedCounter`]: the context is
/// re-counted after every message, and each message is tokenised only once.
pub(crate) fn model_counter(
    model: &str,
    catalog: Option<&Path>,
) -> Result<(Arc<dyn TokenCounter>, ModelInfo)> {
    let counters = counters(catalog)?;
    let info = counters.catalog().lookup(model).info;
    let counter: Arc<dyn TokenCounter> = Arc::new(CachedCounter::new(counters.for_model(model)?));
    Ok((counter, info))
}

impl MemoryManager {
    /// A manager for the default user and session.
    pub fn new(config: Config, providers: Providers) -> Result<Self> {
        Self::for_session(config, providers, Scope::session("default", "default"))
    }

    /// A manager for one user's session (`scope.tenant` is the user).
    pub fn for_session(config: Config, providers: Providers, scope: Scope) -> Result<Self> {
        config.validate()?;
        if scope.tenant.trim().is_empty() {
            return Err(Error::invalid("a session needs a non-empty user (tenant)"));
        }
        let m = &config.memory;
        let (default_counter, model) = model_counter(&m.model, config.tokens.catalog.as_deref())?;
        let counter = providers.counter.clone().unwrap_or(default_counter);
        let store = match providers.store.clone() {
            Some(s) => s,
            None => crate::storage::open_store(&config.tiers)?,
        };
        let longterm = Arc::new(
            LongTerm::new(store, providers.embedder.clone(), config.retrieval.clone())
                .with_taxonomy(Taxonomy::from_setting(&config.retrieval.taxonomy)?)
                .with_late_index(providers.late.clone())
                .deferring(providers.deferred.is_some()),
        );
        let compress = CompressConfig {
            strategy: m.compression_strategy,
            compression_ratio: m.compression_ratio,
            keep_recent: m.short_term_size,
            preserve_system: m.preserve_system_prompts,
            preserve_tool_calls: m.preserve_tool_calls,
            budget: Some(m.compression_threshold),
            ..CompressConfig::default()
        };
        let archive = Arc::new(Archive::new(longterm.clone(), scope.clone()));
        let mut compressor =
            MemoryCompressor::new(compress, counter.clone())?.with_archive(archive.clone());
        let extractive = compressor.clone();
        let catalog = counters(config.tokens.catalog.as_deref())?
            .catalog()
            .clone();
        let budget = session_budget(&config, &scope, &catalog, &providers.budgets)?;
        let summarizer = match (&providers.summarizer, m.summarizer, &providers.chat) {
            (Some(s), _, _) => Some(s.clone()),
            (None, SummarizerMode::Extractive, _) => None,
            (None, _, Some(chat)) => {
                let window = model.context_window.min(8192) as usize;
                Some(Arc::new(ChatSummarizer::new(chat.clone(), window)) as Arc<dyn Summarizer>)
            }
            (None, SummarizerMode::Chat, None) => {
                return Err(Error::config(
                    "memory.summarizer",
                    "`chat` needs a chat model: configure [chat] or pass one in Providers",
                ));
            }
            (None, SummarizerMode::Auto, None) => None,
        };
        if let Some(s) = summarizer {
            compressor = compressor.with_summarizer(s);
        }
        let recall_scope = match config.retrieval.scope {
            RetrievalScope::User => Scope::tenant(scope.tenant.clone()),
            RetrievalScope::Session => scope.clone(),
        };
        let trigger = Trigger {
            token_threshold: Some(m.compression_threshold),
            ..Trigger::default()
        };
        Ok(MemoryManager {
            state: SessionState {
                tenant: scope.tenant.clone(),
                session: scope.session.clone(),
                ..SessionState::default()
            },
            config,
            scope,
            recall_scope,
            counter,
            model,
            compressor,
            trigger,
            longterm,
            archive,
            chat: providers.chat,
            extractive,
            catalog,
            budget,
            budgets: providers.budgets,
            state_path: None,
            deferred: false,
            dirty: false,
        })
    }

    /// Saves the session to `path` after every change, and resumes it from there now if the
    /// file exists.
    pub fn persist_to(mut self, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if path.exists() {
            let state = SessionState::read(&path)?;
            if state.tenant != self.scope.tenant || state.session != self.scope.session {
                return Err(Error::invalid(format!(
                    "session file {} belongs to another session ({}/{:?})",
                    path.display(),
                    state.tenant,
                    state.session
                )));
            }
            self.state = state;
            if self.config.budget.per == BudgetScope::Session {
                // The session's spending before this process counts against its budget.
                let s = &self.state.stats;
                let pending = self.state.pending_prompt.unwrap_or(0);
                let tokens = s.sent_tokens.saturating_sub(pending)
                    + s.output_tokens
                    + s.summary_tokens
                    + s.fact_tokens;
                self.budget.restore(s.total_cost, tokens);
            }
        }
        self.state_path = Some(path);
        Ok(self)
    }

    /// Replaces the session's state with `state` (a newer copy another replica wrote).
    #[cfg_attr(not(feature = "lance"), allow(dead_code))]
    pub(crate) fn replace_state(&mut self, state: SessionState) {
        self.state = state;
    }

    /// Leaves saving to [`MemoryManager::flush`], which the caller runs on a timer and before
    /// dropping the manager (write-behind): a change costs no disk write on the request path.
    /// Without it (the default), every change is saved before the call that made it returns.
    pub fn with_deferred_saves(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// Whether a change is waiting for [`MemoryManager::flush`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the session if it changed since it was last written, and syncs it to disk.
    pub fn flush(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.write(true)?;
        self.dirty = false;
        Ok(())
    }

    fn save(&mut self) -> Result<()> {
        if self.state_path.is_none() {
            return Ok(());
        }
        if self.deferred {
            self.dirty = true;
            return Ok(());
        }
        self.write(false)
    }

    fn write(&self, sync: bool) -> Result<()> {
        match &self.state_path {
            Some(path) => self.state.write_to(path, sync),
            None => Ok(()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn counter(&self) -> &Arc<dyn TokenCounter> {
        &self.counter
    }

    pub fn chat_model(&self) -> Option<&Arc<dyn ChatModel>> {
        self.chat.as_ref()
    }

    /// The long-term memory behind this manager (with the `internals` feature, for the
    /// crate's own tests and benches).
    #[cfg(feature = "internals")]
    pub fn longterm(&self) -> &Arc<LongTerm> {
        &self.longterm
    }

    /// The session's saved state (what [`MemoryManager::persist_to`] writes).
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// Adds a message; `actual` is the provider's reported usage for the call that produced
    /// it (an assistant message), which replaces llmem's estimate in the cost figures. May
    /// compress; the originals reach long-term memory before they leave the context.
    pub async fn add_message(&mut self, message: Message, actual: Option<Usage>) -> Result<()> {
        let mut message = message;
        if message.created_at.is_none() {
            message.created_at = Some(Timestamp::now());
        }
        let tokens = self.counter.count_message(&message) as u64;
        match (actual, message.role) {
            (Some(u), _) => {
                let estimate = self.state.pending_prompt.take().unwrap_or(0);
                let s = &mut self.state.stats;
                s.sent_tokens = s.sent_tokens - estimate.min(s.sent_tokens) + u.input_tokens;
                let cost = self
                    .model
                    .cost(u.input_tokens, u.output_tokens, u.cached_input_tokens);
                self.state.prompt_cost += self.model.cost(u.input_tokens, 0, u.cached_input_tokens);
                s.total_cost += cost;
                s.output_tokens += u.output_tokens;
                self.track(u, UsageSource::Actual);
            }
            (None, Role::Assistant) => {
                self.settle();
                self.state.stats.total_cost += self.model.cost(0, tokens, 0);
                self.state.stats.output_tokens += tokens;
                self.track(
                    Usage {
                        output_tokens: tokens,
                        ..Usage::default()
                    },
                    UsageSource::Estimated,
                );
            }
            (None, _) => self.settle(),
        }
        self.state.history_tokens += tokens;
        self.state.stats.messages += 1;
        if self.config.memory.enabled && message.role == Role::User {
            self.extract_facts(&message).await?;
        }
        self.state.context.push(message);
        self.state.was_compressed_last_iteration = false;
        if self.config.memory.enabled {
            let tokens = self.counter.count_messages(&self.state.context);
            if self
                .trigger
                .check(tokens, self.state.context.len())
                .is_some()
            {
                self.compress().await?;
            }
        }
        self.state.stats.memories_stored = self.longterm.stored();
        self.save()
    }

    /// Charges the last context handed out at its estimate when no usage came for it.
    fn settle(&mut self) {
        if let Some(p) = self.state.pending_prompt.take() {
            let c = self.model.cost(p, 0, 0);
            self.state.stats.total_cost += c;
            self.state.prompt_cost += c;
            self.track(
                Usage {
                    input_tokens: p,
                    ..Usage::default()
                },
                UsageSource::Estimated,
            );
        }
    }

    /// Counts a prompt or an answer at `memory.model` against the budget.
    fn track(&mut self, usage: Usage, source: UsageSource) {
        let r = self.budget.record_request(&RequestRecord {
            model: self.config.memory.model.clone(),
            usage,
            source,
            uncompressed_input_tokens: None,
        });
        self.alarmed(&r.alarms);
    }

    fn alarmed(&mut self, alarms: &[BudgetAlarm]) {
        if alarms.is_empty() {
            return;
        }
        let n = alarms.len() as u64;
        self.state.stats.budget_alarms += n;
        self.budgets
            .inner
            .alarms
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts one of llmem's own calls (a summary, a fact extraction): its tokens in
    /// `compression_tokens`, its price at `model` in `compression_cost` and the total, and
    /// both against the budget. Returns the cost.
    fn charge_upkeep(&mut self, model: &str, usage: Usage, estimated: bool) -> f64 {
        let tokens = usage.input_tokens + usage.output_tokens;
        let r = self.budget.record_summarizer_call(model, usage);
        let s = &mut self.state.stats;
        s.compression_tokens += tokens;
        s.compression_cost += r.cost_usd;
        s.total_cost += r.cost_usd;
        s.estimated_calls += u64::from(estimated);
        if !self.catalog.lookup(model).known {
            s.unpriced_tokens += tokens;
        }
        self.alarmed(&r.alarms);
        r.cost_usd
    }

    /// Whether a hard budget is used up: llmem's own model calls then stop (extractive
    /// summaries, heuristic facts) and requests are refused.
    fn over_budget(&self) -> bool {
        self.budget.check().is_err()
    }

    /// `Err(`[`Error::BudgetExceeded`]`)` when this session's budget (`[budget]`) is used up and
    /// its policy is to refuse (`budget.hard_stop`): the error says which budget and which key
    /// raises it. [`MemoryManager::prepare`] checks it; a server checks it before it adds a
    /// turn, so that a refused turn is not kept. A refusal is counted in the statistics.
    pub fn check_budget(&mut self) -> Result<()> {
        self.settle();
        let Err(e) = self.budget.check() else {
            return Ok(());
        };
        self.state.stats.budget_refusals += 1;
        self.budgets
            .inner
            .refusals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(error = %e, "request refused: budget used up");
        self.save()?;
        Err(e)
    }

    /// Facts from a user message; with `memory.facts = "llm"` through the chat model, metered
    /// so that what those calls spend is counted (past a hard budget: the heuristic).
    async fn extract_facts(&mut self, message: &Message) -> Result<()> {
        let metered = match (self.config.memory.facts, &self.chat) {
            (FactMode::Llm, Some(chat)) if !self.over_budget() => {
                Some(Metered::new(chat.clone(), self.counter.clone()))
            }
            _ => None,
        };
        let out = self.extract_facts_with(message, metered.as_ref()).await;
        for call in metered.map(Metered::into_calls).unwrap_or_default() {
            self.state.stats.fact_calls += 1;
            self.state.stats.fact_tokens += call.usage.input_tokens + call.usage.output_tokens;
            self.charge_upkeep(&call.model, call.usage, call.estimated);
        }
        out
    }

    async fn extract_facts_with(
        &mut self,
        message: &Message,
        chat: Option<&Metered>,
    ) -> Result<()> {
        let text = message.text();
        let found = match (self.config.memory.facts, chat) {
            (FactMode::Off, _) => return Ok(()),
            (FactMode::Llm, Some(chat)) => match facts::llm_facts(chat, &text).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "fact extraction by the chat model failed; using the heuristic");
                    facts::heuristic_facts(&text)
                }
            },
            _ => facts::heuristic_facts(&text),
        };
        if found.is_empty() {
            return Ok(());
        }
        let at = message.created_at.unwrap_or_else(Timestamp::now);
        // With `facts = "llm"` the model decides what each fact changes (the words when it fails).
        let judge = match (self.config.memory.facts, chat) {
            (FactMode::Llm, Some(chat)) => Some(chat as &dyn ChatModel),
            _ => None,
        };
        let outcomes = self
            .longterm
            .remember_facts(&self.scope, found, at, &message.metadata, judge)
            .await?;
        self.state.stats.facts += outcomes.iter().filter(|o| o.id.is_some()).count() as u64;
        Ok(())
    }

    /// Compresses the context now, whatever the trigger says.
    /// What the summariser spent (every call that returned, the summary kept or not) is
    /// counted in `compression_tokens` and `compression_cost`; past a hard budget the summary
    /// is extractive (no model call).
    pub async fn compress(&mut self) -> Result<()> {
        let compressor = if self.over_budget() {
            &self.extractive
        } else {
            &self.compressor
        };
        let out = compressor.compress(&self.state.context).await?;
        let spend = &out.summarizer_spend;
        if spend.calls > 0 {
            let model = spend.model.clone().unwrap_or_default();
            self.state.stats.summary_calls += spend.calls as u64;
            self.state.stats.summary_tokens += spend.tokens();
            self.charge_upkeep(&model, spend.usage, false);
            self.state.stats.estimated_calls += spend.estimated_calls as u64;
        }
        let s = &mut self.state.stats;
        s.compression_count += 1;
        s.summarizer_errors += out.errors.len() as u64;
        for e in &out.errors {
            tracing::warn!(error = %e, "compression fell back");
        }
        self.state.last_compression_savings = out.saved_tokens;
        self.state.was_compressed_last_iteration = true;
        if out.summary.is_some() {
            self.state.summary = out.summary;
        }
        self.state.context = out.messages;
        Ok(())
    }

    /// Stores the messages still in the window in long-term memory, as compression would when
    /// they leave it: call it when a session ends, so that the next session recalls its last
    /// turns too. The messages stay in the context, flagged so that nothing is stored twice.
    /// Returns how many were stored.
    pub async fn end_session(&mut self) -> Result<usize> {
        let pending: Vec<Message> = self
            .state
            .context
            .iter()
            .filter(|m| to_archive(m))
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        self.archive.archive(&pending).await?;
        for m in &mut self.state.context {
            if m.role != Role::System {
                m.metadata.insert(ARCHIVED.into(), true.into());
            }
        }
        self.state.stats.memories_stored = self.longterm.stored();
        self.save()?;
        Ok(pending.len())
    }

    /// Whether the last [`MemoryManager::add_message`] compressed.
    pub fn was_compressed_last_iteration(&self) -> bool {
        self.state.was_compressed_last_iteration
    }

    /// Tokens the last compression saved.
    pub fn last_compression_savings(&self) -> usize {
        self.state.last_compression_savings
    }

    /// The rolling summary, if there is one.
    pub fn summary(&self) -> Option<&str> {
        self.state.summary.as_deref()
    }

    /// The context as it stands (system prompts, summary, recent messages), without retrieval.
    pub fn messages(&self) -> &[Message] {
        &self.state.context
    }

    /// The messages to send for the current question (the last user message): the context,
    /// plus the relevant long-term memories. Counts as one request in the statistics.
    pub async fn context_for_llm(&mut self) -> Result<Vec<Message>> {
        Ok(self.prepare(None).await?.messages)
    }

    /// The name the product's first API used for [`MemoryManager::context_for_llm`].
    #[deprecated(since = "0.1.0", note = "use `context_for_llm`")]
    pub async fn get_context_for_llm(&mut self) -> Result<Vec<Message>> {
        self.context_for_llm().await
    }

    /// [`MemoryManager::context_for_llm`] for an explicit question, with what was
    /// retrieved and the token count. A question that is not in the context is not added to
    /// the returned messages (the caller sends it after them), but room is kept for it.
    ///
    /// Refused with [`Error::BudgetExceeded`] when the budget is used up (`[budget]`,
    /// [`MemoryManager::check_budget`]).
    pub async fn prepare(&mut self, question: Option<&str>) -> Result<Prepared> {
        self.check_budget()?;
        let mut messages = self.state.context.clone();
        let query = match question {
            Some(q) => q.to_owned(),
            None => messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(Message::text)
                .unwrap_or_default(),
        };
        let limit = self.config.memory.max_context_tokens - self.config.memory.answer_reserve;
        let mut retrieved = Vec::new();
        if self.config.memory.enabled && !query.trim().is_empty() {
            let in_context: Vec<String> = messages.iter().map(Message::text).collect();
            let k = self.config.retrieval.k;
            let hits = self
                .longterm
                .recall(&self.recall_scope, &query, k, &in_context)
                .await?;
            // An explicit question not in the context is sent after it: keep room for it.
            let asked = match question {
                Some(q) if !in_context.iter().any(|t| t == q) => {
                    self.counter.count_message(&Message::user(q))
                }
                _ => 0,
            };
            let base = self.counter.count_messages(&messages) + asked;
            let room = self
                .config
                .retrieval
                .max_tokens
                .min(limit.saturating_sub(base));
            let at = messages
                .iter()
                .position(|m| m.role != Role::System)
                .unwrap_or(messages.len());
            let header = "Relevant memories from earlier in this conversation or earlier ones, by the day they were said:";
            let (fitted, block) = fit_timeline(self.counter.as_ref(), header, hits, room);
            retrieved = fitted;
            if let Some(block) = block {
                messages.insert(at, block);
            }
        }
        let tokens = self.counter.count_messages(&messages);
        if tokens > limit {
            tracing::warn!(
                tokens,
                limit,
                "the context exceeds memory.max_context_tokens minus the answer reserve; lower memory.compression_threshold"
            );
        }
        let s = &mut self.state.stats;
        s.requests += 1;
        s.sent_tokens += tokens as u64;
        s.full_history_tokens += self.state.history_tokens + self.counter.request_overhead() as u64;
        s.retrieved += retrieved.len() as u64;
        self.state.pending_prompt = Some(tokens as u64);
        self.save()?;
        Ok(Prepared {
            messages,
            tokens,
            retrieved,
        })
    }

    /// Searches this user's long-term memory (no relevance gate): for tools and inspection.
    /// Ranked as [`LongTerm::search`](crate::longterm::LongTerm::search) ranks.
    pub async fn search(&self, query: &str, k: usize) -> Result<Vec<ScoredRecord>> {
        self.longterm.search(&self.recall_scope, query, k).await
    }

    /// Replaces the text of this user's memory `id`, keeping its earlier version as history
    /// ([`crate::update_memory`]); the memory keeps its id. Returns the memory as stored.
    pub async fn update(&mut self, id: &str, text: &str) -> Result<MemoryRecord> {
        crate::forget::update_memory(
            self.longterm.store(),
            self.longterm.embedder(),
            &self.scope.tenant,
            id,
            text,
            None,
            None,
        )
        .await
    }

    /// Forgets this user's long-term memories that pass `filter`, in every tier and for good
    /// ([`crate::forget_user`]), and removes what quotes them from this session's context and
    /// summary (with [`Filter::All`], the whole session is cleared). The user's other saved
    /// sessions are reached through [`crate::Sessions::forget`] or `llmem forget`.
    pub async fn forget(&mut self, filter: &Filter) -> Result<crate::Forgotten> {
        let store = self.longterm.store().clone();
        let plan = crate::forget::Plan::new(&*store, &self.scope.tenant, filter).await?;
        let sessions = usize::from(self.forget_here(&plan)?);
        plan.finish(&*store, sessions).await
    }

    /// Scrubs this session of what `plan` forgets (or clears it, when it forgets everything)
    /// and saves it at once; returns whether it changed.
    pub(crate) fn forget_here(&mut self, plan: &crate::forget::Plan) -> Result<bool> {
        let changed = if plan.everything {
            let cleared = !self.state.context.is_empty() || self.state.summary.is_some();
            self.state = SessionState {
                tenant: self.state.tenant.clone(),
                session: self.state.session.clone(),
                ..SessionState::default()
            };
            cleared
        } else {
            crate::forget::scrub(&mut self.state, &plan.secrets)
        };
        if changed {
            self.write(true)?;
            self.dirty = false;
        }
        Ok(changed)
    }

    /// The name the product's first API used for [`MemoryManager::stats`].
    #[deprecated(since = "0.1.0", note = "use `stats`")]
    pub fn get_stats(&self) -> Stats {
        self.stats()
    }

    /// The session's statistics: tokens counted and sent, compressions, savings and cost.
    pub fn stats(&self) -> Stats {
        let mut s = self.state.stats.clone();
        s.current_tokens = self.counter.count_messages(&self.state.context);
        s.net_savings =
            s.full_history_tokens as i64 - s.sent_tokens as i64 - s.compression_tokens as i64;
        s.savings_percentage = if s.full_history_tokens == 0 {
            0.0
        } else {
            100.0 * s.net_savings as f64 / s.full_history_tokens as f64
        };
        s.full_history_cost = self.model.cost(s.full_history_tokens, 0, 0);
        let pending = self
            .state
            .pending_prompt
            .map_or(0.0, |p| self.model.cost(p, 0, 0));
        s.total_cost += pending;
        s.net_cost = s.full_history_cost - (self.state.prompt_cost + pending) - s.compression_cost;
        s
    }

    /// The spending this session counts against its budget (its own, its user's or the
    /// process's, per `budget.per`): totals and the alarms fired.
    pub fn budget(&self) -> &CostTracker {
        &self.budget
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash leaves the old
/// or the new file, never half of one.
impl Drop for MemoryManager {
    /// A deferred change still unwritten is written now rather than lost.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "could not save a session being closed");
        }
    }
}

/// [`write_atomic`], with the file and its directory synced to disk before it returns.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let tmp = path.with_extension("tmp");
    let io = |what: &str, e| Error::io(format!("{what} {}", tmp.display()), e);
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    f.write_all(bytes).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
    if let Some(dir) = dir {
        sync_dir(dir);
    }
    Ok(())
}

/// Syncs a directory, so that a rename or removal in it is durable; a failure only weakens
/// that, and is not reported.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Replaces `path` with `bytes` (a temporary file renamed into place), creating its folder.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(path, bytes, false)
}

/// [`write_atomic`], with the new file and its folder fsynced before it returns.
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(path, bytes, true)
}

fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let tmp = path.with_extension("tmp");
    let writing = |e| Error::io(format!("writing {}", tmp.display()), e);
    if durable {
        let mut f = std::fs::File::create(&tmp).map_err(writing)?;
        std::io::Write::write_all(&mut f, bytes).map_err(writing)?;
        f.sync_all().map_err(writing)?;
    } else {
        std::fs::write(&tmp, bytes).map_err(writing)?;
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
    if let (true, Some(dir)) = (durable, dir) {
        sync_dir(dir);
    }
    Ok(())
}

/// The tracker a session's spending counts against: its own (`budget.per = "session"`, or no
/// limit), else its user's or the process's, shared through `budgets`.
fn session_budget(
    config: &Config,
    scope: &Scope,
    catalog: &Arc<Catalog>,
    budgets: &Budgets,
) -> Result<CostTracker> {
    let b = &config.budget;
    let session = scope.session.as_deref().unwrap_or("-");
    let (key, label) = match b.per {
        BudgetScope::Session => (
            None,
            format!(
                "the budget of session `{}/{session}` (budget.per = \"session\")",
                scope.tenant
            ),
        ),
        BudgetScope::User => (
            Some(format!("user:{}", scope.tenant)),
            format!(
                "the budget of user `{}` (budget.per = \"user\", spending since the process \
                 started)",
                scope.tenant
            ),
        ),
        BudgetScope::Total => (
            Some("total".to_owned()),
            "the budget of every session together (budget.per = \"total\", spending since the \
             process started)"
                .to_owned(),
        ),
    };
    let make = || -> Result<CostTracker> {
        let t = CostTracker::new(catalog.clone()).with_label(label.clone());
        if b.limited() {
            let mut thresholds = b.alarm_at.clone();
            if !thresholds.iter().any(|x| *x >= 1.0) {
                thresholds.push(1.0);
            }
            t.set_budget(Budget {
                max_cost_usd: b.max_cost_usd,
                max_tokens: b.max_tokens,
                thresholds,
                hard_stop: b.hard_stop,
            })?;
        }
        Ok(t)
    };
    match key {
        Some(k) if b.limited() => budgets.shared(&k, make),
        _ => make(),
    }
}

/// One call [`Metered`] saw: the model that answered and the tokens.
#[derive(Debug, Clone)]
struct MeteredCall {
    model: String,
    usage: Usage,
    /// The provider reported no usage: the tokens are `counter`'s count.
    estimated: bool,
}

/// A chat model that notes what each call spends, for the calls llmem makes on its own behalf
/// (fact extraction): the usage the provider reported, else the counter's count of the prompt
/// and the answer.
#[derive(Debug)]
struct Metered {
    inner: Arc<dyn ChatModel>,
    counter: Arc<dyn TokenCounter>,
    calls: parking_lot::Mutex<Vec<MeteredCall>>,
}

impl Metered {
    fn new(inner: Arc<dyn ChatModel>, counter: Arc<dyn TokenCounter>) -> Self {
        Metered {
            inner,
            counter,
            calls: parking_lot::Mutex::default(),
        }
    }

    fn into_calls(self) -> Vec<MeteredCall> {
        self.calls.into_inner()
    }
}

#[async_trait::async_trait]
impl ChatModel for Metered {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn capabilities(&self) -> llmem_core::Capabilities {
        self.inner.capabilities()
    }
    async fn chat(&self, request: llmem_core::ChatRequest) -> Result<llmem_core::ChatResponse> {
        let asked = request.messages.clone();
        let named = request.model.clone();
        let r = self.inner.chat(request).await?;
        let (usage, estimated) = match r.usage {
            Some(u) => (u, false),
            None => (
                Usage {
                    input_tokens: self.counter.count_messages(&asked) as u64,
                    output_tokens: self.counter.count(&r.message.text()) as u64,
                    cached_input_tokens: 0,
                },
                true,
            ),
        };
        let model = if r.model.trim().is_empty() {
            named.unwrap_or_else(|| self.inner.model().to_owned())
        } else {
            r.model.clone()
        };
        self.calls.lock().push(MeteredCall {
            model,
            usage,
            estimated,
        });
        Ok(r)
    }
    async fn count_tokens(&self, request: &llmem_core::ChatRequest) -> Result<usize> {
        self.inner.count_tokens(request).await
    }
}
