//! The report: what each question measured ([`Outcome`]), the figures overall and per category
//! (the JSON keys), the table printed at the end, the SVG plot, and the files written.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::locomo::CATEGORIES;

/// What one question measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The conversation it was asked of (`sample_id`).
    pub sample: String,
    /// The question's LoCoMo category.
    pub category: u8,
    /// Its evidence turns, and how many of them were in the top k.
    pub evidence: usize,
    pub evidence_found: usize,
    /// How many of them were in the top 5, 10, 20 and 50 ([`crate::RECALL_KS`]).
    pub evidence_found_at: [usize; 4],
    /// Whether all of them were in the prompt at `--budget`, traced by `dia_id` through the
    /// memories that entered it; `None` without evidence.
    pub evidence_in_context: Option<bool>,
    /// The budget curve: each budget, whether all the evidence was in its prompt, and the
    /// prompt's tokens.
    pub at_budget: Vec<(usize, Option<bool>, usize)>,
    /// `None` for adversarial questions.
    pub answer_in_context: Option<bool>,
    /// Whether the gold answer is anywhere in the conversation's memories (the ceiling of
    /// `answer_in_context`: what sending everything would score).
    pub answer_in_conversation: Option<bool>,
    /// The size of the prompt, counted by the model's tokenizer.
    pub context_tokens: usize,
    /// The time the search took.
    pub search_ms: f64,
    /// With `--answer`: the token F1 of the local model's answer.
    pub f1: Option<f64>,
}

/// The value at share `p` (0..=1) of a sorted list, nearest rank; 0 when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `part / whole`, or null when there is no whole.
fn ratio(part: usize, whole: usize) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!(part as f64 / whole as f64)
    }
}

/// The share of `xs` that hold, or null when there are none.
fn share(xs: &[bool]) -> Value {
    ratio(xs.iter().filter(|x| **x).count(), xs.len())
}

/// The figures of a set of outcomes (the JSON keys of the issue).
pub fn summarise(outcomes: &[&Outcome]) -> serde_json::Map<String, Value> {
    let evidence: usize = outcomes.iter().map(|o| o.evidence).sum();
    let found: usize = outcomes.iter().map(|o| o.evidence_found).sum();
    let answerable: Vec<bool> = outcomes
        .iter()
        .filter_map(|o| o.answer_in_context)
        .collect();
    let anywhere: Vec<bool> = outcomes
        .iter()
        .filter_map(|o| o.answer_in_conversation)
        .collect();
    let mut ms: Vec<f64> = outcomes.iter().map(|o| o.search_ms).collect();
    ms.sort_by(f64::total_cmp);
    let n = outcomes.len().max(1) as f64;
    let mut m = serde_json::Map::new();
    m.insert("questions".into(), json!(outcomes.len()));
    m.insert("recall_at_k".into(), ratio(found, evidence));
    // The counts behind recall, so that figures of several runs or conversations pool exactly.
    m.insert("evidence_turns".into(), json!(evidence));
    m.insert("evidence_found".into(), json!(found));
    for (i, k) in crate::RECALL_KS.iter().enumerate() {
        let found: usize = outcomes.iter().map(|o| o.evidence_found_at[i]).sum();
        m.insert(format!("recall_at_{k}"), ratio(found, evidence));
    }
    let in_context: Vec<bool> = outcomes
        .iter()
        .filter_map(|o| o.evidence_in_context)
        .collect();
    m.insert("evidence_in_context".into(), share(&in_context));
    // Its counts too: the questions with evidence, and those with all of it in the prompt.
    m.insert("evidence_questions".into(), json!(in_context.len()));
    m.insert(
        "evidence_questions_in_context".into(),
        json!(in_context.iter().filter(|x| **x).count()),
    );
    m.insert("answer_in_context".into(), share(&answerable));
    m.insert("answer_in_full_conversation".into(), share(&anywhere));
    m.insert(
        "mean_context_tokens".into(),
        json!(outcomes.iter().map(|o| o.context_tokens).sum::<usize>() as f64 / n),
    );
    m.insert("search_p50_ms".into(), json!(percentile(&ms, 0.5)));
    m.insert("search_p95_ms".into(), json!(percentile(&ms, 0.95)));
    let f1: Vec<f64> = outcomes.iter().filter_map(|o| o.f1).collect();
    if !f1.is_empty() {
        m.insert(
            "answer_f1".into(),
            json!(f1.iter().sum::<f64>() / f1.len() as f64),
        );
    }
    m
}

