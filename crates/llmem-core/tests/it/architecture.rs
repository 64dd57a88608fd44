//! Architecture invariants, checked by reading the workspace: what llmem-core may depend on, and
//! that every source file says what it is in its first line.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[test]
fn core_depends_on_no_network_ml_or_storage_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "llmem-core",
            "--all-features",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(
        tree.lines().count() > 5,
        "cargo tree printed too little:\n{tree}"
    );
    for banned in [
        "lance",
        "ort",
        "reqwest",
        "tokenizers",
        "tiktoken-rs",
        "hyper",
        "arrow",
        "object_store",
        "tokio",
    ] {
        let hit = tree
            .lines()
            .find(|l| l.split_whitespace().next() == Some(banned));
        assert!(
            hit.is_none(),
            "llmem-core must not depend on {banned}: {hit:?}"
        );
    }
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        assert!(
            !name.starts_with("llmem-") || name == "llmem-core",
            "llmem-core must depend on no other workspace crate, found {name}"
        );
    }
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let root = workspace_root();
    let mut missing = Vec::new();
    let mut stack: Vec<PathBuf> = ["crates", "plugins", "xtask", "examples"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                seen += 1;
                let text = std::fs::read_to_string(&p).unwrap();
                if !text.trim_start().starts_with("//!") {
                    missing.push(p.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
    }
    assert!(seen > 10, "found only {seen} Rust files");
    assert!(
        missing.is_empty(),
        "files without a leading `//!` line: {missing:?}"
    );
}
