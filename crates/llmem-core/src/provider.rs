//! Model traits: chat, embeddings, summarisation. All async (they do I/O), all object-safe and
//! used as `Arc<dyn …>`.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::capabilities::Capabilities;
use crate::message::{Message, ToolCall};
use crate::{Error, Result};

/// Token usage a provider reported (or llmem estimated) for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache (billed at the cached price).
    #[serde(default)]
    pub cached_input_tokens: u64,
}

/// A tool the model may call: name, description, JSON-schema parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: Value,
}

/// One chat call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Overrides the provider's configured model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Provider-specific fields passed through as they are.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>) -> Self {
        ChatRequest {
            messages,
            ..Default::default()
        }
    }

    #[must_use]
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    #[must_use]
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }
}

/// A chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub message: Message,
    /// The model that answered, as the provider named it.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Text added by this chunk.
    pub delta: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Present on the last chunk when the provider reports usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Pieces of the tool calls the model is making (see [`ToolCallDelta`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// A piece of a streamed tool call: the call at `index` among the answer's calls. The id and the
/// name come with its first piece; the arguments (JSON text) may come in several, to be joined
/// in order. [`ToolCallPieces`] puts them together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arguments: String,
}

impl ToolCallDelta {
    /// A call that a provider sends whole, in one piece, as the call at `index`.
    pub fn whole(index: usize, call: ToolCall) -> Self {
        ToolCallDelta {
            index,
            id: Some(call.id),
            name: Some(call.name),
            arguments: call.arguments,
        }
    }
}

/// The tool calls of a streamed answer, put together from their pieces as they arrive.
#[derive(Debug, Clone, Default)]
pub struct ToolCallPieces {
    calls: std::collections::BTreeMap<usize, ToolCall>,
}

impl ToolCallPieces {
    /// Adds a piece: its id and name when it has them, its arguments after those before.
    pub fn push(&mut self, d: &ToolCallDelta) {
        let c = self.calls.entry(d.index).or_insert_with(|| ToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        });
        if let Some(id) = &d.id {
            c.id.clone_from(id);
        }
        if let Some(name) = &d.name {
            c.name.push_str(name);
        }
        c.arguments.push_str(&d.arguments);
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls in order. A call that came without an id gets `call_<index>`, and one without
    /// arguments gets `{}`.
    pub fn finish(self) -> Vec<ToolCall> {
        self.calls
            .into_iter()
            .map(|(i, mut c)| {
                if c.id.is_empty() {
                    c.id = format!("call_{i}");
                }
                if c.arguments.trim().is_empty() {
                    c.arguments = "{}".into();
                }
                c
            })
            .collect()
    }
}

/// A stream of chunks.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>;

/// A chat model.
#[async_trait]
pub trait ChatModel: Send + Sync + std::fmt::Debug {
    /// The provider's name in the registry and in errors (`openai`, `anthropic`, …).
    fn name(&self) -> &str;

    /// The model used when a request names none.
    fn model(&self) -> &str;

    fn capabilities(&self) -> Capabilities;

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse>;

    /// Streams the answer. Optional.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let _ = request;
        Err(Error::unsupported("streaming chat", self.name()))
    }

    /// Exact prompt tokens as the provider counts them. Optional.
    async fn count_tokens(&self, request: &ChatRequest) -> Result<usize> {
        let _ = request;
        Err(Error::unsupported("token counting", self.name()))
    }
}

/// A text-embedding model.
#[async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;

    /// Length of every vector it returns.
    fn dimensions(&self) -> usize;

    /// One vector per text, in order. Vectors are L2-normalised unless documented otherwise.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;

    /// One [`Embedded`] per text, in order, from one model run: the vector [`Embedder::embed`]
    /// gives and, where the model exposes them, the text's token vectors for late interaction
    /// ([`TokenVectors::max_sim`]). The default has no token vectors; an embedder whose model
    /// gives token states (a local transformer) overrides it.
    async fn embed_with_tokens(&self, texts: &[String]) -> Result<Vec<Embedded>> {
        Ok(self
            .embed(texts)
            .await?
            .into_iter()
            .map(|vector| Embedded {
                vector,
                tokens: None,
            })
            .collect())
    }
}

/// What [`Embedder::embed_with_tokens`] gives for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// The text's vector, as [`Embedder::embed`] gives it.
    pub vector: Vec<f32>,
    /// Its token vectors, when the embedder has them.
    pub tokens: Option<TokenVectors>,
}

