//! The compression strategies on LoCoMo conversations: savings, quality, preview, fallbacks.
use std::sync::Arc;

use llmem_compress::{
    Action, ArchiveSink, CompressConfig, Compressor, DropReason, KeepReason, MemoryCompressor,
    Method, Preset, Strategy, Trigger, TriggerReason, VecArchive,
};
use llmem_core::{Error, Message, Result, Role};

use crate::{agent_conversation, assert_tool_pairs, conversation, gpt4o};

fn compressor(strategy: Strategy, keep_recent: usize) -> MemoryCompressor {
    let cfg = CompressConfig {
        strategy,
        keep_recent,
        ..CompressConfig::default()
    };
    MemoryCompressor::new(cfg, gpt4o()).unwrap()
}

#[tokio::test]
async fn sliding_window_keeps_the_recent_raw_and_summarises_the_rest() {
    let counter = gpt4o();
    let conv = conversation(400);
    let c = compressor(Strategy::SlidingWindow, 20);
    let out = c.compress(&conv).await.unwrap();
    assert_eq!(out.method, Method::Extractive, "{:?}", out.errors);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.messages[0], conv[0], "the system prompt stays first");
    assert!(out.messages[1].flag("summary"));
    assert_eq!(
        &out.messages[2..],
        &conv[conv.len() - 20..],
        "the last 20 stay raw"
    );
    assert_eq!(out.messages_before, 401);
    assert_eq!(out.messages_after, 22);
    assert_eq!(out.original_tokens, counter.count_messages(&conv));
    assert_eq!(out.compressed_tokens, counter.count_messages(&out.messages));
    assert!((out.ratio - out.compressed_tokens as f64 / out.original_tokens as f64).abs() < 1e-9);
    // The summary is about 30% of what it replaced.
    let replaced = counter.count_messages(&conv[1..conv.len() - 20]);
    let summary_tokens = counter.count(out.summary.as_deref().unwrap());
    assert!(
        summary_tokens as f64 <= 0.3 * replaced as f64 + 1.0,
        "{summary_tokens} of {replaced}"
    );
    assert!(
        summary_tokens as f64 >= 0.2 * replaced as f64,
        "{summary_tokens} of {replaced}"
    );
    assert!(out.quality.facts_total > 50);
    assert!(
        out.quality.score > 0.3 && out.quality.score < 1.0,
        "{:?}",
        out.quality
    );
}

#[tokio::test]
async fn the_rolling_summary_is_extended_not_restarted() {
    let conv = conversation(600);
    let c = compressor(Strategy::SlidingWindow, 20);
    let first = c.compress(&conv[..300]).await.unwrap();
    let mut next = first.messages.clone();
    next.extend_from_slice(&conv[300..]);
    let preview = c.preview(&next).unwrap();
    assert_eq!(preview.actions[1], Action::PreviousSummary);
    let second = c.compress(&next).await.unwrap();
    let summaries: Vec<&Message> = second
        .messages
        .iter()
        .filter(|m| m.flag("summary"))
        .collect();
    assert_eq!(summaries.len(), 1, "one rolling summary, not two");
    // Part of the old summary carries over into the new one.
    let old: Vec<&str> = first.summary.as_deref().unwrap().lines().collect();
    let new = second.summary.as_deref().unwrap();
    let carried = old.iter().filter(|l| new.contains(*l)).count();
    assert!(carried > 0, "nothing of the previous summary survived");
    assert!(second.compressed_tokens < second.original_tokens);
}

