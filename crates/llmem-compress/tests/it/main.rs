//! Integration tests of llmem-compress.
