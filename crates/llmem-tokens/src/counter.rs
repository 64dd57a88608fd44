//! Token counters: exact (tiktoken encodings, `tokenizer.json` files) and calibrated estimates,
//! each with the chat framing of its model's format.
//!
//! Tokenizers are expensive to build (o200k_base takes ~100 ms), so every encoding and every
//! `tokenizer.json` is built once per process and shared.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use llmem_core::{Accuracy, Error, Message, Result, Role, TokenCounter};
use parking_lot::Mutex;

use crate::catalog::{Catalog, ChatFormat, ModelInfo, TokenizerSpec, parse_tokenizer};

/// The engine that turns text into a count.
#[derive(Clone)]
enum Engine {
    /// tiktoken-rs for ids; for o200k and cl100k also a faster exact count (checked against
    /// tiktoken-rs in the tests): [`crate::o200k::count`], and the `bpe` crate's linear-time
    /// encoder for cl100k.
    Tiktoken(&'static tiktoken_rs::CoreBPE, Option<fn(&str) -> usize>),
    Hf(Arc<tokenizers::Tokenizer>),
    Estimate {
        chars_per_token: f64,
    },
}

/// Counts tokens for one model: its tokenizer plus its chat framing.
#[derive(Clone)]
pub struct ModelCounter {
    model: String,
    engine: Engine,
    format: ChatFormat,
    accuracy: Accuracy,
    tokenizer: String,
}

fn fast_count(name: &str) -> Option<fn(&str) -> usize> {
    match name {
        "o200k_base" => Some(crate::o200k::count),
        "cl100k_base" => Some(|text| bpe_openai::cl100k_base().count(text)),
        _ => None,
    }
}

fn tiktoken_engine(name: &str) -> Result<Engine> {
    Ok(Engine::Tiktoken(tiktoken(name)?, fast_count(name)))
}

impl std::fmt::Debug for ModelCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCounter")
            .field("model", &self.model)
            .field("tokenizer", &self.tokenizer)
            .field("format", &self.format)
            .field("accuracy", &self.accuracy)
            .finish()
    }
}

/// The measured mean relative error of the estimates (see docs/tokens.md).
pub const ESTIMATE_MEAN_ABS_ERROR: f32 = 0.12;

fn tiktoken(name: &str) -> Result<&'static tiktoken_rs::CoreBPE> {
    type Cell = OnceLock<Option<tiktoken_rs::CoreBPE>>;
    static P50K: Cell = OnceLock::new();
    static R50K: Cell = OnceLock::new();
    static HARMONY: Cell = OnceLock::new();
    let lazy = |cell: &'static Cell, build: fn() -> Option<tiktoken_rs::CoreBPE>| {
        cell.get_or_init(build)
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("could not build encoding `{name}`")))
    };
    match name {
        "o200k_base" => Ok(tiktoken_rs::o200k_base_singleton()),
        "cl100k_base" => Ok(tiktoken_rs::cl100k_base_singleton()),
        "p50k_base" => lazy(&P50K, || tiktoken_rs::p50k_base().ok()),
        "r50k_base" => lazy(&R50K, || tiktoken_rs::r50k_base().ok()),
        "o200k_harmony" => lazy(&HARMONY, || tiktoken_rs::o200k_harmony().ok()),
        other => Err(Error::invalid(format!(
            "unknown tiktoken encoding `{other}`"
        ))),
    }
}

/// Where `hf:<name>` tokenizers are looked for: `$LLMEM_TOKENIZER_DIR`, else
/// `<cache>/tokenizers` with the cache at `$LLMEM_CACHE_DIR`, `$XDG_CACHE_HOME/llmem` or
/// `~/.cache/llmem`.
pub fn tokenizer_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LLMEM_TOKENIZER_DIR") {
        return PathBuf::from(d);
    }
    cache_dir().join("tokenizers")
}

/// llmem's asset cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LLMEM_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("llmem");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/llmem")
}