#[tokio::test]
async fn selective_keeps_tools_errors_important_and_keywords() {
    let conv = agent_conversation(300);
    let cfg = CompressConfig {
        strategy: Strategy::Selective,
        keep_recent: 10,
        keywords: vec!["adoption".into()],
        ..CompressConfig::default()
    };
    let c = MemoryCompressor::new(cfg, gpt4o()).unwrap();
    let p = c.preview(&conv).unwrap();
    let out = c.compress(&conv).await.unwrap();
    for (m, a) in conv.iter().zip(&p.actions) {
        let must_keep = m.role == Role::System
            || m.role == Role::Tool
            || !m.tool_calls.is_empty()
            || m.flag("important")
            || m.text().starts_with("Error:")
            || m.text()
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w == "adoption");
        if must_keep {
            assert!(matches!(a, Action::Keep { .. }), "{a:?} for {:?}", m.text());
            assert!(out.messages.contains(m), "{:?} was not kept", m.text());
        }
    }
    assert!(p.actions.contains(&Action::Keep {
        reason: KeepReason::Keyword
    }));
    assert!(p.actions.contains(&Action::Keep {
        reason: KeepReason::Error
    }));
    assert_tool_pairs(&out.messages);
    assert!(out.summarized > 100);
    assert!(out.compressed_tokens < out.original_tokens);
}

#[derive(Debug)]
struct BrokenArchive;

#[llmem_core::async_trait]
impl ArchiveSink for BrokenArchive {
    async fn archive(&self, _: &[Message]) -> Result<()> {
        Err(Error::storage("broken", "disk full"))
    }
}

#[tokio::test]
async fn deletion_hands_every_dropped_original_to_the_archive() {
    let conv = agent_conversation(200);
    let archive = Arc::new(VecArchive::default());
    let c = compressor(Strategy::Deletion, 15).with_archive(archive.clone());
    let preview = c.preview(&conv).unwrap();
    assert!(archive.messages().is_empty(), "a preview archives nothing");
    let out = c.compress(&conv).await.unwrap();
    assert_eq!(out.method, Method::None);
    assert!(out.summary.is_none());
    let archived = archive.messages();
    assert_eq!(out.archived, archived.len());
    assert_eq!(out.dropped, preview.counts().2);
    assert_eq!(
        out.messages.len() + archived.len(),
        conv.len(),
        "kept + archived = everything"
    );
    // Order is preserved: merging kept and archived by position gives back the conversation.
    let kept: Vec<&Message> = conv.iter().filter(|m| out.messages.contains(m)).collect();
    assert_eq!(kept.len(), out.messages.len());
    assert_tool_pairs(&out.messages);
    assert_eq!(out.messages[0].role, Role::System);

    // A failing archive keeps the originals and says why.
    let c = compressor(Strategy::Deletion, 15).with_archive(Arc::new(BrokenArchive));
    let out = c.compress(&conv).await.unwrap();
    assert_eq!(out.method, Method::KeptOriginals);
    assert_eq!(out.messages, conv);
    assert!(out.errors[0].contains("disk full"), "{:?}", out.errors);
}

#[tokio::test]
async fn duplicates_and_near_duplicates_are_removed_before_summarising() {
    let mut conv = conversation(120);
    let original = conv[10].clone();
    conv.insert(40, original.clone());
    let mut near = original.clone();
    near.content = vec![llmem_core::ContentPart::Text {
        text: format!("{} Really!", original.text()),
    }];
    conv.insert(60, near);
    let c = compressor(Strategy::SlidingWindow, 20);
    let p = c.preview(&conv).unwrap();
    assert_eq!(
        p.actions[40],
        Action::Drop {
            reason: DropReason::Duplicate { of: 10 }
        }
    );
    assert!(
        matches!(p.actions[60], Action::Drop { reason: DropReason::NearDuplicate { of: 10, similarity } } if similarity >= 0.8),
        "{:?}",
        p.actions[60]
    );
    let out = c.compress(&conv).await.unwrap();
    assert!(out.dropped >= 2);
}

