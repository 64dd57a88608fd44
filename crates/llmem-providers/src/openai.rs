//! OpenAI chat completions and embeddings, and any OpenAI-compatible server (llama.cpp, vLLM,
//! Ollama's `/v1`) by base URL.
//!
//! ```toml
//! [providers.fast]
//! kind = "openai"            # or "openai-compatible" with base_url = "http://127.0.0.1:8080/v1"
//! model = "gpt-4o-mini"
//! embedding_model = "text-embedding-3-small"
//! # api_key = "…"           # else OPENAI_API_KEY
//! ```

use async_trait::async_trait;
use llmem_core::wire::openai_messages;
use llmem_core::{
    Capabilities, ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, Embedder, Error,
    Message, Result, ToolCallDelta, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::http::{
    ApiKey, Call, SseEvent, chunk_stream, config_from_table, default_client, event_json, u64_at,
};

/// The OpenAI API's base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The chat model used when none is configured.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// The environment variable holding the OpenAI key.
pub const API_KEY_ENV: &str = "OPENAI_API_KEY";

/// Configuration of [`OpenAi`] (TOML keys; `kind` picks the flavour).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The key; for `openai` it defaults to `$OPENAI_API_KEY`. Optional for compatible servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKey>,
    /// Base URL including the version path (`https://api.openai.com/v1`,
    /// `http://127.0.0.1:8080/v1`). Required for `openai-compatible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Chat model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Embedding model; without it the provider does not embed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    /// Embedding length. Known for OpenAI's models; required for others. For `openai` it is also
    /// sent as the `dimensions` request parameter when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
}

/// Builds an [`OpenAi`] provider.
#[derive(Debug, Clone, Default)]
pub struct OpenAiBuilder {
    config: OpenAiConfig,
    compatible: bool,
    client: Option<reqwest::Client>,
}

impl OpenAiBuilder {
    /// The OpenAI API itself.
    pub fn new() -> Self {
        Self::default()
    }

    /// An OpenAI-compatible server at `base_url` (llama.cpp, vLLM, Ollama's `/v1`).
    pub fn compatible(base_url: impl Into<String>) -> Self {
        OpenAiBuilder {
            config: OpenAiConfig {
                base_url: Some(base_url.into()),
                ..Default::default()
            },
            compatible: true,
            client: None,
        }
    }

    /// The OpenAI API with the key from `$OPENAI_API_KEY` and the base URL from `$OPENAI_BASE_URL`.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        b.config.api_key = ApiKey::from_env(API_KEY_ENV);
        b.config.base_url = std::env::var("OPENAI_BASE_URL")
            .ok()
            .filter(|u| !u.is_empty());
        b
    }

    /// From a config (`compatible` picks the flavour).
    pub fn from_config(config: OpenAiConfig, compatible: bool) -> Self {
        OpenAiBuilder {
            config,
            compatible,
            client: None,
        }
    }

    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(ApiKey::new(key));
        self
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
    pub fn with_embedding_model(mut self, model: impl Into<String>) -> Self {
        self.config.embedding_model = Some(model.into());
        self
    }

    #[must_use]
    pub fn with_dimensions(mut self, dimensions: usize) -> Self {
        self.config.dimensions = Some(dimensions);
        self
    }

    /// Uses this HTTP client (proxies, custom TLS, connection pools).
    #[must_use]
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    pub fn build(self) -> Result<OpenAi> {
        let c = self.config;
        let name = if self.compatible {
            "openai-compatible"
        } else {
            "openai"
        };
        let base_url = match (c.base_url, self.compatible) {
            (Some(u), _) => u.trim_end_matches('/').to_owned(),
            (None, false) => OPENAI_BASE_URL.to_owned(),
            (None, true) => {
                return Err(Error::config(
                    "base_url",
                    "an openai-compatible provider needs `base_url` (e.g. http://127.0.0.1:8080/v1)",
                ));
            }
        };
        let api_key = match (c.api_key, self.compatible) {
            (Some(k), _) => Some(k),
            (None, false) => Some(ApiKey::from_env(API_KEY_ENV).ok_or_else(|| {
                Error::config(
                    "api_key",
                    format!("set `api_key` or the {API_KEY_ENV} environment variable"),
                )
            })?),
            (None, true) => None,
        };
        let model = match (c.model, self.compatible) {
            (Some(m), _) => m,
            (None, false) => DEFAULT_MODEL.to_owned(),
            // llama.cpp serves whatever it loaded; the name is informational.
            (None, true) => "default".to_owned(),
        };
        let dimensions = match (&c.embedding_model, c.dimensions) {
            (_, Some(d)) => Some(d),
            (Some(m), None) => Some(known_dimensions(m).ok_or_else(|| {
                Error::config(
                    "dimensions",
                    format!("the length of `{m}` vectors is unknown; set `dimensions`"),
                )
            })?),
            (None, None) => None,
        };
        Ok(OpenAi {
            name,
            compatible: self.compatible,
            client: self.client.unwrap_or_else(default_client),
            base_url,
            api_key,
            model,
            embedding_model: c.embedding_model,
            dimensions,
            send_dimensions: !self.compatible && c.dimensions.is_some(),
        })
    }

    /// From a registry table (`kind` = `openai` or `openai-compatible`).
    pub fn from_table(table: &toml::Table, compatible: bool) -> Result<Self> {
        Ok(Self::from_config(config_from_table(table)?, compatible))
    }
}

