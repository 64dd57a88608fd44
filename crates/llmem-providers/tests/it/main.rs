//! Integration tests of llmem-providers: each provider against a loopback server speaking its
//! wire format, the layers, the registry, and the local models.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "http")]
mod common;

#[cfg(feature = "http")]
mod anthropic;
#[cfg(feature = "http")]
mod gemini;
#[cfg(feature = "http")]
mod layers;
#[cfg(feature = "http")]
mod llamacpp;
#[cfg(feature = "http")]
mod openai;
#[cfg(feature = "http")]
mod registry;

#[cfg(feature = "onnx")]
mod onnx_embedder;
#[cfg(feature = "onnx")]
mod onnx_lm;
#[cfg(feature = "onnx")]
mod onnx_scorer;
