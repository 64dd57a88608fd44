//! Integration tests of llmem-tiers.
