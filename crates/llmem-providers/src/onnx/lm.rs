//! A [`Summarizer`] that runs an ONNX causal LM exported in the optimum layout (inputs
//! `input_ids`, `attention_mask`, optional `position_ids`, `past_key_values.N.key|value`;
//! outputs `logits`, `present.N.key|value`) with greedy decoding and a key/value cache, so a
//! user with such a model needs no server.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use llmem_core::{
    ChatSummarizer, Error, Message, Result, Role, Summarizer, Summary, SummaryRequest,
    SummaryUsage, Usage,
};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, ValueType};
use tokenizers::Tokenizer;

use super::{environment, ort_error, session};
use crate::assets;

/// Builds an [`OnnxLmSummarizer`].
#[derive(Debug, Clone, Default)]
pub struct OnnxLmSummarizerBuilder {
    model_path: Option<PathBuf>,
    tokenizer_path: Option<PathBuf>,
    library_path: Option<PathBuf>,
    threads: usize,
    context_window: Option<usize>,
    eos_token: Option<String>,
}

impl OnnxLmSummarizerBuilder {
    /// `model.onnx` of the causal LM (required).
    #[must_use]
    pub fn with_model_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.model_path = Some(p.into());
        self
    }

    /// `tokenizer.json`; default next to the model.
    #[must_use]
    pub fn with_tokenizer_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.tokenizer_path = Some(p.into());
        self
    }

    #[must_use]
    pub fn with_library_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.library_path = Some(p.into());
        self
    }

    #[must_use]
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// The model's context length in tokens (default 2048).
    #[must_use]
    pub fn with_context_window(mut self, n: usize) -> Self {
        self.context_window = Some(n);
        self
    }

    /// The end-of-sequence token (default: the first of `<|im_end|>`, `<|endoftext|>`, `</s>`,
    /// `[SEP]` the tokenizer knows).
    #[must_use]
    pub fn with_eos_token(mut self, t: impl Into<String>) -> Self {
        self.eos_token = Some(t.into());
        self
    }

    /// From a registry table (`kind = "onnx-lm"`): `model_path` (required), `tokenizer_path`,
    /// `library_path`, `threads`, `context_window`, `eos_token`; any other key is an error.
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        use llmem_core::registry::{deny_unknown, opt_str, opt_u64};
        let mut t = table.clone();
        t.remove("kind");
        deny_unknown(
            &t,
            &[
                "model_path",
                "tokenizer_path",
                "library_path",
                "threads",
                "context_window",
                "eos_token",
            ],
        )?;
        let mut b = OnnxLmSummarizerBuilder::default();
        if let Some(p) = opt_str(&t, "model_path")? {
            b = b.with_model_path(p);
        }
        if let Some(p) = opt_str(&t, "tokenizer_path")? {
            b = b.with_tokenizer_path(p);
        }
        if let Some(p) = opt_str(&t, "library_path")? {
            b = b.with_library_path(p);
        }
        if let Some(n) = opt_u64(&t, "threads")? {
            b = b.with_threads(n as usize);
        }
        if let Some(n) = opt_u64(&t, "context_window")? {
            b = b.with_context_window(n as usize);
        }
        if let Some(e) = opt_str(&t, "eos_token")? {
            b = b.with_eos_token(e);
        }
        Ok(b)
    }

    pub fn build(self) -> Result<OnnxLmSummarizer> {
        let model_path = self
            .model_path
            .ok_or_else(|| Error::config("model_path", "set the causal LM's model.onnx"))?;
        let model = assets::resolve("the causal LM", Some(&model_path), "")?;
        let tok_path = self
            .tokenizer_path
            .unwrap_or_else(|| model.with_file_name("tokenizer.json"));
        let tok_path = assets::resolve("the LM tokenizer", Some(&tok_path), "")?;
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| Error::Other {
            context: format!("reading {}", tok_path.display()),
            source: e,
        })?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| Error::Other {
            context: "configuring the tokenizer".into(),
            source: e,
        })?;
        let eos_name = match self.eos_token {
            Some(t) => Some(t),
            None => ["<|im_end|>", "<|endoftext|>", "</s>", "[SEP]"]
                .into_iter()
                .find(|t| tokenizer.token_to_id(t).is_some())
                .map(str::to_owned),
        };
        let eos = eos_name.as_deref().and_then(|t| tokenizer.token_to_id(t));
        // Special tokens other than the end are never generated (pad, unk, cls, mask, …).
        let banned: Vec<u32> = tokenizer
            .get_added_tokens_decoder()
            .iter()
            .filter(|(id, t)| t.special && Some(**id) != eos)
            .map(|(id, _)| *id)
            .collect();
        let chatml = tokenizer.token_to_id("<|im_start|>").is_some();

        let env = environment(self.library_path.as_deref())?;
        let options = super::SessionOptions {
            threads: self.threads,
            ..Default::default()
        };
        let (session, _) = session(&env, &model, &options)?;
        let names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_owned())
            .collect();
        for needed in ["input_ids", "attention_mask"] {
            if !names.iter().any(|n| n == needed) {
                return Err(Error::invalid(format!(
                    "{} has no `{needed}` input; is it an optimum causal-LM export?",
                    model.display()
                )));
            }
        }
        let mut layers = Vec::new();
        let (mut heads, mut head_dim) = (0usize, 0usize);
        for i in 0.. {
            let key = format!("past_key_values.{i}.key");
            let Some(outlet) = session.inputs().iter().find(|o| o.name() == key) else {
                break;
            };
            let dims: Vec<i64> = match outlet.dtype() {
                ValueType::Tensor { shape, .. } => shape.iter().copied().collect(),
                _ => Vec::new(),
            };
            if let [_, h, _, d] = dims[..] {
                heads = usize::try_from(h).unwrap_or(0);
                head_dim = usize::try_from(d).unwrap_or(0);
            }
            layers.push(i);
        }
        if layers.is_empty() || heads == 0 || head_dim == 0 {
            return Err(Error::invalid(format!(
                "{} has no `past_key_values.N.key` inputs with fixed heads and head size",
                model.display()
            )));
        }
        let name = format!(
            "onnx-lm:{}",
            model
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        Ok(OnnxLmSummarizer {
            inner: Arc::new(LmInner {
                session: Mutex::new(session),
                tokenizer,
                layers: layers.len(),
                heads,
                head_dim,
                position_ids: names.iter().any(|n| n == "position_ids"),
                eos,
                banned,
                chatml,
            }),
            context_window: self.context_window.unwrap_or(2048),
            name,
        })
    }
}

