//! Leave-one-conversation-out tuning: a weight counts only if the value chosen on four
//! conversations holds on the fifth. For each candidate setting (the defaults, then each
//! `--vary` value of one retrieval weight at a time) the LoCoMo run is repeated in a child
//! process with that `LLMEM_RETRIEVAL_*` variable; then, for each conversation held out, the
//! candidate with the best recall on the other conversations is chosen and its recall on the
//! held-out one is what counts. The fold figure pools those held-out results; the all-five
//! figure is the best candidate's recall on all five (what tuning on everything would
//! report).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// What to vary and where the runs read their data.
#[derive(Debug, Clone, clap::Args)]
pub struct LooArgs {
    /// The LoCoMo JSON file.
    #[arg(long, env = "LLMEM_LOCOMO")]
    pub data: PathBuf,
    /// A retrieval weight and the values to try, one at a time against the defaults:
    /// `session_weight=0,0.15,0.45` (repeatable; the key is a `[retrieval]` key).
    #[arg(long = "vary", required = true)]
    pub vary: Vec<String>,
    /// Write the candidates, the folds and the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where the runs' reports go (default: a temporary directory).
    #[arg(long)]
    pub work: Option<PathBuf>,
}

/// One setting tried: its variable (none for the defaults) and per conversation the evidence
/// turns and how many of them were in the top k.
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    env: Option<(String, String)>,
    per_sample: Vec<(String, u64, u64)>,
}

impl Candidate {
    /// Pooled recall over the conversations `keep` accepts.
    fn recall(&self, keep: impl Fn(&str) -> bool) -> f64 {
        let (found, total) = self
            .per_sample
            .iter()
            .filter(|(s, _, _)| keep(s))
            .fold((0, 0), |(f, t), (_, e, n)| (f + n, t + e));
        if total == 0 {
            0.0
        } else {
            found as f64 / total as f64
        }
    }

    fn counts(&self, sample: &str) -> (u64, u64) {
        self.per_sample
            .iter()
            .find(|(s, _, _)| s == sample)
            .map_or((0, 0), |(_, e, n)| (*e, *n))
    }
}

/// Parses `key=v1,v2` into the variable name and its values.
fn parse_vary(spec: &str) -> Result<(String, Vec<String>)> {
    let Some((key, values)) = spec.split_once('=') else {
        bail!("--vary {spec:?}: expected KEY=V1,V2 (e.g. session_weight=0,0.15,0.45)");
    };
    let key = key.trim().trim_start_matches("retrieval.");
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("--vary {spec:?}: {key:?} is not a [retrieval] key");
    }
    let values: Vec<String> = values
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if values.is_empty() {
        bail!("--vary {spec:?}: no values");
    }
    Ok((
        format!("LLMEM_RETRIEVAL_{}", key.to_ascii_uppercase()),
        values,
    ))
}

