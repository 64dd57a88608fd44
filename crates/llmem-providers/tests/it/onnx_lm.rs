//! `OnnxLmSummarizer` on a tiny random causal LM in the optimum layout, built by
//! `assets/make_tiny_lm.py` with the Python `onnx` package; its greedy tokens must equal a
//! Python onnxruntime greedy decode of the same model.

use std::path::Path;
use std::process::Command;

use llmem_core::test_kit::summarizer_conformance;
use llmem_providers::assets;
use llmem_providers::onnx::OnnxLmSummarizer;

use crate::onnx_embedder::python;

fn python_run(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run Python ({e}); run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`"));
    assert!(
        out.status.success(),
        "Python failed (run `cargo xtask setup`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A temp dir with the tiny model and the MiniLM tokenizer.json next to it.
fn tiny_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tok_src = assets::cache_dir().join("models/all-minilm-l6-v2/tokenizer.json");
    assert!(
        tok_src.exists(),
        "{} is missing: run `cargo xtask setup`",
        tok_src.display()
    );
    std::fs::copy(&tok_src, dir.path().join("tokenizer.json")).unwrap();
    let vocab = python_run(&[
        "-c",
        "import sys; from tokenizers import Tokenizer; print(Tokenizer.from_file(sys.argv[1]).get_vocab_size())",
        tok_src.to_str().unwrap(),
    ]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/assets/make_tiny_lm.py");
    let model = dir.path().join("model.onnx");
    python_run(&[
        script.to_str().unwrap(),
        model.to_str().unwrap(),
        vocab.trim(),
        "1",
    ]);
    dir
}

const REFERENCE: &str = r#"
import json, sys
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
model, tok_path, prompt, max_new = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tok = Tokenizer.from_file(tok_path); tok.no_padding(); tok.no_truncation()
eos = next((tok.token_to_id(t) for t in ["<|im_end|>", "<|endoftext|>", "</s>", "[SEP]"] if tok.token_to_id(t) is not None), None)
banned = {i for i, t in tok.get_added_tokens_decoder().items() if t.special and i != eos}
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
pk = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
heads, dim = pk[0].shape[1], pk[0].shape[3]
past = {i.name: np.zeros((1, heads, 0, dim), np.float32) for i in pk}
cur, plen, out = tok.encode(prompt, add_special_tokens=False).ids, 0, []
for step in range(max_new):
    n = len(cur); total = plen + n
    feed = {"input_ids": np.array([cur], np.int64), "attention_mask": np.ones((1, total), np.int64),
            "position_ids": np.arange(plen, total, dtype=np.int64)[None, :], **past}
    res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    row = res["logits"][0, -1].copy()
    for b in banned: row[b] = -np.inf
    if step == 0 and eos is not None: row[eos] = -np.inf
    nxt = int(np.argmax(row))
    past = {k: res[k.replace("past_key_values", "present")] for k in past}
    plen = total
    if nxt == eos: break
    out.append(nxt); cur = [nxt]
print(json.dumps(out))
"#;

#[tokio::test]
async fn tiny_lm_greedy_matches_python_and_passes_summarizer_conformance() {
    let dir = tiny_model();
    let model = dir.path().join("model.onnx");
    let s = OnnxLmSummarizer::builder()
        .with_model_path(&model)
        .with_threads(2)
        .build()
        .unwrap_or_else(|e| panic!("{e}\n(run `cargo xtask setup`)"));
    let prompt = "User: my name is Kha and I deploy FastAPI on Kubernetes.\n\nAssistant:";
    let got = s.generate_ids(prompt, 12).unwrap();
    let want: Vec<u32> = serde_json::from_str(&python_run(&[
        "-c",
        REFERENCE,
        model.to_str().unwrap(),
        dir.path().join("tokenizer.json").to_str().unwrap(),
        prompt,
        "12",
    ]))
    .unwrap();
    assert!(!got.is_empty());
    assert_eq!(
        got, want,
        "greedy decoding with the key/value cache equals Python onnxruntime's"
    );
    summarizer_conformance(&s).await;
}

#[test]
fn a_model_without_past_inputs_is_refused() {
    let tok = assets::cache_dir().join("models/all-minilm-l6-v2");
    let err = OnnxLmSummarizer::builder()
        .with_model_path(tok.join("model.onnx"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("past_key_values"), "{err}");
}

/// `kind = "onnx-lm"` builds the summarizer from a table, as `[summarizer]` in llmem.toml
/// does; an unknown key or a missing model is named.
#[tokio::test]
async fn the_summarizer_registry_builds_onnx_lm_from_toml() {
    let dir = tiny_model();
    let model = dir.path().join("model.onnx");
    let table: toml::Table = toml::from_str(&format!(
        "kind = \"onnx-lm\"\nmodel_path = {:?}\nthreads = 1\ncontext_window = 512\n",
        model.display().to_string()
    ))
    .unwrap();
    let registry = llmem_providers::summarizer_registry();
    assert!(registry.kinds().contains(&"onnx-lm"));
    let s = registry.build(&table).unwrap();
    assert_eq!(s.context_window(), 512);
    summarizer_conformance(s.as_ref()).await;

    let mut bad = table.clone();
    bad.insert("temprature".into(), toml::Value::Float(0.1));
    let e = registry
        .build(&bad)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("temprature"), "{e}");
    let mut missing = table;
    missing.insert(
        "model_path".into(),
        toml::Value::String("/nonexistent/model.onnx".into()),
    );
    let e = registry
        .build(&missing)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("/nonexistent/model.onnx"), "{e}");
}