/// The vectors of a text's tokens (special tokens such as `[CLS]` and `[SEP]` left out), each
/// L2-normalised: `len()` rows of `dim` values, one after the other.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenVectors {
    dim: usize,
    rows: Vec<f32>,
}

impl TokenVectors {
    /// Rows of `dim` values, one after the other; each row is L2-normalised here (a zero row
    /// stays zero). An error when `dim` is 0 or `rows` is not a whole number of rows.
    pub fn new(dim: usize, mut rows: Vec<f32>) -> Result<Self> {
        if dim == 0 || !rows.len().is_multiple_of(dim) {
            return Err(crate::Error::invalid(format!(
                "token vectors: {} values are not whole rows of {dim}",
                rows.len()
            )));
        }
        for row in rows.chunks_mut(dim) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                row.iter_mut().for_each(|x| *x /= n);
            }
        }
        Ok(TokenVectors { dim, rows })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.rows.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, one after the other.
    pub fn rows(&self) -> &[f32] {
        &self.rows
    }

    /// Late-interaction similarity of this text (a query) to `doc`: the mean, over this
    /// text's tokens, of each one's best cosine with a token of `doc` (ColBERT's MaxSim,
    /// averaged so that it lies in [-1, 1] whatever the query's length). 0 when either is
    /// empty or their dimensions differ.
    pub fn max_sim(&self, doc: &TokenVectors) -> f32 {
        if self.is_empty() || doc.is_empty() || self.dim != doc.dim {
            return 0.0;
        }
        let total: f32 = self
            .rows
            .chunks(self.dim)
            .map(|q| {
                doc.rows
                    .chunks(doc.dim)
                    .map(|d| q.iter().zip(d).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .sum();
        total / self.len() as f32
    }
}

/// What to summarise and how short.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryRequest {
    /// The text to compress (a transcript, a document).
    pub text: String,
    /// A summary to extend rather than start anew (rolling summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_summary: Option<String>,
    /// Upper bound on the summary's length in tokens.
    pub max_tokens: usize,
    /// Extra guidance ("keep names, numbers and dates").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// What one summariser call spent: the tokens it read and wrote, and the model that wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryUsage {
    /// The model that wrote the summary, as its provider named it (the name the catalog prices
    /// it under); `extractive` when no model ran.
    pub model: String,
    /// Input and output tokens of the call; `None` when the summariser cannot tell (the
    /// default [`Summarizer::summarize_with_usage`]), for the caller to estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Usage>,
}

impl SummaryUsage {
    /// A call that spent nothing (no model ran): zero tokens, known.
    pub fn free(model: impl Into<String>) -> Self {
        SummaryUsage {
            model: model.into(),
            tokens: Some(Usage::default()),
        }
    }
}

/// A summary and what writing it spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub text: String,
    pub usage: SummaryUsage,
}

/// Compresses text into a shorter text.
#[async_trait]
pub trait Summarizer: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;

    /// How many input tokens one call can take; larger inputs are chunked by the caller.
    fn context_window(&self) -> usize;

    async fn summarize(&self, request: SummaryRequest) -> Result<String>;

    /// [`Summarizer::summarize`] with what the call spent. The default calls `summarize` and
    /// reports the tokens as unknown (`usage.tokens == None`) under the summariser's
    /// [`name`](Summarizer::name); a summariser that knows its usage (a chat model's reported
    /// usage, a local model's token counts) overrides it.
    async fn summarize_with_usage(&self, request: SummaryRequest) -> Result<Summary> {
        let text = self.summarize(request).await?;
        Ok(Summary {
            text,
            usage: SummaryUsage {
                model: self.name().to_owned(),
                tokens: None,
            },
        })
    }
}

/// Any [`ChatModel`] as a [`Summarizer`]; given a previous summary, it asks to extend it.
#[derive(Debug, Clone)]
pub struct ChatSummarizer {
    model: Arc<dyn ChatModel>,
    context_window: usize,
}

impl ChatSummarizer {
    /// `context_window` is the model's input limit in tokens (take it from the catalog).
    pub fn new(model: Arc<dyn ChatModel>, context_window: usize) -> Self {
        ChatSummarizer {
            model,
            context_window,
        }
    }

