//! [`OnnxScorer`]: a [`VectorScorer`] on ONNX Runtime. Each load builds a one-node graph with
//! the matrix as a constant, so with the CUDA execution provider (feature `cuda`) the matrix
//! is copied to the GPU once per change and each query sends only its own vector.

use std::path::Path;
use std::sync::Mutex;

use llmem_core::scorer::check_matrix;
use llmem_core::{Error, Result, VectorScorer};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use super::{Device, Provider, SessionOptions, builder, environment, graph, ort_error};

/// What is loaded: the session holding the matrix (none for an empty one) and its shape.
#[derive(Debug)]
struct Loaded {
    session: Option<Session>,
    rows: usize,
    dim: usize,
}

/// The hot tier's working set held by ONNX Runtime and scored with one `MatMul` a query; on
/// the GPU when built with `cuda` and a GPU is present (else on the CPU, logged).
#[derive(Debug)]
pub struct OnnxScorer {
    env: Environment,
    options: SessionOptions,
    loaded: Mutex<Option<Loaded>>,
    provider: Mutex<Option<Provider>>,
}

impl OnnxScorer {
    /// A scorer on the ONNX Runtime library at `library` (else `$ORT_DYLIB_PATH`, else the
    /// llmem cache), with ONNX Runtime's default number of threads.
    pub fn new(library: Option<&Path>) -> Result<Self> {
        Ok(OnnxScorer {
            env: environment(library)?,
            options: SessionOptions::default(),
            loaded: Mutex::new(None),
            provider: Mutex::new(None),
        })
    }

    /// Runs with `n` intra-op threads (0: ONNX Runtime's default).
    #[must_use]
    pub fn threads(mut self, n: usize) -> Self {
        self.options.threads = n;
        self
    }

    /// Runs on `device` (default [`Device::Auto`]).
    #[must_use]
    pub fn device(mut self, device: Device) -> Self {
        self.options.device = device;
        self
    }

    /// Profiles the runs of each loaded matrix into files whose names start with `prefix`
    /// ([`OnnxScorer::end_profiling`] closes the current one).
    #[must_use]
    pub fn profiling(mut self, prefix: impl Into<std::path::PathBuf>) -> Self {
        self.options.profile = Some(prefix.into());
        self
    }

    /// The execution provider of the last load: `"CUDA"` or `"CPU"` (none before a load).
    pub fn provider(&self) -> Option<Provider> {
        self.provider.lock().ok().and_then(|p| *p)
    }

    /// Ends the profile of the loaded matrix's session and returns its file.
    pub fn end_profiling(&self) -> Result<std::path::PathBuf> {
        let mut guard = self.lock()?;
        let session = guard
            .as_mut()
            .and_then(|l| l.session.as_mut())
            .ok_or_else(|| Error::invalid("the ONNX scorer has no matrix loaded to profile"))?;
        session
            .end_profiling()
            .map(std::path::PathBuf::from)
            .map_err(|e| ort_error("ending the profile", e))
    }

    /// Scores a batch of queries (`queries.len()` a multiple of the loaded dimension) in one
    /// run: the scores of each query against every row, query after query.
    pub fn score_many(&self, queries: &[f32]) -> Result<Vec<f32>> {
        let mut guard = self.lock()?;
        let loaded = guard.as_mut().ok_or_else(|| {
            Error::invalid("the ONNX scorer has no matrix: call load before score")
        })?;
        if loaded.dim == 0 || !queries.len().is_multiple_of(loaded.dim) {
            return Err(Error::invalid(format!(
                "{} query values are not a whole number of {}-dimensional vectors",
                queries.len(),
                loaded.dim
            )));
        }
        let batch = queries.len() / loaded.dim;
        run_scores(loaded, batch, queries)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Loaded>>> {
        self.loaded
            .lock()
            .map_err(|_| Error::invalid("the ONNX scorer's lock was poisoned"))
    }
}

impl VectorScorer for OnnxScorer {
    fn name(&self) -> &str {
        "onnx"
    }

    fn load(&self, rows: &[f32], dim: usize) -> Result<()> {
        let n = check_matrix(rows, dim)?;
        let session = if n == 0 {
            None
        } else {
            let what = format!("the hot tier's {n}×{dim} scoring matrix");
            let model = graph::scoring_model(rows, n, dim);
            let (mut b, provider) = builder(&self.env, &self.options, &what)?;
            if let Ok(mut p) = self.provider.lock() {
                *p = Some(provider);
            }
            Some(
                b.commit_from_memory(&model)
                    .map_err(|e| ort_error(&format!("loading {what}"), e))?,
            )
        };
        *self.lock()? = Some(Loaded {
            session,
            rows: n,
            dim,
        });
        Ok(())
    }

    fn score(&self, query: &[f32]) -> Result<Vec<f32>> {
        let mut guard = self.lock()?;
        let loaded = guard.as_mut().ok_or_else(|| {
            Error::invalid("the ONNX scorer has no matrix: call load before score")
        })?;
        if query.len() != loaded.dim {
            return Err(Error::invalid(format!(
                "the query vector has {} dimensions but the loaded matrix has {}",
                query.len(),
                loaded.dim
            )));
        }
        run_scores(loaded, 1, query)
    }
}

/// One run of the scoring graph over `batch` queries.
fn run_scores(loaded: &mut Loaded, batch: usize, queries: &[f32]) -> Result<Vec<f32>> {
    let Some(session) = loaded.session.as_mut() else {
        return Ok(Vec::new());
    };
    let input = Tensor::from_array(([batch, loaded.dim], queries.to_vec()))
        .map_err(|e| ort_error("building the query tensor", e))?;
    let outputs = session
        .run(ort::inputs!["query" => input])
        .map_err(|e| ort_error("scoring the hot tier's matrix", e))?;
    let (shape, data) = outputs["scores"]
        .try_extract_tensor::<f32>()
        .map_err(|e| ort_error("reading the scores", e))?;
    if data.len() != loaded.rows * batch {
        return Err(Error::invalid(format!(
            "the scoring graph returned {} scores ({shape:?}) for {batch} queries of {} rows",
            data.len(),
            loaded.rows
        )));
    }
    Ok(data.to_vec())
}
