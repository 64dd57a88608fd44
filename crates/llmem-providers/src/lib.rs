//! llmem-providers: under construction; see ARCHITECTURE.md.
