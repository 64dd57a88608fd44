//! `llmem count`: exact counts for OpenAI and open models, JSON output, clear errors.

use std::sync::Arc;

use llmem_tokens::Counters;

use crate::llmem;

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn gpt_4o_counts_are_exact_with_known_ids() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "a.txt", b"hello world");
    let (code, out, err) = llmem(&["count", "--model", "gpt-4o", &f, "--json", "--ids"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["tokens"], 2);
    assert_eq!(v["accuracy"], "exact");
    assert_eq!(v["tokenizer"], "tiktoken:o200k_base");
    // o200k_base ids as published by OpenAI's tiktoken.
    assert_eq!(v["ids"], serde_json::json!([24912, 2375]));
    let (code, out, _) = llmem(&["count", "--model", "gpt-4o", &f]);
    assert_eq!(code, 0);
    assert!(out.starts_with("2 tokens (gpt-4o"), "{out}");
}

#[test]
fn llama_counts_use_the_models_own_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "a.txt", b"hello world");
    let (code, out, err) = llmem(&["count", "--model", "llama-3.1-8b", &f, "--json", "--ids"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // Llama 3's tokenizer.json: "hello" = 15339, " world" = 1917 (no BOS: raw text).
    assert_eq!(v["ids"], serde_json::json!([15339, 1917]));
    assert_eq!(v["tokens"], 2);
    assert_eq!(v["tokenizer"], "hf:llama3");
}

#[test]
fn long_text_counts_equal_the_library_for_several_models() {
    let dir = tempfile::tempdir().unwrap();
    let text = "Caroline went to the LGBTQ support group on 7 May 2023; Melanie painted a sunrise. "
        .repeat(200) + "Ünïcödé, 日本語, emoji 🎉 and code `fn main() {}`\n";
    let f = write(&dir, "long.txt", text.as_bytes());
    let counters = Counters::embedded().unwrap();
    for model in ["gpt-4o", "gpt-4", "llama-3.1-8b", "qwen2.5-7b"] {
        let (code, out, err) = llmem(&["count", "-m", model, &f, "--json"]);
        assert_eq!(code, 0, "{model}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let c: Arc<_> = counters.for_model(model).unwrap();
        assert_eq!(
            v["tokens"].as_u64().unwrap() as usize,
            llmem_core::TokenCounter::count(&*c, &text),
            "{model}"
        );
        assert!(v["tokens"].as_u64().unwrap() > 2000, "{model}: {v}");
    }
}

#[test]
fn transcripts_include_the_chat_framing() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "t.jsonl",
        b"{\"role\":\"system\",\"content\":\"You are helpful.\"}\n\n{\"role\":\"user\",\"content\":\"hello world\"}\n",
    );
    let (code, out, err) = llmem(&["count", "-m", "gpt-4o", "--messages", &f, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // OpenAI: 3 per message + content, + 3 priming the reply: (3+4) + (3+2) + 3.
    assert_eq!(v["tokens"], 15);
    assert_eq!(v["messages"], 2);
}

#[test]
fn estimates_are_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "a.txt", "some text for claude ".repeat(20).as_bytes());
    let (code, out, _) = llmem(&["count", "-m", "claude-sonnet-4-5", &f, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["accuracy"], "estimate");
    assert!(v["mean_abs_error"].as_f64().unwrap() > 0.0);
    let (code, _, err) = llmem(&["count", "-m", "claude-sonnet-4-5", &f, "--ids"]);
    assert_eq!(code, 2);
    assert!(err.contains("estimate"), "{err}");
}

#[test]
fn bad_input_gives_clear_errors_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write(&dir, "a.txt", b"hello");
    let (code, _, err) = llmem(&["count", "-m", "gpt-9-turbo-ultra", &ok]);
    assert_eq!(code, 2);
    assert!(
        err.contains("model `gpt-9-turbo-ultra`") && err.contains("gpt-4o"),
        "{err}"
    );

    let missing = dir.path().join("nope.txt");
    let (code, _, err) = llmem(&["count", "-m", "gpt-4o", &missing.to_string_lossy()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read") && err.contains("nope.txt"),
        "{err}"
    );

    let bad = write(&dir, "bad.txt", b"caf\xe9 latin-1");
    let (code, _, err) = llmem(&["count", "-m", "gpt-4o", &bad]);
    assert_eq!(code, 2);
    assert!(
        err.contains("not valid UTF-8") && err.contains("offset 3"),
        "{err}"
    );

    let broken = write(
        &dir,
        "t.jsonl",
        b"{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"wizard\"}\n",
    );
    let (code, _, err) = llmem(&["count", "-m", "gpt-4o", "--messages", &broken]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2"), "{err}");

    let (code, _, err) = llmem(&["count", &ok]);
    assert_ne!(code, 0);
    assert!(err.contains("--model"), "{err}");
}