fn hf_tokenizer(name: &str) -> Result<Arc<tokenizers::Tokenizer>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<tokenizers::Tokenizer>>>> = OnceLock::new();
    let path = if name.ends_with(".json") {
        PathBuf::from(name)
    } else {
        tokenizer_dir().join(name).join("tokenizer.json")
    };
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(t) = cache.lock().get(&path) {
        return Ok(t.clone());
    }
    if !path.exists() {
        return Err(Error::NotFound {
            what: format!(
                "tokenizer `{name}` at {}; run `cargo xtask setup tokenizers` (or set LLMEM_TOKENIZER_DIR to a folder holding {name}/tokenizer.json)",
                path.display()
            ),
        });
    }
    let mut tok = tokenizers::Tokenizer::from_file(&path)
        .map_err(|e| Error::serde(format!("tokenizer {}", path.display()), e))?;
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| Error::serde(format!("tokenizer {}", path.display()), e))?;
    let tok = Arc::new(tok);
    cache.lock().insert(path, tok.clone());
    Ok(tok)
}

impl ModelCounter {
    /// The counter for a catalog entry.
    pub fn for_model(info: &ModelInfo, catalog: &Catalog) -> Result<Self> {
        let spec = parse_tokenizer(&info.tokenizer)?;
        let (engine, accuracy) = match &spec {
            TokenizerSpec::Tiktoken(enc) => (tiktoken_engine(enc)?, Accuracy::Exact),
            TokenizerSpec::Hf(name) => (Engine::Hf(hf_tokenizer(name)?), Accuracy::Exact),
            TokenizerSpec::Estimate(family) => {
                let est = catalog.estimate(family).ok_or_else(|| {
                    Error::config(
                        format!("estimate.{family}"),
                        "the catalog has no such estimate family",
                    )
                })?;
                (
                    Engine::Estimate {
                        chars_per_token: est.chars_per_token,
                    },
                    Accuracy::Estimate {
                        mean_abs_error: ESTIMATE_MEAN_ABS_ERROR,
                    },
                )
            }
        };
        Ok(ModelCounter {
            model: info.id.clone(),
            engine,
            format: info.chat_format,
            accuracy,
            tokenizer: info.tokenizer.clone(),
        })
    }

    /// A counter for a raw encoding (`o200k_base`) with no chat framing.
    pub fn encoding(name: &str) -> Result<Self> {
        Ok(ModelCounter {
            model: name.to_owned(),
            engine: tiktoken_engine(name)?,
            format: ChatFormat::None,
            accuracy: Accuracy::Exact,
            tokenizer: format!("tiktoken:{name}"),
        })
    }

    /// A counter over a `tokenizer.json` file, with the given framing.
    pub fn from_tokenizer_file(path: &std::path::Path, format: ChatFormat) -> Result<Self> {
        let name = path.display().to_string();
        Ok(ModelCounter {
            model: name.clone(),
            engine: Engine::Hf(hf_tokenizer(&name)?),
            format,
            accuracy: Accuracy::Exact,
            tokenizer: format!("hf:{name}"),
        })
    }

    /// The tokenizer spec (`tiktoken:o200k_base`, …).
    pub fn tokenizer(&self) -> &str {
        &self.tokenizer
    }

    pub fn chat_format(&self) -> ChatFormat {
        self.format
    }

    /// The count tiktoken-rs itself gives (no fast path); for cross-checks and benchmarks.
    pub fn count_reference(&self, text: &str) -> usize {
        match &self.engine {
            Engine::Tiktoken(bpe, _) => bpe.encode_ordinary(text).len(),
            _ => self.count(text),
        }
    }

    /// Token ids, for exact tokenizers (`None` for estimates).
    pub fn encode(&self, text: &str) -> Option<Vec<u32>> {
        match &self.engine {
            Engine::Tiktoken(bpe, _) => Some(bpe.encode_ordinary(text)),
            Engine::Hf(t) => t.encode(text, false).ok().map(|e| e.get_ids().to_vec()),
            Engine::Estimate { .. } => None,
        }
    }

