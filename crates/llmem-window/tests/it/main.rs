//! Integration tests of llmem-window.
