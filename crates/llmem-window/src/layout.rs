//! [`Layout`]: a prompt made of named [`Block`]s, each with its own token budget, all within
//! one budget for the whole prompt.

use std::ops::AddAssign;
use std::sync::Arc;

use llmem_core::{Error, Message, Result, Role, TokenCounter, wire};
use serde_json::Value;

use crate::lane::Lane;
use crate::oversize::{Oversize, prepare};

/// Turns evicted messages into a (rolling) summary. Synchronous: CPU-only compactors (such as
/// `llmem_compress::ExtractiveSummarizer`) plug in directly; LLM summaries go through
/// `llmem-compress` instead, outside the prompt-building path.
pub trait Compactor: Send + Sync + std::fmt::Debug {
    /// A summary of `previous` (the summary so far, if any) extended with `evicted`, in at most
    /// `max_tokens` tokens of text.
    fn compact(
        &self,
        previous: Option<&str>,
        evicted: &[Message],
        max_tokens: usize,
    ) -> Result<String>;
}

/// What a block does when a push would exceed its budget (or the layout's).
///
/// Whether a full block only loads into available space or overwrites its existing content is
/// never implicit: each block says it explicitly.
#[derive(Debug, Clone, Default)]
pub enum Overflow {
    /// Refuse the push with [`Error::TokenLimit`]; the block keeps what it has ("load into
    /// available space" only).
    #[default]
    Reject,
    /// Evict the block's oldest groups (a tool call with its results leave together; the most
    /// recent user message and the message just pushed stay) until everything fits. The
    /// evicted messages are returned in [`Pushed::evicted`].
    EvictOldest,
    /// Overwrite: the block's previous content is removed (and returned) and the new message
    /// takes its place.
    Replace,
    /// Like [`Overflow::EvictOldest`], then the evicted messages are folded by `compactor` into
    /// the rolling summary held by the block named `into` (replacing its content with one system
    /// message marked `metadata.summary = true`). If compaction fails or its result does not
    /// fit, the old summary stays, the evicted messages are still returned and the error is
    /// reported in [`Pushed::summary_error`]. The pushing block leaves the summary block's cap
    /// (or ⅛ of the budget when it has none) free, so that the summary has room to grow.
    Summarize {
        /// Folds the evicted messages into the summary.
        compactor: Arc<dyn Compactor>,
        /// The block holding the summary.
        into: String,
    },
}

/// One named region of the prompt: messages in order, or child blocks, or a reserve.
///
/// A block evicts its own content (per its [`Overflow`]) and, when the whole layout is full,
/// the oldest groups of elastic blocks (uncapped [`Overflow::EvictOldest`] ones, such as the
/// history). Siblings under a capped parent do not evict each other: give each child its own cap
/// when they share a parent's budget.
#[derive(Debug, Clone)]
pub struct Block {
    name: String,
    max_tokens: Option<usize>,
    role: Role,
    overflow: Overflow,
    oversize: Oversize,
    protected: bool,
    reserve: usize,
    lane: Lane,
    children: Vec<Block>,
}

impl Block {
    /// An empty block with no budget of its own (bounded only by its parents and the layout),
    /// holding user messages, rejecting overflow.
    pub fn new(name: impl Into<String>) -> Self {
        Block {
            name: name.into(),
            max_tokens: None,
            role: Role::User,
            overflow: Overflow::Reject,
            oversize: Oversize::Reject,
            protected: false,
            reserve: 0,
            lane: Lane::default(),
            children: Vec::new(),
        }
    }

    /// A block that holds nothing and keeps `tokens` free, e.g. for the model's answer.
    pub fn reserve(name: impl Into<String>, tokens: usize) -> Self {
        let mut b = Block::new(name);
        b.reserve = tokens;
        b.max_tokens = Some(tokens);
        b
    }

    /// A block made of `children`, rendered in order; its budget (if any) caps their sum.
    pub fn group(name: impl Into<String>, children: Vec<Block>) -> Self {
        let mut b = Block::new(name);
        b.children = children;
        b
    }

