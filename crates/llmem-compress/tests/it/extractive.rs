//! The extractive summarizer: token targets, centrality and MMR selection, duplicates.
use std::sync::Arc;

use llmem_compress::{ExtractiveSummarizer, facts, transcript_line};
use llmem_core::{Message, Role};
use llmem_window::{Block, Layout, Overflow};

use crate::{gpt4o, locomo_messages};

#[test]
fn summaries_fit_the_target_and_are_made_of_input_sentences() {
    let counter = gpt4o();
    let text: String = locomo_messages()
        .iter()
        .take(300)
        .map(transcript_line)
        .collect::<Vec<_>>()
        .join("\n");
    let s = ExtractiveSummarizer::new(counter.clone());
    for target in [20, 100, 400, 1500] {
        let out = s.summarize_text(None, &text, target);
        assert!(!out.is_empty());
        assert!(
            counter.count(&out) <= target,
            "{} > {target}",
            counter.count(&out)
        );
        for line in out.lines() {
            let body = line.split_once(": ").map_or(line, |(_, b)| b);
            assert!(text.contains(body), "{body:?} is not from the input");
        }
        // No sentence twice.
        let mut lines: Vec<&str> = out.lines().collect();
        let n = lines.len();
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), n);
    }
    // A larger target keeps more facts.
    let f = facts(&text);
    let kept = |t| {
        facts(&s.summarize_text(None, &text, t))
            .iter()
            .filter(|x| f.contains(*x))
            .count()
    };
    assert!(kept(1500) > kept(100));
    assert_eq!(s.summarize_text(None, &text, 0), "");
}

#[test]
fn mmr_prefers_novel_sentences_over_repeats() {
    let counter = gpt4o();
    let text = "Caroline: I adopted a dog named Max on 3 May 2023.\n\
                Melanie: Caroline adopted a dog named Max on 3 May 2023, right.\n\
                Caroline: I adopted a dog named Max on 3 May 2023!\n\
                Melanie: I am running a charity race for mental health on Saturday.\n\
                Caroline: The weather was fine.";
    let s = ExtractiveSummarizer::new(counter.clone());
    let out = s.summarize_text(None, text, 40);
    assert!(out.contains("Max"), "{out}");
    assert!(out.contains("charity race"), "{out}");
    assert_eq!(out.matches("Max").count(), 1, "{out}");
}

#[test]
fn the_extractive_summarizer_is_a_layout_compactor() {
    let counter = gpt4o();
    let compactor = Arc::new(ExtractiveSummarizer::new(counter.clone()));
    let mut p = Layout::new(counter.clone(), 1200)
        .with_block(Block::new("system").with_role(Role::System).protected())
        .unwrap()
        .with_block(
            Block::new("summary")
                .with_role(Role::System)
                .with_max_tokens(300),
        )
        .unwrap()
        .with_block(Block::new("history").with_overflow(Overflow::Summarize {
            compactor,
            into: "summary".into(),
        }))
        .unwrap();
    p.push_text("system", "Remember the user's life.").unwrap();
    let all = locomo_messages();
    for m in all.iter().take(400) {
        let pushed = p.push("history", m.clone()).unwrap();
        assert!(pushed.summary_error.is_none(), "{:?}", pushed.summary_error);
        assert!(counter.count_messages(&p.render()) <= 1200);
    }
    let summary = p.block("summary").unwrap();
    assert_eq!(summary.len(), 1);
    let text = p.render()[1].text();
    assert!(counter.count(&text) > 100, "the summary is used: {text}");
    // Facts from evicted turns survive in the summary.
    let early: String = all
        .iter()
        .take(100)
        .map(Message::text)
        .collect::<Vec<_>>()
        .join(" ");
    let f = facts(&early);
    assert!(facts(&text).iter().any(|x| f.contains(x)));
}