/// The report of a run: the figures of all questions ([`summarise`]), the ingest speed, and
/// the figures of each category that has questions (`per_category`).
pub fn report(
    outcomes: &[Outcome],
    turns: usize,
    ingest_secs: f64,
) -> serde_json::Map<String, Value> {
    let mut report = summarise(&outcomes.iter().collect::<Vec<_>>());
    report.insert(
        "ingest_turns_per_s".into(),
        json!(turns as f64 / ingest_secs.max(1e-9)),
    );
    let mut per = BTreeMap::new();
    for (c, name) in CATEGORIES {
        let these: Vec<&Outcome> = outcomes.iter().filter(|o| o.category == c).collect();
        if !these.is_empty() {
            per.insert(name.to_owned(), Value::Object(summarise(&these)));
        }
    }
    report.insert("per_category".into(), json!(per));
    let mut samples: Vec<&str> = outcomes.iter().map(|o| o.sample.as_str()).collect();
    samples.dedup();
    let per_sample: serde_json::Map<String, Value> = samples
        .into_iter()
        .map(|id| {
            let these: Vec<&Outcome> = outcomes.iter().filter(|o| o.sample == id).collect();
            (id.to_owned(), Value::Object(summarise(&these)))
        })
        .collect();
    report.insert("per_sample".into(), Value::Object(per_sample));
    report.insert("budget_curve".into(), Value::Array(budget_curve(outcomes)));
    report
}

/// Per budget of the curve: `evidence_in_context` overall and on multi-hop questions, and the
/// prompts' mean size.
pub fn budget_curve(outcomes: &[Outcome]) -> Vec<Value> {
    let mut budgets: Vec<usize> = outcomes
        .iter()
        .flat_map(|o| o.at_budget.iter().map(|(b, _, _)| *b))
        .collect();
    budgets.sort_unstable();
    budgets.dedup();
    budgets
        .into_iter()
        .map(|b| {
            let at = |o: &Outcome| o.at_budget.iter().find(|(x, _, _)| *x == b).copied();
            let all: Vec<bool> = outcomes.iter().filter_map(|o| at(o)?.1).collect();
            let multi: Vec<bool> = outcomes
                .iter()
                .filter(|o| o.category == 1)
                .filter_map(|o| at(o)?.1)
                .collect();
            let tokens: Vec<usize> = outcomes.iter().filter_map(|o| Some(at(o)?.2)).collect();
            json!({
                "budget": b,
                "evidence_in_context": share(&all),
                "multi_hop_evidence_in_context": share(&multi),
                "mean_context_tokens": tokens.iter().sum::<usize>() as f64 / tokens.len().max(1) as f64,
            })
        })
        .collect()
}

