//! Exact vector scoring: dot products written so the compiler auto-vectorises them, and a top-k heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Lanes of the accumulator; 8 f32 = one AVX register (two NEON/SSE registers).
const LANES: usize = 8;

/// The dot product of two vectors (over the shorter length), accumulated in 8 independent lanes
/// so that LLVM emits packed multiply-adds.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut acc = [0.0f32; LANES];
    for (x, y) in ca.zip(cb) {
        for ((s, xi), yi) in acc.iter_mut().zip(x).zip(y) {
            *s += xi * yi;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// The L2 norm.
pub fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// `v` scaled to unit length (unchanged when it is all zeros).
pub fn normalized(v: &[f32]) -> Vec<f32> {
    let n = norm(v);
    if n > 0.0 && n.is_finite() {
        v.iter().map(|x| x / n).collect()
    } else {
        v.to_vec()
    }
}

#[derive(Debug, Clone, Copy)]
struct Scored<K> {
    score: f32,
    key: K,
}

impl<K> PartialEq for Scored<K> {
    fn eq(&self, o: &Self) -> bool {
        self.score.total_cmp(&o.score) == Ordering::Equal
    }
}
impl<K> Eq for Scored<K> {}
impl<K> PartialOrd for Scored<K> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<K> Ord for Scored<K> {
    // Reversed: the heap's top is the worst kept score.
    fn cmp(&self, o: &Self) -> Ordering {
        o.score.total_cmp(&self.score)
    }
}

/// Keeps the `k` best (highest) scores seen.
#[derive(Debug)]
pub struct TopK<K> {
    k: usize,
    heap: BinaryHeap<Scored<K>>,
}

impl<K> TopK<K> {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    /// The score a candidate must beat to enter (−∞ until full).
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |s| s.score)
        }
    }

    #[inline]
    pub fn push(&mut self, key: K, score: f32) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Scored { score, key });
        } else if score > self.threshold() {
            self.heap.pop();
            self.heap.push(Scored { score, key });
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<(K, f32)> {
        // `into_sorted_vec` is ascending by `Ord`, which is reversed score: best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|s| (s.key, s.score))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_naive_sum_for_every_length() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn top_k_keeps_the_best_sorted() {
        let mut t = TopK::new(3);
        for (i, s) in [0.1, 0.9, 0.5, 0.7, f32::NAN, 0.2].into_iter().enumerate() {
            t.push(i, s);
        }
        assert_eq!(t.into_sorted(), vec![(1, 0.9), (3, 0.7), (2, 0.5)]);
        let n = normalized(&[3.0, 4.0]);
        assert!((norm(&n) - 1.0).abs() < 1e-6);
    }
}