    /// Caps the block at `tokens`.
    #[must_use]
    pub fn with_max_tokens(mut self, tokens: usize) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// The role given to text pushed with [`Layout::push_text`].
    #[must_use]
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// What the block does when a push would exceed its budget (default [`Overflow::Reject`]).
    #[must_use]
    pub fn with_overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// What to do with a single message larger than the block's room.
    #[must_use]
    pub fn with_oversize(mut self, oversize: Oversize) -> Self {
        self.oversize = oversize;
        self
    }

    /// Never evicts or replaces content (system prompts, pinned facts): overflow is always
    /// rejected. Only an explicit [`Layout::clear`] empties it.
    #[must_use]
    pub fn protected(mut self) -> Self {
        self.protected = true;
        self.overflow = Overflow::Reject;
        self
    }

    /// The block's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The block's own cap, if any.
    pub fn max_tokens(&self) -> Option<usize> {
        self.max_tokens
    }

    /// Tokens the block holds or keeps reserved, children included.
    pub fn used(&self) -> usize {
        self.lane.tokens + self.reserve + self.children.iter().map(Block::used).sum::<usize>()
    }

    /// Messages the block holds, children included.
    pub fn len(&self) -> usize {
        self.lane.messages + self.children.iter().map(Block::len).sum::<usize>()
    }

    /// Whether the block holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The nested blocks, in render order.
    pub fn children(&self) -> &[Block] {
        &self.children
    }

    /// Whether the block is protected (never evicted, cleared only explicitly).
    pub fn is_protected(&self) -> bool {
        self.protected
    }

    /// Whether the block is a reserve (keeps tokens free, holds nothing).
    pub fn is_reserve(&self) -> bool {
        self.reserve > 0
    }

    /// The block's role for text pushed into it.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The block's own messages (not its children's), oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.lane.iter().map(|e| e.message.clone()).collect()
    }

    /// The names of the blocks that hold messages (no children, no reserve), in render order.
    pub fn leaf_names(&self) -> Vec<String> {
        if self.children.is_empty() {
            return if self.reserve > 0 {
                Vec::new()
            } else {
                vec![self.name.clone()]
            };
        }
        self.children.iter().flat_map(Block::leaf_names).collect()
    }

    fn collect(&self, out: &mut Vec<Message>) {
        out.extend(self.lane.iter().map(|e| e.message.clone()));
        for c in &self.children {
            c.collect(out);
        }
    }

    fn names<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.push(&self.name);
        for c in &self.children {
            c.names(out);
        }
    }

    fn path(&self, name: &str, path: &mut Vec<usize>) -> bool {
        if self.name == name {
            return true;
        }
        for (i, c) in self.children.iter().enumerate() {
            path.push(i);
            if c.path(name, path) {
                return true;
            }
            path.pop();
        }
        false
    }
}

/// What a push did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Pushed {
    /// Messages removed to make room, or replaced: the block's own first, then any displaced
    /// from elastic blocks (the history) when the layout budget was full; oldest first within a
    /// block. Hand them to a compressor or an archive. Empty when nothing was removed.
    pub evicted: Vec<Message>,
    /// For [`Overflow::Summarize`]: why the summary could not be updated, if it could not.
    pub summary_error: Option<Error>,
}

/// How [`Layout::load`] treats a block's existing content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Keep what is there and add messages, in order, while they fit; those that do not fit are
    /// returned.
    FillFree,
    /// Clear the block first, then fill it.
    Overwrite,
}

/// A prompt as named blocks under one token budget.
///
/// Invariants: the rendered prompt, counted by the layout's counter (the model's own tokenizer,
/// framing included), never exceeds `budget`; protected blocks are never evicted; evictions take
/// whole groups (a tool call with its results); the most recent user message of a block stays.
/// Every block's usage is a running sum: pushing and rendering cost O(new message + rendered
/// prompt), never a recount of the history.
#[derive(Debug)]
pub struct Layout {
    counter: Arc<dyn TokenCounter>,
    budget: usize,
    blocks: Vec<Block>,
    default_block: Option<String>,
    rejected: Vec<(Message, Error)>,
}

