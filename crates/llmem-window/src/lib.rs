//! llmem-window: under construction; see ARCHITECTURE.md.