    /// Framing text around one message for template formats: (prefix, suffix).
    fn framing(&self, m: &Message) -> (String, &'static str) {
        let role = m.role.as_str();
        match self.format {
            ChatFormat::Llama3 => {
                let role = if m.role == Role::Tool {
                    "ipython"
                } else {
                    role
                };
                (
                    format!("<|start_header_id|>{role}<|end_header_id|>\n\n"),
                    "<|eot_id|>",
                )
            }
            ChatFormat::ChatMl => (format!("<|im_start|>{role}\n"), "<|im_end|>\n"),
            ChatFormat::Gemma => match m.role {
                // Gemma has no system turn: the template puts the system text before the first
                // user text, separated by a blank line.
                Role::System => (String::new(), "\n\n"),
                Role::Assistant => ("<start_of_turn>model\n".to_owned(), "<end_of_turn>\n"),
                _ => ("<start_of_turn>user\n".to_owned(), "<end_of_turn>\n"),
            },
            ChatFormat::Mistral => match m.role {
                Role::Assistant => (String::new(), "</s>"),
                Role::System => (String::new(), "\n\n"),
                _ => ("[INST]".to_owned(), "[/INST]"),
            },
            _ => (String::new(), ""),
        }
    }

    /// The exact text a template format renders for `messages`, with the reply primed: what a
    /// llama.cpp or vLLM server tokenizes. `None` for API formats (OpenAI, Anthropic, Gemini).
    pub fn render_template(&self, messages: &[Message]) -> Option<String> {
        let (begin, prime) = match self.format {
            ChatFormat::Llama3 => (
                "<|begin_of_text|>",
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
            ),
            ChatFormat::ChatMl => ("", "<|im_start|>assistant\n"),
            ChatFormat::Gemma => ("<bos>", "<start_of_turn>model\n"),
            ChatFormat::Mistral => ("<s>", ""),
            _ => return None,
        };
        let mut out = String::from(begin);
        for m in messages {
            let (pre, post) = self.framing(m);
            out.push_str(&pre);
            out.push_str(&m.text());
            out.push_str(post);
        }
        out.push_str(prime);
        Some(out)
    }
}

impl TokenCounter for ModelCounter {
    fn model(&self) -> &str {
        &self.model
    }

    fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        match &self.engine {
            Engine::Tiktoken(_, Some(fast)) => fast(text),
            Engine::Tiktoken(bpe, None) => bpe.encode_ordinary(text).len(),
            Engine::Hf(t) => t
                .encode_fast(text, false)
                .map(|e| e.len())
                .unwrap_or_else(|_| estimate(text, 4.0)),
            Engine::Estimate { chars_per_token } => estimate(text, *chars_per_token),
        }
    }

    fn accuracy(&self) -> Accuracy {
        self.accuracy
    }

    fn message_overhead(&self, m: &Message) -> usize {
        match self.format {
            // OpenAI's documented accounting: every message is framed by 3 tokens
            // (<|start|>role<|message|> … <|end|>), plus one when a name is given.
            ChatFormat::OpenAi => 3 + usize::from(m.name.is_some()),
            // Estimated: role marker and separators.
            ChatFormat::Anthropic => 3,
            ChatFormat::Gemini => 3,
            ChatFormat::None => 0,
            _ => {
                let (pre, post) = self.framing(m);
                self.count(&pre) + self.count(post)
            }
        }
    }

    fn request_overhead(&self) -> usize {
        match self.format {
            // Every reply is primed with <|start|>assistant<|message|>.
            ChatFormat::OpenAi => 3,
            ChatFormat::Anthropic | ChatFormat::Gemini | ChatFormat::None => 0,
            ChatFormat::Llama3 => {
                self.count("<|begin_of_text|>")
                    + self.count("<|start_header_id|>assistant<|end_header_id|>\n\n")
            }
            ChatFormat::ChatMl => self.count("<|im_start|>assistant\n"),
            ChatFormat::Gemma => self.count("<bos>") + self.count("<start_of_turn>model\n"),
            ChatFormat::Mistral => self.count("<s>"),
        }
    }

    fn count_message(&self, m: &Message) -> usize {
        let mut n = self.count(&m.text()) + self.message_overhead(m);
        for call in &m.tool_calls {
            n += self.count(&call.name) + self.count(&call.arguments);
            // OpenAI frames each call as a function invocation; measured ~7 tokens of framing.
            if self.format == ChatFormat::OpenAi {
                n += 7;
            }
        }
        if let Some(name) = &m.name {
            n += self.count(name);
        }
        n
    }
}

