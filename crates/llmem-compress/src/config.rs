//! Strategies, settings, presets (threshold, ratio, kept turns, strategy) and triggers.

use std::str::FromStr;
use std::time::Duration;

use llmem_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// How old messages are made smaller: summarised, partly kept, or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Keep the last `keep_recent` messages raw; fold everything older into a rolling summary,
    /// extended incrementally with the newly evicted messages (not rewritten from scratch).
    SlidingWindow,
    /// Keep system prompts, tool calls and results, errors, messages marked `important` or
    /// matching a keyword, and the recent ones; summarise the rest.
    Selective,
    /// Drop old messages (system prompts and recent ones stay); the dropped originals go to the
    /// [`crate::ArchiveSink`], when one is configured, so nothing is lost.
    Deletion,
}

impl Strategy {
    /// The snake_case name (`sliding_window`, `selective`, `deletion`).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::SlidingWindow => "sliding_window",
            Strategy::Selective => "selective",
            Strategy::Deletion => "deletion",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sliding_window" | "sliding-window" => Ok(Strategy::SlidingWindow),
            "selective" => Ok(Strategy::Selective),
            "deletion" => Ok(Strategy::Deletion),
            other => Err(Error::config(
                "strategy",
                format!("unknown strategy `{other}`; use sliding_window, selective or deletion"),
            )),
        }
    }
}

/// Settings of a [`crate::MemoryCompressor`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressConfig {
    /// How old messages are made smaller.
    pub strategy: Strategy,
    /// Target size of the summary relative to what it replaces (0.3 = 30%).
    pub compression_ratio: f64,
    /// Messages at the end kept raw, uncompressed (20 by default).
    pub keep_recent: usize,
    /// Keep system prompts raw, whatever their age.
    pub preserve_system: bool,
    /// [`Strategy::Selective`]: keep tool calls and their results.
    pub preserve_tool_calls: bool,
    /// [`Strategy::Selective`]: keep messages containing one of these words (case-insensitive).
    pub keywords: Vec<String>,
    /// Messages whose word-shingle Jaccard similarity to an earlier one reaches this are
    /// near-duplicates and are removed before summarising (1.0 = exact duplicates only).
    pub near_duplicate: f64,
    /// Upper bound on the whole compressed context, in tokens, if any.
    pub budget: Option<usize>,
    /// Summaries are never shorter than this many tokens (unless the budget says otherwise).
    pub min_summary_tokens: usize,
    /// Limit on each summarizer call; on timeout the extractive summarizer takes over.
    #[serde(with = "secs")]
    pub timeout: Duration,
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

impl Default for CompressConfig {
    /// The balanced preset's compression settings.
    fn default() -> Self {
        CompressConfig {
            strategy: Strategy::SlidingWindow,
            compression_ratio: 0.3,
            keep_recent: 20,
            preserve_system: true,
            preserve_tool_calls: true,
            keywords: Vec::new(),
            near_duplicate: 0.8,
            budget: None,
            min_summary_tokens: 32,
            timeout: Duration::from_secs(60),
        }
    }
}

impl CompressConfig {
    /// Checks every value and says what to fix.
    pub fn validate(&self) -> Result<()> {
        if !(self.compression_ratio > 0.0 && self.compression_ratio <= 1.0) {
            return Err(Error::config(
                "compression_ratio",
                format!(
                    "{} is outside (0, 1]; 0.3 compresses to 30%",
                    self.compression_ratio
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.near_duplicate) {
            return Err(Error::config(
                "near_duplicate",
                "must be a similarity in [0, 1]",
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("timeout", "must be positive"));
        }
        Ok(())
    }
}

/// Ready-made settings, from most savings (aggressive) to most context kept (conservative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Threshold 30,000 tokens, ratio 0.2, 10 recent messages, sliding window.
    Aggressive,
    /// Threshold 40,000 tokens, ratio 0.3, 20 recent messages, sliding window.
    Balanced,
    /// Threshold 60,000 tokens, ratio 0.5, 30 recent messages, selective.
    Conservative,
}

impl Preset {
    /// The preset's `(threshold tokens, ratio, short-term size, strategy)`.
    pub fn numbers(self) -> (usize, f64, usize, Strategy) {
        match self {
            Preset::Aggressive => (30_000, 0.2, 10, Strategy::SlidingWindow),
            Preset::Balanced => (40_000, 0.3, 20, Strategy::SlidingWindow),
            Preset::Conservative => (60_000, 0.5, 30, Strategy::Selective),
        }
    }

    /// The compression settings of the preset.
    pub fn config(self) -> CompressConfig {
        let (_, ratio, keep, strategy) = self.numbers();
        CompressConfig {
            strategy,
            compression_ratio: ratio,
            keep_recent: keep,
            ..CompressConfig::default()
        }
    }

    /// The trigger of the preset: its token threshold.
    pub fn trigger(self) -> Trigger {
        Trigger {
            token_threshold: Some(self.numbers().0),
            ..Trigger::default()
        }
    }
}

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "aggressive" => Ok(Preset::Aggressive),
            "balanced" => Ok(Preset::Balanced),
            "conservative" => Ok(Preset::Conservative),
            other => Err(Error::config(
                "preset",
                format!("unknown preset `{other}`; use aggressive, balanced or conservative"),
            )),
        }
    }
}

/// When to compress. Any condition that is set and met fires.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trigger {
    /// Fire when the context holds more than this many tokens.
    pub token_threshold: Option<usize>,
    /// Fire when the context holds more than this many messages.
    pub max_messages: Option<usize>,
    /// Fire when the context fills more than this fraction of `context_window` (e.g. 0.8).
    pub window_fraction: Option<f64>,
    /// The model's context window, for `window_fraction`.
    pub context_window: Option<usize>,
}

/// Why a [`Trigger`] fired.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TriggerReason {
    /// More tokens than the threshold.
    Tokens {
        /// Tokens in the context.
        tokens: usize,
        /// The threshold.
        threshold: usize,
    },
    /// More messages than allowed.
    Messages {
        /// Messages in the context.
        messages: usize,
        /// The limit.
        max: usize,
    },
    /// The context fills too much of the model's window.
    WindowFraction {
        /// Share of the window in use.
        fraction: f64,
        /// The limit.
        max: f64,
    },
}

impl Trigger {
    /// The first condition met by a context of `tokens` tokens and `messages` messages.
    pub fn check(&self, tokens: usize, messages: usize) -> Option<TriggerReason> {
        if let Some(t) = self.token_threshold
            && tokens > t
        {
            return Some(TriggerReason::Tokens {
                tokens,
                threshold: t,
            });
        }
        if let Some(m) = self.max_messages
            && messages > m
        {
            return Some(TriggerReason::Messages { messages, max: m });
        }
        if let (Some(f), Some(w)) = (self.window_fraction, self.context_window)
            && w > 0
        {
            let fraction = tokens as f64 / w as f64;
            if fraction > f {
                return Some(TriggerReason::WindowFraction { fraction, max: f });
            }
        }
        None
    }
}