    /// The prompt sent for `req` (public so previews can show it).
    pub fn prompt(req: &SummaryRequest) -> Vec<Message> {
        let mut system = String::from(
            "You compress conversations into short factual notes. Keep every name, number, date, \
             decision and open question. Write plain sentences, no preamble.",
        );
        if let Some(extra) = &req.instructions {
            system.push(' ');
            system.push_str(extra);
        }
        let user = match &req.previous_summary {
            Some(prev) if !prev.trim().is_empty() => format!(
                "Extend the existing summary with these new lines. Be concise (at most about {} words).\n\n\
                 Existing summary:\n{prev}\n\nNew lines:\n{}",
                req.max_tokens * 3 / 4,
                req.text
            ),
            _ => format!(
                "Summarize the key facts from this conversation (at most about {} words).\n\n{}",
                req.max_tokens * 3 / 4,
                req.text
            ),
        };
        vec![Message::system(system), Message::user(user)]
    }
}

#[async_trait]
impl Summarizer for ChatSummarizer {
    fn name(&self) -> &str {
        self.model.name()
    }

    fn context_window(&self) -> usize {
        self.context_window
    }

    async fn summarize(&self, request: SummaryRequest) -> Result<String> {
        Ok(self.summarize_with_usage(request).await?.text)
    }

    /// The usage the chat model reported for the call (unknown when it reported none), under
    /// the model that answered (the configured one when the answer names none).
    async fn summarize_with_usage(&self, request: SummaryRequest) -> Result<Summary> {
        let max = u32::try_from(request.max_tokens.max(16)).unwrap_or(u32::MAX);
        let req = ChatRequest::new(Self::prompt(&request))
            .with_max_tokens(max)
            .with_temperature(0.0);
        let resp = self.model.chat(req).await?;
        let text = resp.message.text().trim().to_owned();
        if text.is_empty() {
            return Err(Error::Provider {
                provider: self.model.name().to_owned(),
                status: None,
                message: "the summarizer returned an empty summary".into(),
                retry_after: None,
            });
        }
        let model = if resp.model.trim().is_empty() {
            self.model.model().to_owned()
        } else {
            resp.model
        };
        Ok(Summary {
            text,
            usage: SummaryUsage {
                model,
                tokens: resp.usage,
            },
        })
    }
}

#[async_trait]
impl<T: ChatModel + ?Sized> ChatModel for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn model(&self) -> &str {
        (**self).model()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        (**self).chat(request).await
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        (**self).chat_stream(request).await
    }
    async fn count_tokens(&self, request: &ChatRequest) -> Result<usize> {
        (**self).count_tokens(request).await
    }
}

#[async_trait]
impl<T: Embedder + ?Sized> Embedder for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn dimensions(&self) -> usize {
        (**self).dimensions()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        (**self).embed(texts).await
    }
    async fn embed_with_tokens(&self, texts: &[String]) -> Result<Vec<Embedded>> {
        (**self).embed_with_tokens(texts).await
    }
}

#[async_trait]
impl<T: Summarizer + ?Sized> Summarizer for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn context_window(&self) -> usize {
        (**self).context_window()
    }
    async fn summarize(&self, request: SummaryRequest) -> Result<String> {
        (**self).summarize(request).await
    }
    async fn summarize_with_usage(&self, request: SummaryRequest) -> Result<Summary> {
        (**self).summarize_with_usage(request).await
    }
}

/// `dyn ChatModel`, for `Arc<DynChatModel>` signatures.
pub type DynChatModel = dyn ChatModel;
/// `dyn Embedder`.
pub type DynEmbedder = dyn Embedder;
/// `dyn Summarizer`.
pub type DynSummarizer = dyn Summarizer;

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of two calls, interleaved as a provider may send them, make two whole calls.
    #[test]
    fn tool_call_pieces_join_in_order() {
        let piece = |index, id: Option<&str>, name: Option<&str>, args: &str| ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: args.to_owned(),
        };
        let mut p = ToolCallPieces::default();
        assert!(p.is_empty());
        for d in [
            piece(0, Some("call_a"), Some("weather"), ""),
            piece(1, None, Some("time"), ""),
            piece(0, None, None, "{\"city\":"),
            piece(0, None, None, "\"Lisbon\"}"),
        ] {
            p.push(&d);
        }
        let calls = p.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].name.as_str()),
            ("call_a", "weather")
        );
        assert_eq!(calls[0].arguments, "{\"city\":\"Lisbon\"}");
        assert_eq!(
            (calls[1].id.as_str(), calls[1].arguments.as_str()),
            ("call_1", "{}")
        );
    }
}
