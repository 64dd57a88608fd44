//! `llmem import`, `store`, `search`, `export`, `snapshot`, `stats` on a data directory in a
//! temp dir (warm tier with its write-ahead log; cold on Lance when built with `lance`), shared
//! with the memory managers.

use crate::{llmem, llmem_env};

/// Runs `llmem` and asserts it succeeded; its standard output.
fn run(args: &[&str]) -> String {
    succeed(args).0
}

/// Runs `llmem` and asserts it succeeded; its standard output and error.
fn succeed(args: &[&str]) -> (String, String) {
    let (code, out, err) = llmem(args);
    assert_eq!(code, 0, "llmem {args:?} failed: {err}");
    (out, err)
}

#[test]
fn import_search_export_stats_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dir = dir.to_str().unwrap();
    let jsonl = tmp.path().join("in.jsonl");
    let mut lines = String::new();
    for i in 0..250 {
        let text = match i {
            7 => "the squirrel buried acorns under the old oak tree".to_owned(),
            8 => "my favourite colour is teal".to_owned(),
            _ => format!("filler note number {i} about nothing in particular"),
        };
        lines.push_str(
            &serde_json::json!({"id": format!("n{i}"), "text": text, "metadata": {"i": i}})
                .to_string(),
        );
        lines.push('\n');
    }
    lines.push('\n'); // blank lines are skipped
    std::fs::write(&jsonl, lines).unwrap();

    let (code, _, err) = llmem(&[
        "import",
        "--dir",
        dir,
        "--tenant",
        "alice",
        jsonl.to_str().unwrap(),
        "--batch",
        "100",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("imported 250 records"), "{err}");

    // A record stored by hand, for another tenant: alice never sees it.
    let id = run(&[
        "store",
        "--dir",
        dir,
        "--tenant",
        "bob",
        "bob's squirrel secret",
        "-m",
        "x=1",
    ]);
    assert!(!id.trim().is_empty());

    let out = run(&[
        "search",
        "--dir",
        dir,
        "--tenant",
        "alice",
        "squirrel acorns",
        "-k",
        "3",
        "--json",
    ]);
    let hits: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits[0]["id"], "n7", "{out}");
    assert!(
        hits.iter().all(|h| h["id"] != id.trim()),
        "bob's record leaked: {out}"
    );
    let out = run(&[
        "search", "--dir", dir, "--tenant", "bob", "squirrel", "--json",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(id.trim()));
    // A filter that names alice does not open her records to bob.
    let out = run(&[
        "search",
        "--dir",
        dir,
        "--tenant",
        "bob",
        "squirrel",
        "--filter",
        r#"{"tenant": "alice"}"#,
    ]);
    assert!(!out.contains("n7"), "{out}");

    let out = run(&["stats", "--dir", dir, "--tenant", "alice", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["records"], 250);
    let items: u64 = v["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["items"].as_u64().unwrap())
        .sum();
    assert_eq!(items, 251);
    assert!(run(&["stats", "--dir", dir]).contains("warm"));

    // Snapshot, add, restore: the later record is gone again.
    let snap = run(&["snapshot", "--dir", dir]).trim().to_owned();
    run(&[
        "store",
        "--dir",
        dir,
        "--tenant",
        "alice",
        "--id",
        "late",
        "written after the snapshot",
    ]);
    assert!(
        run(&[
            "search",
            "--dir",
            dir,
            "--tenant",
            "alice",
            "written after snapshot"
        ])
        .contains("late")
    );
    run(&["snapshot", "--dir", dir, "--restore", &snap]);
    assert!(
        !run(&[
            "search",
            "--dir",
            dir,
            "--tenant",
            "alice",
            "written after snapshot"
        ])
        .contains("late")
    );

    // Export round-trips every record of alice (and only hers).
    let out_file = tmp.path().join("out.jsonl");
    run(&[
        "export",
        "--dir",
        dir,
        "--tenant",
        "alice",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    let exported = std::fs::read_to_string(&out_file).unwrap();
    let recs: Vec<serde_json::Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 250);
    assert!(recs.iter().all(|r| r["tenant"] == "alice"));
    assert!(recs.iter().any(|r| r["id"] == "n8"
        && r["text"] == "my favourite colour is teal"
        && r["metadata"]["i"] == 8));
    let filtered = run(&[
        "export",
        "--dir",
        dir,
        "--tenant",
        "alice",
        "--filter",
        r#"{"i": {"$lt": 10}}"#,
    ]);
    assert_eq!(filtered.lines().count(), 10);

    // Errors are clear and fail the command.
    let (code, _, err) = llmem(&["search", "--dir", dir, "x", "--filter", "{not json"]);
    assert_ne!(code, 0);
    assert!(err.contains("not JSON"), "{err}");
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"id\": 1}\n").unwrap();
    let (code, _, err) = llmem(&["import", "--dir", dir, bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.jsonl:2"), "{err}");
}

#[test]
fn the_store_commands_share_the_memory_managers_directory() {
    use ::llmem::TierSettings;
    use ::llmem::core::{MemoryRecord, MemoryStore};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // What a manager with `tiers.dir` set stores ...
    let tiers = TierSettings {
        dir: Some(dir.clone()),
        ..TierSettings::default()
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = ::llmem::open_store(&tiers).unwrap();
        store
            .put(vec![MemoryRecord::new(
                "alice",
                "user: my sister Ines lives in Porto",
            )])
            .await
            .unwrap();
    });
    // ... `llmem search` finds in the same directory.
    let d = dir.to_str().unwrap();
    let out = run(&["search", "--dir", d, "--tenant", "alice", "sister Porto"]);
    assert!(out.contains("Ines lives in Porto"), "{out}");
    // A directory of an earlier version (warm in `warm/`) is moved to the current layout.
    std::fs::rename(dir.join("memory"), dir.join("warm")).unwrap();
    let out = run(&["search", "--dir", d, "--tenant", "alice", "sister Porto"]);
    assert!(out.contains("Ines lives in Porto"), "{out}");
    assert!(dir.join("memory").is_dir() && !dir.join("warm").exists());
}

#[test]
fn archive_moves_records_to_a_glacier_directory_out_of_search_and_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let archive = tmp.path().join("archive");
    let g = archive.to_str().unwrap();
    // `llmem <command> --dir d --glacier g --tenant alice <rest>`.
    let target = ["--dir", d, "--glacier", g, "--tenant", "alice"];
    let alice = |command: &str, rest: &[&str]| llmem(&[&[command][..], &target, rest].concat());
    let ok = |command: &str, rest: &[&str]| succeed(&[&[command][..], &target, rest].concat());
    let (code, _, err) = llmem(&["archive", "--dir", d, "--tenant", "alice"]);
    assert_ne!(code, 0);
    assert!(err.contains("--glacier"), "{err}");
    ok(
        "store",
        &["--kind", "knowledge", "the boat is moored in Aveiro"],
    );
    ok(
        "store",
        &["--kind", "conversation", "lunch was grilled sardines"],
    );
    // Placed straight into glacier by hand, too.
    ok(
        "store",
        &["--tier", "glacier", "the old passport expired in 2019"],
    );
    let (code, _, err) = alice("store", &["--tier", "attic", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("attic"), "{err}");

    let (_, err) = ok("archive", &["--filter", r#"{"kind": "conversation"}"#]);
    assert!(err.contains("archived 1 records"), "{err}");
    let (stats, _) = ok("stats", &["--json"]);
    let v: serde_json::Value = serde_json::from_str(stats.trim()).unwrap();
    assert_eq!(v["records"], 3, "{v}");
    let items = |tier: &str| {
        v["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tier"] == tier)
            .map(|t| t["items"].as_u64().unwrap())
    };
    assert_eq!(items("glacier"), Some(2), "{v}");
    assert_eq!(items("warm"), Some(1), "{v}");
    assert!(archive.join("manifest.json").is_file());
    // Archived records stay recallable: search reaches glacier through its index (and
    // export reads them back from the archive).
    let (out, _) = ok("search", &["sardines"]);
    assert!(out.contains("grilled sardines"), "{out}");
    let (out, _) = ok("search", &["Aveiro"]);
    assert!(out.contains("moored in Aveiro"), "{out}");
    let (out, _) = ok("export", &[]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.contains("grilled sardines") && out.contains("passport expired"),
        "{out}"
    );
}

/// The store commands read the configuration `llmem chat` and `serve` read: `tiers.dir` from
/// `--config FILE`, from `./llmem.toml`, or from `LLMEM_TIERS_DIR`; `--dir` overrides it; a
/// bad file is an error that names the key.
#[test]
fn the_store_commands_read_llmem_toml_like_chat_and_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("from-config");
    let config = tmp.path().join("llmem.toml");
    std::fs::write(
        &config,
        format!("[tiers]\ndir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    run(&[
        "store",
        "--config",
        c,
        "--tenant",
        "ana",
        "the spare key is under the blue pot",
    ]);
    assert!(
        data.join("memory").is_dir(),
        "the warm tier lives in tiers.dir"
    );
    let out = run(&["search", "--config", c, "--tenant", "ana", "spare key"]);
    assert!(out.contains("blue pot"), "{out}");

    // ./llmem.toml is found in the working directory, as `chat` and `serve` find it.
    let (code, out, err) = crate::llmem_in(
        &["search", "--tenant", "ana", "spare key"],
        Some(tmp.path()),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("blue pot"), "{out}");

    // The environment names the directory too, and --dir wins over both.
    let other = tmp.path().join("from-env");
    let o = other.to_str().unwrap();
    let (code, _, err) = llmem_env(
        &["store", "--tenant", "ana", "the bike lock code is 4411"],
        None,
        &[("LLMEM_TIERS_DIR", o)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(other.join("memory").is_dir());
    let elsewhere = tmp.path().join("from-flag");
    let e = elsewhere.to_str().unwrap();
    run(&[
        "store", "--config", c, "--dir", e, "--tenant", "ana", "noted",
    ]);
    assert!(elsewhere.join("memory").is_dir());

    std::fs::write(&config, "[tiers]\ndirr = \"x\"\n").unwrap();
    let (code, _, err) = llmem(&["stats", "--config", c]);
    assert_ne!(code, 0);
    assert!(err.contains("tiers.dirr"), "{err}");
}

#[test]
fn forget_and_update_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dir = dir.to_str().unwrap();
    let store = |user: &str, text: &str| {
        run(&["store", "--dir", dir, "--user", user, text])
            .trim()
            .to_owned()
    };
    let secret = store("alice", "my door code is 80417, do not tell anyone");
    let kept = store("alice", "my favourite tea is a smoky lapsang");
    store("bob", "bob's door code is 80417 too");

    // update keeps the id and the earlier version.
    let out = run(&[
        "update",
        "--dir",
        dir,
        "--user",
        "alice",
        &kept,
        "my favourite tea is sencha",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["id"], kept.as_str(), "{out}");
    assert!(v["supersedes"].is_string(), "{out}");
    let hits = run(&["search", "--dir", dir, "--tenant", "alice", "favourite tea"]);
    assert!(
        hits.contains("sencha") && !hits.contains("lapsang"),
        "{hits}"
    );
    let (code, _, err) = llmem(&["update", "--dir", dir, "--user", "alice", "nope", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("nope"), "{err}");

    // `llmem forget --user alice [--filter F]`: its exit code, its output as JSON, its errors.
    let forget = |filter: Option<&str>| {
        let mut args = vec!["forget", "--dir", dir, "--user", "alice"];
        args.extend(filter.map(|f| ["--filter", f]).into_iter().flatten());
        let (code, out, err) = llmem(&args);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
        (code, v, err)
    };
    // The records of a user, as `llmem stats` counts them.
    let records = |user: &str| {
        let stats = run(&["stats", "--dir", dir, "--tenant", user, "--json"]);
        serde_json::from_str::<serde_json::Value>(stats.trim()).unwrap()["records"].clone()
    };

    // forget by filter: alice's secret is forgotten; bob's record stays.
    let (code, v, err) = forget(Some(r#"{"text": {"$contains": "80417"}}"#));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["memories"], 1, "{v} {err}");
    let hits = run(&["search", "--dir", dir, "--tenant", "alice", "door code"]);
    assert!(!hits.contains(&secret) && !hits.contains("80417"), "{hits}");
    let hits = run(&["search", "--dir", dir, "--tenant", "bob", "door code"]);
    assert!(hits.contains("80417"), "{hits}");
    // A filter that matches nothing says so; bad JSON names the flag.
    let (code, _, err) = forget(Some(r#"{"text": {"$contains": "zebra"}}"#));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing to forget"), "{err}");
    let (code, _, err) = forget(Some("{oops"));
    assert_ne!(code, 0);
    assert!(err.contains("--filter"), "{err}");
    // Everything of alice's: nothing left, bob untouched.
    let (code, v, err) = forget(None);
    assert_eq!(code, 0, "{err}");
    assert!(v["memories"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(records("alice"), 0);
    assert_eq!(records("bob"), 1);
}

#[cfg(feature = "onnx")]
#[test]
fn reembed_gives_every_memory_the_configured_models_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("llmem.toml");
    std::fs::write(
        &config,
        format!(
            "[tiers]\ndir = {:?}\n\n[embedder]\nkind = \"onnx-embedder\"\nquantized = true\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    for text in [
        "the spare key is under the blue pot",
        "the bike lock code is 4411",
    ] {
        run(&["store", "--config", c, "--tenant", "ana", text]);
    }
    let (out, err) = succeed(&["reembed", "--config", c]);
    assert!(
        out.contains("re-embedded 2 memories (warm 2)") && out.contains("model-int8"),
        "{out}"
    );
    assert!(err.contains("re-embedded 2 of 2 memories"), "{err}");
    let recorded = std::fs::read_to_string(data.join("embedder.json")).unwrap();
    assert!(recorded.contains("model-int8"), "{recorded}");

    // Without an embedder there is nothing to embed with: the error says where to name one.
    let (code, _, err) = llmem(&["reembed", "--dir", data.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("[embedder]"), "{err}");
}
