//! Integration tests of llmem-core: wire shapes, the architecture invariants, the test kit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod architecture;
mod kit;
mod wire;