/// Writes the report as JSON to `json` (when given) and the plot to `plot`, or next to the JSON
/// as `.svg`; says what it wrote.
pub fn write(
    report: &serde_json::Map<String, Value>,
    k: usize,
    budget: usize,
    json: Option<&Path>,
    plot: Option<&Path>,
) -> Result<()> {
    if let Some(path) = json {
        write_file(path, &serde_json::to_string_pretty(report)?)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = plot
        .map(Path::to_path_buf)
        .or_else(|| json.map(|p| p.with_extension("svg")))
    {
        write_file(&path, &plot_svg(report, k, budget))?;
        println!("wrote {}", path.display());
        if let Some(svg) = curve_svg(report) {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            let curve = path.with_file_name(format!("{}-budget.svg", stem.unwrap_or_default()));
            write_file(&curve, &svg)?;
            println!("wrote {}", curve.display());
        }
    }
    Ok(())
}

/// The budget curve as a standalone SVG: the share of questions with all their evidence in the
/// prompt, overall and on multi-hop questions, at each budget; `None` without a curve.
pub fn curve_svg(report: &serde_json::Map<String, Value>) -> Option<String> {
    let points = report.get("budget_curve")?.as_array()?;
    if points.is_empty() {
        return None;
    }
    let (w, h, left, top, plot_w, plot_h) = (720.0, 340.0, 60.0, 50.0, 600.0, 220.0);
    let x = |i: usize| left + 20.0 + plot_w * i as f64 / (points.len().max(2) - 1) as f64 * 0.9;
    let y = |v: f64| top + plot_h * (1.0 - v.clamp(0.0, 1.0));
    let whole = report
        .get("full_conversation_tokens")
        .and_then(Value::as_f64)
        .map(|t| format!(" (a whole conversation: {t:.0} tokens)"))
        .unwrap_or_default();
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"24\" font-size=\"15\">LoCoMo: all evidence in the prompt, by budget{whole}</text>\n"
    );
    for i in 0..=4 {
        let v = f64::from(i) * 0.25;
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{3}\" text-anchor=\"end\">{4:.0}%</text>\n",
            y(v),
            left + plot_w,
            left - 6.0,
            y(v) + 4.0,
            v * 100.0
        ));
    }
    for (key, color) in [
        ("evidence_in_context", "#4c78a8"),
        ("multi_hop_evidence_in_context", "#f58518"),
    ] {
        let line: Vec<String> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some(format!("{},{}", x(i), y(p[key].as_f64()?))))
            .collect();
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
            line.join(" ")
        ));
        for (i, p) in points.iter().enumerate() {
            if let Some(v) = p[key].as_f64() {
                s.push_str(&format!(
                    "<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{:.0}</text>\n",
                    x(i),
                    y(v),
                    x(i),
                    y(v) - 6.0,
                    v * 100.0
                ));
            }
        }
    }
    for (i, p) in points.iter().enumerate() {
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{} tokens</text>\n",
            x(i),
            top + plot_h + 16.0,
            p["budget"]
        ));
    }
    let ly = top + plot_h + 40.0;
    s.push_str(&format!(
        "<rect x=\"{left}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#4c78a8\"/><text x=\"{}\" y=\"{ly}\">all questions</text>\n\
         <rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#f58518\"/><text x=\"{}\" y=\"{ly}\">multi-hop</text>\n</svg>\n",
        ly - 10.0,
        left + 16.0,
        left + 140.0,
        ly - 10.0,
        left + 156.0
    ));
    Some(s)
}