fn known_dimensions(model: &str) -> Option<usize> {
    match model {
        "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
        "text-embedding-3-large" => Some(3072),
        _ => None,
    }
}

/// An OpenAI (or OpenAI-compatible) chat and embedding provider.
#[derive(Debug, Clone)]
pub struct OpenAi {
    name: &'static str,
    compatible: bool,
    client: reqwest::Client,
    base_url: String,
    api_key: Option<ApiKey>,
    model: String,
    embedding_model: Option<String>,
    dimensions: Option<usize>,
    send_dimensions: bool,
}

impl OpenAi {
    pub fn builder() -> OpenAiBuilder {
        OpenAiBuilder::new()
    }

    fn call(&self, path: &str) -> Call<'_> {
        let mut headers = Vec::new();
        if let Some(k) = &self.api_key {
            headers.push(("authorization", format!("Bearer {}", k.expose())));
        }
        Call {
            provider: self.name,
            client: &self.client,
            url: format!("{}{path}", self.base_url),
            headers,
        }
    }

    fn chat_body(&self, req: &ChatRequest, stream: bool) -> Result<Value> {
        let mut b = Map::new();
        b.insert(
            "model".into(),
            json!(req.model.as_deref().unwrap_or(&self.model)),
        );
        b.insert("messages".into(), openai_messages(&req.messages)?);
        if let Some(n) = req.max_tokens {
            // OpenAI deprecated `max_tokens` for `max_completion_tokens`; servers that copy the
            // API often know only the old name.
            let key = if self.compatible {
                "max_tokens"
            } else {
                "max_completion_tokens"
            };
            b.insert(key.into(), json!(n));
        }
        if let Some(t) = req.temperature {
            b.insert("temperature".into(), json!(t));
        }
        if !req.stop.is_empty() {
            b.insert("stop".into(), json!(req.stop));
        }
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description,
                        "parameters": if t.parameters.is_null() { json!({"type": "object", "properties": {}}) } else { t.parameters.clone() },
                    }})
                })
                .collect();
            b.insert("tools".into(), Value::Array(tools));
        }
        if stream {
            b.insert("stream".into(), json!(true));
            b.insert("stream_options".into(), json!({"include_usage": true}));
        }
        for (k, v) in &req.extra {
            b.insert(k.clone(), v.clone());
        }
        Ok(Value::Object(b))
    }
}

/// OpenAI's `usage` object, when present.
pub fn parse_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    Some(Usage {
        input_tokens: u64_at(u, "prompt_tokens"),
        output_tokens: u64_at(u, "completion_tokens"),
        cached_input_tokens: u64_at(&u["prompt_tokens_details"], "cached_tokens"),
    })
}

fn bad_shape(provider: &str, what: &str, body: &Value) -> Error {
    let text = body.to_string();
    Error::Provider {
        provider: provider.to_owned(),
        status: None,
        message: format!(
            "unexpected response shape ({what}): {}",
            text.chars().take(300).collect::<String>()
        ),
        retry_after: None,
    }
}

/// Parses a chat-completions response body.
pub fn parse_chat_response(provider: &str, v: &Value) -> Result<ChatResponse> {
    let choice = v["choices"]
        .get(0)
        .ok_or_else(|| bad_shape(provider, "no `choices[0]`", v))?;
    let message: Message = serde_json::from_value(choice["message"].clone())
        .map_err(|e| bad_shape(provider, &format!("`choices[0].message`: {e}"), v))?;
    Ok(ChatResponse {
        message,
        model: v["model"].as_str().unwrap_or_default().to_owned(),
        usage: parse_usage(&v["usage"]),
        finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
    })
}

