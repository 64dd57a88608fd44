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

/// What `cargo <args>` prints, run in the workspace; a failure fails the test with its stderr.
fn cargo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn core_depends_on_no_network_ml_or_storage_crate() {
    let tree = cargo(&[
        "tree",
        "-p",
        "llmem-core",
        "--all-features",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "--offline",
    ]);
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

/// The layer of each workspace crate (ARCHITECTURE.md's table).
fn layer(name: &str) -> Option<u8> {
    Some(match name {
        "llmem-core" => 0,
        "llmem-tokens" | "llmem-window" | "llmem-tiers" | "llmem-providers" => 1,
        n if n.starts_with("llmem-provider-") => 1,
        "llmem-compress" => 2,
        "llmem" => 3,
        "llmem-eval" => 4,
        "llmem-cli" => 5,
        _ => return None,
    })
}

/// The workspace's packages as `cargo metadata` lists them.
fn packages() -> Vec<serde_json::Value> {
    let text = cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["packages"].as_array().unwrap().clone()
}

#[test]
fn workspace_crates_depend_only_on_lower_layers() {
    let packages = packages();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for p in &packages {
        let name = p["name"].as_str().unwrap();
        if name == "xtask" {
            let deps: Vec<&str> = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap())
                .filter(|d| names.contains(d))
                .collect();
            assert!(deps.is_empty(), "xtask depends on {deps:?}");
            continue;
        }
        let mine = layer(name).unwrap_or_else(|| panic!("{name} has no layer in ARCHITECTURE.md"));
        for d in p["dependencies"].as_array().unwrap() {
            // Dev-dependencies may reach sideways (a provider's tests use a real store).
            if d["kind"].as_str() == Some("dev") {
                continue;
            }
            let dep = d["name"].as_str().unwrap();
            let Some(theirs) = layer(dep) else { continue };
            assert!(
                theirs < mine,
                "{name} (layer {mine}) depends on {dep} (layer {theirs})"
            );
            if name.starts_with("llmem-provider-") {
                assert_eq!(dep, "llmem-core", "a plugin depends on llmem-core alone");
            }
        }
    }
}

/// The Rust sources under `dir`, with their text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    out
}

#[test]
fn io_stays_at_the_edges() {
    let root = workspace_root();
    let files = ["std::fs", "tokio::fs", "File::"];
    let sockets = [
        "TcpStream",
        "TcpListener",
        "UdpSocket",
        "tokio::net",
        "reqwest",
    ];
    let check = |krate: &str, banned: &[&str]| {
        let src = sources(&root.join(krate).join("src"));
        assert!(!src.is_empty(), "{krate} has no sources");
        for (path, text) in src {
            for b in banned {
                assert!(
                    !text.contains(b),
                    "{} uses {b}: ARCHITECTURE.md says {krate} does no such I/O",
                    path.display()
                );
            }
        }
    };
    for krate in [
        "crates/llmem-core",
        "crates/llmem-window",
        "crates/llmem-compress",
    ] {
        check(krate, &[&files[..], &sockets[..]].concat());
    }
    for krate in ["crates/llmem-tokens", "crates/llmem"] {
        check(krate, &sockets);
    }
}

#[test]
fn every_crate_denies_panics_and_has_one_test_binary() {
    let root = workspace_root();
    for p in packages() {
        let name = p["name"].as_str().unwrap();
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
        let text = std::fs::read_to_string(&manifest).unwrap();
        let lints = text.contains("[lints]\nworkspace = true")
            || [
                "unwrap_used = \"deny\"",
                "expect_used = \"deny\"",
                "panic = \"deny\"",
            ]
            .iter()
            .all(|l| text.contains(l));
        assert!(lints, "{name} does not deny unwrap/expect/panic");
        let tests = manifest.parent().unwrap().join("tests");
        if let Ok(entries) = std::fs::read_dir(&tests) {
            for e in entries.flatten() {
                let p = e.path();
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    p.is_dir() && (n == "it" || n.ends_with("-regressions")),
                    "{}: one test binary per crate, in tests/it/ ({} found)",
                    name,
                    p.strip_prefix(&root).unwrap_or(&p).display()
                );
            }
        }
    }
}
