//! llmem-tokens: under construction; see ARCHITECTURE.md.
