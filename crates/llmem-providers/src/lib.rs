//! `llmem-providers`: model providers for llmem.
//!
//! - Remote chat and embedding providers over HTTP (feature `http`): [`openai::OpenAi`] (also any
//!   OpenAI-compatible server by base URL: llama.cpp, vLLM, Ollama's `/v1`),
//!   [`anthropic::Anthropic`] and [`gemini::Gemini`].
//! - Layers that wrap any provider and implement the same trait: [`layers::Retry`],
//!   [`layers::RateLimit`], [`layers::Timeout`] (tower/opendal style, never flags inside providers).
//! - Local models (feature `onnx`): `onnx::OnnxEmbedder` (sentence embeddings) and
//!   `onnx::OnnxLmSummarizer` (greedy decoding of an ONNX causal LM); and
//!   `llamacpp::LlamaCppServer`, which runs llama.cpp's OpenAI-compatible server as a child
//!   process (feature `http`).
//! - [`chat_registry`] and [`embedder_registry`]: every built-in provider by `kind`, built from
//!   TOML tables.
//!
//! Usage reported by providers is normalised: `input_tokens` counts the whole prompt, cached part
//! included; `cached_input_tokens` is the part served from the provider's prompt cache.

pub mod assets;
pub mod layers;
mod registry;

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub use http::ApiKey;

#[cfg(feature = "http")]
pub mod anthropic;
#[cfg(feature = "http")]
pub mod gemini;
#[cfg(feature = "http")]
pub mod llamacpp;
#[cfg(feature = "http")]
pub mod openai;

#[cfg(feature = "onnx")]
pub mod onnx;

pub use registry::{
    chat_registry, embedder_registry, register_builtin_chat_models, register_builtin_embedders,
    register_builtin_summarizers, summarizer_registry,
};

/// L2-normalises `v` in place (zero vectors stay zero).
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}
