//! Leave-one-conversation-out tuning: a weight counts only if the value chosen on four
//! conversations holds on the fifth. For each candidate setting (the defaults, then each
//! `--vary` value of one retrieval weight at a time) the LoCoMo run is repeated in a child
//! process with that `LLMEM_RETRIEVAL_*` variable; then, for each conversation held out, the
//! candidate with the best figure on the other conversations is chosen (recall@10, or the
//! share of questions with all their evidence in the prompt; with `--max-off-topic`, only among
//! the candidates that let at most that share of off-topic questions recall a memory there)
//! and its figure on the held-out one is what counts. The fold figure pools those held-out
//! results; the all-five figure is the best candidate's on all five (what tuning on everything
//! would report).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::Settings;

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
    /// Whose settings the runs use (`llmem-eval locomo --settings`).
    #[arg(long, value_enum, default_value_t = Settings::Product)]
    pub settings: Settings,
    /// The figure a candidate is chosen by.
    #[arg(long, value_enum, default_value_t = Objective::Recall)]
    pub objective: Objective,
    /// Choose only among candidates whose off-topic questions (another conversation's) recall
    /// a memory at most this often on the training conversations, in [0, 1].
    #[arg(long)]
    pub max_off_topic: Option<f64>,
    /// Write the candidates, the folds and the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where the runs' reports go (default: a temporary directory).
    #[arg(long)]
    pub work: Option<PathBuf>,
}

/// The figure a candidate is chosen by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Objective {
    /// recall@10: the share of evidence turns in the top 10.
    Recall,
    /// evidence_in_context: the share of questions with all their evidence in the prompt.
    Evidence,
}

impl Objective {
    fn name(self) -> &'static str {
        match self {
            Objective::Recall => "recall@10",
            Objective::Evidence => "evidence in context",
        }
    }
}

/// One conversation's counts in one run.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counts {
    sample: String,
    evidence_turns: u64,
    evidence_found: u64,
    evidence_questions: u64,
    in_context: u64,
    off_topic: u64,
    off_topic_recalling: u64,
}

impl Counts {
    /// (part, whole) of `objective`.
    fn of(&self, objective: Objective) -> (u64, u64) {
        match objective {
            Objective::Recall => (self.evidence_found, self.evidence_turns),
            Objective::Evidence => (self.in_context, self.evidence_questions),
        }
    }
}

/// One setting tried: its variable (none for the defaults) and its counts per conversation.
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    env: Option<(String, String)>,
    per_sample: Vec<Counts>,
}