/// Runs `llmem-eval locomo` for one candidate and reads its per-conversation counts.
fn run_one(
    data: &Path,
    env: Option<&(String, String)>,
    out: &Path,
) -> Result<Vec<(String, u64, u64)>> {
    let exe = std::env::current_exe().context("cannot find the llmem-eval binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["locomo", "--quiet", "--no-curve", "--data"])
        .arg(data)
        .arg("--json")
        .arg(out);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let status = cmd.status().context("cannot run llmem-eval locomo")?;
    if !status.success() {
        bail!("llmem-eval locomo failed ({status}) with {env:?}");
    }
    let text =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    let v: Value = serde_json::from_str(&text)?;
    let per = v["per_sample"]
        .as_object()
        .context("the report has no per_sample figures")?;
    Ok(per
        .iter()
        .map(|(id, m)| {
            (
                id.clone(),
                m["evidence_turns"].as_u64().unwrap_or(0),
                m["evidence_found"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Runs every candidate, then the folds; prints the table and writes the JSON.
pub fn run(args: &LooArgs) -> Result<()> {
    let varied = args
        .vary
        .iter()
        .map(|s| parse_vary(s))
        .collect::<Result<Vec<_>>>()?;
    let tmp;
    let work = match &args.work {
        Some(w) => w.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("llmem-loo-{}", std::process::id()));
            tmp.clone()
        }
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut settings: Vec<(String, Option<(String, String)>)> = vec![("defaults".into(), None)];
    for (var, values) in &varied {
        for v in values {
            settings.push((format!("{var}={v}"), Some((var.clone(), v.clone()))));
        }
    }
    let mut candidates = Vec::new();
    for (i, (name, env)) in settings.into_iter().enumerate() {
        eprintln!("[{}] {name}", i + 1);
        let per_sample = run_one(&args.data, env.as_ref(), &work.join(format!("run{i}.json")))?;
        candidates.push(Candidate {
            name,
            env,
            per_sample,
        });
    }
    let Some(first) = candidates.first() else {
        bail!("no candidates");
    };
    let samples: Vec<String> = first.per_sample.iter().map(|(s, _, _)| s.clone()).collect();
    if samples.len() < 2 {
        bail!("leave-one-out needs at least two conversations");
    }
    // The best candidate on the conversations `keep` accepts; the defaults win ties.
    let best = |keep: &dyn Fn(&str) -> bool| -> usize {
        let mut at = 0;
        for (i, c) in candidates.iter().enumerate() {
            if c.recall(keep) > candidates[at].recall(keep) + 1e-12 {
                at = i;
            }
        }
        at
    };
    let mut folds = Vec::new();
    let (mut found, mut total, mut default_found) = (0, 0, 0);
    println!(
        "\n{:<10} {:<44} {:>12} {:>12}",
        "held out", "chosen on the other four", "held-out", "defaults"
    );
    for s in &samples {
        let chosen = best(&|x: &str| x != s);
        let (e, n) = candidates[chosen].counts(s);
        let (_, d) = candidates[0].counts(s);
        found += n;
        default_found += d;
        total += e;
        let pct = |n: u64| 100.0 * n as f64 / e.max(1) as f64;
        println!(
            "{s:<10} {:<44} {:>11.1}% {:>11.1}%",
            candidates[chosen].name,
            pct(n),
            pct(d)
        );
        folds.push(json!({"held_out": s, "chosen": candidates[chosen].name, "held_out_recall": pct(n) / 100.0, "defaults_recall": pct(d) / 100.0}));
    }
    let all = best(&|_: &str| true);
    let fold = found as f64 / total.max(1) as f64;
    let defaults = default_found as f64 / total.max(1) as f64;
    let all_five = candidates[all].recall(|_| true);
    println!(
        "\nrecall@10: held-out folds {:.1}%, defaults {:.1}%, best on all five ({}) {:.1}%",
        100.0 * fold,
        100.0 * defaults,
        candidates[all].name,
        100.0 * all_five
    );
    let report = json!({
        "candidates": candidates.iter().map(|c| json!({
            "name": c.name,
            "variable": c.env.as_ref().map(|(k, v)| format!("{k}={v}")),
            "recall_at_10": c.recall(|_| true),
            "per_sample": c.per_sample.iter().map(|(s, e, n)| json!({"sample": s, "evidence_turns": e, "evidence_found": n})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "folds": folds,
        "held_out_recall_at_10": fold,
        "defaults_recall_at_10": defaults,
        "best_on_all_five": candidates[all].name,
        "best_on_all_five_recall_at_10": all_five,
    });
    if let Some(path) = &args.json {
        crate::report::write_file(path, &serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_specs_name_the_variable_and_bad_ones_say_what_to_write() {
        let (var, values) = parse_vary("session_weight=0, 0.15,0.45").unwrap_or_default();
        assert_eq!(var, "LLMEM_RETRIEVAL_SESSION_WEIGHT");
        assert_eq!(values, ["0", "0.15", "0.45"]);
        let (var, _) = parse_vary("retrieval.late_interaction=0").unwrap_or_default();
        assert_eq!(var, "LLMEM_RETRIEVAL_LATE_INTERACTION");
        for bad in ["session_weight", "=0.1", "a b=1", "k="] {
            let e = parse_vary(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("--vary"), "{bad}: {e}");
        }
        let c = Candidate {
            name: "x".into(),
            env: None,
            per_sample: vec![("a".into(), 10, 5), ("b".into(), 10, 9)],
        };
        assert!((c.recall(|_| true) - 0.7).abs() < 1e-9);
        assert!((c.recall(|s| s == "b") - 0.9).abs() < 1e-9);
        assert_eq!(c.counts("a"), (10, 5));
    }
}
