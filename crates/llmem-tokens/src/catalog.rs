//! The model catalog: context sizes, output limits, prices and tokenizers, shipped as a TOML data
//! file (`data/catalog.toml`) and overridable by the user's own file in the same format.

use std::collections::BTreeMap;
use std::path::Path;

use llmem_core::{Error, Result};
use serde::{Deserialize, Serialize};

const EMBEDDED: &str = include_str!("../data/catalog.toml");

/// Who serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    /// Open-weight models served by anyone (llama.cpp, vLLM, Ollama, hosted APIs).
    Open,
    Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProviderRepr {
    OpenAi,
    Anthropic,
    Gemini,
    Open,
    Unknown,
}

/// How a provider frames chat messages; decides the per-message and per-request token overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatFormat {
    /// OpenAI chat: 3 tokens per message, 1 per name, 3 to prime the reply.
    OpenAi,
    /// Anthropic messages (estimated framing).
    Anthropic,
    /// Gemini contents (estimated framing).
    Gemini,
    /// Llama 3: `<|start_header_id|>role<|end_header_id|>\n\n … <|eot_id|>`.
    Llama3,
    /// ChatML (Qwen, SmolLM): `<|im_start|>role\n … <|im_end|>\n`.
    ChatMl,
    /// Gemma: `<start_of_turn>role\n … <end_of_turn>\n`, system folded into the first user turn.
    Gemma,
    /// Mistral: `[INST] … [/INST] … </s>`.
    Mistral,
    /// Plain text, no framing (embedding models).
    None,
}

/// One model's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub id: String,
    #[serde(deserialize_with = "de_provider")]
    pub provider: Provider,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub context_window: u64,
    pub max_output: u64,
    /// USD per 1M input tokens.
    pub input: f64,
    /// USD per 1M output tokens.
    pub output: f64,
    /// USD per 1M cached input tokens (defaults to `input`).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// `tiktoken:<encoding>`, `hf:<name>` or `estimate:<family>`.
    pub tokenizer: String,
    pub chat_format: ChatFormat,
}

fn de_provider<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Provider, D::Error> {
    Ok(match ProviderRepr::deserialize(d)? {
        ProviderRepr::OpenAi => Provider::OpenAi,
        ProviderRepr::Anthropic => Provider::Anthropic,
        ProviderRepr::Gemini => Provider::Gemini,
        ProviderRepr::Open => Provider::Open,
        ProviderRepr::Unknown => Provider::Unknown,
    })
}

impl ModelInfo {
    /// USD for these token counts at this model's prices.
    pub fn cost(&self, input: u64, output: u64, cached_input: u64) -> f64 {
        let fresh = input.saturating_sub(cached_input);
        (fresh as f64 * self.input
            + cached_input as f64 * self.cached_input.unwrap_or(self.input)
            + output as f64 * self.output)
            / 1_000_000.0
    }
}

/// The defaults for unknown models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultInfo {
    pub context_window: u64,
    pub max_output: u64,
    pub input: f64,
    pub output: f64,
    pub tokenizer: String,
    pub chat_format: ChatFormat,
    #[serde(deserialize_with = "de_provider")]
    pub provider: Provider,
}

/// A calibrated estimate for a family without a public tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateInfo {
    pub chars_per_token: f64,
    #[serde(default)]
    pub reference: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    default: Option<DefaultInfo>,
    #[serde(default)]
    estimate: BTreeMap<String, EstimateInfo>,
    #[serde(default)]
    model: Vec<ModelInfo>,
}

/// The result of looking a model up.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    pub info: ModelInfo,
    /// False when nothing matched and the defaults were used.
    pub known: bool,
}

/// Models by id and alias.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<ModelInfo>,
    /// lowercase id or alias -> index into `models`
    names: BTreeMap<String, usize>,
    default: DefaultInfo,
    estimates: BTreeMap<String, EstimateInfo>,
}

impl Catalog {
    /// The catalog shipped with llmem.
    pub fn embedded() -> Result<Self> {
        Self::from_toml_str(EMBEDDED, "the embedded catalog")
    }