impl Layout {
    /// An empty layout of `budget` tokens counted by `counter`.
    pub fn new(counter: Arc<dyn TokenCounter>, budget: usize) -> Self {
        Layout {
            counter,
            budget,
            blocks: Vec::new(),
            default_block: None,
            rejected: Vec::new(),
        }
    }

    /// The usual chat prompt: `system` and `pinned` (protected), `summary` (⅛ of the budget,
    /// replaced as a whole), `retrieved` (¼, oldest evicted), `history` (the rest, oldest evicted
    /// and returned), `question` (replaced), and an `answer` reserve of `answer_reserve` tokens.
    /// `+=` pushes into `history`.
    pub fn chat(
        counter: Arc<dyn TokenCounter>,
        budget: usize,
        answer_reserve: usize,
    ) -> Result<Self> {
        Layout::new(counter, budget)
            .with_block(Block::new("system").with_role(Role::System).protected())?
            .with_block(Block::new("pinned").with_role(Role::System).protected())?
            .with_block(
                Block::new("summary")
                    .with_role(Role::System)
                    .with_max_tokens(budget / 8)
                    .with_overflow(Overflow::Replace),
            )?
            .with_block(
                Block::new("retrieved")
                    .with_role(Role::System)
                    .with_max_tokens(budget / 4)
                    .with_overflow(Overflow::EvictOldest),
            )?
            .with_block(Block::new("history").with_overflow(Overflow::EvictOldest))?
            .with_block(Block::new("question").with_overflow(Overflow::Replace))?
            .with_block(Block::reserve("answer", answer_reserve))?
            .with_default_block("history")
    }

    /// Appends a top-level block. Names must be unique across the whole tree, and reserves must
    /// fit the budget.
    pub fn with_block(mut self, block: Block) -> Result<Self> {
        let mut names = Vec::new();
        for b in &self.blocks {
            b.names(&mut names);
        }
        let mut new = Vec::new();
        block.names(&mut new);
        for n in &new {
            if names.contains(n) || new.iter().filter(|m| *m == n).count() > 1 {
                return Err(Error::invalid(format!(
                    "block name `{n}` is used twice; give every block its own name"
                )));
            }
        }
        let reserved = self.reserved() + reserved(&block);
        if reserved > self.budget {
            return Err(Error::invalid(format!(
                "reserves of {reserved} tokens exceed the layout budget of {}; lower them or raise the budget",
                self.budget
            )));
        }
        self.blocks.push(block);
        Ok(self)
    }

    /// The block `+=` pushes into.
    pub fn with_default_block(mut self, name: &str) -> Result<Self> {
        self.find_path(name)?;
        self.default_block = Some(name.to_owned());
        Ok(self)
    }

    /// The budget in tokens.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// The counter.
    pub fn counter(&self) -> &Arc<dyn TokenCounter> {
        &self.counter
    }

    fn reserved(&self) -> usize {
        self.blocks.iter().map(reserved).sum()
    }

    /// Tokens in use: every block's content, the reserves and the per-request framing.
    pub fn used(&self) -> usize {
        self.blocks.iter().map(Block::used).sum::<usize>() + self.counter.request_overhead()
    }

    /// Tokens still free under the budget: the budget minus [`Layout::used`], or 0.
    pub fn free_memory(&self) -> usize {
        self.budget.saturating_sub(self.used())
    }

    /// Tokens the rendered prompt costs (without the reserves). Equals
    /// `counter.count_messages(&self.render())`.
    pub fn prompt_tokens(&self) -> usize {
        self.used() - self.reserved()
    }

    /// The block named `name`.
    pub fn block(&self, name: &str) -> Result<&Block> {
        let path = self.find_path(name)?;
        Ok(self.at(&path))
    }

