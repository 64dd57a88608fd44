//! Integration tests of the LoCoMo harness: they run the built `llmem-eval` binary on the LoCoMo
//! data and on files in temp dirs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../support/locomo.rs"]
pub mod locomo;

mod eval;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `llmem-eval` with `args`; returns (exit code, stdout, stderr).
pub fn llmem_eval(args: &[&str]) -> (i32, String, String) {
    llmem_eval_env(args, None, &[])
}

/// Runs `llmem-eval` in `dir` (when given) with these environment variables set (the others,
/// such as the cache of models and `ORT_DYLIB_PATH` from `cargo xtask env`, are inherited).
pub fn llmem_eval_env(
    args: &[&str],
    dir: Option<&Path>,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmem-eval"));
    cmd.args(args).envs(env.iter().copied());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run llmem-eval");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
