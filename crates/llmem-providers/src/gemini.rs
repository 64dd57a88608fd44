//! Google's Gemini API: `generateContent`, `streamGenerateContent?alt=sse`, `countTokens`,
//! `embedContent` and `batchEmbedContents`.
//!
//! ```toml
//! [providers.gemini]
//! kind = "gemini"
//! model = "gemini-2.5-flash"
//! embedding_model = "gemini-embedding-001"
//! dimensions = 3072
//! # api_key = "…"       # else GEMINI_API_KEY
//! ```

use std::collections::HashMap;

use async_trait::async_trait;
use llmem_core::{
    Capabilities, ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, ContentPart,
    Embedder, Error, Message, Result, Role, ToolCall, ToolCallDelta, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::http::{
    ApiKey, Call, SseEvent, chunk_stream, config_from_table, default_client, event_json, u64_at,
};
use crate::openai::finish_embeddings;

pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";
pub const API_KEY_ENV: &str = "GEMINI_API_KEY";

/// Configuration of [`Gemini`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKey>,
    /// Without the version path (`https://generativelanguage.googleapis.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    /// Embedding length (sent as `outputDimensionality`); required with `embedding_model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
}

/// Builds a [`Gemini`] provider.
#[derive(Debug, Clone, Default)]
pub struct GeminiBuilder {
    config: GeminiConfig,
    client: Option<reqwest::Client>,
}

impl GeminiBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Key from `$GEMINI_API_KEY` (or `$GOOGLE_API_KEY`).
    pub fn from_env() -> Self {
        let mut b = Self::new();
        b.config.api_key =
            ApiKey::from_env(API_KEY_ENV).or_else(|| ApiKey::from_env("GOOGLE_API_KEY"));
        b
    }

    pub fn from_config(config: GeminiConfig) -> Self {
        GeminiBuilder {
            config,
            client: None,
        }
    }

    pub fn from_table(table: &toml::Table) -> Result<Self> {
        Ok(Self::from_config(config_from_table(table)?))
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
    pub fn with_embedding_model(mut self, model: impl Into<String>, dimensions: usize) -> Self {
        self.config.embedding_model = Some(model.into());
        self.config.dimensions = Some(dimensions);
        self
    }

    #[must_use]
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    pub fn build(self) -> Result<Gemini> {
        let c = self.config;
        let api_key = match c.api_key {
            Some(k) => k,
            None => ApiKey::from_env(API_KEY_ENV).ok_or_else(|| {
                Error::config(
                    "api_key",
                    format!("set `api_key` or the {API_KEY_ENV} environment variable"),
                )
            })?,
        };
        if c.embedding_model.is_some() && c.dimensions.is_none() {
            return Err(Error::config(
                "dimensions",
                "set `dimensions` (e.g. 768 or 3072) with `embedding_model`",
            ));
        }
        Ok(Gemini {
            client: self.client.unwrap_or_else(default_client),
            base_url: c
                .base_url
                .unwrap_or_else(|| GEMINI_BASE_URL.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            api_key,
            model: c.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            embedding_model: c.embedding_model,
            dimensions: c.dimensions,
        })
    }
}

/// Gemini chat and embeddings.
#[derive(Debug, Clone)]
pub struct Gemini {
    client: reqwest::Client,
    base_url: String,
    api_key: ApiKey,
    model: String,
    embedding_model: Option<String>,
    dimensions: Option<usize>,
}

const NAME: &str = "gemini";

fn model_path(model: &str) -> String {
    if model.starts_with("models/") {
        model.to_owned()
    } else {
        format!("models/{model}")
    }
}

/// Gemini `contents` and `systemInstruction` from llmem messages. Tool results need the function's
/// name, found from the assistant call with the same id.
pub fn to_gemini(messages: &[Message]) -> Result<(Option<Value>, Vec<Value>)> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for m in messages {
        let mut parts: Vec<Value> = Vec::new();
        for p in &m.content {
            match p {
                ContentPart::Text { text } => parts.push(json!({"text": text})),
                ContentPart::ImageUrl { image_url } => match image_url.url.strip_prefix("data:") {
                    Some(rest) => {
                        let (mime, data) =
                            rest.split_once(";base64,").unwrap_or(("image/png", rest));
                        parts.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                    }
                    None => parts.push(json!({"fileData": {"fileUri": image_url.url}})),
                },
            }
        }
        match m.role {
            Role::System => {
                system.push(m.text());
                continue;
            }
            Role::Assistant => {
                for c in &m.tool_calls {
                    call_names.insert(&c.id, &c.name);
                    let args: Value = if c.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&c.arguments).map_err(|e| {
                            Error::invalid(format!(
                                "tool call `{}` arguments are not JSON: {e}",
                                c.id
                            ))
                        })?
                    };
                    parts.push(json!({"functionCall": {"name": c.name, "args": args}}));
                }
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = call_names.get(id).copied().unwrap_or(id);
                let text = m.text();
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"result": text}));
                parts = vec![json!({"functionResponse": {"name": name, "response": response}})];
            }
            Role::User => {}
        }
        let role = if m.role == Role::Assistant {
            "model"
        } else {
            "user"
        };
        contents.push(json!({"role": role, "parts": parts}));
    }
    let system = (!system.is_empty()).then(|| json!({"parts": [{"text": system.join("\n\n")}]}));
    Ok((system, contents))
}

