//! llmem-tiers: under construction; see ARCHITECTURE.md.
