//! `llmem compress`: a LoCoMo transcript compressed to a budget by each strategy, previews,
//! JSON and JSONL output, clear errors.

use llmem_core::{Message, TokenCounter};
use llmem_tokens::Counters;

use crate::llmem;

/// A system prompt and the first 200 LoCoMo turns as JSONL, in `dir`.
fn transcript(dir: &tempfile::TempDir) -> (String, Vec<Message>) {
    let mut msgs = vec![Message::system(
        "You are a companion who remembers the user's life.",
    )];
    for t in crate::locomo::turns()
        .into_iter()
        .filter(|t| t.conversation == 0)
    {
        let m = if t.is_a {
            Message::user(t.text)
        } else {
            Message::assistant(t.text)
        };
        msgs.push(m.with_name(t.speaker));
    }
    msgs.truncate(201);
    let p = dir.path().join("transcript.jsonl");
    let lines: Vec<String> = msgs
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
    std::fs::write(&p, lines.join("\n")).unwrap();
    (p.to_string_lossy().into_owned(), msgs)
}

#[test]
fn each_strategy_fits_the_budget_and_reports_savings() {
    let dir = tempfile::tempdir().unwrap();
    let (file, msgs) = transcript(&dir);
    let counter = Counters::embedded().unwrap().for_model("gpt-4o").unwrap();
    let original = counter.count_messages(&msgs);
    assert!(original > 4000);
    for strategy in ["sliding_window", "selective", "deletion"] {
        let (code, out, err) = llmem(&[
            "compress",
            "--strategy",
            strategy,
            "--budget",
            "1500",
            "--json",
            &file,
        ]);
        assert_eq!(code, 0, "{strategy}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let r = &v["result"];
        let kept: Vec<Message> = serde_json::from_value(r["messages"].clone()).unwrap();
        assert_eq!(r["original_tokens"], original, "{strategy}");
        assert_eq!(
            r["compressed_tokens"],
            counter.count_messages(&kept),
            "{strategy}"
        );
        assert!(
            r["compressed_tokens"].as_u64().unwrap() <= 1500,
            "{strategy}: {}",
            r["compressed_tokens"]
        );
        assert_eq!(kept[0], msgs[0], "{strategy}: the system prompt stays");
        assert_eq!(
            kept.last(),
            msgs.last(),
            "{strategy}: the latest turn stays"
        );
        assert_eq!(r["messages_before"], 201);
        assert_eq!(r["strategy"], strategy);
    }
    let (code, out, err) = llmem(&["compress", "--budget", "1500", &file]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[system] You are a companion"), "{out}");
    assert!(out.contains("Previous conversation summary: "), "{out}");
    assert!(
        out.contains(&format!("sliding_window (gpt-4o): {original} -> ")),
        "{out}"
    );
    assert!(out.contains("quality: "), "{out}");
}

#[test]
fn preview_changes_nothing_and_output_writes_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let (file, msgs) = transcript(&dir);
    let before = std::fs::read(&file).unwrap();
    let (code, out, err) = llmem(&[
        "compress",
        "--strategy",
        "selective",
        "--budget",
        "2000",
        "--preview",
        &file,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("summarize")
            && out.contains("keep (system)")
            && out.contains("nothing was changed"),
        "{out}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let (code, out, _) = llmem(&["compress", "--budget", "2000", "--preview", "--json", &file]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["preview"]["actions"].as_array().unwrap().len(), 201);

    let target = dir.path().join("out.jsonl");
    let (code, _, err) = llmem(&[
        "compress",
        "--strategy",
        "deletion",
        "--budget",
        "800",
        "-o",
        target.to_str().unwrap(),
        &file,
    ]);
    assert_eq!(code, 0, "{err}");
    let written: Vec<Message> = std::fs::read_to_string(&target)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written.last(), msgs.last());
    assert!(written.len() < msgs.len());
}

#[test]
fn bad_arguments_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = transcript(&dir);
    let (code, _, err) = llmem(&["compress", "--strategy", "shrink", "--budget", "100", &file]);
    assert_ne!(code, 0);
    assert!(err.contains("sliding_window"), "{err}");
    let (code, _, err) = llmem(&["compress", "--budget", "10", &file]);
    assert_ne!(code, 0);
    assert!(err.contains("budget"), "{err}");
    let (code, _, err) = llmem(&["compress", "--budget", "100", "--ratio", "3", &file]);
    assert_ne!(code, 0);
    assert!(err.contains("compression_ratio"), "{err}");
}

#[test]
fn an_unreachable_llm_falls_back_to_the_extractive_summary_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (file, msgs) = transcript(&dir);
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let (code, out, err) = llmem(&[
        "compress",
        "--budget",
        "1500",
        "--llm-url",
        &url,
        "--timeout",
        "10",
        "--json",
        &file,
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let r = &v["result"];
    assert_eq!(r["method"]["kind"], "extractive");
    assert!(
        r["errors"][0].as_str().unwrap().contains("extractive"),
        "{}",
        r["errors"]
    );
    let kept: Vec<Message> = serde_json::from_value(r["messages"].clone()).unwrap();
    assert_eq!(kept.last(), msgs.last());
    let (code, out, _) = llmem(&[
        "compress",
        "--budget",
        "1500",
        "--llm-url",
        &url,
        "--timeout",
        "10",
        &file,
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("warning: summarizer"), "{out}");
}