/// Writes `text` to `path`, creating its directory.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A figure of the report for the table: a share as a percentage, `-` when there is none.
pub fn fmt_opt(v: &Value, pct: bool) -> String {
    match v.as_f64() {
        Some(x) if pct => format!("{:.1}%", 100.0 * x),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

/// Prints the figures per category and overall, and what they mean.
pub fn print_table(report: &serde_json::Map<String, Value>, k: usize, budget: usize) {
    println!(
        "\n{:<12} {:>9} {:>11} {:>10} {:>12} {:>11} {:>11} {:>8} {:>8}",
        "category",
        "questions",
        format!("recall@{k}"),
        "ev in ctx",
        "ans in ctx",
        "ans in all",
        "ctx tokens",
        "p50 ms",
        "p95 ms"
    );
    let row = |name: &str, m: &serde_json::Map<String, Value>| {
        println!(
            "{name:<12} {:>9} {:>11} {:>10} {:>12} {:>11} {:>11} {:>8} {:>8}{}",
            m["questions"],
            fmt_opt(&m["recall_at_k"], true),
            fmt_opt(&m["evidence_in_context"], true),
            fmt_opt(&m["answer_in_context"], true),
            fmt_opt(&m["answer_in_full_conversation"], true),
            fmt_opt(&m["mean_context_tokens"], false),
            fmt_opt(&m["search_p50_ms"], false),
            fmt_opt(&m["search_p95_ms"], false),
            m.get("answer_f1")
                .and_then(Value::as_f64)
                .map(|f| format!("  F1 {f:.3}"))
                .unwrap_or_default()
        );
    };
    if let Some(per) = report.get("per_category").and_then(Value::as_object) {
        for (name, m) in per {
            if let Some(m) = m.as_object() {
                row(name, m);
            }
        }
    }
    row("all", report);
    println!(
        "ev in ctx: every evidence turn is in the prompt; ans in ctx: the gold answer (normalised) is in the prompt; ans in all: in the whole conversation (its ceiling)\n\
         ingest {:.0} turns/s ({:.0} turns/s until every turn has its vector; add_message p95 {:.2} ms, p99 {:.2} ms, max {:.0} ms); prompts under {budget} tokens",
        report["ingest_turns_per_s"].as_f64().unwrap_or(0.0),
        report["ingest_embedded_turns_per_s"]
            .as_f64()
            .or(report["ingest_turns_per_s"].as_f64())
            .unwrap_or(0.0),
        report["add_message_p95_ms"].as_f64().unwrap_or(0.0),
        report["add_message_p99_ms"].as_f64().unwrap_or(0.0),
        report["add_message_max_ms"].as_f64().unwrap_or(0.0)
    );
    let recall: Vec<String> = crate::RECALL_KS
        .iter()
        .map(|k| format!("@{k} {}", fmt_opt(&report[&format!("recall_at_{k}")], true)))
        .collect();
    println!("recall {}", recall.join(", "));
    if let Some(curve) = report.get("budget_curve").and_then(Value::as_array) {
        for point in curve {
            println!(
                "budget {:>5}: evidence in context {} (multi-hop {}), {} tokens",
                point["budget"],
                fmt_opt(&point["evidence_in_context"], true),
                fmt_opt(&point["multi_hop_evidence_in_context"], true),
                fmt_opt(&point["mean_context_tokens"], false)
            );
        }
    }
    if let Some(t) = report
        .get("full_conversation_tokens")
        .and_then(Value::as_f64)
    {
        println!("the whole conversation: {t:.0} tokens on average");
    }
    if let Some(n) = report.get("off_topic_questions").and_then(Value::as_u64) {
        println!(
            "off-topic ({n} questions of another conversation): {} recall a memory, {} memories and {} prompt tokens on average",
            fmt_opt(&report["off_topic_recalling"], true),
            fmt_opt(&report["off_topic_memories"], false),
            fmt_opt(&report["off_topic_context_tokens"], false)
        );
    }
}

/// A grouped bar chart of recall@k and answer-in-context per category, as a standalone SVG.
pub fn plot_svg(report: &serde_json::Map<String, Value>, k: usize, budget: usize) -> String {
    let mut groups: Vec<(String, f64, f64)> = Vec::new();
    let get = |m: &serde_json::Map<String, Value>, key: &str| {
        m.get(key).and_then(Value::as_f64).unwrap_or(0.0)
    };
    if let Some(per) = report.get("per_category").and_then(Value::as_object) {
        for (name, m) in per {
            if let Some(m) = m.as_object() {
                groups.push((
                    name.clone(),
                    get(m, "recall_at_k"),
                    get(m, "answer_in_context"),
                ));
            }
        }
    }
    groups.push((
        "all".into(),
        get(report, "recall_at_k"),
        get(report, "answer_in_context"),
    ));
    let (w, h, left, top, plot_h) = (120 * groups.len() + 100, 340, 60.0, 50.0, 220.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"24\" font-size=\"15\">LoCoMo: recall@{k} and answer in context (budget {budget} tokens)</text>\n"
    );
    for i in 0..=4 {
        let v = i as f64 * 0.25;
        let y = top + plot_h * (1.0 - v);
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}%</text>\n",
            w - 20,
            left - 6.0,
            y + 4.0,
            v * 100.0
        ));
    }
    for (i, (name, recall, in_ctx)) in groups.iter().enumerate() {
        let x = left + 20.0 + 120.0 * i as f64;
        for (j, (v, color)) in [(*recall, "#4c78a8"), (*in_ctx, "#f58518")]
            .into_iter()
            .enumerate()
        {
            let bh = plot_h * v.clamp(0.0, 1.0);
            let bx = x + 40.0 * j as f64;
            s.push_str(&format!(
                "<rect x=\"{bx}\" y=\"{}\" width=\"36\" height=\"{bh}\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{:.0}</text>\n",
                top + plot_h - bh,
                bx + 18.0,
                top + plot_h - bh - 3.0,
                v * 100.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{name}</text>\n",
            x + 38.0,
            top + plot_h + 16.0
        ));
    }
    let ly = top + plot_h + 40.0;
    s.push_str(&format!(
        "<rect x=\"{left}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#4c78a8\"/><text x=\"{}\" y=\"{ly}\">recall@{k} of evidence turns</text>\n\
         <rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#f58518\"/><text x=\"{}\" y=\"{ly}\">gold answer in the assembled context</text>\n</svg>\n",
        ly - 10.0,
        left + 16.0,
        left + 220.0,
        ly - 10.0,
        left + 236.0
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(category: u8, found: usize, in_context: Option<bool>, ms: f64) -> Outcome {
        Outcome {
            sample: if category == 5 { "b" } else { "a" }.to_owned(),
            category,
            evidence: 2,
            evidence_found: found,
            evidence_found_at: [found.min(1), found, found, 2],
            evidence_in_context: Some(found == 2),
            at_budget: vec![(1000, Some(false), 900), (1500, Some(found == 2), 1400)],
            answer_in_context: in_context,
            answer_in_conversation: in_context.map(|_| true),
            context_tokens: 100,
            search_ms: ms,
            f1: None,
        }
    }

    #[test]
    fn the_report_has_the_figures_overall_and_per_category() {
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95), 5.0);
        let outcomes = [
            outcome(2, 2, Some(true), 1.0),
            outcome(2, 0, Some(false), 3.0),
            outcome(5, 1, None, 2.0),
        ];
        let r = report(&outcomes, 10, 2.0);
        assert_eq!(r["questions"], 3);
        assert_eq!(r["recall_at_k"], 0.5);
        assert_eq!(r["recall_at_10"], 0.5);
        assert_eq!(r["recall_at_50"], 1.0);
        assert!((r["recall_at_5"].as_f64().unwrap() - 2.0 / 6.0).abs() < 1e-9);
        assert!((r["evidence_in_context"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(r["per_sample"]["a"]["questions"], 2);
        assert_eq!(r["per_sample"]["a"]["evidence_found"], 2);
        assert_eq!(r["per_sample"]["b"]["evidence_turns"], 2);
        let curve = r["budget_curve"].as_array().unwrap();
        assert_eq!(curve.len(), 2);
        assert_eq!(curve[0]["budget"], 1000);
        assert_eq!(curve[0]["evidence_in_context"], 0.0);
        assert_eq!(curve[1]["mean_context_tokens"], 1400.0);
        assert!(curve[1]["multi_hop_evidence_in_context"].is_null());
        assert_eq!(r["answer_in_context"], 0.5);
        assert_eq!(r["answer_in_full_conversation"], 1.0);
        assert_eq!(r["search_p50_ms"], 2.0);
        assert_eq!(r["ingest_turns_per_s"], 5.0);
        assert!(r.get("answer_f1").is_none());
        let per = r["per_category"].as_object().unwrap();
        assert_eq!(per.keys().collect::<Vec<_>>(), ["adversarial", "temporal"]);
        assert!(per["adversarial"]["answer_in_context"].is_null());
        assert_eq!(fmt_opt(&per["temporal"]["recall_at_k"], true), "50.0%");
        assert_eq!(fmt_opt(&Value::Null, false), "-");
        let curve = curve_svg(&r).unwrap();
        assert!(
            curve.starts_with("<svg")
                && curve.contains("1500 tokens")
                && curve.contains("polyline")
        );
        let svg = plot_svg(&r, 10, 1500);
        assert!(svg.starts_with("<svg") && svg.contains("recall@10") && svg.ends_with("</svg>\n"));
    }
}