#[derive(Debug)]
struct LmInner {
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    layers: usize,
    heads: usize,
    head_dim: usize,
    position_ids: bool,
    eos: Option<u32>,
    banned: Vec<u32>,
    chatml: bool,
}

impl LmInner {
    fn generate_ids(&self, prompt: &[u32], max_new: usize) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::invalid("the prompt is empty"));
        }
        let (h, d) = (self.heads, self.head_dim);
        // One (key, value) pair per layer: data and past length.
        let mut past: Vec<(Vec<f32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); self.layers];
        let mut past_len = 0usize;
        let mut current: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
        let mut out = Vec::new();
        let mut session = self
            .session
            .lock()
            .map_err(|_| Error::invalid("the ONNX session lock was poisoned"))?;
        let tensor_err = |e| ort_error("building an input tensor", e);
        for step in 0..max_new {
            let n = current.len();
            let total = past_len + n;
            let mut inputs: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
            inputs.push((
                "input_ids".into(),
                Tensor::from_array(([1usize, n], current.clone()))
                    .map_err(tensor_err)?
                    .into(),
            ));
            inputs.push((
                "attention_mask".into(),
                Tensor::from_array(([1usize, total], vec![1i64; total]))
                    .map_err(tensor_err)?
                    .into(),
            ));
            if self.position_ids {
                let pos: Vec<i64> = (past_len..total).map(|p| p as i64).collect();
                inputs.push((
                    "position_ids".into(),
                    Tensor::from_array(([1usize, n], pos))
                        .map_err(tensor_err)?
                        .into(),
                ));
            }
            for (i, (k, v)) in past.iter().enumerate() {
                let shape = [1usize, h, past_len, d];
                inputs.push((
                    format!("past_key_values.{i}.key").into(),
                    Tensor::from_array((shape, k.clone()))
                        .map_err(tensor_err)?
                        .into(),
                ));
                inputs.push((
                    format!("past_key_values.{i}.value").into(),
                    Tensor::from_array((shape, v.clone()))
                        .map_err(tensor_err)?
                        .into(),
                ));
            }
            let outputs = session
                .run(inputs)
                .map_err(|e| ort_error("running the causal LM", e))?;
            let logits = outputs
                .get("logits")
                .ok_or_else(|| Error::invalid("the model has no `logits` output"))?;
            let (shape, data) = logits
                .try_extract_tensor::<f32>()
                .map_err(|e| ort_error("reading logits", e))?;
            let vocab = shape
                .last()
                .copied()
                .and_then(|v| usize::try_from(v).ok())
                .unwrap_or(0);
            if vocab == 0 || data.len() < n * vocab {
                return Err(Error::invalid(format!(
                    "unexpected logits shape {:?}",
                    &shape[..]
                )));
            }
            let row = &data[(n - 1) * vocab..n * vocab];
            let mut best: Option<(usize, f32)> = None;
            for (id, &x) in row.iter().enumerate() {
                let id32 = u32::try_from(id).unwrap_or(u32::MAX);
                // At least one token: the end is not allowed first.
                if self.banned.contains(&id32) || (step == 0 && Some(id32) == self.eos) {
                    continue;
                }
                if best.is_none_or(|(_, b)| x > b) {
                    best = Some((id, x));
                }
            }
            let next = best
                .map(|(i, _)| u32::try_from(i).unwrap_or(0))
                .unwrap_or(0);
            for (i, (k, v)) in past.iter_mut().enumerate() {
                for (name, slot) in [
                    (format!("present.{i}.key"), &mut *k),
                    (format!("present.{i}.value"), &mut *v),
                ] {
                    let value = outputs.get(&name).ok_or_else(|| {
                        Error::invalid(format!("the model has no `{name}` output"))
                    })?;
                    let (_, p) = value
                        .try_extract_tensor::<f32>()
                        .map_err(|e| ort_error("reading the key/value cache", e))?;
                    if p.len() != h * total * d {
                        return Err(Error::invalid(format!(
                            "`{name}` has {} values, expected {}",
                            p.len(),
                            h * total * d
                        )));
                    }
                    *slot = p.to_vec();
                }
            }
            past_len = total;
            if Some(next) == self.eos {
                break;
            }
            out.push(next);
            current = vec![i64::from(next)];
        }
        Ok(out)
    }

    fn render(&self, messages: &[Message]) -> String {
        let mut s = String::new();
        for m in messages {
            if self.chatml {
                s.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.text()));
            } else {
                let who = match m.role {
                    Role::System => "System",
                    Role::User | Role::Tool => "User",
                    Role::Assistant => "Assistant",
                };
                s.push_str(&format!("{who}: {}\n\n", m.text()));
            }
        }
        s.push_str(if self.chatml {
            "<|im_start|>assistant\n"
        } else {
            "Assistant:"
        });
        s
    }
}