    /// Parses a catalog file's text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| Error::serde(origin, e))?;
        let default = file
            .default
            .ok_or_else(|| Error::config("default", format!("{origin} needs a [default] table")))?;
        let mut cat = Catalog {
            models: Vec::new(),
            names: BTreeMap::new(),
            default,
            estimates: file.estimate,
        };
        for m in file.model {
            cat.insert(m)?;
        }
        Ok(cat)
    }

    /// This catalog with the entries of the user's file added or replacing ours (by id).
    pub fn with_overrides(mut self, path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        self.merge_toml_str(&text, &path.display().to_string())?;
        Ok(self)
    }

    /// Merges a catalog text into this one: models by id, estimates by family, the default.
    pub fn merge_toml_str(&mut self, text: &str, origin: &str) -> Result<()> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| Error::serde(origin, e))?;
        if let Some(d) = file.default {
            self.default = d;
        }
        self.estimates.extend(file.estimate);
        for m in file.model {
            self.insert(m)?;
        }
        Ok(())
    }

    fn insert(&mut self, m: ModelInfo) -> Result<()> {
        if !(m.input >= 0.0 && m.output >= 0.0 && m.cached_input.unwrap_or(0.0) >= 0.0) {
            return Err(Error::config(
                format!("model `{}`", m.id),
                "prices must be non-negative numbers",
            ));
        }
        if m.context_window == 0 {
            return Err(Error::config(
                format!("model `{}`", m.id),
                "context_window must be positive",
            ));
        }
        parse_tokenizer(&m.tokenizer)
            .map_err(|e| Error::config(format!("model `{}`.tokenizer", m.id), e.to_string()))?;
        let idx = match self.models.iter().position(|x| x.id == m.id) {
            Some(i) => {
                self.names.retain(|_, v| *v != i);
                self.models[i] = m;
                i
            }
            None => {
                self.models.push(m);
                self.models.len() - 1
            }
        };
        let m = &self.models[idx];
        for name in std::iter::once(&m.id).chain(&m.aliases) {
            self.names.insert(name.to_lowercase(), idx);
        }
        Ok(())
    }

    /// Every model.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// The estimate calibration of `family`.
    pub fn estimate(&self, family: &str) -> Option<&EstimateInfo> {
        self.estimates.get(family)
    }

    /// Finds a model by id or alias (case-insensitive); then by the longest known name that the
    /// given name starts with, so dated snapshots (`gpt-4o-2024-12-01`) and provider prefixes
    /// (`openai/gpt-4o`) resolve; otherwise the defaults, with `known == false`.
    pub fn lookup(&self, name: &str) -> Lookup {
        let lower = name.trim().to_lowercase();
        let bare = lower.rsplit_once('/').map_or(lower.as_str(), |(_, b)| b);
        for candidate in [lower.as_str(), bare] {
            if let Some(&i) = self.names.get(candidate) {
                return Lookup {
                    info: self.models[i].clone(),
                    known: true,
                };
            }
        }
        // Longest prefix that ends at a separator.
        let mut best: Option<(usize, usize)> = None;
        for (n, &i) in &self.names {
            for candidate in [lower.as_str(), bare] {
                if candidate.len() > n.len()
                    && candidate.starts_with(n.as_str())
                    && matches!(candidate.as_bytes()[n.len()], b'-' | b':' | b'@' | b'.')
                    && best.is_none_or(|(len, _)| n.len() > len)
                {
                    best = Some((n.len(), i));
                }
            }
        }
        if let Some((_, i)) = best {
            return Lookup {
                info: self.models[i].clone(),
                known: true,
            };
        }
        let d = &self.default;
        Lookup {
            info: ModelInfo {
                id: name.to_owned(),
                provider: d.provider,
                aliases: Vec::new(),
                context_window: d.context_window,
                max_output: d.max_output,
                input: d.input,
                output: d.output,
                cached_input: None,
                tokenizer: d.tokenizer.clone(),
                chat_format: d.chat_format,
            },
            known: false,
        }
    }

    /// Like [`Catalog::lookup`] but an unknown model is an error listing close names.
    pub fn require(&self, name: &str) -> Result<ModelInfo> {
        let l = self.lookup(name);
        if l.known {
            return Ok(l.info);
        }
        let lower = name.to_lowercase();
        let head: String = lower.chars().take(4).collect();
        let close: Vec<&str> = self
            .models
            .iter()
            .map(|m| m.id.as_str())
            .filter(|id| id.starts_with(head.as_str()))
            .take(8)
            .collect();
        let hint = if close.is_empty() {
            format!(
                "known models include {}",
                self.models
                    .iter()
                    .take(6)
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("did you mean one of {}", close.join(", "))
        };
        Err(Error::NotFound {
            what: format!("model `{name}` in the catalog; {hint}; or add it to your catalog file"),
        })
    }
}