#[tokio::test]
async fn preview_matches_the_compression_and_a_budget_is_respected() {
    let counter = gpt4o();
    let conv = agent_conversation(500);
    for strategy in [
        Strategy::SlidingWindow,
        Strategy::Selective,
        Strategy::Deletion,
    ] {
        let cfg = CompressConfig {
            strategy,
            keep_recent: 30,
            budget: Some(3000),
            ..CompressConfig::default()
        };
        let c = MemoryCompressor::new(cfg, counter.clone()).unwrap();
        let p = c.preview(&conv).unwrap();
        let out = c.compress(&conv).await.unwrap();
        assert!(out.errors.is_empty(), "{strategy}: {:?}", out.errors);
        let (kept, summarized, dropped) = p.counts();
        assert_eq!(out.summarized, summarized, "{strategy}");
        assert_eq!(out.dropped, dropped, "{strategy}");
        assert_eq!(
            out.messages_after,
            kept + usize::from(out.summary.is_some()),
            "{strategy}"
        );
        assert!(
            out.compressed_tokens <= 3000,
            "{strategy}: {} tokens",
            out.compressed_tokens
        );
        assert!(
            out.compressed_tokens <= p.estimated_tokens + 8,
            "{strategy}: estimate {} vs {}",
            p.estimated_tokens,
            out.compressed_tokens
        );
        assert_tool_pairs(&out.messages);
        assert_eq!(
            out.messages.iter().rev().find(|m| m.role == Role::User),
            conv.iter().rev().find(|m| m.role == Role::User)
        );
    }
    let cfg = CompressConfig {
        budget: Some(20),
        ..CompressConfig::default()
    };
    let err = MemoryCompressor::new(cfg, counter)
        .unwrap()
        .preview(&conv)
        .unwrap_err();
    assert!(
        matches!(err, Error::TokenLimit { .. }) && err.to_string().contains("budget"),
        "{err}"
    );
}

#[test]
fn presets_carry_seed_002_numbers_and_triggers_fire() {
    let b = Preset::Balanced.config();
    assert_eq!(
        (b.compression_ratio, b.keep_recent, b.strategy),
        (0.3, 20, Strategy::SlidingWindow)
    );
    let a = Preset::Aggressive.config();
    assert_eq!(
        (a.compression_ratio, a.keep_recent, a.strategy),
        (0.2, 10, Strategy::SlidingWindow)
    );
    let c = Preset::Conservative.config();
    assert_eq!(
        (c.compression_ratio, c.keep_recent, c.strategy),
        (0.5, 30, Strategy::Selective)
    );
    assert_eq!(Preset::Aggressive.trigger().token_threshold, Some(30_000));
    assert_eq!(Preset::Balanced.trigger().check(40_000, 10), None);
    assert_eq!(
        Preset::Balanced.trigger().check(40_001, 10),
        Some(TriggerReason::Tokens {
            tokens: 40_001,
            threshold: 40_000
        })
    );
    let t = Trigger {
        max_messages: Some(50),
        window_fraction: Some(0.8),
        context_window: Some(128_000),
        ..Trigger::default()
    };
    assert_eq!(
        t.check(1000, 51),
        Some(TriggerReason::Messages {
            messages: 51,
            max: 50
        })
    );
    assert!(matches!(
        t.check(110_000, 10),
        Some(TriggerReason::WindowFraction { .. })
    ));
    assert_eq!(t.check(100_000, 10), None);
    assert!(
        "sideways"
            .parse::<Strategy>()
            .unwrap_err()
            .to_string()
            .contains("sliding_window")
    );
    let bad = CompressConfig {
        compression_ratio: 1.5,
        ..CompressConfig::default()
    };
    assert!(
        MemoryCompressor::new(bad, gpt4o())
            .unwrap_err()
            .to_string()
            .contains("compression_ratio")
    );
}

#[tokio::test]
async fn a_kept_tool_result_keeps_its_call() {
    // Without preserve_tool_calls, a tool result is kept only for what it says (an error); its
    // call must come along, or the provider rejects the request.
    let conv = agent_conversation(200);
    let mut conv2 = Vec::new();
    for m in conv {
        if m.role == Role::Tool {
            let id = m.tool_call_id.clone().unwrap();
            conv2.push(Message::tool_result(id, "Error: the notes service failed."));
        } else {
            conv2.push(m);
        }
    }
    let cfg = CompressConfig {
        strategy: Strategy::Selective,
        keep_recent: 5,
        preserve_tool_calls: false,
        ..CompressConfig::default()
    };
    let c = MemoryCompressor::new(cfg, gpt4o()).unwrap();
    let out = c.compress(&conv2).await.unwrap();
    assert!(out.messages.iter().any(|m| m.role == Role::Tool));
    assert_tool_pairs(&out.messages);
}
