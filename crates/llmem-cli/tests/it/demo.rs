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
