//! Per-turn cost of the short-term window: add one message and render the prompt under a token
//! budget, with 100, 1k, 10k and 100k messages of history already pushed through it.
//!
//! The conversation cycles the LoCoMo turns (speaker A is the user), or a generated one when
//! the data is absent. Counting is exact (gpt-4o, tiktoken o200k_base with chat framing).
//! `benches/peers/langchain_trim.py` times LangChain's `trim_messages` with an exact tiktoken
//! counter on the same conversation and sizes.
//!
//! - `turn/layout/N`: `Layout::chat` (budget 4096, answer reserve 512): push into `history`,
//!   then `render()`.
//! - `turn/short_term/N`: `ShortTermMemory` bounded at 3584 tokens: `push`, then `render()`.
//!
//! `cargo bench -p llmem-window --bench turn`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use llmem_core::{Message, TokenCounter};
use llmem_window::{Layout, ShortTermMemory};

const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];

/// LoCoMo turns as (is_user, text); a generated conversation if the data is absent.
fn turns() -> Vec<(bool, String)> {
    let path = std::env::var_os("LLMEM_LOCOMO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/locomo/locomo-dev.json")
        });
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "LoCoMo not found at {}; using a generated conversation",
            path.display()
        );
        return (0..2000)
            .map(|i| {
                (
                    i % 2 == 0,
                    format!(
                        "Turn {i}: I went to the park on day {} and saw {} squirrels there.",
                        i / 2,
                        i % 7
                    ),
                )
            })
            .collect();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for sample in v.as_array().unwrap() {
        let conv = &sample["conversation"];
        let a = conv["speaker_a"].as_str().unwrap_or_default();
        let mut keys: Vec<&String> = conv
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("session_") && !k.ends_with("date_time"))
            .collect();
        keys.sort_by_key(|k| k.trim_start_matches("session_").parse::<u32>().unwrap_or(0));
        for k in keys {
            for t in conv[k].as_array().into_iter().flatten() {
                if let (Some(s), Some(x)) = (t["speaker"].as_str(), t["text"].as_str()) {
                    out.push((s == a, x.to_owned()));
                }
            }
        }
    }
    out
}

fn message(turns: &[(bool, String)], i: usize) -> Message {
    let (user, text) = &turns[i % turns.len()];
    if *user {
        Message::user(text.clone())
    } else {
        Message::assistant(text.clone())
    }
}

fn bench(c: &mut Criterion) {
    let counter: Arc<dyn TokenCounter> = llmem_tokens::Counters::embedded()
        .unwrap()
        .for_model("gpt-4o")
        .unwrap();
    let turns = turns();
    let mut g = c.benchmark_group("turn");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for n in SIZES {
        let mut layout = Layout::chat(counter.clone(), 4096, 512).unwrap();
        layout
            .push_text(
                "system",
                "You are a companion who remembers the user's life.",
            )
            .unwrap();
        for i in 0..n {
            layout.push("history", message(&turns, i)).unwrap();
        }
        let mut i = n;
        g.bench_with_input(BenchmarkId::new("layout", n), &n, |b, _| {
            b.iter(|| {
                layout.push("history", message(&turns, i)).unwrap();
                i += 1;
                black_box(layout.render())
            })
        });
        assert!(counter.count_messages(&layout.render()) + 512 <= 4096);

        let mut mem = ShortTermMemory::new(counter.clone()).with_max_tokens(3584);
        mem.push(Message::system(
            "You are a companion who remembers the user's life.",
        ))
        .unwrap();
        for i in 0..n {
            mem.push(message(&turns, i)).unwrap();
        }
        let mut i = n;
        g.bench_with_input(BenchmarkId::new("short_term", n), &n, |b, _| {
            b.iter(|| {
                mem.push(message(&turns, i)).unwrap();
                i += 1;
                black_box(mem.render())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
