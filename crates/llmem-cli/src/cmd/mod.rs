//! One module per subcommand: each has an `Args` (clap) and `async fn run(Args)`.

pub mod chat;
pub mod compress;
pub mod count;
pub mod demo;
pub mod embedder;
#[cfg(feature = "eval")]
pub mod eval;
pub mod input;
pub mod keys;
pub mod mcp;
pub mod memapi;
pub mod models;
pub mod product;
pub mod reembed;
pub mod rest;
pub mod serve;
pub mod store;