/// Gemini's `usageMetadata` (`promptTokenCount` includes the cached part).
pub fn parse_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    Some(Usage {
        input_tokens: u64_at(u, "promptTokenCount"),
        output_tokens: u64_at(u, "candidatesTokenCount") + u64_at(u, "thoughtsTokenCount"),
        cached_input_tokens: u64_at(u, "cachedContentTokenCount"),
    })
}

fn bad_shape(what: &str, body: &Value) -> Error {
    Error::Provider {
        provider: NAME.into(),
        status: None,
        message: format!(
            "unexpected response shape ({what}): {}",
            body.to_string().chars().take(300).collect::<String>()
        ),
        retry_after: None,
    }
}

fn prompt_blocked(v: &Value) -> Option<Error> {
    let reason = v["promptFeedback"]["blockReason"].as_str()?;
    Some(Error::Provider {
        provider: NAME.into(),
        status: None,
        message: format!("the prompt was blocked: {reason}"),
        retry_after: None,
    })
}

/// A `functionCall` part as the call numbered `i` (Gemini may send no id: `call_<i>_<name>`).
fn function_call(fc: &Value, i: usize) -> Result<ToolCall> {
    let name = fc["name"].as_str().unwrap_or_default().to_owned();
    let id = fc["id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("call_{i}_{name}"));
    Ok(ToolCall {
        id,
        name,
        arguments: serde_json::to_string(&fc["args"])?,
    })
}

/// Parses a `GenerateContentResponse`.
pub fn parse_response(v: &Value) -> Result<ChatResponse> {
    if let Some(e) = prompt_blocked(v) {
        return Err(e);
    }
    let cand = v["candidates"]
        .get(0)
        .ok_or_else(|| bad_shape("no `candidates[0]`", v))?;
    let mut message = Message::assistant("");
    message.content.clear();
    let mut text = String::new();
    if let Some(parts) = cand["content"]["parts"].as_array() {
        for (i, p) in parts.iter().enumerate() {
            if p["thought"].as_bool() == Some(true) {
                continue;
            }
            if let Some(t) = p["text"].as_str() {
                text.push_str(t);
            }
            if let Some(fc) = p.get("functionCall") {
                message.tool_calls.push(function_call(fc, i)?);
            }
        }
    }
    if !text.is_empty() {
        message.content.push(ContentPart::Text { text });
    }
    Ok(ChatResponse {
        message,
        model: v["modelVersion"].as_str().unwrap_or_default().to_owned(),
        usage: parse_usage(&v["usageMetadata"]),
        finish_reason: cand["finishReason"].as_str().map(str::to_owned),
    })
}

impl Gemini {
    pub fn builder() -> GeminiBuilder {
        GeminiBuilder::new()
    }

    fn call(&self, model: &str, method: &str) -> Call<'_> {
        Call {
            provider: NAME,
            client: &self.client,
            url: format!("{}/v1beta/{}:{method}", self.base_url, model_path(model)),
            headers: vec![("x-goog-api-key", self.api_key.expose().to_owned())],
        }
    }

    fn body(&self, req: &ChatRequest, count: bool) -> Result<Value> {
        let (system, contents) = to_gemini(&req.messages)?;
        let mut b = Map::new();
        b.insert("contents".into(), Value::Array(contents));
        if let Some(s) = system {
            b.insert("systemInstruction".into(), s);
        }
        if !req.tools.is_empty() {
            let decls: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    let mut d = json!({"name": t.name, "description": t.description});
                    if !t.parameters.is_null() {
                        d["parameters"] = t.parameters.clone();
                    }
                    d
                })
                .collect();
            b.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        }
        if count {
            return Ok(Value::Object(b));
        }
        let mut generation = Map::new();
        if let Some(n) = req.max_tokens {
            generation.insert("maxOutputTokens".into(), json!(n));
        }
        if let Some(t) = req.temperature {
            generation.insert("temperature".into(), json!(t));
        }
        if !req.stop.is_empty() {
            generation.insert("stopSequences".into(), json!(req.stop));
        }
        if !generation.is_empty() {
            b.insert("generationConfig".into(), Value::Object(generation));
        }
        for (k, v) in &req.extra {
            b.insert(k.clone(), v.clone());
        }
        Ok(Value::Object(b))
    }
}

