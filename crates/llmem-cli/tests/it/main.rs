//! Integration tests of the llmem CLI.
