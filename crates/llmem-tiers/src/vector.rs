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

/// Symmetric int4 quantisation into packed nibbles, for the warm tier's first pass: value `i`
/// becomes `round(x / scale)` (within ±7) stored plus 8 (offset binary, 1..=15) in the low
/// nibble of byte `i / 2` when `i` is even, the high one when odd; an odd length pads a high
/// nibble of 8 (the value 0). Returns `scale` (the largest magnitude / 7; 0 for an all-zero or
/// non-finite vector, whose codes are then all 8). `out` holds `v.len().div_ceil(2)` bytes.
pub fn quantize4(v: &[f32], out: &mut [u8]) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if !(max > 0.0 && max.is_finite()) {
        out.fill(0x88);
        return 0.0;
    }
    let scale = max / 7.0;
    let inv = 1.0 / scale;
    let code = |x: f32| ((x * inv).round().clamp(-7.0, 7.0) as i8 + 8) as u8;
    for (o, pair) in out.iter_mut().zip(v.chunks(2)) {
        let lo = code(pair[0]);
        let hi = pair.get(1).map_or(8, |&x| code(x));
        *o = lo | (hi << 4);
    }
    scale
}

/// Whether this CPU scans int4 rows faster than int8 ones: with AVX-512 VNNI (`vpdpbusd`) it
/// does (1.3 ms against 2.9 ms for a filtered top-10 over 100k × 384 here); without, the
/// nibbles cost more to unpack than the halved bytes save (docs/benchmarks.md).
pub fn int4_preferred() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// An int8 query prepared for [`dots_i4`]: its even and odd values apart (the low and high
/// nibbles of a packed row), each padded with 0 to the packed length, and the offset to take
/// back (8 × the sum of the values).
#[derive(Debug, Clone)]
pub struct Query4 {
    even: Vec<i8>,
    odd: Vec<i8>,
    offset: i32,
}

impl Query4 {
    pub fn new(q: &[i8]) -> Self {
        let n = q.len().div_ceil(2);
        let (mut even, mut odd) = (vec![0i8; n], vec![0i8; n]);
        for (i, &x) in q.iter().enumerate() {
            if i % 2 == 0 {
                even[i / 2] = x;
            } else {
                odd[i / 2] = x;
            }
        }
        let offset = 8 * q.iter().map(|&x| i32::from(x)).sum::<i32>();
        Query4 { even, odd, offset }
    }

    /// Bytes of one packed row.
    pub fn packed_len(&self) -> usize {
        self.even.len()
    }
}

/// The dot product of the query with every packed int4 row of `rows` (in the query's codes ×
/// the rows' codes, exact in 32 bits), appended to `out`: one call for a whole scan. On x86-64
/// with AVX-512 VNNI, `vpdpbusd` multiplies 64 nibbles by 64 query bytes an instruction; else a
/// portable loop, compiled for AVX-512BW or AVX2 where present.
pub fn dots_i4(rows: &[u8], q: &Query4, out: &mut Vec<i32>) {
    if q.packed_len() == 0 {
        return;
    }
    out.reserve(rows.len() / q.packed_len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: AVX-512F, BW and VNNI were just detected on this CPU, the requirement of
            // `dots_i4_vnni`; its loads stay inside the slices (see there).
            #[allow(unsafe_code)]
            unsafe {
                dots_i4_vnni(rows, q, out);
            }
            return;
        }
        if std::is_x86_feature_detected!("avx512bw") {
            // SAFETY: AVX-512BW (and so AVX-512F) was just detected on this CPU, the one
            // requirement of `dots_i4_avx512`, which reads its slices through safe indexing.
            #[allow(unsafe_code)]
            unsafe {
                dots_i4_avx512(rows, q, out);
            }
            return;
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected on this CPU, the one requirement of
            // `dots_i4_avx2`, which reads its slices through safe indexing.
            #[allow(unsafe_code)]
            unsafe {
                dots_i4_avx2(rows, q, out);
            }
            return;
        }
    }
    dots_i4_body(rows, q, out);
}

