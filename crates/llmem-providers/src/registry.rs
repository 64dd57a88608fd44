//! The built-in providers by `kind`, one `#[cfg(feature)]` line each, plus the layer keys every
//! table may carry:
//!
//! ```toml
//! [providers.fast]
//! kind = "openai"
//! model = "gpt-4o-mini"
//! timeout_secs = 60          # Timeout layer
//! requests_per_second = 5    # RateLimit layer
//! max_attempts = 4           # Retry layer (exponential backoff with jitter)
//! ```

use std::sync::Arc;
use std::time::Duration;

use llmem_core::registry::opt_u64;
use llmem_core::{ChatModel, Embedder, Error, Registry, Result, Summarizer};

use crate::layers::{RateLimit, Retry, RetryPolicy, Timeout};

/// Keys read by the registry for the layers, removed before the provider sees the table.
const LAYER_KEYS: [&str; 3] = ["timeout_secs", "requests_per_second", "max_attempts"];

struct Layers {
    timeout: Option<Duration>,
    rate: Option<f64>,
    attempts: Option<u32>,
}

fn split_layers(table: &toml::Table) -> Result<(Layers, toml::Table)> {
    let timeout = opt_u64(table, "timeout_secs")?.map(Duration::from_secs);
    let rate = match table.get("requests_per_second") {
        None => None,
        Some(toml::Value::Integer(i)) if *i > 0 => Some(*i as f64),
        Some(toml::Value::Float(f)) if *f > 0.0 => Some(*f),
        Some(other) => {
            return Err(Error::config(
                "requests_per_second",
                format!("must be a positive number, got {other}"),
            ));
        }
    };
    let attempts =
        opt_u64(table, "max_attempts")?.map(|n| u32::try_from(n.max(1)).unwrap_or(u32::MAX));
    let mut rest = table.clone();
    for k in LAYER_KEYS {
        rest.remove(k);
    }
    Ok((
        Layers {
            timeout,
            rate,
            attempts,
        },
        rest,
    ))
}

macro_rules! wrap {
    ($inner:expr, $layers:expr, $dyn:ty) => {{
        let mut m: Arc<$dyn> = $inner;
        if let Some(r) = $layers.rate {
            m = Arc::new(RateLimit::new(m, r));
        }
        if let Some(t) = $layers.timeout {
            m = Arc::new(Timeout::new(m, t));
        }
        if let Some(n) = $layers.attempts {
            m = Arc::new(Retry::new(m, RetryPolicy::default().with_max_attempts(n)));
        }
        m
    }};
}

#[cfg(feature = "http")]
fn chat_factory(
    build: impl Fn(&toml::Table) -> Result<Arc<dyn ChatModel>> + Send + Sync + 'static,
) -> impl Fn(&toml::Table) -> Result<Arc<dyn ChatModel>> + Send + Sync + 'static {
    move |table| {
        let (layers, rest) = split_layers(table)?;
        Ok(wrap!(build(&rest)?, layers, dyn ChatModel))
    }
}

fn embed_factory(
    build: impl Fn(&toml::Table) -> Result<Arc<dyn Embedder>> + Send + Sync + 'static,
) -> impl Fn(&toml::Table) -> Result<Arc<dyn Embedder>> + Send + Sync + 'static {
    move |table| {
        let (layers, rest) = split_layers(table)?;
        Ok(wrap!(build(&rest)?, layers, dyn Embedder))
    }
}

/// Registers every built-in chat provider; kinds whose feature is off are registered disabled.
pub fn register_builtin_chat_models(r: &mut Registry<dyn ChatModel>) {
    #[cfg(feature = "http")]
    {
        use crate::{anthropic::AnthropicBuilder, gemini::GeminiBuilder, openai::OpenAiBuilder};
        r.register(
            "openai",
            chat_factory(|t| Ok(Arc::new(OpenAiBuilder::from_table(t, false)?.build()?))),
        );
        r.register(
            "openai-compatible",
            chat_factory(|t| Ok(Arc::new(OpenAiBuilder::from_table(t, true)?.build()?))),
        );
        r.register(
            "anthropic",
            chat_factory(|t| Ok(Arc::new(AnthropicBuilder::from_table(t)?.build()?))),
        );
        r.register(
            "gemini",
            chat_factory(|t| Ok(Arc::new(GeminiBuilder::from_table(t)?.build()?))),
        );
    }
    #[cfg(not(feature = "http"))]
    for kind in ["openai", "openai-compatible", "anthropic", "gemini"] {
        r.register_disabled(kind, "http");
    }
}

/// Registers every built-in embedder; kinds whose feature is off are registered disabled.
pub fn register_builtin_embedders(r: &mut Registry<dyn Embedder>) {
    #[cfg(feature = "http")]
    {
        use crate::{gemini::GeminiBuilder, openai::OpenAiBuilder};
        r.register(
            "openai",
            embed_factory(|t| Ok(Arc::new(OpenAiBuilder::from_table(t, false)?.build()?))),
        );
        r.register(
            "openai-compatible",
            embed_factory(|t| Ok(Arc::new(OpenAiBuilder::from_table(t, true)?.build()?))),
        );
        r.register(
            "gemini",
            embed_factory(|t| Ok(Arc::new(GeminiBuilder::from_table(t)?.build()?))),
        );
    }
    #[cfg(not(feature = "http"))]
    for kind in ["openai", "openai-compatible", "gemini"] {
        r.register_disabled(kind, "http");
    }
    #[cfg(feature = "onnx")]
    r.register(
        "onnx-embedder",
        embed_factory(|t| {
            Ok(Arc::new(
                crate::onnx::OnnxEmbedderBuilder::from_table(t)?.build()?,
            ))
        }),
    );
    #[cfg(not(feature = "onnx"))]
    r.register_disabled("onnx-embedder", "onnx");
}

/// Registers every built-in summarizer (a model that writes summaries without a chat server);
/// kinds whose feature is off are registered disabled.
pub fn register_builtin_summarizers(r: &mut Registry<dyn Summarizer>) {
    #[cfg(feature = "onnx")]
    r.register("onnx-lm", |t| {
        Ok(
            Arc::new(crate::onnx::OnnxLmSummarizerBuilder::from_table(t)?.build()?)
                as Arc<dyn Summarizer>,
        )
    });
    #[cfg(not(feature = "onnx"))]
    r.register_disabled("onnx-lm", "onnx");
}

/// A registry of every built-in chat provider.
pub fn chat_registry() -> Registry<dyn ChatModel> {
    let mut r = Registry::new("provider");
    register_builtin_chat_models(&mut r);
    r
}

/// A registry of every built-in embedder.
pub fn embedder_registry() -> Registry<dyn Embedder> {
    let mut r = Registry::new("embedder");
    register_builtin_embedders(&mut r);
    r
}

/// A registry of every built-in summarizer.
pub fn summarizer_registry() -> Registry<dyn Summarizer> {
    let mut r = Registry::new("summarizer");
    register_builtin_summarizers(&mut r);
    r
}