/// Greedy decoding of a local ONNX causal LM as a [`Summarizer`] (the prompt is
/// [`ChatSummarizer::prompt`]'s).
#[derive(Debug, Clone)]
pub struct OnnxLmSummarizer {
    inner: Arc<LmInner>,
    context_window: usize,
    name: String,
}

impl OnnxLmSummarizer {
    pub fn builder() -> OnnxLmSummarizerBuilder {
        OnnxLmSummarizerBuilder::default()
    }

    /// Tokenises `prompt` (no special tokens added) and greedily generates up to `max_new`
    /// token ids.
    pub fn generate_ids(&self, prompt: &str, max_new: usize) -> Result<Vec<u32>> {
        let ids = self.encode(prompt)?;
        self.inner.generate_ids(&ids, max_new)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Other {
                context: "tokenising the prompt".into(),
                source: e,
            })?
            .get_ids()
            .to_vec())
    }

    /// Generates text for `prompt` (blocking).
    pub fn generate_blocking(&self, prompt: &str, max_new: usize) -> Result<String> {
        Ok(self.generate_counted(prompt, max_new)?.0)
    }

    /// [`Self::generate_blocking`] with the tokens read and written: (text, usage).
    fn generate_counted(&self, prompt: &str, max_new: usize) -> Result<(String, Usage)> {
        let ids = self.encode(prompt)?;
        if ids.len() + max_new > self.context_window {
            return Err(Error::TokenLimit {
                what: "the summary prompt".into(),
                needed: ids.len() + max_new,
                limit: self.context_window,
            });
        }
        let out = self.inner.generate_ids(&ids, max_new)?;
        let text = self
            .inner
            .tokenizer
            .decode(&out, true)
            .map_err(|e| Error::Other {
                context: "decoding the output".into(),
                source: e,
            })?;
        let usage = Usage {
            input_tokens: ids.len() as u64,
            output_tokens: out.len() as u64,
            cached_input_tokens: 0,
        };
        Ok((text, usage))
    }
}

#[async_trait]
impl Summarizer for OnnxLmSummarizer {
    fn name(&self) -> &str {
        &self.name
    }

    fn context_window(&self) -> usize {
        self.context_window
    }

    async fn summarize(&self, request: SummaryRequest) -> Result<String> {
        Ok(self.summarize_with_usage(request).await?.text)
    }

    /// The tokens of the prompt and of the output as the model's tokenizer counts them, under
    /// the summariser's name (a local model: the catalog prices it only if it lists the name).
    async fn summarize_with_usage(&self, request: SummaryRequest) -> Result<Summary> {
        let prompt = self.inner.render(&ChatSummarizer::prompt(&request));
        let max_new = request.max_tokens.max(1);
        let this = self.clone();
        let (text, usage) =
            tokio::task::spawn_blocking(move || this.generate_counted(&prompt, max_new))
                .await
                .map_err(|e| Error::Other {
                    context: "the generation task failed".into(),
                    source: Box::new(e),
                })??;
        let text = text.trim().to_owned();
        if text.is_empty() {
            return Err(Error::Provider {
                provider: self.name.clone(),
                status: None,
                message: "the model generated no text".into(),
                retry_after: None,
            });
        }
        Ok(Summary {
            text,
            usage: SummaryUsage {
                model: self.name.clone(),
                tokens: Some(usage),
            },
        })
    }
}
