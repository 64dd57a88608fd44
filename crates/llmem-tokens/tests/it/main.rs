//! Integration tests of llmem-tokens: exact counts against reference tokenizers, chat-template
//! accounting, estimate calibration, the counter conformance suite. Conversations come from the
//! LoCoMo data beside the repository (`../shared/data/locomo`, or `$LLMEM_LOCOMO`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod counts;
mod templates;

use std::path::PathBuf;

/// Every turn text of the LoCoMo development file.
pub fn locomo_turns() -> Vec<String> {
    let path = std::env::var_os("LLMEM_LOCOMO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/locomo/locomo-dev.json")
        });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the LoCoMo data at {} ({e}); set LLMEM_LOCOMO to locomo-dev.json",
            path.display()
        )
    });
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for sample in v.as_array().unwrap() {
        let conv = sample["conversation"].as_object().unwrap();
        let mut keys: Vec<&String> = conv
            .keys()
            .filter(|k| k.starts_with("session_") && !k.ends_with("date_time"))
            .collect();
        keys.sort_by_key(|k| k.trim_start_matches("session_").parse::<u32>().unwrap_or(0));
        for k in keys {
            for turn in conv[k].as_array().into_iter().flatten() {
                if let Some(t) = turn["text"].as_str() {
                    out.push(format!("{}: {t}", turn["speaker"].as_str().unwrap_or("?")));
                }
            }
        }
    }
    assert!(
        out.len() > 1000,
        "expected the LoCoMo turns, found {}",
        out.len()
    );
    out
}

/// Text that stresses pre-tokenisers: whitespace runs, digits, contractions, scripts, emoji.
pub const EDGE_CASES: &[&str] = &[
    "",
    " ",
    "   leading and trailing   ",
    "line one\n\n\nline two\r\n\ttabbed",
    "I'm, you're, they'll, we'd, it's, DON'T",
    "1234567890 3.14159 1,000,000 0x1F",
    "fn main() { println!(\"{}\", x.iter().map(|y| y * 2).sum::<u32>()); }",
    "日本語のテキストと中文文本和한국어 텍스트",
    "Ünïcödé àccents façade naïve coöperate",
    "emoji 🎉🚀👩‍💻 and flags 🇫🇷",
    "<|endoftext|> is treated as text",
    "https://example.com/path?query=1&b=2#frag",
    "    indented code\n        more indented\n",
];

/// The venv's Python, for reference implementations.
pub fn python() -> String {
    std::env::var("LLMEM_PYTHON").unwrap_or_else(|_| {
        let p = llmem_tokens::cache_dir().join("venv/bin/python");
        assert!(
            p.exists(),
            "the reference checks need the Python venv: run `cargo xtask setup`"
        );
        p.display().to_string()
    })
}