    fn find_path(&self, name: &str) -> Result<Vec<usize>> {
        for (i, b) in self.blocks.iter().enumerate() {
            let mut path = vec![i];
            if b.path(name, &mut path) {
                return Ok(path);
            }
        }
        let mut names = Vec::new();
        for b in &self.blocks {
            b.names(&mut names);
        }
        Err(Error::NotFound {
            what: format!("block `{name}` (blocks: {})", names.join(", ")),
        })
    }

    fn at(&self, path: &[usize]) -> &Block {
        let mut b = &self.blocks[path[0]];
        for &i in &path[1..] {
            b = &b.children[i];
        }
        b
    }

    fn at_mut(&mut self, path: &[usize]) -> &mut Block {
        let mut b = &mut self.blocks[path[0]];
        for &i in &path[1..] {
            b = &mut b.children[i];
        }
        b
    }

    /// Tokens the leaf at `path` may hold if it were empty: the least of its own cap, each
    /// ancestor's cap minus what the ancestor's other children use, and the budget minus
    /// everything else that cannot be evicted (elastic blocks give up their evictable groups).
    fn room_if_empty(&self, path: &[usize]) -> usize {
        self.room(path, true)
    }

    /// As [`Self::room_if_empty`]; without `slack`, elastic blocks give up nothing.
    fn room(&self, path: &[usize], slack: bool) -> usize {
        let leaf = self.at(path).lane.tokens;
        let slack: usize = if !slack {
            0
        } else {
            self.elastic_paths()
                .iter()
                .filter(|p| p.as_slice() != path)
                .map(|p| {
                    let l = &self.at(p).lane;
                    l.tokens - l.unevictable()
                })
                .sum()
        };
        let mut room = self.budget.saturating_sub(self.used() - leaf - slack);
        for depth in 1..=path.len() {
            let b = self.at(&path[..depth]);
            if let Some(cap) = b.max_tokens {
                room = room.min(cap.saturating_sub(b.used() - leaf));
            }
        }
        room
    }

