//! The local MiniLM embedder on ONNX Runtime: conformance, and cosine similarities and
//! late-interaction (MaxSim) scores within 0.01 of Python onnxruntime on the same model and
//! tokenizer.

use std::path::PathBuf;
use std::process::Command;

use llmem_core::Embedder;
use llmem_core::test_kit::embedder_conformance;
use llmem_providers::assets;
use llmem_providers::onnx::{OnnxEmbedder, OnnxEmbedderBuilder};

pub fn embedder() -> OnnxEmbedder {
    OnnxEmbedderBuilder::from_env()
        .with_threads(2)
        .with_batch_size(8)
        .build()
        .unwrap_or_else(|e| panic!("the ONNX embedder could not load: {e}\nRun `cargo xtask setup`, then `eval \"$(cargo xtask env)\"`."))
}

pub fn python() -> PathBuf {
    std::env::var_os("LLMEM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| assets::cache_dir().join("venv/bin/python"))
}

const PAIRS: [(&str, &str); 5] = [
    ("The cat sat on the mat.", "A cat was sitting on a rug."),
    (
        "The cat sat on the mat.",
        "Quarterly revenue grew by twelve percent.",
    ),
    (
        "How do I reset my password?",
        "I forgot my login credentials and need to change them.",
    ),
    (
        "We moved to Lisbon in March 2023.",
        "In spring 2023 our family relocated to Portugal's capital.",
    ),
    (
        "Rust guarantees memory safety without a garbage collector.",
        "Bananas are rich in potassium.",
    ),
];

const REFERENCE: &str = r#"
import json, sys
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
model_dir, pairs = sys.argv[1], json.loads(sys.argv[2])
tok = Tokenizer.from_file(model_dir + "/tokenizer.json")
tok.no_padding()
sess = ort.InferenceSession(model_dir + "/model.onnx", providers=["CPUExecutionProvider"])
names = [i.name for i in sess.get_inputs()]
def embed(text):
    e = tok.encode(text)
    feed = {"input_ids": np.array([e.ids], dtype=np.int64), "attention_mask": np.array([e.attention_mask], dtype=np.int64)}
    if "token_type_ids" in names:
        feed["token_type_ids"] = np.array([e.type_ids], dtype=np.int64)
    h = sess.run(None, feed)[0][0]
    m = np.array(e.attention_mask, dtype=np.float32)[:, None]
    v = (h * m).sum(0) / m.sum()
    t = h[[i for i, s in enumerate(e.special_tokens_mask) if s == 0]]
    return v / np.linalg.norm(v), t / np.linalg.norm(t, axis=1, keepdims=True)
def max_sim(q, d):
    return float((q @ d.T).max(axis=1).mean())
out = []
for a, b in pairs:
    (va, ta), (vb, tb) = embed(a), embed(b)
    out.append([float(va @ vb), max_sim(ta, tb), len(ta)])
print(json.dumps(out))
"#;

#[tokio::test]
async fn minilm_passes_embedder_conformance() {
    let e = embedder();
    assert_eq!(e.dimensions(), 384);
    embedder_conformance(&e).await;
    // More texts than one batch (8), of lengths in no order: the runs take them shortest
    // first, and each text still gets its own vector and token vectors, as alone.
    let texts: Vec<String> = (0..19)
        .map(|i| {
            format!(
                "sentence number {i}{}",
                " about what the memory keeps".repeat((i * 7) % 5)
            )
        })
        .collect();
    let all = e.embed_with_tokens(&texts).await.unwrap();
    assert_eq!(all.len(), texts.len());
    for (text, got) in texts.iter().zip(&all) {
        let alone = e
            .embed_with_tokens(std::slice::from_ref(text))
            .await
            .unwrap();
        let diff = got
            .vector
            .iter()
            .zip(&alone[0].vector)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff < 1e-4,
            "batching changed the vector of {text:?} by {diff}"
        );
        let tokens = |e: &llmem_core::Embedded| e.tokens.as_ref().map(|t| t.len());
        assert_eq!(tokens(got), tokens(&alone[0]), "token vectors of {text:?}");
    }
}

