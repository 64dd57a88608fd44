//! Local models on ONNX Runtime (`ort` with `load-dynamic`): the process-wide runtime
//! environment, [`OnnxEmbedder`], [`OnnxLmSummarizer`] and [`OnnxScorer`] (the hot tier's
//! scoring engine).

mod embedder;
mod graph;
mod lm;
mod scorer;

use std::path::Path;
use std::sync::Mutex;

use llmem_core::{Error, Result};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::SessionBuilder;

pub use embedder::{OnnxEmbedder, OnnxEmbedderBuilder, OnnxEmbedderConfig};
pub use lm::{OnnxLmSummarizer, OnnxLmSummarizerBuilder};
pub use scorer::OnnxScorer;

use crate::assets;

/// ONNX Runtime allows one environment per process; the first caller's library wins.
static ENV: Mutex<Option<Environment>> = Mutex::new(None);

pub(crate) fn ort_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Other {
        context: context.to_owned(),
        source: e.to_string().into(),
    }
}

/// The process's ONNX Runtime environment, loading the library from `library` (else
/// `$ORT_DYLIB_PATH`, else the llmem cache) on first use.
pub fn environment(library: Option<&Path>) -> Result<Environment> {
    let mut env = ENV
        .lock()
        .map_err(|_| Error::invalid("the ONNX Runtime environment lock was poisoned"))?;
    if let Some(e) = env.as_ref() {
        return Ok(e.clone());
    }
    let lib = assets::onnxruntime_library(library)?;
    let built = ort::init_from(&lib)
        .map_err(|e| ort_error(&format!("loading ONNX Runtime from {}", lib.display()), e))?
        .with_name("llmem")
        .build()
        .map_err(|e| ort_error("creating the ONNX Runtime environment", e))?;
    *env = Some(built.clone());
    Ok(built)
}

/// A session on `model` with `threads` intra-op threads (0: ONNX Runtime's default) and, when
/// built with `cuda`, the CUDA execution provider if it can be registered (else CPU, logged).
pub(crate) fn session(env: &Environment, model: &Path, threads: usize) -> Result<Session> {
    let what = model.display().to_string();
    let mut b = builder(env, threads, &what)?;
    b.commit_from_file(model)
        .map_err(|e| ort_error(&format!("loading the model {what}"), e))
}

/// A session builder as [`session`] describes, for the model named `what` in errors and logs.
pub(crate) fn builder(env: &Environment, threads: usize, what: &str) -> Result<SessionBuilder> {
    let ctx = |step: &str| format!("{step} for {what}");
    let mut b: SessionBuilder =
        Session::builder(env).map_err(|e| ort_error(&ctx("creating a session"), e))?;
    if threads > 0 {
        b = b
            .with_intra_threads(threads)
            .map_err(|e| ort_error(&ctx("setting intra-op threads"), e))?;
    }
    #[cfg(feature = "cuda")]
    {
        use ort::ep::ExecutionProvider;
        match ort::ep::CUDA::default().register(&mut b) {
            Ok(()) => {
                tracing::info!(model = %what, "ONNX Runtime: using the CUDA execution provider")
            }
            Err(e) => {
                tracing::warn!(model = %what, error = %e, "ONNX Runtime: CUDA unavailable, falling back to CPU")
            }
        }
    }
    Ok(b)
}
