//! llmem-compress: under construction; see ARCHITECTURE.md.
