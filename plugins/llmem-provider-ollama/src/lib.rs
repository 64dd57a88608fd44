//! An llmem provider for [Ollama](https://ollama.com)'s native API, written the way a third party
//! would: it depends only on `llmem-core` (plus reqwest, serde and futures).
//!
//! - `POST /api/chat` (JSON, or NDJSON when streaming) → [`ChatModel`]
//! - `POST /api/embed` → [`Embedder`]
//!
//! Register it by name and build it from TOML:
//!
//! ```text
//! let mut chats = llmem_core::Registry::<dyn ChatModel>::new("provider");
//! llmem_provider_ollama::register(&mut chats);
//! let model = chats.build(&toml::from_str(r#"kind = "ollama"
//! model = "llama3.2""#)?)?;
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use llmem_core::wire::openai_messages;
use llmem_core::{
    Capabilities, ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, Embedder, Error,
    Message, Registry, Result, ToolCall, ToolCallDelta, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The registry name.
pub const KIND: &str = "ollama";
/// Ollama's default address.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:11434";

/// TOML configuration (`kind = "ollama"` plus these keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OllamaConfig {
    /// Default `$OLLAMA_HOST` or `http://127.0.0.1:11434`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Chat model (`llama3.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Embedding model (`all-minilm`); with `dimensions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
    /// How long Ollama keeps the model loaded (`"5m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<String>,
}

/// Builds an [`Ollama`] provider.
#[derive(Debug, Clone, Default)]
pub struct OllamaBuilder {
    config: OllamaConfig,
    client: Option<reqwest::Client>,
}

impl OllamaBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Base URL from `$OLLAMA_HOST`.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        b.config.base_url = std::env::var("OLLAMA_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.starts_with("http") {
                    h
                } else {
                    format!("http://{h}")
                }
            });
        b
    }

    pub fn from_config(config: OllamaConfig) -> Self {
        OllamaBuilder {
            config,
            client: None,
        }
    }

    /// From a registry table (its `kind` key is ignored).
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        let mut t = table.clone();
        t.remove("kind");
        let config = t
            .try_into()
            .map_err(|e: toml::de::Error| Error::config(KIND, e.message().to_owned()))?;
        Ok(Self::from_config(config))
    }

    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.config.base_url = Some(url.into());
        self
    }

    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.config.model = Some(model.into());
        self
    }

    #[must_use]
    pub fn with_embedding_model(mut self, model: impl Into<String>, dimensions: usize) -> Self {
        self.config.embedding_model = Some(model.into());
        self.config.dimensions = Some(dimensions);
        self
    }

    #[must_use]
    pub fn with_keep_alive(mut self, keep_alive: impl Into<String>) -> Self {
        self.config.keep_alive = Some(keep_alive.into());
        self
    }

    #[must_use]
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    pub fn build(self) -> Result<Ollama> {
        let c = self.config;
        if c.embedding_model.is_some() && c.dimensions.is_none() {
            return Err(Error::config(
                "dimensions",
                "set `dimensions` with `embedding_model`",
            ));
        }
        Ok(Ollama {
            client: self.client.unwrap_or_default(),
            base_url: c
                .base_url
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            model: c
                .model
                .ok_or_else(|| Error::config("model", "set `model` (e.g. \"llama3.2\")"))?,
            embedding_model: c.embedding_model,
            dimensions: c.dimensions.unwrap_or(0),
            keep_alive: c.keep_alive,
        })
    }
}

/// Registers `ollama` in a chat-model registry.
pub fn register(registry: &mut Registry<dyn ChatModel>) {
    registry.register(KIND, |t| {
        Ok(Arc::new(OllamaBuilder::from_table(t)?.build()?) as Arc<dyn ChatModel>)
    });
}

/// Registers `ollama` in an embedder registry.
pub fn register_embedder(registry: &mut Registry<dyn Embedder>) {
    registry.register(KIND, |t| {
        Ok(Arc::new(OllamaBuilder::from_table(t)?.build()?) as Arc<dyn Embedder>)
    });
}

