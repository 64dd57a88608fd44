//! Integration tests of llmem-tiers: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod durability;
mod forget;
mod hybrid;
mod recall;
mod servers;
mod tiered;
mod warm;

#[cfg(feature = "lance")]
mod cold;
#[cfg(feature = "glacier")]
mod glacier;
#[cfg(all(feature = "lance", feature = "glacier"))]
mod shared;