/// Estimated tokens: ASCII text at `chars_per_token`, other characters (accented letters, CJK,
/// emoji) at roughly one token per 1.5 characters, as BPE vocabularies split them finer.
pub fn estimate(text: &str, chars_per_token: f64) -> usize {
    let (mut ascii, mut other) = (0usize, 0usize);
    for c in text.chars() {
        if c.is_ascii() {
            ascii += 1;
        } else {
            other += 1;
        }
    }
    let t = ascii as f64 / chars_per_token + other as f64 / 1.5;
    (t.ceil() as usize).max(usize::from(!text.is_empty()))
}

/// Builds and shares counters by model name through a catalog.
#[derive(Debug, Clone)]
pub struct Counters {
    catalog: Arc<Catalog>,
    cache: Arc<Mutex<HashMap<String, Arc<ModelCounter>>>>,
}

impl Counters {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Counters {
            catalog,
            cache: Arc::default(),
        }
    }

    /// With the embedded catalog.
    pub fn embedded() -> Result<Self> {
        Ok(Self::new(Arc::new(Catalog::embedded()?)))
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The counter for `model`. An unknown model gets the catalog's default tokenizer with a
    /// warning (never a panic); a known model whose tokenizer file is missing is an error that
    /// says how to install it.
    pub fn for_model(&self, model: &str) -> Result<Arc<ModelCounter>> {
        if let Some(c) = self.cache.lock().get(model) {
            return Ok(c.clone());
        }
        let lookup = self.catalog.lookup(model);
        if !lookup.known {
            tracing::warn!(
                model,
                "model not in the catalog; counting with the default tokenizer and prices"
            );
        }
        let mut counter = ModelCounter::for_model(&lookup.info, &self.catalog)?;
        if !lookup.known {
            counter.accuracy = Accuracy::Estimate {
                mean_abs_error: ESTIMATE_MEAN_ABS_ERROR,
            };
        }
        let counter = Arc::new(counter);
        self.cache.lock().insert(model.to_owned(), counter.clone());
        Ok(counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn o200k_counts_known_strings_exactly() {
        let c = ModelCounter::encoding("o200k_base").unwrap();
        // Reference ids from OpenAI's tiktoken for o200k_base.
        assert_eq!(c.encode("hello world").unwrap(), vec![24912, 2375]);
        assert_eq!(c.count("hello world"), 2);
        assert_eq!(c.count(""), 0);
        let cl = ModelCounter::encoding("cl100k_base").unwrap();
        assert_eq!(cl.encode("hello world").unwrap(), vec![15339, 1917]);
    }

    #[test]
    fn estimates_are_labelled_and_scale_with_length() {
        let counters = Counters::embedded().unwrap();
        let c = counters.for_model("claude-sonnet-4-5").unwrap();
        assert!(matches!(c.accuracy(), Accuracy::Estimate { .. }));
        assert_eq!(c.count("abcdefg"), 2);
        assert!(c.count(&"word ".repeat(100)) > c.count(&"word ".repeat(10)) * 9);
        assert!(estimate("日本語のテキスト", 3.5) >= 5);
    }

    #[test]
    fn openai_framing_follows_the_documented_formula() {
        let counters = Counters::embedded().unwrap();
        let c = counters.for_model("gpt-4o").unwrap();
        let msgs = [
            Message::system("You are helpful."),
            Message::user("hello world").with_name("kha"),
        ];
        let text: usize = msgs.iter().map(|m| c.count(&m.text())).sum();
        // 3 per message, +1 and the name's tokens for the named one, +3 to prime the reply.
        assert_eq!(
            c.count_messages(&msgs),
            text + 3 + 3 + 1 + c.count("kha") + 3
        );
    }
}
