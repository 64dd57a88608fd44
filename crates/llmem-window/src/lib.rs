//! `llmem-window`: the in-context half of memory.
//!
//! - [`ShortTermMemory`]: the last K messages, raw, bounded by a message count and/or a token
//!   budget; the oldest are evicted first.
//! - [`Layout`]: a prompt made of named [`Block`]s with token budgets: system, pinned
//!   facts, summary, retrieved context, history, question, answer reserve; blocks nest.
//!   [`Layout::free_memory`], `push`/`+=`, [`Layout::clear`], [`Layout::render`] (plus OpenAI
//!   and Anthropic shapes). Each block states its [`Overflow`] policy.
//!
//! Invariants (tested in `tests/it`): the rendered prompt never exceeds the budget as counted
//! by the model's own [`TokenCounter`](llmem_core::TokenCounter); system and pinned content is
//! never evicted; a tool call is never separated from its results; the most recent user message
//! is always present; a single oversize message is chunked or rejected per [`Oversize`], never
//! cut. Every message is counted once, when it arrives: a turn costs O(new message + window).
//!
//! ```
//! # use std::sync::Arc;
//! # use llmem_core::{Message, TokenCounter, Accuracy};
//! # #[derive(Debug)] struct Words;
//! # impl TokenCounter for Words {
//! #     fn model(&self) -> &str { "words" }
//! #     fn count(&self, t: &str) -> usize { t.split_whitespace().count() }
//! #     fn accuracy(&self) -> Accuracy { Accuracy::Exact }
//! # }
//! use llmem_window::{Layout, Load};
//! let mut prompt = Layout::chat(Arc::new(Words), 100, 20)?;
//! prompt.push_text("system", "You answer questions about squirrels.")?;
//! prompt += Message::user("How long do black squirrels live?");
//! assert!(prompt.free_memory() <= 100 - 20);
//! let left = prompt.load("retrieved", [Message::system("Squirrels live 6 to 12 years.")], Load::FillFree)?;
//! assert!(left.is_empty());
//! assert_eq!(prompt.render().len(), 3);
//! # Ok::<(), llmem_core::Error>(())
//! ```

mod lane;
mod layout;
mod oversize;
mod short_term;

pub use layout::{Block, Compactor, Layout, Load, Overflow, Pushed};
pub use oversize::Oversize;
pub use short_term::ShortTermMemory;
