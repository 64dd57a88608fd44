//! Manual memory management: a [`Memory`] is a prompt of named [`Block`]s under one
//! token budget that can be summarised, saved to a store, loaded from one by a query, garbage
//! collected against a question, and *compiled*: `compile("context, question -> answer")` runs
//! the chat model on the named input blocks and fills the output block.
//!
//! ```no_run
//! # async fn demo(counter: std::sync::Arc<dyn llmem::core::TokenCounter>) -> llmem::Result<()> {
//! use llmem::{Block, Memory};
//! let mut prompt = Memory::from_text(counter.clone(), "A long article about squirrels…", 8192)?;
//! prompt.summarize(4096).await?;
//! assert!(prompt.free_memory() >= 4096);
//! prompt += "Question: what is the average lifespan of a black squirrel?";
//!
//! let mut memory = Memory::new(counter, 5120, vec![
//!     Block::new("context").with_max_tokens(4096),
//!     Block::new("question").with_max_tokens(512),
//!     Block::new("answer").with_max_tokens(512),
//! ])?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::ops::{AddAssign, Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;

use llmem_compress::{CompressConfig, Compressor, MemoryCompressor, Strategy};
use llmem_core::{
    ChatModel, ChatRequest, Embedder, Error, Filter, MemoryRecord, MemoryStore, Message,
    RecordKind, Result, Role, Scope, Summarizer, Timestamp, TokenCounter, VectorScorer,
};
use llmem_tiers::HotStore;
use llmem_tiers::text::tokenize;
use llmem_window::{Block, Layout, Load, Oversize};

use crate::config::RetrievalSettings;
use crate::longterm::{LongTerm, overlap, record};

/// The hot tier's id of a message text: a hash of it (the same text is embedded once).
fn hot_id(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A prompt of named blocks under a token budget.
#[derive(Debug)]
pub struct Memory {
    layout: Layout,
    chat: Option<Arc<dyn ChatModel>>,
    summarizer: Option<Arc<dyn Summarizer>>,
    embedder: Option<Arc<dyn Embedder>>,
    relevance: RetrievalSettings,
    /// The embeddings of the messages in the blocks, kept between `gc` calls (the hot tier).
    hot: HotStore,
}

/// The hot tier's tenant: it holds this prompt's messages only.
const HOT: &str = "prompt";

/// What [`Memory::load`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// Messages loaded into the block.
    pub loaded: usize,
    /// Relevant ones that did not fit.
    pub left: usize,
}

/// `a, b -> c`: the input blocks and the output block of [`Memory::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<String>,
    pub output: String,
}

impl std::str::FromStr for Signature {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "signature `{s}` is not `input, input -> output` (e.g. \"context, question -> answer\")"
            ))
        };
        let (ins, out) = s.split_once("->").ok_or_else(bad)?;
        let inputs: Vec<String> = ins
            .split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect();
        let output = out.trim().to_owned();
        if inputs.is_empty() || output.is_empty() || output.contains([',', ' ']) {
            return Err(bad());
        }
        Ok(Signature { inputs, output })
    }
}

impl Memory {
    /// A memory of `blocks` (rendered in order) under `max_tokens`; `+=` pushes into the first
    /// leaf block.
    pub fn new(
        counter: Arc<dyn TokenCounter>,
        max_tokens: usize,
        blocks: Vec<Block>,
    ) -> Result<Self> {
        let mut layout = Layout::new(counter, max_tokens);
        for b in blocks {
            layout = layout.with_block(b)?;
        }
        if let Some(first) = layout.leaf_names().first().cloned() {
            layout = layout.with_default_block(&first)?;
        }
        Ok(Memory {
            layout,
            chat: None,
            summarizer: None,
            embedder: None,
            relevance: RetrievalSettings::default(),
            hot: HotStore::new(usize::MAX)?,
        })
    }

