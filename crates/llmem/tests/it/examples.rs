//! Runs the examples (`examples/*.rs`) and checks what they print. `cargo test`
//! builds them next to this test binary (`target/<profile>/examples/`); when one is missing
//! (e.g. `cargo test --test it`), it is built first with this crate's features. Steps that
//! need the local llama.cpp server or the ONNX embedder degrade (with a printed note), so the
//! checks here hold with or without them.
// Test helpers fail the test by panicking, with the output that explains why.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built example `name`, building it if it is not there.
fn example(name: &str) -> PathBuf {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // target/<profile>/deps/it-<hash> → target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test binary path {}", exe.display()));
    let path = profile_dir.join("examples").join(&file);
    if path.exists() {
        return path;
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-p", "llmem", "--example", name]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if !cfg!(feature = "http") {
        cmd.arg("--no-default-features");
    }
    let features: Vec<&str> = [
        ("onnx", cfg!(feature = "onnx")),
        ("lance", cfg!(feature = "lance")),
        ("glacier", cfg!(feature = "glacier")),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
    assert!(
        path.exists(),
        "{cmd:?} succeeded but {} is not there",
        path.display()
    );
    path
}

/// Runs example `name`; returns its stdout, after checking that it succeeded.
fn run(name: &str) -> String {
    let path = example(name);
    let out = Command::new(&path)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number after `prefix` on the first line that contains it.
fn number_after(out: &str, prefix: &str) -> i64 {
    let rest = out
        .lines()
        .find_map(|l| l.split_once(prefix).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{out}"));
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '-')
        .filter(|c| *c != ',')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("`{prefix}` is not followed by a number ({e}):\n{out}"))
}

#[test]
fn prompt_blocks_summarises_loads_the_answer_and_releases_the_scope() {
    let out = run("prompt_blocks");
    assert!(
        out.contains("(>= 1024 - 256: true)"),
        "summarize left the promised free memory:\n{out}"
    );
    assert!(number_after(&out, "save(): ") >= 7, "{out}");
    assert!(
        number_after(&out, "load(query, \"context\", FillFree): ") >= 1,
        "{out}"
    );
    let context: Vec<&str> = out.lines().filter(|l| l.contains("context[")).collect();
    assert!(
        context.iter().any(|l| l.contains("six years")),
        "the lifespan paragraph was loaded into the context: {context:?}\n{out}"
    );
    assert_eq!(
        number_after(&out, "gc(question, keep [\"question\"]): dropped "),
        1,
        "{out}"
    );
    assert!(
        out.contains("after the scope: context holds 0 message(s)"),
        "{out}"
    );
    // With the local model, compile answers; without it the step is skipped with a note.
    assert!(
        out.contains("compile(\"context, question -> answer\"): ") || out.contains("note: "),
        "{out}"
    );
}

#[test]
fn tiered_conversation_retrieves_the_api_key_after_compression() {
    let out = run("tiered_conversation");
    assert!(out.contains("Compression Complete"), "{out}");
    assert!(number_after(&out, "compressions: ") >= 1, "{out}");
    assert!(
        out.contains("API key statement still raw in the window: false"),
        "the key left the window before the question:\n{out}"
    );
    let (_, final_context) = out
        .split_once("--- Final Context to Send ---")
        .unwrap_or_else(|| panic!("no final context:\n{out}"));
    let (final_context, _) = final_context
        .split_once("--- Retrieved")
        .unwrap_or((final_context, ""));
    assert!(
        final_context.contains("My API key is 123"),
        "the key came back from long-term memory:\n{out}"
    );
    assert!(
        out.contains("API key 123 in the final context: true"),
        "{out}"
    );
}

#[test]
fn agent_manager_prints_the_statistics_block() {
    let out = run("agent_manager");
    assert!(
        out.contains("preset Some(Aggressive), threshold 1000 tokens, ratio 0.2"),
        "{out}"
    );
    assert!(out.contains("conversation: 77 messages"), "{out}");
    let (_, stats) = out
        .split_once("--- Memory Statistics ---")
        .unwrap_or_else(|| panic!("no statistics block:\n{out}"));
    assert!(number_after(stats, "Total tokens: ") > 0, "{out}");
    assert!(number_after(stats, "Compressions: ") >= 1, "{out}");
    assert!(number_after(stats, "Net savings: ") > 0, "{out}");
    assert!(stats.contains("Total cost: $0."), "{out}");
}

#[test]
fn store_with_filters_filters_searches_and_cleans_up() {
    let out = run("store_with_filters");
    assert!(
        out.contains("search: hybrid") || out.contains("search: lexical"),
        "{out}"
    );
    let first_hit = out
        .lines()
        .skip_while(|l| !l.starts_with("get_context(\"vegetarian"))
        .nth(1)
        .unwrap_or_default();
    assert!(first_hit.contains("[cooking /"), "{out}");
    let recent: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("get_recent_context"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(recent.len(), 4, "{recent:?}\n{out}");
    assert!(recent.iter().all(|l| l.contains("[cooking]")), "{out}");
    assert!(out.contains("Kombu dashi is a vegan soup stock"), "{out}");
    assert!(
        out.contains("stats: total=10, conversation=8, knowledge=2, episode=0"),
        "{out}"
    );
    assert!(
        out.contains("cleanup_old_memories(days=2): deleted 4"),
        "{out}"
    );
    assert!(out.contains("bob's view of the store: 0 records"), "{out}");
}

#[test]
fn four_tiers_migrates_promotes_and_restores() {
    let out = run("four_tiers");
    assert!(out.contains("tiers: hot → warm → cold → glacier"), "{out}");
    assert!(
        out.contains("turn-1             in warm"),
        "LRU demotion:\n{out}"
    );
    assert!(out.contains("archive_2024       in glacier"), "{out}");
    assert!(out.contains("hot → warm: 3 record(s)"), "{out}");
    assert!(out.contains("warm → cold: 6 record(s)"), "{out}");
    assert!(out.contains("read 2: satellite_imagery in cold"), "{out}");
    assert!(out.contains("read 3: satellite_imagery in warm"), "{out}");
    assert!(
        out.contains("records 7; location_data in warm, turn-4 in hot"),
        "{out}"
    );
    let metrics = out
        .split_once("--- metrics ---")
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("no metrics:\n{out}"));
    for tier in ["hot", "warm", "cold", "glacier"] {
        assert!(
            metrics.lines().any(|l| l.trim_start().starts_with(tier)),
            "{tier} metrics:\n{out}"
        );
    }
}
