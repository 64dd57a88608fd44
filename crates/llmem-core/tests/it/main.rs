//! Integration tests of llmem-core: wire shapes, the architecture invariants, the test kit.

mod architecture;
mod kit;
mod wire;