#[inline(always)]
fn dots_i4_body(rows: &[u8], q: &Query4, out: &mut Vec<i32>) {
    // Each row's nibbles back to int8 codes (low and high apart, byte operations that
    // vectorise), then the int8 dot product, whose multiply-adds vectorise well too. Plain
    // loops, not closures: a closure would not inherit the caller's target features.
    let n = q.packed_len();
    let (mut lo, mut hi) = (vec![0i8; n], vec![0i8; n]);
    for row in rows.chunks_exact(n) {
        for ((l, h), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
            *l = (b & 15) as i8 - 8;
            *h = (b >> 4) as i8 - 8;
        }
        out.push(dot_i8_body(&q.even, &lo) + dot_i8_body(&q.odd, &hi));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn dots_i4_avx512(rows: &[u8], q: &Query4, out: &mut Vec<i32>) {
    dots_i4_body(rows, q, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_i4_avx2(rows: &[u8], q: &Query4, out: &mut Vec<i32>) {
    dots_i4_body(rows, q, out);
}

/// [`dots_i4`] with `vpdpbusd`: the nibbles (0..=15, unsigned) times the query's bytes
/// (signed), four products summed into each 32-bit lane without saturation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(unsafe_code)]
fn dots_i4_vnni(rows: &[u8], q: &Query4, out: &mut Vec<i32>) {
    use std::arch::x86_64::{
        __m512i, _mm512_and_si512, _mm512_dpbusd_epi32, _mm512_loadu_si512,
        _mm512_maskz_loadu_epi8, _mm512_reduce_add_epi32, _mm512_set1_epi8, _mm512_setzero_si512,
        _mm512_srli_epi16,
    };
    let n = q.packed_len();
    let (full, tail) = (n / 64, n % 64);
    let mask: u64 = if tail == 0 { 0 } else { (1u64 << tail) - 1 };
    let low = _mm512_set1_epi8(0x0F);
    for row in rows.chunks_exact(n) {
        let mut acc = _mm512_setzero_si512();
        for c in 0..full {
            // SAFETY: `c * 64 + 64 <= full * 64 <= n`, the length of `row`, `q.even` and
            // `q.odd`: each unaligned 64-byte load stays inside its slice.
            let (b, e, o) = unsafe {
                (
                    _mm512_loadu_si512(row.as_ptr().add(c * 64).cast::<__m512i>()),
                    _mm512_loadu_si512(q.even.as_ptr().add(c * 64).cast::<__m512i>()),
                    _mm512_loadu_si512(q.odd.as_ptr().add(c * 64).cast::<__m512i>()),
                )
            };
            let lo = _mm512_and_si512(b, low);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(b), low);
            acc = _mm512_dpbusd_epi32(acc, lo, e);
            acc = _mm512_dpbusd_epi32(acc, hi, o);
        }
        if tail > 0 {
            // SAFETY: the mask keeps the `tail` bytes from `full * 64` to `n`, inside all three
            // slices; masked-off bytes are not read (AVX-512 masked loads do not fault there)
            // and load as 0, which adds nothing.
            let (b, e, o) = unsafe {
                (
                    _mm512_maskz_loadu_epi8(mask, row.as_ptr().add(full * 64).cast::<i8>()),
                    _mm512_maskz_loadu_epi8(mask, q.even.as_ptr().add(full * 64)),
                    _mm512_maskz_loadu_epi8(mask, q.odd.as_ptr().add(full * 64)),
                )
            };
            let lo = _mm512_and_si512(b, low);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(b), low);
            acc = _mm512_dpbusd_epi32(acc, lo, e);
            acc = _mm512_dpbusd_epi32(acc, hi, o);
        }
        out.push(_mm512_reduce_add_epi32(acc) - q.offset);
    }
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
    fn int4_scans_equal_the_naive_sum_of_the_codes() {
        // Lengths around the 64-byte blocks of the VNNI build and the 16 lanes of the others,
        // odd ones (a padded nibble) included, and the extreme codes.
        for dim in [1usize, 2, 31, 32, 33, 127, 128, 129, 384, 385] {
            let vecs: Vec<Vec<f32>> = (0..9)
                .map(|r| {
                    (0..dim)
                        .map(|i| match (i + r) % 6 {
                            0 => 1.0,
                            1 => -1.0,
                            _ => ((i * 37 + r * 11) % 101) as f32 / 50.0 - 1.0,
                        })
                        .collect()
                })
                .collect();
            let packed = dim.div_ceil(2);
            let mut rows = vec![0u8; packed * vecs.len()];
            let mut codes = Vec::new();
            for (v, out) in vecs.iter().zip(rows.chunks_exact_mut(packed)) {
                let scale = quantize4(v, out);
                // The codes the nibbles stand for, and the round trip within half a step.
                let c: Vec<i32> = (0..dim)
                    .map(|i| i32::from((out[i / 2] >> (4 * (i % 2))) & 15) - 8)
                    .collect();
                for (x, &k) in v.iter().zip(&c) {
                    assert!((x - k as f32 * scale).abs() <= scale / 2.0 + 1e-6);
                }
                codes.push(c);
            }
            let q: Vec<i8> = (0..dim)
                .map(|i| {
                    if i % 5 == 0 {
                        -127
                    } else {
                        ((i * 11 % 255) as i32 - 127) as i8
                    }
                })
                .collect();
            let mut out = vec![7];
            dots_i4(&rows, &Query4::new(&q), &mut out);
            let want: Vec<i32> = std::iter::once(7)
                .chain(codes.iter().map(|c| {
                    c.iter()
                        .zip(&q)
                        .map(|(&a, &b)| a * i32::from(b))
                        .sum::<i32>()
                }))
                .collect();
            assert_eq!(out, want, "dim {dim}");
            let mut portable = vec![7];
            dots_i4_body(&rows, &Query4::new(&q), &mut portable);
            assert_eq!(portable, want, "dim {dim}, portable");
        }
        let mut zero = [0u8; 2];
        assert_eq!(quantize4(&[0.0, 0.0, 0.0], &mut zero), 0.0);
        assert_eq!(zero, [0x88, 0x88]);
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
