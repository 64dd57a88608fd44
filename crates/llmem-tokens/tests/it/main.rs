//! Integration tests of llmem-tokens: exact counts against reference tokenizers, chat-template
//! accounting, estimate calibration, the counter conformance suite. Conversations come from the
//! LoCoMo data beside the repository (`../shared/data/locomo`, or `$LLMEM_LOCOMO`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod counts;
#[path = "../../../llmem-eval/support/locomo.rs"]
pub mod locomo;
mod templates;

/// Every LoCoMo turn as `speaker: text`.
pub fn locomo_turns() -> Vec<String> {
    locomo::lines()
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
