//! Cost of filling a prompt with recalled memories (`MemoryManager::prepare`): the memories,
//! best first, that fit in the room left as one timeline message.
//!
//! - `prompt/fit_timeline/1300`: [`llmem::internals::fit_timeline`], as `prepare` does it: each
//!   memory's lines counted once as it is added, the whole message only at the boundary and at
//!   the end.
//! - `prompt/recount_each/1300`: the same choice made by rendering and counting the whole
//!   timeline again after each memory, as `prepare` did before (the work grows with the square
//!   of the memories taken).
//!
//! 60 memories of about 40 tokens each (o200k, gpt-4o-mini's) said over 8 days; 1,300 tokens
//! of room hold about 30 of them, as a 1,500-token LoCoMo prompt does. The counter is not
//! memoised, as each question's prompt is new text.
//! `cargo bench -p llmem --bench prompt`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use llmem::Recalled;
use llmem::core::{MemoryRecord, Message, TokenCounter};
use llmem::internals::{fit_timeline, timeline};
use llmem::tokens::Counters;
use llmem::when::CivilDate;

const ROOM: usize = 1300;
const HEADER: &str = "Relevant memories from earlier in this conversation or earlier ones, by the day they were said:";

fn memories() -> Vec<Recalled> {
    let things = [
        "a pottery class with the kids, and we made our own plates",
        "the charity race for mental health, which was really rewarding",
        "a camping trip to the mountains where we saw the Perseid meteor shower",
        "the adoption agency interview, and I think it went really well",
        "a new painting of a sunrise over the lake that I finished yesterday",
        "the LGBTQ support group meeting, where I shared my story for the first time",
    ];
    (0..60u32)
        .map(|i| {
            let mut record = MemoryRecord::new(
                "u",
                format!(
                    "{}: I keep thinking about {}. It meant a lot to me, honestly, and I wanted to tell you about it ({}).",
                    if i % 2 == 0 { "Melanie" } else { "Caroline" },
                    things[i as usize % things.len()],
                    i
                ),
            );
            record.created_at = CivilDate {
                year: 2023,
                month: 5 + i % 4,
                day: 1 + (i * 3) % 8,
                minute: i * 10,
            }
            .timestamp();
            Recalled {
                record,
                relevance: 1.0 - i as f32 / 100.0,
            }
        })
        .collect()
}

/// Renders and counts the whole timeline after each memory: the earlier way.
fn recount_each(counter: &dyn TokenCounter, hits: &[Recalled]) -> usize {
    let mut taken: Vec<Recalled> = Vec::new();
    for h in hits {
        taken.push(h.clone());
        let m = Message::system(timeline(HEADER, &taken));
        if counter.count_message(&m) > ROOM {
            taken.pop();
            break;
        }
    }
    taken.len()
}

fn bench(c: &mut Criterion) {
    let counter = Counters::embedded()
        .unwrap()
        .for_model("gpt-4o-mini")
        .unwrap();
    let hits = memories();
    let (fitted, _) = fit_timeline(counter.as_ref(), HEADER, hits.clone(), ROOM);
    assert_eq!(fitted.len(), recount_each(counter.as_ref(), &hits));
    assert!(
        (20..40).contains(&fitted.len()),
        "{} memories fit",
        fitted.len()
    );
    let mut g = c.benchmark_group("prompt");
    g.bench_function(format!("fit_timeline/{ROOM}"), |b| {
        b.iter(|| {
            fit_timeline(counter.as_ref(), HEADER, black_box(hits.clone()), ROOM)
                .0
                .len()
        })
    });
    g.bench_function(format!("recount_each/{ROOM}"), |b| {
        b.iter(|| recount_each(counter.as_ref(), black_box(&hits)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