    /// A prompt made of one text: one `text` block holding `text` (paragraph by
    /// paragraph, long paragraphs chunked), then `+=` adds to it.
    pub fn from_text(
        counter: Arc<dyn TokenCounter>,
        text: &str,
        max_tokens: usize,
    ) -> Result<Self> {
        let mut m = Memory::new(
            counter,
            max_tokens,
            vec![Block::new("text").with_oversize(Oversize::Chunk)],
        )?;
        for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            m.layout.push("text", Message::user(para))?;
        }
        Ok(m)
    }

    /// The chat model `compile` runs (and, unless a summarizer is set, the one that summarises).
    #[must_use]
    pub fn with_chat(mut self, chat: Arc<dyn ChatModel>) -> Self {
        self.chat = Some(chat);
        self
    }

    #[must_use]
    pub fn with_summarizer(mut self, s: Arc<dyn Summarizer>) -> Self {
        self.summarizer = Some(s);
        self
    }

    /// Embeds what is saved and scores `load` and `gc` by cosine instead of shared words.
    #[must_use]
    pub fn with_embedder(mut self, e: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(e);
        self
    }

    /// Scores `gc` on `scorer` (e.g. `OnnxScorer`, on the GPU where there is one) instead of
    /// the CPU. Either way the messages' embeddings are kept between calls: only new messages
    /// are embedded.
    #[must_use]
    pub fn with_scorer(mut self, scorer: Arc<dyn VectorScorer>) -> Self {
        self.hot.set_scorer(scorer);
        self
    }

    /// The relevance thresholds of `load` and `gc`.
    #[must_use]
    pub fn with_relevance(mut self, r: RetrievalSettings) -> Self {
        self.relevance = r;
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn layout_mut(&mut self) -> &mut Layout {
        &mut self.layout
    }

    /// Tokens still free under the budget.
    pub fn free_memory(&self) -> usize {
        self.layout.free_memory()
    }

    /// Tokens in use (content, reserves, framing).
    pub fn used(&self) -> usize {
        self.layout.used()
    }

    /// Adds `message` to block `name`.
    pub fn push(&mut self, name: &str, message: Message) -> Result<()> {
        self.layout.push(name, message).map(|_| ())
    }

    /// Adds text to block `name` in the block's role.
    pub fn push_text(&mut self, name: &str, text: impl Into<String>) -> Result<()> {
        self.layout.push_text(name, text).map(|_| ())
    }

    /// The text of block `name`, its messages joined by blank lines.
    pub fn text(&self, name: &str) -> Result<String> {
        let b = self.layout.block(name)?;
        let mut out = Vec::new();
        collect(b, &mut out);
        Ok(out
            .iter()
            .map(Message::text)
            .collect::<Vec<_>>()
            .join("\n\n"))
    }

    /// Empties block `name`; returns what it held.
    pub fn clear(&mut self, name: &str) -> Result<Vec<Message>> {
        self.layout.clear(name)
    }

    /// A guard on block `name`: dropping it clears the block, releasing its tokens.
    pub fn scoped(&mut self, name: &str) -> Result<BlockScope<'_>> {
        self.layout.block(name)?;
        Ok(BlockScope {
            memory: self,
            block: name.to_owned(),
        })
    }

    /// Summarises the default block (the text) into at most `max_tokens` tokens, in place;
    /// returns the tokens freed. The chat model (or summarizer) writes the summary, the input
    /// chunked to its window; if it fails, the extractive summary stands in.
    pub async fn summarize(&mut self, max_tokens: usize) -> Result<usize> {
        let name = self
            .layout
            .default_block()
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid("this memory has no block to summarise"))?;
        self.summarize_block(&name, max_tokens).await
    }

    /// Summarises block `name` into at most `max_tokens` tokens; returns the tokens freed.
    pub async fn summarize_block(&mut self, name: &str, max_tokens: usize) -> Result<usize> {
        let before = self.layout.used();
        let messages: Vec<Message> = self.layout.block(name)?.messages();
        if messages.is_empty() {
            return Ok(0);
        }
        let counter = self.layout.counter().clone();
        let original = counter.count_messages(&messages).max(1);
        if original <= max_tokens {
            return Ok(0);
        }
        let config = CompressConfig {
            strategy: Strategy::SlidingWindow,
            keep_recent: 0,
            compression_ratio: (max_tokens as f64 / original as f64).clamp(0.01, 1.0),
            budget: Some(max_tokens),
            ..CompressConfig::default()
        };
        let mut c = MemoryCompressor::new(config, counter)?;
        let summarizer = self.summarizer.clone().or_else(|| {
            self.chat.clone().map(|chat| {
                Arc::new(llmem_core::ChatSummarizer::new(chat, 2048)) as Arc<dyn Summarizer>
            })
        });
        if let Some(s) = summarizer {
            c = c.with_summarizer(s);
        }
        let out = c.compress(&messages).await?;
        let role = self.layout.block(name)?.role();
        let summary: Vec<Message> = out
            .messages
            .into_iter()
            .map(|m| Message::new(role, m.text()))
            .collect();
        let left = self.layout.load(name, summary, Load::Overwrite)?;
        if !left.is_empty() {
            return Err(Error::invalid(format!(
                "the summary of block `{name}` does not fit its budget; summarise to fewer tokens"
            )));
        }
        Ok(before.saturating_sub(self.layout.used()))
    }

    /// Opens (or creates) a store on disk at `path`, for [`Memory::save`] and [`Memory::load`]
    /// (`prompt.save("squirrel_prompt.db")`).
    pub fn open_db(path: impl AsRef<Path>) -> Result<Arc<dyn MemoryStore>> {
        let cfg = llmem_tiers::WarmConfig::default().persist_in(path.as_ref());
        Ok(Arc::new(llmem_tiers::WarmStore::open(cfg)?))
    }

    /// Stores every message of every block in `store` under `scope` (embedded when an embedder
    /// is set); returns how many.
    pub async fn save(&self, store: &Arc<dyn MemoryStore>, scope: &Scope) -> Result<usize> {
        let lt = self.longterm(store);
        let now = Timestamp::now();
        let records: Vec<_> = self
            .layout
            .leaf_names()
            .iter()
            .filter_map(|n| self.layout.block(n).ok().map(|b| (n.clone(), b.messages())))
            .flat_map(|(n, ms)| {
                ms.into_iter().map(move |m| {
                    record(
                        scope,
                        m.text(),
                        RecordKind::Knowledge,
                        m.created_at.unwrap_or(now),
                    )
                    .with_metadata("block", n.clone())
                })
            })
            .filter(|r| !r.text.trim().is_empty())
            .collect();
        let n = records.len();
        lt.remember(records).await?;
        Ok(n)
    }

    /// Forgets the memories of `scope`'s user in `store` that pass `filter`, in every tier and
    /// for good ([`crate::forget_user`]), and drops from this prompt's blocks the messages
    /// that quote them.
    pub async fn forget(
        &mut self,
        store: &Arc<dyn MemoryStore>,
        scope: &Scope,
        filter: &Filter,
    ) -> Result<crate::Forgotten> {
        let plan = crate::forget::Plan::new(&**store, &scope.tenant, filter).await?;
        let secrets = &plan.secrets;
        for name in self.layout.leaf_names() {
            let quoting = self
                .layout
                .block(&name)?
                .messages()
                .iter()
                .any(|m| crate::forget::quoted(&m.text(), secrets));
            if !quoting {
                continue;
            }
            for m in self.layout.clear(&name)? {
                if !crate::forget::quoted(&m.text(), secrets) {
                    self.layout.push(&name, m)?;
                }
            }
        }
        plan.finish(&**store, 0).await
    }

    /// Replaces the text of memory `id` of `scope`'s user in `store`, keeping the earlier
    /// version ([`crate::update_memory`]); embedded again with this prompt's embedder.
    pub async fn update(
        &self,
        store: &Arc<dyn MemoryStore>,
        scope: &Scope,
        id: &str,
        text: &str,
    ) -> Result<MemoryRecord> {
        crate::update_memory(
            store,
            self.embedder.as_ref(),
            &scope.tenant,
            id,
            text,
            None,
            None,
        )
        .await
    }

    fn longterm(&self, store: &Arc<dyn MemoryStore>) -> LongTerm {
        LongTerm::new(store.clone(), self.embedder.clone(), self.relevance.clone())
    }

    /// Retrieves what in `store` is relevant to `query` and loads it into block `target`, best
    /// first, as `mode` says (fill the free space, or overwrite the block).
    pub async fn load(
        &mut self,
        store: &Arc<dyn MemoryStore>,
        scope: &Scope,
        query: &str,
        target: &str,
        mode: Load,
    ) -> Result<Loaded> {
        self.layout.block(target)?;
        let hits = self.longterm(store).recall(scope, query, 50, &[]).await?;
        let role = self.layout.block(target)?.role();
        let messages: Vec<Message> = hits
            .into_iter()
            .map(|h| Message::new(role, h.record.text))
            .collect();
        let total = messages.len();
        let left = self.layout.load(target, messages, mode)?.len();
        Ok(Loaded {
            loaded: total - left,
            left,
        })
    }

    /// Drops, from every block that is not protected, the messages unrelated to `query` (cosine
    /// below `min_similarity` with an embedder, else sharing less than `min_term_overlap` of
    /// its words); blocks named in `keep` are left alone. Returns how many went.
    pub async fn gc(&mut self, query: &str, keep: &[&str]) -> Result<usize> {
        let mut blocks = Vec::new();
        for name in self.layout.leaf_names() {
            let b = self.layout.block(&name)?;
            if b.is_protected() || keep.contains(&name.as_str()) || b.is_empty() {
                continue;
            }
            blocks.push((name, b.messages()));
        }
        let texts: Vec<String> = blocks
            .iter()
            .flat_map(|(_, ms)| ms.iter().map(Message::text))
            .collect();
        // One verdict per message, in block order.
        let verdicts: Vec<bool> = match &self.embedder {
            Some(e) => self
                .hot_scores(e, query, &texts)
                .await?
                .into_iter()
                .map(|c| c >= self.relevance.min_similarity)
                .collect(),
            None => {
                let terms: HashSet<String> = tokenize(query).into_iter().collect();
                texts
                    .iter()
                    .map(|t| overlap(&terms, t) >= self.relevance.min_term_overlap)
                    .collect()
            }
        };
        let mut verdicts = verdicts.into_iter();
        let mut dropped = 0;
        for (name, messages) in blocks {
            let related: Vec<bool> = verdicts.by_ref().take(messages.len()).collect();
            if related.iter().all(|r| *r) {
                continue;
            }
            self.layout.clear(&name)?;
            let kept: Vec<Message> = messages
                .into_iter()
                .zip(&related)
                .filter_map(|(m, r)| if *r { Some(m) } else { None })
                .collect();
            dropped += related.iter().filter(|r| !**r).count();
            self.layout.load(&name, kept, Load::FillFree)?;
        }
        Ok(dropped)
    }

    /// The cosine of `query` with each of `texts`, in order, scored in the hot tier: it is
    /// brought to exactly `texts` first (what left the prompt goes, what is new is embedded).
    async fn hot_scores(
        &self,
        embedder: &Arc<dyn Embedder>,
        query: &str,
        texts: &[String],
    ) -> Result<Vec<f32>> {
        let scope = Scope::tenant(HOT);
        let order: Vec<String> = texts.iter().map(|t| hot_id(t)).collect();
        let wanted: HashMap<&String, &String> = order.iter().zip(texts).collect();
        let held: Vec<String> = self
            .hot
            .query(&scope, &Filter::All, None)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let gone: Vec<String> = held
            .iter()
            .filter(|id| !wanted.contains_key(id))
            .cloned()
            .collect();
        if !gone.is_empty() {
            self.hot.delete(&scope, &gone).await?;
        }
        let held: HashSet<String> = held.into_iter().collect();
        let (ids, new): (Vec<String>, Vec<String>) = wanted
            .iter()
            .filter(|(id, _)| !held.contains(**id))
            .map(|(id, t)| ((*id).clone(), (*t).clone()))
            .unzip();
        let mut batch = new.clone();
        batch.push(query.to_owned());
        let mut vectors = embedder.embed(&batch).await?;
        let q = vectors
            .pop()
            .ok_or_else(|| Error::invalid("the embedder returned no vector for the query"))?;
        if vectors.len() != ids.len() {
            return Err(Error::invalid(format!(
                "the embedder returned {} vectors for {} texts",
                vectors.len() + 1,
                ids.len() + 1
            )));
        }
        let records: Vec<MemoryRecord> = ids
            .into_iter()
            .zip(new)
            .zip(vectors)
            .map(|((id, text), v)| MemoryRecord::new(HOT, text).with_id(id).with_embedding(v))
            .collect();
        if !records.is_empty() {
            self.hot.put(records).await?;
        }
        let scores: HashMap<String, f32> = self.hot.score(&scope, &q)?.into_iter().collect();
        // Every text is held now; a missing score would only mean "unrelated".
        Ok(order
            .iter()
            .map(|id| scores.get(id).copied().unwrap_or(f32::NEG_INFINITY))
            .collect())
    }

    /// Runs the chat model on the input blocks of `signature` (`"context, question -> answer"`)
    /// and writes its answer into the output block, replacing what was there; returns it. The
    /// answer is limited to the output block's budget.
    pub async fn compile(&mut self, signature: &str) -> Result<Message> {
        let sig: Signature = signature.parse()?;
        let chat = self.chat.clone().ok_or_else(|| {
            Error::invalid("compile needs a chat model: build the memory with .with_chat(model)")
        })?;
        let out = self.layout.block(&sig.output)?;
        if out.is_reserve() {
            return Err(Error::invalid(format!(
                "block `{}` is a reserve and holds nothing; make the output a block with a budget",
                sig.output
            )));
        }
        let cap = out
            .max_tokens()
            .unwrap_or(self.layout.free_memory() + out.used());
        let mut sections = Vec::new();
        for name in &sig.inputs {
            sections.push(format!("## {name}\n{}", self.text(name)?));
        }
        let prompt = vec![
            Message::system(format!(
                "Write the `{}` from the sections below ({}). Reply with the {} only, briefly.",
                sig.output,
                sig.inputs.join(", "),
                sig.output
            )),
            Message::user(sections.join("\n\n")),
        ];
        let framing = self.layout.counter().count_message(&Message::assistant(""));
        let max = cap.saturating_sub(framing).max(1);
        let req = ChatRequest::new(prompt)
            .with_max_tokens(u32::try_from(max).unwrap_or(u32::MAX))
            .with_temperature(0.0);
        let answer = chat.chat(req).await?.message;
        let answer = Message::new(Role::Assistant, answer.text().trim().to_owned());
        let left = self
            .layout
            .load(&sig.output, [answer.clone()], Load::Overwrite)?;
        if !left.is_empty() {
            return Err(Error::invalid(format!(
                "the answer does not fit block `{}` ({cap} tokens); raise its budget",
                sig.output
            )));
        }
        Ok(answer)
    }

    /// The prompt, every block in order.
    pub fn render(&self) -> Vec<Message> {
        self.layout.render()
    }
}

