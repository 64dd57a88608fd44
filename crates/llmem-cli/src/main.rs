//! The llmem command line.
fn main() {}
