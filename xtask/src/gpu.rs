//! `cargo xtask gpu`: proves the CUDA path on a machine with an NVIDIA GPU, in one command.
//!
//! 1. Finds the GPUs (`nvidia-smi -L`). With none it says so, checks that everything else is
//!    in place (the embedding model and the CPU runtime, and that the check itself builds with
//!    the `cuda` feature) and exits 0.
//! 2. Installs the GPU build of ONNX Runtime with its CUDA and cuDNN libraries from PyPI
//!    (`onnxruntime-gpu[cuda,cudnn]`, the same version as the CPU build) into a venv of its own
//!    under the cache (`gpu/venv`), once.
//! 3. Runs the `gpu_check` example of llmem-providers with `ORT_DYLIB_PATH` on the GPU
//!    runtime and the CUDA libraries on `LD_LIBRARY_PATH`: it fails unless the provider that
//!    actually ran the embedder's and the scorer's products is CUDA, and prints embeddings/s
//!    and scores/s at batch 1 and 256 against the CPU in the same run.
//!
//! The example is built with the tests' environment (so nothing they share is compiled again)
//! and then run with the GPU's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cache_dir, cargo, root, run, setup, test_env};

/// The GPU runtime and its CUDA/cuDNN libraries, as PyPI packages.
pub const GPU_PIP: &str = "onnxruntime-gpu[cuda,cudnn]==1.31.1";

/// The GPUs `nvidia-smi -L` lists, or why there are none.
fn gpus() -> std::result::Result<Vec<String>, String> {
    let out = Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .map_err(|e| format!("nvidia-smi could not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nvidia-smi failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("GPU "))
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err("nvidia-smi lists no GPU".into());
    }
    Ok(list)
}

/// Builds the check with the tests' environment; returns its binary.
fn build_check() -> Result<PathBuf> {
    run(cargo()
        .args([
            "build",
            "-p",
            "llmem-providers",
            "--features",
            "cuda",
            "--example",
            "gpu_check",
        ])
        .envs(test_env()?))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let bin = target.join("debug/examples/gpu_check");
    if !bin.exists() {
        bail!("the build left no {}", bin.display());
    }
    Ok(bin)
}

/// The GPU venv with [`GPU_PIP`] installed (once; a stamp names what was installed).
fn gpu_venv(cache: &Path) -> Result<PathBuf> {
    let venv = cache.join("gpu/venv");
    let py = venv.join("bin/python");
    let stamp = venv.join(".llmem-packages");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == GPU_PIP) {
        eprintln!("  {GPU_PIP} installed");
        return Ok(venv);
    }
    if !py.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&py)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg(GPU_PIP))?;
    std::fs::write(&stamp, GPU_PIP)?;
    Ok(venv)
}

/// Every directory below `dir` that holds a shared library (`*.so*`).
fn library_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut has_lib = false;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".so"))
            {
                has_lib = true;
            }
        }
        if has_lib {
            out.push(d);
        }
    }
    out.sort();
    out
}

pub fn gpu(extra: &[String]) -> Result<()> {
    if let Some(a) = extra.first() {
        bail!("`cargo xtask gpu` takes no arguments (got `{a}`)");
    }
    let started = Instant::now();
    // The embedding model and tokenizer, and the CPU runtime the comparison also needs.
    setup::setup(&["venv".into(), "ort".into(), "minilm".into()])?;
    let found = gpus();
    let bin = build_check()?;
    let list = match found {
        Ok(list) => list,
        Err(why) => {
            println!(
                "no NVIDIA GPU on this machine ({why}).\n\
                 Checked instead: the embedding model and the CPU runtime are in place and the \
                 CUDA check builds ({}).\n\
                 On a machine with a GPU this installs `{GPU_PIP}` into {} and runs that check.",
                bin.display(),
                cache_dir().join("gpu/venv").display()
            );
            return Ok(());
        }
    };
    for g in &list {
        println!("{g}");
    }
    let venv = gpu_venv(&cache_dir())?;
    let site = setup::venv_site_packages(&venv)?;
    let dylib = setup::wheel_ort_library(&site)?;
    let capi = site.join("onnxruntime/capi");
    let mut dirs = library_dirs(&site.join("nvidia"));
    dirs.push(capi);
    let old = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let ld = dirs
        .iter()
        .map(|d| d.display().to_string())
        .chain((!old.is_empty()).then_some(old))
        .collect::<Vec<_>>()
        .join(":");
    let mut env = test_env()?;
    env.retain(|(k, _)| k != "ORT_DYLIB_PATH");
    let status = Command::new(&bin)
        .envs(env)
        .env("ORT_DYLIB_PATH", &dylib)
        .env("LD_LIBRARY_PATH", ld)
        .status()
        .with_context(|| format!("could not start {}", bin.display()))?;
    eprintln!("gpu check: {:.0} s in all", started.elapsed().as_secs_f64());
    if !status.success() {
        bail!("the GPU check failed ({status})");
    }
    Ok(())
}