/// A parsed tokenizer spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenizerSpec {
    Tiktoken(String),
    Hf(String),
    Estimate(String),
}

/// Parses `tiktoken:<enc>`, `hf:<name>`, `estimate:<family>`.
pub fn parse_tokenizer(s: &str) -> Result<TokenizerSpec> {
    let (kind, name) = s.split_once(':').ok_or_else(|| {
        Error::invalid(format!(
            "tokenizer `{s}` must look like tiktoken:o200k_base, hf:llama3 or estimate:anthropic"
        ))
    })?;
    if name.is_empty() {
        return Err(Error::invalid(format!(
            "tokenizer `{s}` names nothing after `:`"
        )));
    }
    Ok(match kind {
        "tiktoken" => match name {
            "o200k_base" | "cl100k_base" | "p50k_base" | "r50k_base" | "o200k_harmony" => {
                TokenizerSpec::Tiktoken(name.to_owned())
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown tiktoken encoding `{other}`; use o200k_base or cl100k_base"
                )));
            }
        },
        "hf" => TokenizerSpec::Hf(name.to_owned()),
        "estimate" => TokenizerSpec::Estimate(name.to_owned()),
        other => {
            return Err(Error::invalid(format!(
                "unknown tokenizer kind `{other}` in `{s}`; use tiktoken, hf or estimate"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_loads_and_resolves_names() {
        let c = Catalog::embedded().unwrap();
        assert!(c.models().len() >= 30);
        let cases = [
            ("gpt-4o", "gpt-4o"),
            ("GPT-4o-2024-08-06", "gpt-4o"),
            ("gpt-4o-2030-01-01", "gpt-4o"),
            ("gpt-4o-mini", "gpt-4o-mini"),
            ("openai/gpt-4o-mini", "gpt-4o-mini"),
            ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
            ("llama3.1:8b", "llama-3.1-8b"),
            ("gemini-2.5-flash", "gemini-2.5-flash"),
        ];
        for (name, id) in cases {
            let l = c.lookup(name);
            assert!(l.known, "{name}");
            assert_eq!(l.info.id, id, "{name}");
        }
        let unknown = c.lookup("my-private-model");
        assert!(!unknown.known);
        assert_eq!(unknown.info.context_window, 8192);
        assert!(
            c.require("gpt-4x")
                .unwrap_err()
                .to_string()
                .contains("gpt-4o")
        );
    }

    #[test]
    fn costs_use_cached_prices() {
        let c = Catalog::embedded().unwrap();
        let m = c.lookup("gpt-4o").info;
        // 1M input of which 0.5M cached, 1M output: 0.5*2.5 + 0.5*1.25 + 10
        let cost = m.cost(1_000_000, 1_000_000, 500_000);
        assert!((cost - 11.875).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn overrides_replace_and_add_and_reject_bad_values() {
        let mut c = Catalog::embedded().unwrap();
        c.merge_toml_str(
            r#"
            [[model]]
            id = "gpt-4o"
            provider = "openai"
            context_window = 1000
            max_output = 10
            input = 1.0
            output = 2.0
            tokenizer = "tiktoken:o200k_base"
            chat_format = "openai"
            [[model]]
            id = "house-model"
            provider = "open"
            aliases = ["house"]
            context_window = 4096
            max_output = 512
            input = 0.0
            output = 0.0
            tokenizer = "hf:llama3"
            chat_format = "llama3"
            "#,
            "test",
        )
        .unwrap();
        assert_eq!(c.lookup("gpt-4o").info.context_window, 1000);
        assert_eq!(
            c.lookup("gpt-4o-2024-08-06").info.context_window,
            1000,
            "dated names still resolve, by prefix"
        );
        assert_eq!(c.lookup("house").info.id, "house-model");
        let err = c
            .merge_toml_str("[[model]]\nid='x'\nprovider='open'\ncontext_window=1\nmax_output=1\ninput=-1.0\noutput=0.0\ntokenizer='hf:x'\nchat_format='none'", "bad")
            .unwrap_err();
        assert!(err.to_string().contains("non-negative"), "{err}");
        let err = c
            .merge_toml_str("[[model]]\nid='x'\ncolour='red'", "bad")
            .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