/// The tool-call pieces of a streamed `delta.tool_calls` (`index`, and `id`, `function.name`,
/// `function.arguments` when present).
fn tool_call_deltas(v: &Value) -> Vec<ToolCallDelta> {
    let Some(calls) = v.as_array() else {
        return Vec::new();
    };
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| ToolCallDelta {
            index: c["index"].as_u64().map_or(i, |n| n as usize),
            id: c["id"].as_str().map(str::to_owned),
            name: c["function"]["name"].as_str().map(str::to_owned),
            arguments: c["function"]["arguments"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

fn stream_step(
    provider: &'static str,
) -> impl FnMut(&mut (), SseEvent) -> Result<(Vec<ChatChunk>, bool)> + Send {
    move |_, ev| {
        if ev.data.trim() == "[DONE]" {
            return Ok((Vec::new(), true));
        }
        let v = event_json(provider, &ev)?;
        if v.get("error").is_some() {
            return Err(Error::Provider {
                provider: provider.to_owned(),
                status: None,
                message: crate::http::error_message(&ev.data),
                retry_after: None,
            });
        }
        let choice = &v["choices"][0];
        let chunk = ChatChunk {
            delta: choice["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
            usage: parse_usage(&v["usage"]),
            tool_calls: tool_call_deltas(&choice["delta"]["tool_calls"]),
        };
        let keep = !chunk.delta.is_empty()
            || chunk.finish_reason.is_some()
            || chunk.usage.is_some()
            || !chunk.tool_calls.is_empty();
        Ok((if keep { vec![chunk] } else { Vec::new() }, false))
    }
}

#[async_trait]
impl ChatModel for OpenAi {
    fn name(&self) -> &str {
        self.name
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
        let body = self.chat_body(&request, false)?;
        let v = self.call("/chat/completions").json(&body).await?;
        parse_chat_response(self.name, &v)
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = self.chat_body(&request, true)?;
        let events = self.call("/chat/completions").sse(&body).await?;
        Ok(chunk_stream(self.name, events, (), stream_step(self.name)))
    }
}

#[async_trait]
impl Embedder for OpenAi {
    fn name(&self) -> &str {
        self.name
    }

    fn dimensions(&self) -> usize {
        self.dimensions.unwrap_or(0)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let model = self
            .embedding_model
            .as_deref()
            .ok_or_else(|| Error::unsupported("embeddings (set `embedding_model`)", self.name))?;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut body = json!({"model": model, "input": texts, "encoding_format": "float"});
        if self.send_dimensions {
            body["dimensions"] = json!(self.dimensions);
        }
        let v = self.call("/embeddings").json(&body).await?;
        let data = v["data"]
            .as_array()
            .ok_or_else(|| bad_shape(self.name, "no `data` array", &v))?;
        let mut out: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
        for (i, d) in data.iter().enumerate() {
            let emb: Vec<f32> = serde_json::from_value(d["embedding"].clone()).map_err(|e| {
                bad_shape(
                    self.name,
                    &format!("`data[{i}].embedding`: {e}"),
                    &Value::Null,
                )
            })?;
            out.push((d["index"].as_u64().unwrap_or(i as u64), emb));
        }
        out.sort_by_key(|(i, _)| *i);
        finish_embeddings(
            self.name,
            texts.len(),
            self.dimensions,
            out.into_iter().map(|(_, v)| v).collect(),
        )
    }
}

/// Checks count and length, then L2-normalises.
pub(crate) fn finish_embeddings(
    provider: &str,
    expected: usize,
    dimensions: Option<usize>,
    mut vectors: Vec<Vec<f32>>,
) -> Result<Vec<Vec<f32>>> {
    let fail = |message: String| Error::Provider {
        provider: provider.to_owned(),
        status: None,
        message,
        retry_after: None,
    };
    if vectors.len() != expected {
        return Err(fail(format!(
            "asked for {expected} embeddings, got {}",
            vectors.len()
        )));
    }
    for v in &mut vectors {
        if let Some(d) = dimensions.filter(|d| v.len() != *d) {
            return Err(fail(format!(
                "expected {d}-dimensional vectors, got {}; fix `dimensions`",
                v.len()
            )));
        }
        crate::l2_normalize(v);
    }
    Ok(vectors)
}
