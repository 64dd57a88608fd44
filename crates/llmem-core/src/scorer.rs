//! [`VectorScorer`]: an engine that holds a matrix of embeddings and scores queries against
//! it. The hot tier keeps its working set in one; `llmem-providers` has one on ONNX Runtime
//! that runs on the GPU (CUDA execution provider) where there is one.

use std::fmt::Debug;

use crate::Result;

/// Holds a matrix of row vectors, loaded once, and scores queries against every row.
///
/// `load` is called when the matrix changes and `score` for every query in between, so an
/// engine on an accelerator copies the matrix to the device once per change, not per query.
pub trait VectorScorer: Send + Sync + Debug {
    /// A short name for logs and metrics (`"onnx"`).
    fn name(&self) -> &str;

    /// Loads `rows`: `rows.len() / dim` rows of `dim` values each, row-major, replacing what
    /// was loaded. An empty `rows` is an empty matrix.
    fn load(&self, rows: &[f32], dim: usize) -> Result<()>;

    /// The dot product of `query` (`dim` values) with every loaded row, in row order.
    fn score(&self, query: &[f32]) -> Result<Vec<f32>>;
}

/// Checks the arguments of [`VectorScorer::load`]; returns the number of rows.
pub fn check_matrix(rows: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 {
        return Err(crate::Error::invalid(
            "a scoring matrix needs a dimension of at least 1",
        ));
    }
    if !rows.len().is_multiple_of(dim) {
        return Err(crate::Error::invalid(format!(
            "a scoring matrix of {} values is not a whole number of {dim}-value rows",
            rows.len()
        )));
    }
    Ok(rows.len() / dim)
}
