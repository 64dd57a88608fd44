//! `cargo xtask`: the project's tasks (setup, test, ci, bench, eval, gpu). Run with no arguments to list them.

mod gpu;
mod report;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const TASKS: &[(&str, &str)] = &[
    (
        "setup",
        "install the assets tests and local models need (idempotent, offline-first cache)",
    ),
    (
        "test",
        "run every test of the workspace with all features, assets on their paths",
    ),
    (
        "ci",
        "fmt --check, clippy -D warnings, the feature matrix, then `test`",
    ),
    (
        "bench",
        "run the benchmarks and the peer comparisons; writes docs/benchmarks.md (--report-only: just rewrite it)",
    ),
    (
        "eval",
        "`llmem-eval locomo` on the full LoCoMo dev data (release build): the product's defaults (docs/eval/locomo-product.json), then the eval's settings with the budget curve (docs/eval/locomo.{json,svg})",
    ),
    (
        "gpu",
        "install the GPU build of ONNX Runtime and prove the CUDA path (embedder, hot-tier scorer) against the CPU; without a GPU, says so and checks the rest",
    ),
    (
        "env",
        "print the environment variables the tests use (eval \"$(cargo xtask env)\")",
    ),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        println!("cargo xtask <task>\n");
        for (name, what) in TASKS {
            println!("  {name:<8} {what}");
        }
        return Ok(());
    };
    let rest = &args[1..];
    match task.as_str() {
        "setup" => setup::setup(rest),
        "test" => test(rest),
        "ci" => ci(rest),
        "bench" => bench(rest),
        "eval" => eval(rest),
        "gpu" => gpu::gpu(rest),
        "env" => {
            for (k, v) in test_env()? {
                println!("export {k}={}", shell_quote(&v));
            }
            Ok(())
        }
        other => bail!("unknown task `{other}`; run `cargo xtask` to list the tasks"),
    }
}

/// The workspace root (the parent of this crate's folder).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where `setup` puts assets: `$LLMEM_CACHE_DIR`, else `<root>/.cache/llmem`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("LLMEM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/llmem"))
}

/// The variables tests and benches run with: the cache, the ONNX Runtime library, the venv.
/// Each is set whether or not `setup` has put its file there yet, so that a build started
/// while `setup` runs sees the same environment as the tests after it (build scripts such as
/// ort-sys's and cc's rerun when a variable they read changes, and all that depends on them
/// compiles again).
pub fn test_env() -> Result<Vec<(String, String)>> {
    let cache = cache_dir();
    let venv_bin = cache.join("venv/bin");
    let path = std::env::var("PATH").unwrap_or_default();
    Ok(vec![
        ("LLMEM_CACHE_DIR".to_owned(), cache.display().to_string()),
        (
            "ORT_DYLIB_PATH".to_owned(),
            setup::ort_dylib(&cache).display().to_string(),
        ),
        (
            "LLMEM_PYTHON".to_owned(),
            venv_bin.join("python").display().to_string(),
        ),
        ("PATH".to_owned(), format!("{}:{path}", venv_bin.display())),
    ])
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `cmd`, echoing it, failing with its exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// `cargo test` of the whole workspace with all features and the assets' variables; extra
/// arguments follow (`cargo xtask test -- late` runs the tests whose names match). Always the
/// whole workspace, so that features unify the same way and nothing is compiled twice.
///
/// Then, when the run was not narrowed by extra arguments (a name filter, `--no-run`, …), the
/// Python client's tests: `clients/python` is pip-installed into the test venv and pytest runs
/// `clients/python/tests` against the `llmem` binary `cargo test` just built.
fn test(extra: &[String]) -> Result<()> {
    let env = test_env()?;
    let mut c = cargo();
    c.args(["test", "--workspace", "--all-features", "--no-fail-fast"])
        .args(extra)
        .envs(env.clone());
    run(&mut c)?;
    if !extra.is_empty() {
        eprintln!("(extra arguments given: the Python client's tests are not run)");
        return Ok(());
    }
    python_client_tests(&env)
}

/// The `target` directory: `$CARGO_TARGET_DIR`, else `<root>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => root().join(d),
        None => root().join("target"),
    }
}

/// Installs `clients/python` into the test venv and runs its pytest suite against
/// `<target>/debug/llmem`.
fn python_client_tests(env: &[(String, String)]) -> Result<()> {
    let python = env
        .iter()
        .find(|(k, _)| k == "LLMEM_PYTHON")
        .map(|(_, v)| PathBuf::from(v))
        .context("test_env names no LLMEM_PYTHON")?;
    if !python.exists() {
        bail!(
            "no Python at {}: run `cargo xtask setup` for the test venv (the Python client's \
             tests run in it)",
            python.display()
        );
    }
    let bin = target_dir().join("debug/llmem");
    if !bin.exists() {
        bail!("`cargo test` left no {}", bin.display());
    }
    // pip builds in the tree; a `build/` left from an earlier build could carry stale modules.
    let _ = std::fs::remove_dir_all(root().join("clients/python/build"));
    run(Command::new(&python)
        .current_dir(root())
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg("./clients/python")
        .envs(env.iter().cloned()))?;
    run(Command::new(&python)
        .current_dir(root())
        .args(["-m", "pytest", "-q", "clients/python/tests"])
        .env("LLMEM_BIN", &bin)
        .envs(env.iter().cloned()))
}

