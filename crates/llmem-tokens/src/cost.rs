//! Cost and savings tracking with budget alarms.
//!
//! Every request is recorded with its token usage, either estimated by llmem or the actual usage
//! a provider reported; the tracker prices it with the catalog, adds what the request would have
//! cost without compression, and fires alarms when spending crosses budget thresholds.

use std::collections::BTreeMap;
use std::sync::Arc;

use llmem_core::{Error, Result, Usage};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;

/// Where a usage figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// Counted by llmem before sending.
    Estimated,
    /// Reported by the provider in its response.
    Actual,
}

/// One request to record.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub model: String,
    pub usage: Usage,
    pub source: UsageSource,
    /// Input tokens the request would have needed without llmem's compression, if known.
    pub uncompressed_input_tokens: Option<u64>,
}

/// Running totals for one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_usd: f64,
    /// Requests whose usage came from the provider.
    pub actual_requests: u64,
}

/// All totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_usd: f64,
    /// Input tokens the same requests would have needed uncompressed.
    pub uncompressed_input_tokens: u64,
    /// Tokens not sent thanks to compression.
    pub saved_tokens: u64,
    /// Dollars not spent thanks to compression.
    pub saved_usd: f64,
    /// Tokens and dollars spent on summarisation itself (and on llmem's other model calls,
    /// such as fact extraction).
    pub summarizer_tokens: u64,
    pub summarizer_cost_usd: f64,
    /// Tokens spent before this tracker started, carried over by [`CostTracker::restore`]
    /// (their dollars are in `cost_usd`).
    #[serde(default)]
    pub carried_tokens: u64,
    /// `saved_tokens - summarizer_tokens` (may be negative).
    pub net_saved_tokens: i64,
    /// `saved_usd - summarizer_cost_usd`.
    pub net_saved_usd: f64,
    /// `saved_tokens / uncompressed_input_tokens`, in percent.
    pub savings_percent: f64,
    pub by_model: BTreeMap<String, ModelTotals>,
}

/// Spending limits. Alarms fire once at each threshold fraction of each limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Fractions of a limit at which to alarm (default 0.5, 0.8, 1.0).
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<f64>,
    /// Refuse further requests (`check` errs) once a limit is reached.
    #[serde(default)]
    pub hard_stop: bool,
}

fn default_thresholds() -> Vec<f64> {
    vec![0.5, 0.8, 1.0]
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_cost_usd: None,
            max_tokens: None,
            thresholds: default_thresholds(),
            hard_stop: false,
        }
    }
}

impl Budget {
    /// A dollar limit with the default thresholds.
    pub fn usd(max: f64) -> Self {
        Budget {
            max_cost_usd: Some(max),
            ..Default::default()
        }
    }

    /// A token limit with the default thresholds.
    pub fn tokens(max: u64) -> Self {
        Budget {
            max_tokens: Some(max),
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.max_cost_usd.is_some_and(|m| m.is_nan() || m <= 0.0) {
            return Err(Error::config(
                "budget.max_cost_usd",
                "must be a positive number of dollars",
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(Error::config("budget.max_tokens", "must be positive"));
        }
        if self.thresholds.iter().any(|t| !(*t > 0.0 && *t <= 1.0)) {
            return Err(Error::config(
                "budget.thresholds",
                "each threshold is a fraction in (0, 1]",
            ));
        }
        Ok(())
    }
}

/// Which limit an alarm is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetKind {
    Cost,
    Tokens,
}

/// A budget threshold was crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetAlarm {
    pub kind: BudgetKind,
    /// The fraction crossed (0.8 = 80%).
    pub threshold: f64,
    pub used: f64,
    pub limit: f64,
}

/// What recording one call did: its price and the budget alarms it fired.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// USD at the catalog's prices.
    pub cost_usd: f64,
    /// Thresholds this call crossed (each fires once per budget).
    pub alarms: Vec<BudgetAlarm>,
}

impl CostTotals {
    /// Every token counted against a token budget: requests' input and output, summarisers',
    /// and those carried over.
    pub fn used_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.summarizer_tokens + self.carried_tokens
    }
}

type AlarmFn = Arc<dyn Fn(&BudgetAlarm) + Send + Sync>;

#[derive(Default)]
struct State {
    totals: CostTotals,
    budget: Option<Budget>,
    fired: Vec<(BudgetKind, u64)>,
    alarms: Vec<BudgetAlarm>,
}

