//! The LoCoMo conversations for tests and benches, read from beside the repository
//! (`../shared/data/locomo/locomo-dev.json`, or `$LLMEM_LOCOMO`); never copied into it.
//! It lives with the LoCoMo harness (`crates/llmem-eval`) and is shared by the crates' test and
//! bench binaries with `#[path = "…/llmem-eval/support/locomo.rs"] mod locomo;`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use llmem_core::Message;

/// One turn of a LoCoMo conversation.
#[derive(Debug, Clone)]
pub struct Turn {
    /// Index of the conversation in the file.
    pub conversation: usize,
    pub speaker: String,
    pub text: String,
    /// Whether the speaker is the conversation's speaker A.
    pub is_a: bool,
}

/// Where the data is read from.
pub fn path() -> PathBuf {
    std::env::var_os("LLMEM_LOCOMO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/locomo/locomo-dev.json")
        })
}

/// Every turn, conversations one after another, sessions in order.
pub fn turns() -> Vec<Turn> {
    let path = path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the LoCoMo data at {} ({e}); set LLMEM_LOCOMO to locomo-dev.json",
            path.display()
        )
    });
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for (i, sample) in v.as_array().unwrap().iter().enumerate() {
        let conv = sample["conversation"].as_object().unwrap();
        let a = conv["speaker_a"].as_str().unwrap_or_default();
        let mut keys: Vec<&String> = conv
            .keys()
            .filter(|k| k.starts_with("session_") && !k.ends_with("date_time"))
            .collect();
        keys.sort_by_key(|k| k.trim_start_matches("session_").parse::<u32>().unwrap_or(0));
        for k in keys {
            for turn in conv[k].as_array().into_iter().flatten() {
                let (Some(t), Some(s)) = (turn["text"].as_str(), turn["speaker"].as_str()) else {
                    continue;
                };
                out.push(Turn {
                    conversation: i,
                    speaker: s.to_owned(),
                    text: t.to_owned(),
                    is_a: s == a,
                });
            }
        }
    }
    assert!(
        out.len() > 1000,
        "expected the LoCoMo turns in {}, found {}",
        path.display(),
        out.len()
    );
    out
}

/// Every turn as `speaker: text`.
pub fn lines() -> Vec<String> {
    turns()
        .into_iter()
        .map(|t| format!("{}: {}", t.speaker, t.text))
        .collect()
}

/// The turns as a chat: speaker A is the user, the other the assistant, each named.
pub fn messages() -> Vec<Message> {
    turns()
        .into_iter()
        .map(|t| {
            let m = if t.is_a {
                Message::user(t.text)
            } else {
                Message::assistant(t.text)
            };
            m.with_name(t.speaker.replace(' ', "_"))
        })
        .collect()
}
