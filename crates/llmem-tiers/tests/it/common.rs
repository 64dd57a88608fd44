//! Helpers shared by the integration tests: deterministic vectors and records.

use llmem_core::{MemoryRecord, Timestamp};

/// A deterministic pseudo-random unit vector (xorshift), the same for the same seed.
pub fn unit_vec(dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

/// A record of `tenant` with id `id`, text, a deterministic embedding and `n` in its metadata.
pub fn rec(tenant: &str, id: &str, text: &str, dim: usize, seed: u64) -> MemoryRecord {
    MemoryRecord::new(tenant, text)
        .with_id(id)
        .with_embedding(unit_vec(dim, seed))
        .with_metadata("n", seed)
}

/// Hours as milliseconds.
pub fn hours(h: i64) -> i64 {
    h * 3_600_000
}

/// `t` plus `h` hours.
pub fn later(t: Timestamp, h: i64) -> Timestamp {
    Timestamp(t.0 + hours(h))
}
