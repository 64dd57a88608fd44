//! Helpers shared by the integration tests: deterministic vectors and records.

pub use llmem_core::test_kit::unit_vec;
use llmem_core::{MemoryRecord, Timestamp};

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