/// `part / whole` pooled over `counts`, 0 without a whole.
fn pooled<'a>(counts: impl Iterator<Item = &'a Counts>, f: impl Fn(&Counts) -> (u64, u64)) -> f64 {
    let (part, whole) = counts.fold((0, 0), |(p, w), c| {
        let (a, b) = f(c);
        (p + a, w + b)
    });
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Candidate {
    /// `objective` pooled over the conversations `keep` accepts.
    fn figure(&self, objective: Objective, keep: impl Fn(&str) -> bool) -> f64 {
        pooled(self.per_sample.iter().filter(|c| keep(&c.sample)), |c| {
            c.of(objective)
        })
    }

    /// The share of off-topic questions that recalled a memory, over the conversations `keep`
    /// accepts.
    fn off_topic(&self, keep: impl Fn(&str) -> bool) -> f64 {
        pooled(self.per_sample.iter().filter(|c| keep(&c.sample)), |c| {
            (c.off_topic_recalling, c.off_topic)
        })
    }

    fn counts(&self, sample: &str) -> Counts {
        self.per_sample
            .iter()
            .find(|c| c.sample == sample)
            .cloned()
            .unwrap_or_default()
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
    settings: Settings,
    env: Option<&(String, String)>,
    out: &Path,
) -> Result<Vec<Counts>> {
    let exe = std::env::current_exe().context("cannot find the llmem-eval binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["locomo", "--quiet", "--no-curve", "--data"])
        .arg(data)
        .args(["--settings", settings.name()])
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
            let n = |key: &str| m[key].as_u64().unwrap_or(0);
            Counts {
                sample: id.clone(),
                evidence_turns: n("evidence_turns"),
                evidence_found: n("evidence_found"),
                evidence_questions: n("evidence_questions"),
                in_context: n("evidence_questions_in_context"),
                off_topic: n("off_topic_questions"),
                off_topic_recalling: n("off_topic_recalling_questions"),
            }
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
        let per_sample = run_one(
            &args.data,
            args.settings,
            env.as_ref(),
            &work.join(format!("run{i}.json")),
        )?;
        candidates.push(Candidate {
            name,
            env,
            per_sample,
        });
    }
    let Some(first) = candidates.first() else {
        bail!("no candidates");
    };
    let samples: Vec<String> = first.per_sample.iter().map(|c| c.sample.clone()).collect();
    if samples.len() < 2 {
        bail!("leave-one-out needs at least two conversations");
    }
    let objective = args.objective;
    let cap = args.max_off_topic;
    if let Some(c) = cap
        && !(0.0..=1.0).contains(&c)
    {
        bail!("--max-off-topic {c}: expected a share in [0, 1]");
    }
    // The best eligible candidate on the conversations `keep` accepts (the defaults win ties;
    // when none is eligible, the defaults).
    let best = |keep: &dyn Fn(&str) -> bool| -> usize {
        let eligible = |c: &Candidate| cap.is_none_or(|cap| c.off_topic(keep) <= cap + 1e-12);
        let mut at: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if eligible(c)
                && at.is_none_or(|a| {
                    c.figure(objective, keep) > candidates[a].figure(objective, keep) + 1e-12
                })
            {
                at = Some(i);
            }
        }
        at.unwrap_or(0)
    };
    let mut folds = Vec::new();
    let (mut found, mut total, mut default_found) = (0, 0, 0);
    let (mut off, mut off_total) = (0, 0);
    println!(
        "\n{:<10} {:<44} {:>12} {:>12} {:>10}",
        "held out", "chosen on the other four", "held-out", "defaults", "off-topic"
    );
    for s in &samples {
        let chosen = best(&|x: &str| x != s);
        let held = candidates[chosen].counts(s);
        let (n, e) = held.of(objective);
        let (d, _) = candidates[0].counts(s).of(objective);
        found += n;
        default_found += d;
        total += e;
        off += held.off_topic_recalling;
        off_total += held.off_topic;
        let pct = |n: u64| 100.0 * n as f64 / e.max(1) as f64;
        let off_share = candidates[chosen].off_topic(|x| x == s);
        println!(
            "{s:<10} {:<44} {:>11.1}% {:>11.1}% {:>9.1}%",
            candidates[chosen].name,
            pct(n),
            pct(d),
            100.0 * off_share
        );
        folds.push(json!({"held_out": s, "chosen": candidates[chosen].name, "held_out_figure": pct(n) / 100.0, "defaults_figure": pct(d) / 100.0, "held_out_off_topic_recalling": off_share}));
    }
    let all = best(&|_: &str| true);
    let fold = found as f64 / total.max(1) as f64;
    let defaults = default_found as f64 / total.max(1) as f64;
    let all_five = candidates[all].figure(objective, |_| true);
    let fold_off_topic = off as f64 / off_total.max(1) as f64;
    println!(
        "\n{}: held-out folds {:.1}% (off-topic questions recalling: {:.1}%), defaults {:.1}%, best on all five ({}) {:.1}%",
        objective.name(),
        100.0 * fold,
        100.0 * fold_off_topic,
        100.0 * defaults,
        candidates[all].name,
        100.0 * all_five
    );
    let report = json!({
        "objective": objective.name(),
        "max_off_topic": cap,
        "candidates": candidates.iter().map(|c| json!({
            "name": c.name,
            "variable": c.env.as_ref().map(|(k, v)| format!("{k}={v}")),
            "figure": c.figure(objective, |_| true),
            "recall_at_10": c.figure(Objective::Recall, |_| true),
            "evidence_in_context": c.figure(Objective::Evidence, |_| true),
            "off_topic_recalling": c.off_topic(|_| true),
            "per_sample": c.per_sample.iter().map(|p| json!({
                "sample": p.sample,
                "evidence_turns": p.evidence_turns,
                "evidence_found": p.evidence_found,
                "evidence_questions": p.evidence_questions,
                "evidence_questions_in_context": p.in_context,
                "off_topic_questions": p.off_topic,
                "off_topic_recalling_questions": p.off_topic_recalling,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "folds": folds,
        "held_out": fold,
        "held_out_off_topic_recalling": fold_off_topic,
        "defaults": defaults,
        "best_on_all_five": candidates[all].name,
        "best_on_all_five_figure": all_five,
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
        let counts = |sample: &str, turns, found, questions, in_context| Counts {
            sample: sample.into(),
            evidence_turns: turns,
            evidence_found: found,
            evidence_questions: questions,
            in_context,
            off_topic: 10,
            off_topic_recalling: 2,
        };
        let c = Candidate {
            name: "x".into(),
            env: None,
            per_sample: vec![counts("a", 10, 5, 4, 1), counts("b", 10, 9, 4, 3)],
        };
        assert!((c.figure(Objective::Recall, |_| true) - 0.7).abs() < 1e-9);
        assert!((c.figure(Objective::Recall, |s| s == "b") - 0.9).abs() < 1e-9);
        assert!((c.figure(Objective::Evidence, |_| true) - 0.5).abs() < 1e-9);
        assert!((c.off_topic(|s| s == "a") - 0.2).abs() < 1e-9);
        assert_eq!(c.counts("a").of(Objective::Recall), (5, 10));
    }
}