#[tokio::test]
async fn cosines_match_python_onnxruntime() {
    let e = embedder();
    let model_dir = assets::cache_dir().join("models/all-minilm-l6-v2");
    let pairs: Vec<[&str; 2]> = PAIRS.iter().map(|(a, b)| [*a, *b]).collect();
    let out = Command::new(python())
        .arg("-c")
        .arg(REFERENCE)
        .arg(&model_dir)
        .arg(serde_json::to_string(&pairs).unwrap())
        .output()
        .unwrap_or_else(|err| panic!("could not run the Python reference ({err}); run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`"));
    assert!(
        out.status.success(),
        "Python reference failed (run `cargo xtask setup`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Per pair: cosine, MaxSim of the first text against the second, the first's tokens.
    let want: Vec<(f32, f32, usize)> = serde_json::from_slice(&out.stdout).unwrap();
    let texts: Vec<String> = PAIRS
        .iter()
        .flat_map(|(a, b)| [a.to_string(), b.to_string()])
        .collect();
    let vs = e.embed(&texts).await.unwrap();
    let with_tokens = e.embed_with_tokens(&texts).await.unwrap();
    for (i, (cos, max_sim, n)) in want.iter().enumerate() {
        let got: f32 = vs[2 * i]
            .iter()
            .zip(&vs[2 * i + 1])
            .map(|(a, b)| a * b)
            .sum();
        assert!(
            (got - cos).abs() < 0.01,
            "pair {i} {:?}: rust {got} vs python {cos}",
            PAIRS[i]
        );
        let (a, b) = (&with_tokens[2 * i], &with_tokens[2 * i + 1]);
        assert_eq!(
            a.vector,
            vs[2 * i],
            "the same vector with or without tokens"
        );
        let (ta, tb) = (a.tokens.as_ref().unwrap(), b.tokens.as_ref().unwrap());
        assert_eq!(
            (ta.len(), ta.dim()),
            (*n, 384),
            "pair {i}: tokens, special ones left out"
        );
        let got = ta.max_sim(tb);
        assert!(
            (got - max_sim).abs() < 0.01,
            "pair {i} {:?}: MaxSim rust {got} vs python {max_sim}",
            PAIRS[i]
        );
        assert!((ta.max_sim(ta) - 1.0).abs() < 1e-4, "a text matches itself");
    }
    let cosines: Vec<f32> = want.iter().map(|w| w.0).collect();
    let sims: Vec<f32> = want.iter().map(|w| w.1).collect();
    assert!(
        cosines[0] > cosines[1] && cosines[2] > cosines[4],
        "the reference itself is sensible: {want:?}"
    );
    assert!(
        sims[0] > sims[1] && sims[3] > sims[4],
        "MaxSim prefers the paraphrase: {want:?}"
    );
}

#[test]
fn a_missing_model_names_the_setup_command() {
    let err = OnnxEmbedderBuilder::new()
        .with_model_path("/nonexistent/model.onnx")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("cargo xtask setup"), "{err}");
}

/// Which execution provider ran: a profiled run's nodes all ran on the CPU here (the CPU build
/// of ONNX Runtime), which `ProfileSummary` reads from ONNX Runtime's own profile; asking for
/// CUDA on this runtime is an error that says what to install, and `auto` falls back.
#[test]
fn the_profile_names_the_provider_that_ran_and_cuda_is_refused_without_its_runtime() {
    use llmem_providers::onnx::{Device, ProfileSummary};
    let dir = tempfile::tempdir().unwrap();
    let e = OnnxEmbedderBuilder::from_env()
        .with_threads(2)
        .with_device(Device::Cpu)
        .with_profiling(dir.path().join("embed"))
        .build()
        .unwrap();
    assert_eq!(e.provider(), "CPU");
    e.embed_blocking(&["The cat sat on the mat.".to_owned()])
        .unwrap();
    let p = ProfileSummary::read(&e.end_profiling().unwrap()).unwrap();
    assert_eq!(
        p.by_provider.keys().collect::<Vec<_>>(),
        ["CPUExecutionProvider"],
        "{p:?}"
    );
    let (runs, _) = p.by_provider["CPUExecutionProvider"];
    // The probe run at build time and this one, each over the whole graph.
    assert!(runs >= 20, "{p:?}");
    assert!(
        p.ops["CPUExecutionProvider"]
            .iter()
            .any(|o| o.starts_with("MatMul")),
        "{p:?}"
    );
    assert!((p.time_share("CPUExecutionProvider") - 1.0).abs() < 1e-9);
    assert_eq!(p.time_share("CUDAExecutionProvider"), 0.0);

    let err = OnnxEmbedderBuilder::from_env()
        .with_device(Device::Cuda)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CUDA") && (err.contains("onnxruntime-gpu") || err.contains("`cuda` feature")),
        "{err}"
    );
    let auto = OnnxEmbedderBuilder::from_env()
        .with_threads(2)
        .with_device(Device::Auto)
        .build()
        .unwrap();
    assert_eq!(auto.provider(), "CPU");

    let bad = std::fs::write(dir.path().join("x.json"), "{}");
    bad.unwrap();
    let err = ProfileSummary::read(&dir.path().join("x.json")).unwrap_err();
    assert!(
        err.to_string().contains("not an ONNX Runtime profile"),
        "{err}"
    );
}