    /// Paths of the elastic leaves: [`Overflow::EvictOldest`] with no cap of their own (the
    /// history). When a push anywhere exceeds the layout budget, they give up their oldest
    /// groups, so a history block takes whatever the other blocks leave free.
    fn elastic_paths(&self) -> Vec<Vec<usize>> {
        fn walk(b: &Block, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if b.children.is_empty() {
                if b.reserve == 0
                    && b.max_tokens.is_none()
                    && matches!(b.overflow, Overflow::EvictOldest)
                {
                    out.push(path.clone());
                }
                return;
            }
            for (i, c) in b.children.iter().enumerate() {
                path.push(i);
                walk(c, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            walk(b, &mut vec![i], &mut out);
        }
        out
    }

    /// How far the leaf at `path` (and its ancestors, and the layout) is over its limits.
    fn excess(&self, path: &[usize]) -> usize {
        let mut over = self.used().saturating_sub(self.budget);
        for depth in 1..=path.len() {
            let b = self.at(&path[..depth]);
            if let Some(cap) = b.max_tokens {
                over = over.max(b.used().saturating_sub(cap));
            }
        }
        over
    }

    fn leaf_path(&self, name: &str) -> Result<Vec<usize>> {
        let path = self.find_path(name)?;
        let b = self.at(&path);
        if !b.children.is_empty() {
            return Err(Error::invalid(format!(
                "block `{name}` groups other blocks; push into one of its children"
            )));
        }
        if b.reserve > 0 {
            return Err(Error::invalid(format!(
                "block `{name}` is a reserve and holds no messages"
            )));
        }
        Ok(path)
    }

    /// Adds `message` to the block `name`, applying the block's [`Overflow`] policy and its
    /// [`Oversize`] policy. On error nothing changes.
    pub fn push(&mut self, name: &str, message: Message) -> Result<Pushed> {
        let path = self.leaf_path(name)?;
        self.at(&path).lane.check_tool_result(&message)?;
        let room = self.room_if_empty(&path);
        let block = self.at(&path);
        let what = format!("a message for block `{name}`");
        let pieces = prepare(
            self.counter.as_ref(),
            message,
            Some(room),
            block.oversize,
            &what,
        )?;
        let new: usize = pieces.iter().map(|(_, t)| t).sum();
        let overflow = block.overflow.clone();
        let too_big = |needed: usize, why: &str| Error::TokenLimit {
            what: format!("block `{name}` ({why})"),
            needed,
            limit: room,
        };
        match &overflow {
            Overflow::Reject => {
                if block.lane.tokens + new > room {
                    return Err(too_big(
                        block.lane.tokens + new,
                        "its overflow policy is Reject; clear it or raise its budget",
                    ));
                }
            }
            Overflow::Replace => {
                if new > room {
                    return Err(too_big(new, "the new content alone does not fit"));
                }
            }
            Overflow::EvictOldest | Overflow::Summarize { .. } => {
                let Some((last, t)) = pieces.last() else {
                    return Ok(Pushed::default());
                };
                let kept = block.lane.kept_after(last, *t);
                if kept > room {
                    return Err(too_big(
                        kept,
                        "the latest user message and the newest tool group must stay",
                    ));
                }
            }
        }
        let mut pushed = Pushed::default();
        let leaf = self.at_mut(&path);
        if matches!(overflow, Overflow::Replace) {
            pushed.evicted = leaf.lane.clear();
        }
        for (m, t) in pieces {
            leaf.lane.push(m, t);
        }
        // A summarizing block keeps its summary block's cap free, so the summary can grow.
        let summary_room = match &overflow {
            Overflow::Summarize { into, .. } => {
                let into = self.block(into)?;
                into.max_tokens
                    .unwrap_or(self.budget / 8)
                    .saturating_sub(into.used())
            }
            _ => 0,
        };
        let own = matches!(overflow, Overflow::EvictOldest | Overflow::Summarize { .. });
        let elastic = self.elastic_paths();
        loop {
            let over_total = self.used() + summary_room > self.budget;
            if self.excess(&path) == 0 && !over_total {
                break;
            }
            // The block's own oldest groups first, when its policy evicts.
            let target = if own && self.at(&path).lane.evictable().is_some() {
                Some(path.clone())
            } else if over_total {
                elastic
                    .iter()
                    .find(|p| **p != path && self.at(p).lane.evictable().is_some())
                    .cloned()
            } else {
                None
            };
            let Some(target) = target else { break };
            let lane = &mut self.at_mut(&target).lane;
            if let Some(g) = lane.evictable().and_then(|i| lane.remove(i)) {
                pushed
                    .evicted
                    .extend(g.entries.into_iter().map(|e| e.message));
            }
        }
        if let Overflow::Summarize { compactor, into } = &overflow
            && !pushed.evicted.is_empty()
        {
            pushed.summary_error = self
                .summarize_into(compactor.as_ref(), into, &pushed.evicted)
                .err();
        }
        Ok(pushed)
    }

    fn summarize_into(
        &mut self,
        compactor: &dyn Compactor,
        into: &str,
        evicted: &[Message],
    ) -> Result<()> {
        let path = self.leaf_path(into)?;
        let room = self.room_if_empty(&path);
        let framing = self.counter.count_message(&Message::system(""));
        let previous = {
            let b = self.at(&path);
            let text: Vec<String> = b.lane.iter().map(|e| e.message.text()).collect();
            if text.is_empty() {
                None
            } else {
                Some(text.join("\n"))
            }
        };
        let max = room.saturating_sub(framing);
        if max == 0 {
            return Err(Error::TokenLimit {
                what: format!("the summary block `{into}`"),
                needed: framing + 1,
                limit: room,
            });
        }
        let text = compactor.compact(previous.as_deref(), evicted, max)?;
        let summary = Message::system(text).with_metadata("summary", true);
        let t = self.counter.count_message(&summary);
        if t > room {
            return Err(Error::TokenLimit {
                what: format!("the summary for block `{into}`"),
                needed: t,
                limit: room,
            });
        }
        let b = self.at_mut(&path);
        b.lane.clear();
        b.lane.push(summary, t);
        Ok(())
    }

    /// Pushes `text` as a message with the block's role.
    pub fn push_text(&mut self, name: &str, text: impl Into<String>) -> Result<Pushed> {
        let path = self.leaf_path(name)?;
        let role = self.at(&path).role;
        self.push(name, Message::new(role, text))
    }

    /// Loads `messages` into block `name` without evicting anything, anywhere: [`Load::FillFree`]
    /// adds them while they fit in the free space (the history is not displaced), [`Load::Overwrite`] clears the block first. Returns the messages
    /// that did not fit, in order.
    pub fn load(
        &mut self,
        name: &str,
        messages: impl IntoIterator<Item = Message>,
        mode: Load,
    ) -> Result<Vec<Message>> {
        let path = self.leaf_path(name)?;
        if mode == Load::Overwrite {
            self.at_mut(&path).lane.clear();
        }
        let mut left = Vec::new();
        for m in messages {
            let room = self.room(&path, false);
            let t = self.counter.count_message(&m);
            let leaf = self.at_mut(&path);
            if leaf.lane.tokens + t <= room {
                leaf.lane.push(m, t);
            } else {
                left.push(m);
            }
        }
        Ok(left)
    }

    /// Empties block `name` (and its children) and returns what it held.
    pub fn clear(&mut self, name: &str) -> Result<Vec<Message>> {
        let path = self.find_path(name)?;
        fn clear_all(b: &mut Block, out: &mut Vec<Message>) {
            out.extend(b.lane.clear());
            for c in &mut b.children {
                clear_all(c, out);
            }
        }
        let mut out = Vec::new();
        clear_all(self.at_mut(&path), &mut out);
        Ok(out)
    }

    /// The names of the blocks that hold messages, in render order.
    pub fn leaf_names(&self) -> Vec<String> {
        self.blocks.iter().flat_map(Block::leaf_names).collect()
    }

    /// The block `+=` pushes into, if one is set.
    pub fn default_block(&self) -> Option<&str> {
        self.default_block.as_deref()
    }

    /// The prompt: every block's messages, depth first, in block order. O(prompt).
    pub fn render(&self) -> Vec<Message> {
        let mut out = Vec::new();
        for b in &self.blocks {
            b.collect(&mut out);
        }
        out
    }

    /// The prompt as an OpenAI chat-completions `messages` array.
    pub fn render_openai(&self) -> Result<Value> {
        wire::openai_messages(&self.render())
    }

    /// The prompt as Anthropic's top-level `system` text and `messages` array.
    pub fn render_anthropic(&self) -> Result<(Option<String>, Value)> {
        wire::to_anthropic(&self.render())
    }

    /// Messages that `+=` could not add, with why; taking them empties the list.
    pub fn take_rejected(&mut self) -> Vec<(Message, Error)> {
        std::mem::take(&mut self.rejected)
    }
}

fn reserved(b: &Block) -> usize {
    b.reserve + b.children.iter().map(reserved).sum::<usize>()
}

/// `layout += message` pushes into the default block (see [`Layout::with_default_block`]).
/// Operators cannot return errors: a message that cannot be added is kept with its error in
/// [`Layout::take_rejected`]. Prefer [`Layout::push`] where the error matters.
impl AddAssign<Message> for Layout {
    fn add_assign(&mut self, message: Message) {
        let Some(name) = self.default_block.clone() else {
            let err = Error::invalid(
                "`+=` needs a default block; set one with Layout::with_default_block",
            );
            self.rejected.push((message, err));
            return;
        };
        *self += (name.as_str(), message);
    }
}

/// `layout += ("question", message)` pushes into the named block; errors as for `+= message`.
impl AddAssign<(&str, Message)> for Layout {
    fn add_assign(&mut self, (name, message): (&str, Message)) {
        let keep = message.clone();
        if let Err(e) = self.push(name, message) {
            self.rejected.push((keep, e));
        }
    }
}
