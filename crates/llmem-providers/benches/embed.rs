//! Embedding benchmark (being written).
fn main() {}