/// The quantised copy that setup writes (`quantized = true`): its weight products run in int8
/// (ONNX Runtime's profile says which operators ran), a text embeds the same alone and among
/// others (the conformance kit checks it), each vector stays near the exact model's, and the
/// pairs keep their cosines within 0.05; naming a model or a batch size too is an error that
/// says what to remove.
#[tokio::test]
async fn the_quantized_model_runs_in_int8_near_the_exact_one() {
    use llmem_providers::onnx::ProfileSummary;
    let dir = tempfile::tempdir().unwrap();
    let table: toml::Table = toml::from_str("quantized = true\nthreads = 2").unwrap();
    let q = OnnxEmbedderBuilder::from_table(&table)
        .unwrap()
        .with_profiling(dir.path().join("int8"))
        .build()
        .unwrap_or_else(|e| panic!("the quantised model could not load: {e}"));
    assert_eq!(q.name(), "onnx:all-minilm-l6-v2/model-int8");
    assert_eq!(q.dimensions(), 384);
    embedder_conformance(&q).await;
    let e = embedder();
    assert_eq!(e.name(), "onnx:all-minilm-l6-v2");

    let texts: Vec<String> = PAIRS
        .iter()
        .flat_map(|(a, b)| [a.to_string(), b.to_string()])
        .collect();
    let exact = e.embed(&texts).await.unwrap();
    let int8 = q.embed(&texts).await.unwrap();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for (i, text) in texts.iter().enumerate() {
        let c = dot(&exact[i], &int8[i]);
        assert!(
            c > 0.95,
            "{text:?}: the int8 vector is at cosine {c} of the exact one"
        );
        assert!(
            c < 0.999_999,
            "{text:?}: the same vector, so not the quantised model"
        );
    }
    for i in 0..PAIRS.len() {
        let (a, b) = (
            dot(&exact[2 * i], &exact[2 * i + 1]),
            dot(&int8[2 * i], &int8[2 * i + 1]),
        );
        assert!(
            (a - b).abs() < 0.05,
            "pair {i} {:?}: exact {a} vs int8 {b}",
            PAIRS[i]
        );
    }

    let p = ProfileSummary::read(&q.end_profiling().unwrap()).unwrap();
    let ops = &p.ops["CPUExecutionProvider"];
    assert!(
        ops.iter()
            .any(|o| o.contains("Integer") || o.contains("Quantize")),
        "no int8 operator ran: {ops:?}"
    );

    let err = OnnxEmbedderBuilder::new()
        .with_quantized(true)
        .with_model_path(assets::cache_dir().join("models/all-minilm-l6-v2/model.onnx"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model_path") && err.contains("quantized"),
        "{err}"
    );
    let err = OnnxEmbedderBuilder::new()
        .with_quantized(true)
        .with_batch_size(8)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batch_size = 8") && err.contains("one text at a time"),
        "{err}"
    );
    let err = OnnxEmbedderBuilder::new()
        .with_quantized(true)
        .with_device(llmem_providers::onnx::Device::Cuda)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("runs on the CPU") && err.contains("device"),
        "{err}"
    );
    assert_eq!(q.provider(), "CPU");
}
