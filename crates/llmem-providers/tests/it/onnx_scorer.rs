//! The ONNX Runtime scoring engine of the hot tier: its dot products equal exact ones on the
//! same matrix, a reload replaces the matrix, and bad input is an error, not a panic.

use llmem_core::VectorScorer;
use llmem_core::test_kit::values;
use llmem_providers::onnx::OnnxScorer;

fn exact(rows: &[f32], dim: usize, q: &[f32]) -> Vec<f64> {
    rows.chunks_exact(dim)
        .map(|r| {
            r.iter()
                .zip(q)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(*g) - w).abs() < 1e-4, "row {i}: {g} vs {w}");
    }
}

#[test]
fn onnx_scores_equal_exact_dot_products_and_reloads_replace_the_matrix() {
    let scorer = OnnxScorer::new(None)
        .unwrap_or_else(|e| panic!("ONNX Runtime could not load: {e}\nRun `cargo xtask setup`, then `eval \"$(cargo xtask env)\"`."))
        .threads(2);
    assert_eq!(scorer.name(), "onnx");
    let e = scorer.score(&[0.0; 4]).unwrap_err().to_string();
    assert!(e.contains("call load"), "{e}");

    let dim = 384;
    let rows = values(300 * dim, 1);
    scorer.load(&rows, dim).unwrap();
    for seed in 10..15 {
        let q = values(dim, seed);
        assert_close(&scorer.score(&q).unwrap(), &exact(&rows, dim, &q));
    }
    // A batch of queries in one run: each query's scores in turn.
    let batch: Vec<f32> = (20..23).flat_map(|seed| values(dim, seed)).collect();
    let many = scorer.score_many(&batch).unwrap();
    assert_eq!(many.len(), 3 * 300);
    for (q, got) in batch.chunks_exact(dim).zip(many.chunks_exact(300)) {
        assert_close(got, &exact(&rows, dim, q));
    }
    let e = scorer
        .score_many(&batch[..dim + 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a whole number of 384-dimensional"), "{e}");
    assert_eq!(scorer.provider(), Some("CPU"));

    // A new matrix of another shape replaces the first.
    let small = values(7 * 16, 2);
    scorer.load(&small, 16).unwrap();
    let q = values(16, 3);
    assert_close(&scorer.score(&q).unwrap(), &exact(&small, 16, &q));

    // Wrong sizes are errors that name them.
    let e = scorer.score(&values(384, 4)).unwrap_err().to_string();
    assert!(e.contains("384 dimensions") && e.contains("16"), "{e}");
    let e = scorer.load(&values(10, 5), 3).unwrap_err().to_string();
    assert!(e.contains("3-value rows"), "{e}");
    assert!(scorer.load(&[], 0).is_err());

    // An empty working set scores to nothing.
    scorer.load(&[], 16).unwrap();
    assert!(scorer.score(&q).unwrap().is_empty());
}