/// Ollama chat and embeddings.
#[derive(Debug, Clone)]
pub struct Ollama {
    client: reqwest::Client,
    base_url: String,
    model: String,
    embedding_model: Option<String>,
    dimensions: usize,
    keep_alive: Option<String>,
}

fn fail(status: Option<u16>, message: impl Into<String>) -> Error {
    Error::Provider {
        provider: KIND.into(),
        status,
        message: message.into(),
        retry_after: None,
    }
}

fn usage(v: &Value) -> Option<Usage> {
    let input = v["prompt_eval_count"].as_u64()?;
    Some(Usage {
        input_tokens: input,
        output_tokens: v["eval_count"].as_u64().unwrap_or(0),
        cached_input_tokens: 0,
    })
}

impl Ollama {
    pub fn builder() -> OllamaBuilder {
        OllamaBuilder::new()
    }

    async fn post(&self, path: &str, body: &Value) -> Result<reqwest::Response> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base_url))
            .json(body)
            .send()
            .await
            .map_err(|e| fail(None, format!("POST {path}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Err(fail(Some(status.as_u16()), format!("POST {path}: {msg}")))
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let bytes = self
            .post(path, body)
            .await?
            .bytes()
            .await
            .map_err(|e| fail(None, e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            fail(
                None,
                format!("POST {path}: the response is not valid JSON: {e}"),
            )
        })
    }

    fn chat_body(&self, req: &ChatRequest, stream: bool) -> Result<Value> {
        // Ollama's messages are OpenAI-like, but tool-call arguments are JSON objects.
        let mut messages = openai_messages(&req.messages)?;
        if let Value::Array(ms) = &mut messages {
            for m in ms {
                if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                    for c in calls {
                        let args = c["function"]["arguments"]
                            .as_str()
                            .and_then(|a| serde_json::from_str(a).ok());
                        c["function"]["arguments"] = args.unwrap_or_else(|| json!({}));
                    }
                }
            }
        }
        let mut options = Map::new();
        if let Some(n) = req.max_tokens {
            options.insert("num_predict".into(), json!(n));
        }
        if let Some(t) = req.temperature {
            options.insert("temperature".into(), json!(t));
        }
        if !req.stop.is_empty() {
            options.insert("stop".into(), json!(req.stop));
        }
        let mut b = json!({"model": req.model.as_deref().unwrap_or(&self.model), "messages": messages, "stream": stream, "options": options});
        if !req.tools.is_empty() {
            b["tools"] = req
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                .collect();
        }
        if let Some(k) = &self.keep_alive {
            b["keep_alive"] = json!(k);
        }
        Ok(b)
    }
}

fn parse_message(v: &Value) -> Result<Message> {
    let m = &v["message"];
    let mut msg = Message::assistant(m["content"].as_str().unwrap_or_default());
    if msg.text().is_empty() {
        msg.content.clear();
    }
    if let Some(calls) = m["tool_calls"].as_array() {
        for (i, c) in calls.iter().enumerate() {
            let name = c["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            msg.tool_calls.push(ToolCall {
                id: c["id"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("call_{i}")),
                name,
                arguments: serde_json::to_string(&c["function"]["arguments"])?,
            });
        }
    }
    Ok(msg)
}

