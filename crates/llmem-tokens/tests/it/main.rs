//! Integration tests of llmem-tokens.