fn ci(extra: &[String]) -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The light crates must build alone, without the heavy features.
    for p in [
        "llmem-core",
        "llmem-tokens",
        "llmem-window",
        "llmem-compress",
    ] {
        run(cargo().args(["check", "-p", p, "--no-default-features"]))?;
    }
    test(extra)
}

/// The LoCoMo file: `$LLMEM_LOCOMO`, else `../shared/data/locomo/locomo-dev.json` beside the
/// workspace.
fn locomo_data() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LLMEM_LOCOMO").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let p = root().join("../shared/data/locomo/locomo-dev.json");
    if p.exists() {
        return Ok(p);
    }
    bail!(
        "no LoCoMo data: set LLMEM_LOCOMO to a LoCoMo JSON file (e.g. locomo-dev.json); it is \
         read from there, never copied into the repository"
    )
}

/// The LoCoMo eval twice: the product's defaults as shipped first (`locomo-product.json`), then
/// the eval's settings, retrieval that fills the prompt, with the budget curve (`locomo.json`
/// and its plots).
fn eval(extra: &[String]) -> Result<()> {
    let env = test_env()?;
    let data = locomo_data()?;
    let out = root().join("docs/eval");
    std::fs::create_dir_all(&out)?;
    // `--flag` or `--flag=value`.
    let has = |flag: &str| {
        extra.iter().any(|a| {
            a.strip_prefix(flag)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
        })
    };
    // `--settings` given: that run alone, into locomo.json.
    let runs: &[(Option<&str>, &str)] = if has("--settings") {
        &[(None, "locomo.json")]
    } else {
        &[
            (Some("product"), "locomo-product.json"),
            (Some("eval"), "locomo.json"),
        ]
    };
    for &(settings, file) in runs {
        let mut cmd = cargo();
        cmd.args(["run", "--release", "-q", "-p", "llmem-eval", "--", "locomo"])
            .arg("--data")
            .arg(&data)
            .args(["--budget", "1500", "--k", "10", "--quiet", "--json"])
            .arg(out.join(file));
        if let Some(s) = settings {
            eprintln!("LoCoMo, the {s} settings:");
            cmd.args(["--settings", s]);
            // The budget curve is the eval's settings' (the product caps retrieval at
            // `retrieval.max_tokens`).
            if s == "product" && !has("--no-curve") {
                cmd.arg("--no-curve");
            }
        }
        run(cmd.args(extra).envs(env.clone()))?;
    }
    Ok(())
}

fn bench(extra: &[String]) -> Result<()> {
    let out = root().join("target/bench-report");
    let doc = root().join("docs/benchmarks.md");
    if extra.iter().any(|a| a == "--report-only") {
        report::write(&doc, &root().join("target/criterion"), &out)?;
        eprintln!("rewrote the generated section of {}", doc.display());
        return Ok(());
    }
    setup::setup(&["peers".to_owned()])?;
    let env = test_env()?;
    std::fs::create_dir_all(&out)?;
    // The tiers report (and its Chroma run) writes where the peers write.
    run(cargo()
        .args(["bench", "--workspace", "--all-features"])
        .args(extra)
        .envs(env.clone())
        .env("BENCH_OUT", &out))?;
    let peers = root().join("benches/peers");
    if peers.exists() {
        let python = env
            .iter()
            .find(|(k, _)| k == "LLMEM_PYTHON")
            .map(|(_, v)| v.clone())
            .context("the peer benchmarks need the venv: run `cargo xtask setup` first")?;
        let mut scripts: Vec<PathBuf> = std::fs::read_dir(&peers)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "py"))
            // Chroma runs inside the tiers report, on the report's own vectors; alone it
            // would draw other vectors and overwrite that result.
            .filter(|p| !p.ends_with("chroma_bench.py"))
            .collect();
        scripts.sort();
        for s in scripts {
            run(Command::new(&python)
                .arg(&s)
                .arg(&out)
                .envs(env.clone())
                .current_dir(root()))?;
        }
    }
    report::write(&doc, &root().join("target/criterion"), &out)?;
    eprintln!(
        "bench results in {}; generated section of {} rewritten",
        out.display(),
        doc.display()
    );
    Ok(())
}