fn step(calls: &mut usize, ev: SseEvent) -> Result<(Vec<ChatChunk>, bool)> {
    let v = event_json(NAME, &ev)?;
    if v.get("error").is_some() {
        return Err(Error::Provider {
            provider: NAME.into(),
            status: None,
            message: crate::http::error_message(&ev.data),
            retry_after: None,
        });
    }
    if let Some(e) = prompt_blocked(&v) {
        return Err(e);
    }
    let cand = &v["candidates"][0];
    let mut delta = String::new();
    let mut tool_calls = Vec::new();
    if let Some(parts) = cand["content"]["parts"].as_array() {
        for p in parts {
            if p["thought"].as_bool() == Some(true) {
                continue;
            }
            delta.push_str(p["text"].as_str().unwrap_or_default());
            // A function call comes whole, in one part; the calls are numbered across events.
            if let Some(fc) = p.get("functionCall") {
                let index = *calls;
                *calls += 1;
                tool_calls.push(ToolCallDelta::whole(index, function_call(fc, index)?));
            }
        }
    }
    let finish = cand["finishReason"].as_str().map(str::to_owned);
    // Every event repeats the running usage; report it with the finish.
    let usage = if finish.is_some() {
        parse_usage(&v["usageMetadata"])
    } else {
        None
    };
    let keep = !delta.is_empty() || finish.is_some() || !tool_calls.is_empty();
    Ok((
        if keep {
            vec![ChatChunk {
                delta,
                finish_reason: finish,
                usage,
                tool_calls,
            }]
        } else {
            Vec::new()
        },
        false,
    ))
}

#[async_trait]
impl ChatModel for Gemini {
    fn name(&self) -> &str {
        NAME
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
            token_count: true,
            local: false,
        }
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let body = self.body(&request, false)?;
        let model = request.model.as_deref().unwrap_or(&self.model);
        let v = self.call(model, "generateContent").json(&body).await?;
        parse_response(&v)
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = self.body(&request, false)?;
        let model = request.model.as_deref().unwrap_or(&self.model);
        let events = self
            .call(model, "streamGenerateContent?alt=sse")
            .sse(&body)
            .await?;
        Ok(chunk_stream(NAME, events, 0usize, step))
    }

    async fn count_tokens(&self, request: &ChatRequest) -> Result<usize> {
        let body = self.body(request, true)?;
        let model = request.model.as_deref().unwrap_or(&self.model);
        let v = self.call(model, "countTokens").json(&body).await?;
        let n = v["totalTokens"]
            .as_u64()
            .ok_or_else(|| bad_shape("no `totalTokens`", &v))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

#[async_trait]
impl Embedder for Gemini {
    fn name(&self) -> &str {
        NAME
    }

    fn dimensions(&self) -> usize {
        self.dimensions.unwrap_or(0)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let model = self
            .embedding_model
            .as_deref()
            .ok_or_else(|| Error::unsupported("embeddings (set `embedding_model`)", NAME))?;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let path = model_path(model);
        let request = |t: &String| {
            let mut r = json!({"model": path, "content": {"parts": [{"text": t}]}});
            if let Some(d) = self.dimensions {
                r["outputDimensionality"] = json!(d);
            }
            r
        };
        let vectors: Vec<Vec<f32>> = if texts.len() == 1 {
            let v = self
                .call(model, "embedContent")
                .json(&request(&texts[0]))
                .await?;
            vec![
                serde_json::from_value(v["embedding"]["values"].clone())
                    .map_err(|e| bad_shape(&format!("`embedding.values`: {e}"), &v))?,
            ]
        } else {
            let body = json!({"requests": texts.iter().map(request).collect::<Vec<_>>()});
            let v = self.call(model, "batchEmbedContents").json(&body).await?;
            let embs = v["embeddings"]
                .as_array()
                .ok_or_else(|| bad_shape("no `embeddings` array", &v))?;
            embs.iter()
                .map(|e| {
                    serde_json::from_value(e["values"].clone())
                        .map_err(|err| bad_shape(&format!("`values`: {err}"), e))
                })
                .collect::<Result<_>>()?
        };
        finish_embeddings(NAME, texts.len(), self.dimensions, vectors)
    }
}