#[async_trait]
impl ChatModel for Ollama {
    fn name(&self) -> &str {
        KIND
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            streaming: true,
            tools: true,
            embeddings: self.embedding_model.is_some(),
            token_count: false,
            local: false,
        }
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let v = self
            .post_json("/api/chat", &self.chat_body(&request, false)?)
            .await?;
        if v.get("message").is_none() {
            return Err(fail(None, format!("no `message` in the answer: {v}")));
        }
        Ok(ChatResponse {
            message: parse_message(&v)?,
            model: v["model"].as_str().unwrap_or_default().to_owned(),
            usage: usage(&v),
            finish_reason: v["done_reason"].as_str().map(str::to_owned),
        })
    }

    /// Ollama streams newline-delimited JSON objects; the last has `"done": true` and the counts.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let resp = self
            .post("/api/chat", &self.chat_body(&request, true)?)
            .await?;
        let state = (
            resp.bytes_stream().boxed(),
            Vec::<u8>::new(),
            VecDeque::<Result<ChatChunk>>::new(),
            false,
            false,
            0usize,
        );
        let s = futures::stream::unfold(
            state,
            |(mut body, mut buf, mut ready, mut done, mut seen_done, mut calls)| async move {
                loop {
                    if let Some(c) = ready.pop_front() {
                        return Some((c, (body, buf, ready, done, seen_done, calls)));
                    }
                    if done {
                        return None;
                    }
                    match body.next().await {
                        Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                        Some(Err(e)) => {
                            done = true;
                            ready.push_back(Err(fail(None, format!("reading the stream: {e}"))));
                            continue;
                        }
                        None => {
                            done = true;
                            buf.push(b'\n');
                        }
                    }
                    while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let item = serde_json::from_slice::<Value>(&line)
                            .map_err(|e| fail(None, format!("a streamed line is not JSON: {e}")))
                            .and_then(|v| match v["error"].as_str() {
                                Some(err) => Err(fail(None, err.to_owned())),
                                None => Ok(v),
                            });
                        match item {
                            Ok(v) => {
                                let finished = v["done"].as_bool() == Some(true);
                                // Tool calls come whole; numbered across the stream's lines.
                                let tool_calls = match parse_message(&v) {
                                    Ok(m) => m
                                        .tool_calls
                                        .into_iter()
                                        .map(|c| {
                                            calls += 1;
                                            ToolCallDelta::whole(calls - 1, c)
                                        })
                                        .collect(),
                                    Err(_) => Vec::new(),
                                };
                                ready.push_back(Ok(ChatChunk {
                                    tool_calls,
                                    delta: v["message"]["content"]
                                        .as_str()
                                        .unwrap_or_default()
                                        .to_owned(),
                                    finish_reason: finished.then(|| {
                                        v["done_reason"].as_str().unwrap_or("stop").to_owned()
                                    }),
                                    usage: if finished { usage(&v) } else { None },
                                }));
                                if finished {
                                    done = true;
                                    seen_done = true;
                                    buf.clear();
                                }
                            }
                            Err(e) => {
                                done = true;
                                seen_done = true;
                                ready.push_back(Err(e));
                                buf.clear();
                            }
                        }
                    }
                    if done && !seen_done {
                        seen_done = true;
                        ready.push_back(Err(fail(
                            None,
                            "the stream ended before `done: true` (truncated)",
                        )));
                    }
                }
            },
        );
        Ok(Box::pin(s))
    }
}

#[async_trait]
impl Embedder for Ollama {
    fn name(&self) -> &str {
        KIND
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let model = self
            .embedding_model
            .as_deref()
            .ok_or_else(|| Error::unsupported("embeddings", KIND))?;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut body = json!({"model": model, "input": texts});
        if let Some(k) = &self.keep_alive {
            body["keep_alive"] = json!(k);
        }
        let v = self.post_json("/api/embed", &body).await?;
        let mut out: Vec<Vec<f32>> = serde_json::from_value(v["embeddings"].clone())
            .map_err(|e| fail(None, format!("`embeddings` is not a list of vectors: {e}")))?;
        if out.len() != texts.len() {
            return Err(fail(
                None,
                format!("asked for {} embeddings, got {}", texts.len(), out.len()),
            ));
        }
        for e in &mut out {
            if e.len() != self.dimensions {
                return Err(fail(
                    None,
                    format!("expected {} dimensions, got {}", self.dimensions, e.len()),
                ));
            }
            let n = e.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                e.iter_mut().for_each(|x| *x /= n);
            }
        }
        Ok(out)
    }
}
