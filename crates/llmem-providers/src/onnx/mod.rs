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

/// Where ONNX Runtime runs a model (`device` in an `onnx-embedder` table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CUDA execution provider when this build has the `cuda` feature and it can be
    /// registered (the GPU build of ONNX Runtime and a GPU), else the CPU, with a warning.
    #[default]
    Auto,
    /// The CPU execution provider only.
    Cpu,
    /// The CUDA execution provider or an error that says what is missing.
    Cuda,
}

/// How a session is built: intra-op threads (0: ONNX Runtime's default), the device, and
/// where to write ONNX Runtime's profile (a file name prefix), if anywhere.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionOptions {
    pub threads: usize,
    pub device: Device,
    pub profile: Option<std::path::PathBuf>,
}

/// The execution provider registered first for a session: `"CUDA"` or `"CPU"`.
pub type Provider = &'static str;

/// A session on `model` as `options` say, with the provider it was given (see [`builder`]).
pub(crate) fn session(
    env: &Environment,
    model: &Path,
    options: &SessionOptions,
) -> Result<(Session, Provider)> {
    let what = model.display().to_string();
    let (mut b, provider) = builder(env, options, &what)?;
    let s = b
        .commit_from_file(model)
        .map_err(|e| ort_error(&format!("loading the model {what}"), e))?;
    Ok((s, provider))
}

/// A session builder as `options` say, for the model named `what` in errors and logs, with
/// the execution provider it registered (logged: one line per session).
pub(crate) fn builder(
    env: &Environment,
    options: &SessionOptions,
    what: &str,
) -> Result<(SessionBuilder, Provider)> {
    let ctx = |step: &str| format!("{step} for {what}");
    let mut b: SessionBuilder =
        Session::builder(env).map_err(|e| ort_error(&ctx("creating a session"), e))?;
    if options.threads > 0 {
        b = b
            .with_intra_threads(options.threads)
            .map_err(|e| ort_error(&ctx("setting intra-op threads"), e))?;
    }
    if let Some(p) = &options.profile {
        b = b
            .with_profiling(p)
            .map_err(|e| ort_error(&ctx("turning profiling on"), e))?;
    }
    let provider = register(&mut b, options.device, what)?;
    tracing::info!(model = %what, provider, "ONNX Runtime session");
    Ok((b, provider))
}

#[cfg(feature = "cuda")]
fn register(b: &mut SessionBuilder, device: Device, what: &str) -> Result<Provider> {
    use ort::ep::ExecutionProvider;
    if device == Device::Cpu {
        return Ok("CPU");
    }
    match ort::ep::CUDA::default().register(b) {
        Ok(()) => Ok("CUDA"),
        Err(e) if device == Device::Cuda => Err(Error::invalid(format!(
            "the CUDA execution provider could not be registered for {what}: {}. It needs the \
             GPU build of ONNX Runtime (PyPI `onnxruntime-gpu[cuda,cudnn]`, as `cargo xtask gpu` \
             installs it) in ORT_DYLIB_PATH, its CUDA and cuDNN libraries on LD_LIBRARY_PATH, \
             and a GPU; or set device = \"cpu\"",
            e.to_string().trim_end_matches('.')
        ))),
        Err(e) => {
            tracing::warn!(model = %what, error = %e, "ONNX Runtime: CUDA unavailable, falling back to CPU");
            Ok("CPU")
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn register(_: &mut SessionBuilder, device: Device, what: &str) -> Result<Provider> {
    if device == Device::Cuda {
        return Err(Error::invalid(format!(
            "{what} asks for the CUDA device but this build has no CUDA support: build \
             llmem-providers with the `cuda` feature, or set device = \"cpu\""
        )));
    }
    Ok("CPU")
}

/// What ran where in one ONNX Runtime profile (the JSON `end_profiling` writes): per
/// execution provider, the nodes run and their time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileSummary {
    /// Provider (`CUDAExecutionProvider`, `CPUExecutionProvider`, …) → (node runs, µs).
    pub by_provider: std::collections::BTreeMap<String, (u64, u64)>,
    /// Operator types that ran on each provider.
    pub ops: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl ProfileSummary {
    /// Reads a profile file.
    pub fn read(path: &Path) -> Result<ProfileSummary> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Other {
            context: format!("reading the ONNX Runtime profile {}", path.display()),
            source: Box::new(e),
        })?;
        let events: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(format!(
                "{} is not an ONNX Runtime profile (a JSON array of events): {e}",
                path.display()
            ))
        })?;
        let mut out = ProfileSummary::default();
        for e in &events {
            // Node events name their provider; session events (loading, the run) do not.
            let (Some(provider), Some(op)) = (
                e.pointer("/args/provider").and_then(|v| v.as_str()),
                e.pointer("/args/op_name").and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            if e.get("cat").and_then(|v| v.as_str()) != Some("Node") {
                continue;
            }
            let dur = e
                .get("dur")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            let slot = out.by_provider.entry(provider.to_owned()).or_default();
            slot.0 += 1;
            slot.1 += dur;
            out.ops
                .entry(provider.to_owned())
                .or_default()
                .insert(op.to_owned());
        }
        if out.by_provider.is_empty() {
            return Err(Error::invalid(format!(
                "{} holds no node events: was a model run while profiling?",
                path.display()
            )));
        }
        Ok(out)
    }

    /// The share of node time on `provider` (0 to 1).
    pub fn time_share(&self, provider: &str) -> f64 {
        let total: u64 = self.by_provider.values().map(|v| v.1).sum();
        let on = self.by_provider.get(provider).map_or(0, |v| v.1);
        if total == 0 {
            0.0
        } else {
            on as f64 / total as f64
        }
    }
}