fn collect(b: &Block, out: &mut Vec<Message>) {
    out.extend(b.messages());
    for c in b.children() {
        collect(c, out);
    }
}

/// `memory += "text"` adds to the default block; as with [`Layout`], an addition that fails is
/// kept in `layout_mut().take_rejected()`.
impl AddAssign<&str> for Memory {
    fn add_assign(&mut self, text: &str) {
        let role = self
            .layout
            .default_block()
            .and_then(|n| self.layout.block(n).ok())
            .map_or(Role::User, Block::role);
        self.layout += Message::new(role, text);
    }
}

impl AddAssign<Message> for Memory {
    fn add_assign(&mut self, message: Message) {
        self.layout += message;
    }
}

/// Clears its block when dropped (a scope for one question's context); derefs to the [`Memory`].
#[derive(Debug)]
pub struct BlockScope<'a> {
    memory: &'a mut Memory,
    block: String,
}

impl Deref for BlockScope<'_> {
    type Target = Memory;
    fn deref(&self) -> &Memory {
        self.memory
    }
}

impl DerefMut for BlockScope<'_> {
    fn deref_mut(&mut self) -> &mut Memory {
        self.memory
    }
}

impl Drop for BlockScope<'_> {
    fn drop(&mut self) {
        // The block was checked when the scope was made; clearing it cannot fail.
        let _ = self.memory.layout.clear(&self.block);
    }
}

#[cfg(test)]
mod tests {
    use super::Signature;

    #[test]
    fn signatures_parse_or_say_how() {
        let s: Signature = "context, history,question -> answer"
            .parse()
            .unwrap_or_else(|_| Signature {
                inputs: vec![],
                output: String::new(),
            });
        assert_eq!(s.inputs, ["context", "history", "question"]);
        assert_eq!(s.output, "answer");
        for bad in ["context question", "-> answer", "a -> ", "a -> b, c"] {
            let e = bad
                .parse::<Signature>()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("input, input -> output"), "{bad}: {e}");
        }
    }
}
