//! Integration tests of the llmem CLI: they run the built binary on files in temp dirs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../llmem-eval/support/locomo.rs"]
pub mod locomo;

mod compress;
mod count;
mod demo;
mod mcp;
#[cfg(feature = "lance")]
mod replicas;
mod serve;
mod server;
#[cfg(feature = "lance")]
#[path = "../../../llmem-tiers/tests/it/servers.rs"]
mod servers;
mod store;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `llmem` with `args`; returns (exit code, stdout, stderr).
pub fn llmem(args: &[&str]) -> (i32, String, String) {
    llmem_in(args, None)
}

/// Runs `llmem` in `dir` (when given).
pub fn llmem_in(args: &[&str], dir: Option<&Path>) -> (i32, String, String) {
    llmem_env(args, dir, &[])
}

/// Runs `llmem` in `dir` (when given) with these environment variables set.
pub fn llmem_env(args: &[&str], dir: Option<&Path>, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmem"));
    cmd.args(args).envs(env.iter().copied());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run llmem");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
