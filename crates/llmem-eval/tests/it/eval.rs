//! `llmem-eval locomo` on one LoCoMo conversation (conv-30, the smallest of the dev half), with
//! the real ONNX embedder, through the product's `MemoryManager`: the figures, the JSON keys,
//! the plot, and the errors.

use crate::{llmem_eval, llmem_eval_env, locomo};

fn data() -> String {
    locomo::path().to_string_lossy().into_owned()
}

fn run_json(extra: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval/conv30.json");
    let data = data();
    let mut args = vec!["locomo", "--data", &data, "--sample", "conv-30", "--quiet"];
    let out_s = out.to_string_lossy().into_owned();
    args.extend(["--json", &out_s]);
    args.extend(extra);
    let (code, stdout, err) = llmem_eval(&args);
    assert_eq!(code, 0, "{err}\n{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let svg = std::fs::read_to_string(out.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("recall@"), "{svg}");
    (v, stdout)
}

#[test]
fn eval_locomo_measures_recall_context_and_latency() {
    let (v, stdout) = run_json(&["--embedder", "onnx", "--settings", "eval"]);
    assert!(stdout.contains("hybrid (BM25 + onnx"), "{stdout}");
    assert!(stdout.contains("pipeline: MemoryManager"), "{stdout}");
    for key in [
        "questions",
        "recall_at_k",
        "answer_in_context",
        "mean_context_tokens",
        "search_p50_ms",
        "search_p95_ms",
        "ingest_turns_per_s",
        "per_category",
        "evidence_in_context",
        "recall_at_5",
        "recall_at_10",
        "recall_at_20",
        "recall_at_50",
        "budget_curve",
        "full_conversation_tokens",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    let f = |k: &str| v[k].as_f64().unwrap();
    assert_eq!(v["questions"], 105, "conv-30 has 105 questions");
    // Far above what vectors alone reach here (~0.35), the hybrid keeps most evidence.
    assert!(f("recall_at_k") >= 0.6, "{v}");
    assert!(
        f("answer_in_context") <= f("answer_in_full_conversation"),
        "{v}"
    );
    assert!(f("answer_in_context") >= 0.35, "{v}");
    assert!(
        f("mean_context_tokens") <= 1500.0 && f("mean_context_tokens") > 1000.0,
        "{v}"
    );
    assert!(
        f("search_p50_ms") > 0.0 && f("search_p95_ms") >= f("search_p50_ms"),
        "{v}"
    );
    assert!(f("ingest_turns_per_s") > 0.0, "{v}");
    let per = v["per_category"].as_object().unwrap();
    assert_eq!(
        per.values()
            .map(|c| c["questions"].as_u64().unwrap())
            .sum::<u64>(),
        105
    );
    // Relative dates are resolved at ingest: "when" questions find their dates.
    assert!(
        per["temporal"]["answer_in_context"].as_f64().unwrap() >= 0.6,
        "{v}"
    );
    assert!(per["adversarial"]["answer_in_context"].is_null(), "{v}");

    // Recall grows with the cut-off; the wider search's top 10 is the top k's.
    let r: Vec<f64> = [5, 10, 20, 50]
        .iter()
        .map(|k| f(&format!("recall_at_{k}")))
        .collect();
    assert!(r.windows(2).all(|w| w[0] <= w[1]), "{r:?}");
    assert!((r[1] - f("recall_at_k")).abs() < 0.02, "{r:?} {v}");
    // All of a question's evidence traced into the prompt: the floors of conv-30.
    assert!(f("evidence_in_context") >= EVIDENCE_IN_CONTEXT_FLOOR, "{v}");
    assert!(
        per["multi-hop"]["evidence_in_context"].as_f64().unwrap() >= MULTI_HOP_FLOOR,
        "{v}"
    );
    // The budget curve: more room holds more evidence, under each budget.
    let curve = v["budget_curve"].as_array().unwrap();
    let budgets: Vec<u64> = curve
        .iter()
        .map(|p| p["budget"].as_u64().unwrap())
        .collect();
    assert_eq!(budgets, [1000, 1500, 3000, 6000]);
    let held: Vec<f64> = curve
        .iter()
        .map(|p| p["evidence_in_context"].as_f64().unwrap())
        .collect();
    assert!(held.windows(2).all(|w| w[0] <= w[1] + 0.02), "{held:?}");
    assert!(held[3] > held[0], "{held:?}");
    assert!(
        (held[1] - f("evidence_in_context")).abs() < 1e-9,
        "the curve's 1,500 is the run's own prompt: {v}"
    );
    for p in curve {
        let b = p["budget"].as_f64().unwrap();
        assert!(p["mean_context_tokens"].as_f64().unwrap() <= b, "{p}");
    }
    assert!(f("full_conversation_tokens") > 6000.0, "{v}");
}

/// conv-30's floors for `evidence_in_context` at 1,500 tokens: measured 89.5% and 45.5% (5 of 11
/// multi-hop questions) in a release build on 2026-12-04, a little room left for ties.
const EVIDENCE_IN_CONTEXT_FLOOR: f64 = 0.85;
const MULTI_HOP_FLOOR: f64 = 0.35;

#[test]
fn a_smaller_budget_sends_less_and_lexical_search_works_alone() {
    let (small, stdout) = run_json(&[
        "--settings",
        "eval",
        "--embedder",
        "none",
        "--budget",
        "400",
        "--k",
        "5",
        "--facts",
        "heuristic",
        "--no-curve",
    ]);
    assert!(stdout.contains("BM25 only"), "{stdout}");
    assert!(
        small["mean_context_tokens"].as_f64().unwrap() <= 400.0,
        "{small}"
    );
    assert!(small["recall_at_k"].as_f64().unwrap() > 0.3, "{small}");
    assert!(stdout.contains("recall@5"), "{stdout}");
}

#[test]
fn eval_rejects_bad_input_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = data();
    let (code, _, err) = llmem_eval(&["locomo", "--data", "/nonexistent/locomo.json"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/nonexistent/locomo.json") && err.contains("LoCoMo JSON file"),
        "{err}"
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"not": "a list"}"#).unwrap();
    let (code, _, err) = llmem_eval(&["locomo", "--data", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected a JSON list of samples"), "{err}");

    std::fs::write(
        &bad,
        r#"[{"sample_id": "x", "conversation": {"session_1": [], "session_1_date_time": "yesterday"}, "qa": []}]"#,
    )
    .unwrap();
    let (code, _, err) = llmem_eval(&["locomo", "--data", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("session_1_date_time") && err.contains("1:56 pm on 8 May, 2023"),
        "{err}"
    );

    let (code, _, err) = llmem_eval(&["locomo", "--data", &data, "--sample", "conv-999"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no samples") && err.contains("conv-999"),
        "{err}"
    );

    let (code, _, err) = llmem_eval(&["locomo", "--data", &data, "--budget", "100"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--budget 100 is too small") && err.contains("at least 200"),
        "{err}"
    );
    let (code, _, err) = llmem_eval(&["locomo", "--data", &data, "--k", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--k must be at least 1"), "{err}");
    let (code, _, err) = llmem_eval(&["locomo", "--data", &data, "--curve", "1000,150"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--curve 150 is too small"), "{err}");
}

/// The retrieval weights come from the `LLMEM_RETRIEVAL_*` variables: a bad value is an error
/// that names the key, a good one is the run's and its first line says so (here over the
/// product's default settings, `--settings product`).
#[test]
fn eval_takes_the_retrieval_weights_from_the_environment() {
    let data = data();
    let run = |value: &str| {
        let args = [
            "locomo",
            "--data",
            &data,
            "--sample",
            "conv-30",
            "--quiet",
            "--embedder",
            "none",
            "--no-curve",
            "--settings",
            "product",
        ];
        llmem_eval_env(&args, None, &[("LLMEM_RETRIEVAL_SESSION_WEIGHT", value)])
    };
    let (code, _, err) = run("3");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("retrieval.session_weight") && err.contains("[0, 1]"),
        "{err}"
    );
    let (code, stdout, err) = run("0");
    assert_eq!(code, 0, "{err}");
    // The product's defaults as shipped: the run says so.
    assert!(
        stdout.contains("the product's default settings"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "vector weight 0.3, question weight 0.7, session weight 0, late interaction 0.5, reply share 0.6)"
        ),
        "{stdout}"
    );
}

/// The product's defaults as shipped, what a run measures unless told `--settings eval`, over
/// two conversations, each also asked the other's first 40 questions: the relevance gate lets
/// most of this user's evidence into the prompt and few of the questions about someone else
/// recall anything (`off_topic_*`).
#[test]
fn the_product_defaults_recall_evidence_and_leave_off_topic_questions_alone() {
    let (v, stdout) = run_json(&["--embedder", "onnx", "--no-curve", "--sample", "conv-26"]);
    assert_eq!(v["settings"], "product", "the default settings: {v}");
    assert!(
        stdout.contains("the product's default settings"),
        "{stdout}"
    );
    assert!(stdout.contains("off-topic (80 questions"), "{stdout}");
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {v}"));
    assert_eq!(v["off_topic_questions"], 80, "{v}");
    assert!(f("off_topic_recalling") <= 0.2, "{v}");
    assert!(f("off_topic_memories") <= 3.0, "{v}");
    // 84.1% on these two in the release run of docs/eval.md (64.8% over all five before the
    // gate judged questions by their best match and k went from 5 to 20).
    assert!(f("evidence_in_context") >= 0.75, "{v}");
    assert!(f("mean_context_tokens") <= 1500.0, "{v}");
    for (id, s) in v["per_sample"].as_object().unwrap() {
        assert_eq!(s["off_topic_questions"], 40, "{id}: {s}");
        assert!(
            s["evidence_questions_in_context"].as_u64() <= s["evidence_questions"].as_u64(),
            "{id}: {s}"
        );
    }
}

#[test]
fn answer_mode_scores_the_local_models_answers() {
    let (v, _) = run_json(&[
        "--settings",
        "eval",
        "--embedder",
        "none",
        "--no-curve",
        "--answer",
        "--answer-limit",
        "3",
    ]);
    let f1 = v["answer_f1"].as_f64().expect("answer_f1 with --answer");
    assert!((0.0..=1.0).contains(&f1), "{v}");
}
