//! Integration tests of llmem-providers.
