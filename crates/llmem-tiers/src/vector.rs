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

/// Lanes of the int8 accumulator: 16 products summed in 32 bits, which LLVM turns into packed
/// multiply-adds of 16-bit halves.
const LANES_I8: usize = 16;

/// The dot product of two int8 vectors, exact in 32 bits (a 127 × 127 product summed over up to
/// 133,000 dimensions fits). Portable; [`dot_i8_kernel`] picks a faster build of the same code
/// for the CPU it runs on.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    dot_i8_body(a, b)
}

#[inline(always)]
fn dot_i8_body(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(LANES_I8), b.chunks_exact(LANES_I8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut acc = [0i32; LANES_I8];
    for (x, y) in ca.zip(cb) {
        for ((s, &xi), &yi) in acc.iter_mut().zip(x).zip(y) {
            *s += i32::from(xi) * i32::from(yi);
        }
    }
    let mut sum: i32 = acc.iter().sum();
    for (&x, &y) in ra.iter().zip(rb) {
        sum += i32::from(x) * i32::from(y);
    }
    sum
}

/// [`dot_i8`] compiled for the widest integer SIMD this CPU has, chosen once per call of this
/// function (call it once per scan): AVX-512BW, else AVX2, on x86-64 where present (the
/// baseline build only assumes SSE2), else the portable build.
pub fn dot_i8_kernel() -> fn(&[i8], &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512bw") {
            return dot_i8_avx512_checked;
        }
        if std::is_x86_feature_detected!("avx2") {
            return dot_i8_avx2_checked;
        }
    }
    dot_i8
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn dot_i8_avx512(a: &[i8], b: &[i8]) -> i32 {
    dot_i8_body(a, b)
}

#[cfg(target_arch = "x86_64")]
fn dot_i8_avx512_checked(a: &[i8], b: &[i8]) -> i32 {
    // SAFETY: `dot_i8_kernel` hands this function out only after
    // `is_x86_feature_detected!("avx512bw")` (which implies AVX-512F) confirmed that the CPU
    // runs those instructions, the one requirement of `dot_i8_avx512`.
    #[allow(unsafe_code)]
    unsafe {
        dot_i8_avx512(a, b)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    dot_i8_body(a, b)
}

#[cfg(target_arch = "x86_64")]
fn dot_i8_avx2_checked(a: &[i8], b: &[i8]) -> i32 {
    // SAFETY: `dot_i8_kernel` hands this function out only after
    // `is_x86_feature_detected!("avx2")` confirmed that the CPU runs AVX2 instructions, the one
    // requirement of `dot_i8_avx2`; it reads its slices through safe indexing only.
    #[allow(unsafe_code)]
    unsafe {
        dot_i8_avx2(a, b)
    }
}

/// Symmetric int8 quantisation: writes `round(x / scale)` (within ±127) into `out` and returns
/// `scale` (the largest magnitude / 127; 0 for an all-zero or non-finite vector, whose codes are
/// then all 0).
pub fn quantize(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if !(max > 0.0 && max.is_finite()) {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    let inv = 1.0 / scale;
    for (o, x) in out.iter_mut().zip(v) {
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    scale
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
    fn int8_dot_matches_the_naive_sum_and_quantisation_round_trips() {
        for n in [0, 1, 15, 16, 17, 384, 1000] {
            let a: Vec<i8> = (0..n).map(|i| ((i * 37) % 255) as i8).collect();
            let b: Vec<i8> = (0..n).map(|i| ((i * 91 + 7) % 255) as i8).collect();
            let naive: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
            assert_eq!(dot_i8(&a, &b), naive, "n = {n}");
            assert_eq!(dot_i8_kernel()(&a, &b), naive, "n = {n}, the CPU's kernel");
        }
        let v: Vec<f32> = (0..384).map(|i| ((i as f32) * 0.37).sin()).collect();
        let mut q = vec![0i8; v.len()];
        let scale = quantize(&v, &mut q);
        for (x, c) in v.iter().zip(&q) {
            assert!((x - f32::from(*c) * scale).abs() <= scale / 2.0 + 1e-6);
        }
        assert_eq!(quantize(&[0.0, 0.0], &mut [1, 1]), 0.0);
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
