//! The `--embedder` choice of the commands that embed (`llmem demo`): the local ONNX embedder,
//! or none (lexical search only).

use std::sync::Arc;

use anyhow::{Context, Result};
use llmem::core::Embedder;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedderMode {
    Auto,
    Onnx,
    None,
}

/// The embedder `mode` asks for: the local ONNX embedder, or none (lexical search only).
pub(crate) fn embedder(mode: EmbedderMode) -> Result<Option<Arc<dyn Embedder>>> {
    Ok(match mode {
        EmbedderMode::None => None,
        EmbedderMode::Onnx => Some(llmem::local_embedder().context("--embedder onnx")?),
        EmbedderMode::Auto => match llmem::local_embedder() {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("(no local embedder: {e}; lexical search only)");
                None
            }
        },
    })
}