/// Tracks tokens, dollars, savings and budgets. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct CostTracker {
    catalog: Arc<Catalog>,
    state: Arc<Mutex<State>>,
    listeners: Arc<Mutex<Vec<AlarmFn>>>,
    /// Whose budget this is, in warnings and errors ("user `alice` (budget.per = user)").
    label: Arc<str>,
}

impl std::fmt::Debug for CostTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostTracker")
            .field("totals", &self.state.lock().totals)
            .finish()
    }
}

impl CostTracker {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        CostTracker {
            catalog,
            state: Arc::default(),
            listeners: Arc::default(),
            label: Arc::from(""),
        }
    }

    /// Names whose budget this is in its warnings and errors (`session alice/chat`).
    #[must_use]
    pub fn with_label(mut self, label: impl AsRef<str>) -> Self {
        self.label = Arc::from(label.as_ref());
        self
    }

    /// The label given by [`CostTracker::with_label`] (empty by default).
    pub fn label(&self) -> &str {
        &self.label
    }

    fn labelled(&self, message: String) -> String {
        if self.label.is_empty() {
            message
        } else {
            format!("{}: {message}", self.label)
        }
    }

    /// Sets (or replaces) the budget.
    pub fn set_budget(&self, budget: Budget) -> Result<()> {
        budget.validate()?;
        let mut s = self.state.lock();
        s.budget = Some(budget);
        s.fired.clear();
        Ok(())
    }

    /// Calls `f` on every alarm from now on.
    pub fn on_alarm(&self, f: impl Fn(&BudgetAlarm) + Send + Sync + 'static) {
        self.listeners.lock().push(Arc::new(f));
    }

    /// Every alarm fired so far.
    pub fn alarms(&self) -> Vec<BudgetAlarm> {
        self.state.lock().alarms.clone()
    }

    /// The budget, if one is set.
    pub fn budget(&self) -> Option<Budget> {
        self.state.lock().budget.clone()
    }

    /// Prices and records a request; returns its cost in USD.
    pub fn record(&self, r: &RequestRecord) -> f64 {
        self.record_request(r).cost_usd
    }

    /// Prices and records a request; its cost and the alarms it fired.
    pub fn record_request(&self, r: &RequestRecord) -> Recorded {
        let info = self.catalog.lookup(&r.model).info;
        let u = r.usage;
        let cost = info.cost(u.input_tokens, u.output_tokens, u.cached_input_tokens);
        let fired = {
            let mut s = self.state.lock();
            let t = &mut s.totals;
            t.requests += 1;
            t.input_tokens += u.input_tokens;
            t.output_tokens += u.output_tokens;
            t.cached_input_tokens += u.cached_input_tokens;
            t.cost_usd += cost;
            let uncompressed = r
                .uncompressed_input_tokens
                .unwrap_or(u.input_tokens)
                .max(u.input_tokens);
            t.uncompressed_input_tokens += uncompressed;
            let saved = uncompressed - u.input_tokens;
            t.saved_tokens += saved;
            t.saved_usd += info.cost(saved, 0, 0);
            let m = t.by_model.entry(info.id.clone()).or_default();
            m.requests += 1;
            m.input_tokens += u.input_tokens;
            m.output_tokens += u.output_tokens;
            m.cached_input_tokens += u.cached_input_tokens;
            m.cost_usd += cost;
            m.actual_requests += u64::from(r.source == UsageSource::Actual);
            Self::derive(t);
            Self::check_thresholds(&mut s)
        };
        self.notify(&fired);
        Recorded {
            cost_usd: cost,
            alarms: fired,
        }
    }

    /// Records the tokens a summariser spent (they count against the budget and the savings);
    /// returns their cost in USD: at `model`'s catalog prices, or 0 when the catalog does not
    /// know `model` (a local model, say), whose tokens still count.
    pub fn record_summarizer(&self, model: &str, usage: Usage) -> f64 {
        self.record_summarizer_call(model, usage).cost_usd
    }

    /// [`CostTracker::record_summarizer`], with the alarms it fired.
    pub fn record_summarizer_call(&self, model: &str, usage: Usage) -> Recorded {
        let cost = self.upkeep_cost(model, usage);
        let fired = {
            let mut s = self.state.lock();
            let t = &mut s.totals;
            t.summarizer_tokens += usage.input_tokens + usage.output_tokens;
            t.summarizer_cost_usd += cost;
            t.cost_usd += cost;
            Self::derive(t);
            Self::check_thresholds(&mut s)
        };
        self.notify(&fired);
        Recorded {
            cost_usd: cost,
            alarms: fired,
        }
    }

    /// The price of a summariser's (or another of llmem's own) call at `model`'s catalog
    /// prices; 0 when the catalog does not know `model`.
    pub fn upkeep_cost(&self, model: &str, usage: Usage) -> f64 {
        let l = self.catalog.lookup(model);
        if !l.known {
            return 0.0;
        }
        l.info.cost(
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_input_tokens,
        )
    }

    /// Carries over what was spent before this tracker started (a resumed session's figures):
    /// it counts against the budget, and the thresholds it already passed are marked fired
    /// without firing again.
    pub fn restore(&self, cost_usd: f64, tokens: u64) {
        let mut s = self.state.lock();
        s.totals.cost_usd += cost_usd.max(0.0);
        s.totals.carried_tokens += tokens;
        let before = s.alarms.len();
        Self::check_thresholds(&mut s);
        s.alarms.truncate(before);
    }

    /// `Err(BudgetExceeded)` when a hard-stop budget is used up; call before sending.
    pub fn check(&self) -> Result<()> {
        let s = self.state.lock();
        let Some(b) = &s.budget else { return Ok(()) };
        if !b.hard_stop {
            return Ok(());
        }
        let t = &s.totals;
        if let Some(max) = b.max_cost_usd
            && t.cost_usd >= max
        {
            return Err(Error::BudgetExceeded {
                message: self.labelled(format!(
                    "spent ${:.4} of a ${max:.4} budget (budget.max_cost_usd); raise \
                     budget.max_cost_usd to continue",
                    t.cost_usd
                )),
            });
        }
        if let Some(max) = b.max_tokens
            && t.used_tokens() >= max
        {
            return Err(Error::BudgetExceeded {
                message: self.labelled(format!(
                    "used {} of a {max}-token budget (budget.max_tokens); raise \
                     budget.max_tokens to continue",
                    t.used_tokens()
                )),
            });
        }
        Ok(())
    }

    pub fn totals(&self) -> CostTotals {
        self.state.lock().totals.clone()
    }

    fn derive(t: &mut CostTotals) {
        t.net_saved_tokens = t.saved_tokens as i64 - t.summarizer_tokens as i64;
        t.net_saved_usd = t.saved_usd - t.summarizer_cost_usd;
        t.savings_percent = if t.uncompressed_input_tokens == 0 {
            0.0
        } else {
            100.0 * t.saved_tokens as f64 / t.uncompressed_input_tokens as f64
        };
    }

    fn check_thresholds(s: &mut State) -> Vec<BudgetAlarm> {
        let Some(b) = s.budget.clone() else {
            return Vec::new();
        };
        let t = &s.totals;
        let used_tokens = t.used_tokens() as f64;
        let mut out = Vec::new();
        let limits = [
            (BudgetKind::Cost, b.max_cost_usd, t.cost_usd),
            (
                BudgetKind::Tokens,
                b.max_tokens.map(|m| m as f64),
                used_tokens,
            ),
        ];
        for (kind, limit, used) in limits {
            let Some(limit) = limit else { continue };
            for &th in &b.thresholds {
                let key = (kind, (th * 1e6) as u64);
                if used >= th * limit && !s.fired.contains(&key) {
                    s.fired.push(key);
                    out.push(BudgetAlarm {
                        kind,
                        threshold: th,
                        used,
                        limit,
                    });
                }
            }
        }
        s.alarms.extend(out.iter().cloned());
        out
    }

    fn notify(&self, alarms: &[BudgetAlarm]) {
        if alarms.is_empty() {
            return;
        }
        let listeners = self.listeners.lock().clone();
        for a in alarms {
            tracing::warn!(
                budget = %self.label,
                kind = ?a.kind,
                threshold = a.threshold,
                used = a.used,
                limit = a.limit,
                "budget threshold crossed: {:.0}% of the {} limit used",
                a.threshold * 100.0,
                match a.kind {
                    BudgetKind::Cost => "budget.max_cost_usd",
                    BudgetKind::Tokens => "budget.max_tokens",
                },
            );
            for l in &listeners {
                l(a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tracker() -> CostTracker {
        CostTracker::new(Arc::new(Catalog::embedded().unwrap()))
    }

    fn req(model: &str, input: u64, output: u64, uncompressed: Option<u64>) -> RequestRecord {
        RequestRecord {
            model: model.into(),
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                cached_input_tokens: 0,
            },
            source: UsageSource::Actual,
            uncompressed_input_tokens: uncompressed,
        }
    }

    #[test]
    fn totals_savings_and_net_savings() {
        let t = tracker();
        let c = t.record(&req("gpt-4o-mini", 1_000, 100, Some(4_000)));
        assert!((c - (1_000.0 * 0.15 + 100.0 * 0.60) / 1e6).abs() < 1e-12);
        t.record(&req("gpt-4o-mini", 1_000, 100, None));
        t.record_summarizer(
            "gpt-4o-mini",
            Usage {
                input_tokens: 500,
                output_tokens: 50,
                cached_input_tokens: 0,
            },
        );
        let tot = t.totals();
        assert_eq!(tot.requests, 2);
        assert_eq!(tot.saved_tokens, 3_000);
        assert_eq!(tot.uncompressed_input_tokens, 5_000);
        assert!((tot.savings_percent - 60.0).abs() < 1e-9);
        assert_eq!(tot.net_saved_tokens, 3_000 - 550);
        assert_eq!(tot.by_model["gpt-4o-mini"].actual_requests, 2);
    }

    #[test]
    fn alarms_fire_once_per_threshold_and_hard_stop_refuses() {
        let t = tracker();
        t.set_budget(Budget {
            hard_stop: true,
            ..Budget::tokens(10_000)
        })
        .unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = seen.clone();
        t.on_alarm(move |_| {
            s2.fetch_add(1, Ordering::SeqCst);
        });
        t.record(&req("gpt-4o", 4_000, 0, None));
        assert_eq!(seen.load(Ordering::SeqCst), 0);
        t.record(&req("gpt-4o", 1_000, 0, None)); // 50%
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        t.record(&req("gpt-4o", 100, 0, None)); // still 51%
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert!(t.check().is_ok());
        t.record(&req("gpt-4o", 5_000, 0, None)); // 101%: 80% and 100% at once
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        assert_eq!(
            t.alarms().iter().map(|a| a.threshold).collect::<Vec<_>>(),
            vec![0.5, 0.8, 1.0]
        );
        let err = t.check().unwrap_err();
        assert!(err.to_string().contains("max_tokens"), "{err}");
    }

    #[test]
    fn a_summariser_the_catalog_does_not_know_costs_nothing_but_its_tokens_count() {
        let t = tracker();
        let u = Usage {
            input_tokens: 900,
            output_tokens: 100,
            cached_input_tokens: 0,
        };
        assert_eq!(t.record_summarizer("my-local-gguf-model", u), 0.0);
        let priced = t.record_summarizer("gpt-4o-mini", u);
        assert!((priced - (900.0 * 0.15 + 100.0 * 0.60) / 1e6).abs() < 1e-12);
        let tot = t.totals();
        assert_eq!(tot.summarizer_tokens, 2_000);
        assert!((tot.summarizer_cost_usd - priced).abs() < 1e-15);
    }

    #[test]
    fn restored_spending_counts_and_its_alarms_do_not_fire_again() {
        let t = tracker();
        t.set_budget(Budget {
            thresholds: vec![0.5, 1.0],
            hard_stop: true,
            ..Budget::usd(1.0)
        })
        .unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = seen.clone();
        t.on_alarm(move |_| {
            s2.fetch_add(1, Ordering::SeqCst);
        });
        t.restore(0.6, 1_000);
        assert_eq!(seen.load(Ordering::SeqCst), 0);
        assert!(t.alarms().is_empty());
        assert_eq!(t.totals().used_tokens(), 1_000);
        assert!(t.check().is_ok());
        // $0.5 more of gpt-4o input: 200k tokens at $2.50/M.
        let r = t.record_request(&req("gpt-4o", 200_000, 0, None));
        assert_eq!(
            r.alarms.iter().map(|a| a.threshold).collect::<Vec<_>>(),
            vec![1.0]
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        let err = t.check().unwrap_err().to_string();
        assert!(err.contains("budget.max_cost_usd"), "{err}");
    }

    #[test]
    fn bad_budgets_are_rejected() {
        let t = tracker();
        assert!(t.set_budget(Budget::usd(-1.0)).is_err());
        assert!(
            t.set_budget(Budget {
                thresholds: vec![1.5],
                ..Budget::usd(1.0)
            })
            .is_err()
        );
    }
}
