//! `llmem demo --quick`: the shipped conversation through window, compression and long-term
//! memory, on embedded defaults (no model, no key).

use crate::llmem;

fn totals(out: &str) -> serde_json::Value {
    let last = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    serde_json::from_str(last).unwrap()
}

#[test]
fn demo_compresses_saves_and_keeps_answers_in_context() {
    let (code, out, err) = llmem(&["demo", "--quick", "--json"]);
    assert_eq!(code, 0, "{err}\n{out}");
    let v = totals(&out);
    assert!(v["compressions"].as_u64().unwrap() >= 3, "{v}");
    let sent = v["sent_tokens"].as_u64().unwrap();
    let full = v["full_history_tokens"].as_u64().unwrap();
    assert!(
        sent * 2 < full,
        "llmem sends less than half the full history: {v}"
    );
    assert!(v["answer_in_context"].as_f64().unwrap() >= 0.7, "{v}");
    assert!(
        v["mean_prompt_tokens"].as_f64().unwrap() <= v["budget"].as_f64().unwrap(),
        "{v}"
    );
    assert!(out.contains("compressed"), "{out}");
    // The net figure counts what keeping the memory cost: extractive summaries cost nothing.
    assert_eq!(v["compression_tokens"], 0, "{v}");
    assert_eq!(v["summary_calls"], 0, "{v}");
    assert_eq!(
        v["net_saved_tokens"].as_i64().unwrap(),
        full as i64 - sent as i64,
        "{v}"
    );
    assert!(v["net_cost"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        out.contains("net of what keeping the memory cost (0 tokens in 0 summariser"),
        "{out}"
    );
}

/// With the local SmolLM2 (llama.cpp) writing the summaries, what it spent is counted: the net
/// saving is the gross one minus the summariser's tokens.
#[test]
fn demo_counts_the_summarisers_tokens_in_the_net_saving() {
    // A short transcript (two or three compressions, one question) keeps the model's work small.
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("c.jsonl");
    let mut lines = vec![r#"{"role":"system","content":"You are helpful."}"#.to_owned()];
    for i in 0..10 {
        lines.push(format!(
            r#"{{"role":"user","content":"Note {i}: the locker code for room {i} is {}, on floor {}."}}"#,
            1000 + i * 7,
            i % 4
        ));
        lines.push(format!(
            r#"{{"role":"assistant","content":"Noted, room {i} has locker code {}."}}"#,
            1000 + i * 7
        ));
    }
    std::fs::write(&conv, lines.join("\n")).unwrap();
    let qs = dir.path().join("q.jsonl");
    std::fs::write(
        &qs,
        r#"{"question":"What is the locker code for room 3?","answer":"1021"}"#,
    )
    .unwrap();
    let (code, out, err) = llmem(&[
        "demo",
        "--llm",
        "on",
        "--json",
        "--embedder",
        "none",
        "--budget",
        "500",
        "--keep",
        "4",
        "--conversation",
        conv.to_str().unwrap(),
        "--questions",
        qs.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}\n{out}");
    let v = totals(&out);
    let sent = v["sent_tokens"].as_i64().unwrap();
    let full = v["full_history_tokens"].as_i64().unwrap();
    let spent = v["compression_tokens"].as_i64().unwrap();
    assert!(v["summary_calls"].as_u64().unwrap() >= 1, "{v}");
    assert!(spent > 0, "the summariser's tokens are counted: {v}");
    assert_eq!(
        v["net_saved_tokens"].as_i64().unwrap(),
        full - sent - spent,
        "{v}"
    );
    assert!(
        v["savings"].as_f64().unwrap() < v["gross_savings"].as_f64().unwrap(),
        "{v}"
    );
    eprintln!(
        "demo with SmolLM2 summaries: gross {:.1}%, net {:.1}% ({spent} summariser tokens), net ${:.4}",
        100.0 * v["gross_savings"].as_f64().unwrap(),
        100.0 * v["savings"].as_f64().unwrap(),
        v["net_cost"].as_f64().unwrap()
    );
}

#[test]
fn a_smaller_budget_sends_fewer_tokens() {
    let (_, big, _) = llmem(&["demo", "--quick", "--json", "--budget", "1200"]);
    let (code, small, err) = llmem(&["demo", "--quick", "--json", "--budget", "500"]);
    assert_eq!(code, 0, "{err}");
    let (big, small) = (totals(&big), totals(&small));
    assert!(
        small["sent_tokens"].as_u64() < big["sent_tokens"].as_u64(),
        "{small} vs {big}"
    );
    assert!(
        small["mean_prompt_tokens"].as_f64().unwrap() <= 500.0,
        "{small}"
    );
}

#[test]
fn demo_runs_on_a_users_transcript_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("c.jsonl");
    let mut lines = vec![r#"{"role":"system","content":"You are helpful."}"#.to_owned()];
    for i in 0..40 {
        lines.push(format!(
            r#"{{"role":"user","content":"Note {i}: the locker code for room {i} is {}."}}"#,
            1000 + i * 7
        ));
        lines.push(format!(
            r#"{{"role":"assistant","content":"Noted, room {i} has locker code {}."}}"#,
            1000 + i * 7
        ));
    }
    std::fs::write(&conv, lines.join("\n")).unwrap();
    let qs = dir.path().join("q.jsonl");
    std::fs::write(
        &qs,
        r#"{"question":"What is the locker code for room 3?","answer":"1021"}"#,
    )
    .unwrap();
    let (code, out, err) = llmem(&[
        "demo",
        "--quick",
        "--json",
        "--conversation",
        &conv.to_string_lossy(),
        "--questions",
        &qs.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v = totals(&out);
    assert_eq!(v["messages"], 81);
    assert_eq!(
        v["answer_in_context"], 1.0,
        "room 3 was compressed away but retrieved: {out}"
    );

    std::fs::write(&qs, "{\"question\": 1}\n").unwrap();
    let (code, _, err) = llmem(&["demo", "--quick", "--questions", &qs.to_string_lossy()]);
    assert_eq!(code, 2);
    assert!(err.contains("questions line 1"), "{err}");
    let (code, _, err) = llmem(&["demo", "--quick", "--budget", "50"]);
    assert_eq!(code, 2);
    assert!(err.contains("--budget"), "{err}");
}
