//! Exact counts: the fast o200k/cl100k path equals tiktoken-rs on real conversations and edge
//! cases; `tokenizer.json` counts equal the Python `tokenizers` reference; estimates are
//! labelled and their error measured.

use std::process::Command;

use llmem_core::test_kit::token_counter_conformance;
use llmem_core::{Accuracy, TokenCounter};
use llmem_tokens::{Counters, ModelCounter};

use crate::{EDGE_CASES, locomo_turns, python};

#[test]
fn fast_openai_counts_equal_tiktoken_rs() {
    let turns = locomo_turns();
    for enc in ["o200k_base", "cl100k_base"] {
        let c = ModelCounter::encoding(enc).unwrap();
        for t in turns
            .iter()
            .map(String::as_str)
            .chain(EDGE_CASES.iter().copied())
        {
            assert_eq!(c.count(t), c.count_reference(t), "{enc} on {t:?}");
        }
        let all = turns.join("\n");
        assert_eq!(
            c.count(&all),
            c.count_reference(&all),
            "{enc} on the whole corpus"
        );
    }
}

/// A small deterministic generator (xorshift64*), so a failure names a reproducible input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random text that walks every branch of the o200k expression: ASCII classes and the
/// characters next to them that the matcher must hand over (non-ASCII letters, marks, digits and
/// whitespace, the long s and Kelvin sign that case-fold onto ASCII letters), plus any code point.
fn fuzz_text(rng: &mut Rng) -> String {
    const ASCII: &[&str] = &[
        " ", "  ", "\t", "\n", "\r\n", "\r", "\u{b}", "\u{c}", "\u{1c}", "\u{0}", "\u{7f}", "/",
        "'", "'s", "'S", "'re", "'LL", "'ve", "'d", "'m", "'t", "'x", "!", "?!", "...", "-", "\"",
        "(", "a", "the", "Hello", "WORLD", "iPhone", "x", "Z", "0", "12", "1234567",
    ];
    const OTHER: &[&str] = &[
        "\u{a0}",
        "\u{85}",
        "\u{2003}",
        "\u{3000}",
        "\u{17f}",
        "\u{212a}",
        "\u{301}",
        "\u{660}\u{661}",
        "é",
        "ß",
        "Ω",
        "日本",
        "한국",
        "🎉",
        "👩‍💻",
        "\u{1d400}",
        "ǅ",
        "ʰ",
    ];
    // Half the inputs are ASCII only: the hand-written matcher decides all of them.
    let unicode = rng.below(2) == 0;
    let mut s = String::new();
    for _ in 0..rng.below(40) {
        match rng.below(if unicode { 10 } else { 1 }) {
            0 => s.push_str(ASCII[rng.below(ASCII.len())]),
            1 => {
                // Any scalar value, astral planes included.
                let c = loop {
                    if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32) {
                        break c;
                    }
                };
                s.push(c);
            }
            2 | 3 => s.push_str(OTHER[rng.below(OTHER.len())]),
            _ => s.push_str(ASCII[rng.below(ASCII.len())]),
        }
    }
    s
}

#[test]
fn o200k_counts_equal_tiktoken_rs_on_random_unicode() {
    let c = ModelCounter::encoding("o200k_base").unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut all = String::new();
    for n in 0..20_000 {
        let t = fuzz_text(&mut rng);
        assert_eq!(
            llmem_tokens::o200k::count(&t),
            c.count_reference(&t),
            "o200k on fuzz input {n}: {t:?}"
        );
        all.push_str(&t);
    }
    assert_eq!(llmem_tokens::o200k::count(&all), c.count_reference(&all));
}

#[test]
fn counters_pass_the_conformance_suite() {
    let counters = Counters::embedded().unwrap();
    for model in [
        "gpt-4o",
        "gpt-4",
        "llama-3.1-8b",
        "qwen2.5-7b",
        "gemma-3-27b",
        "mistral-nemo",
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
    ] {
        let c = counters.for_model(model).unwrap();
        token_counter_conformance(c.as_ref());
    }
}

#[test]
fn open_model_counts_equal_the_python_tokenizers_reference() {
    let counters = Counters::embedded().unwrap();
    let turns = locomo_turns();
    let sample: Vec<String> = turns
        .iter()
        .step_by(37)
        .cloned()
        .chain(EDGE_CASES.iter().map(|s| s.to_string()))
        .collect();
    let input = serde_json::to_string(&sample).unwrap();
    for (model, tok) in [
        ("llama-3.1-8b", "llama3"),
        ("qwen2.5-7b", "qwen2_5"),
        ("gemma-3-27b", "gemma3"),
        ("mistral-nemo", "mistral_nemo"),
    ] {
        let path = llmem_tokens::tokenizer_dir()
            .join(tok)
            .join("tokenizer.json");
        let script = "import json,sys\nfrom tokenizers import Tokenizer\nt=Tokenizer.from_file(sys.argv[1])\nt.no_padding(); t.no_truncation()\ntexts=json.load(sys.stdin)\nprint(json.dumps([len(t.encode(x, add_special_tokens=False).ids) if x else 0 for x in texts]))";
        let mut child = Command::new(python())
            .args(["-c", script])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "python tokenizers failed for {tok}");
        let want: Vec<usize> = serde_json::from_slice(&out.stdout).unwrap();
        let c = counters.for_model(model).unwrap();
        assert_eq!(c.accuracy(), Accuracy::Exact);
        for (text, want) in sample.iter().zip(want) {
            assert_eq!(c.count(text), want, "{model} on {text:?}");
        }
    }
}

#[test]
fn llama3_ids_are_the_known_ones() {
    let c = Counters::embedded()
        .unwrap()
        .for_model("llama-3.1-8b")
        .unwrap();
    // Llama 3's vocabulary starts with cl100k's: "hello" = 15339, " world" = 1917.
    assert_eq!(c.encode("hello world").unwrap(), vec![15339, 1917]);
    assert_eq!(
        c.count("<|begin_of_text|>"),
        1,
        "special tokens count as one"
    );
}

#[test]
fn estimate_error_is_measured_against_a_real_tokenizer() {
    // Gemini has no public tokenizer, but Gemma 3 uses Gemini's SentencePiece vocabulary:
    // measure the chars-per-token estimate against it on the LoCoMo turns.
    let counters = Counters::embedded().unwrap();
    let gemini = counters.for_model("gemini-2.5-flash").unwrap();
    let gemma = counters.for_model("gemma-3-27b").unwrap();
    let o200k = counters.for_model("gpt-4o").unwrap();
    let claude = counters.for_model("claude-sonnet-4-5").unwrap();
    let turns = locomo_turns();
    let (mut err, mut n) = (0.0f64, 0usize);
    let (mut est_sum, mut ref_sum, mut claude_sum, mut o200k_sum) =
        (0usize, 0usize, 0usize, 0usize);
    for t in &turns {
        let (e, r) = (gemini.count(t), gemma.count(t));
        err += (e as f64 - r as f64).abs() / r as f64;
        n += 1;
        est_sum += e;
        ref_sum += r;
        claude_sum += claude.count(t);
        o200k_sum += o200k.count(t);
    }
    let mean = err / n as f64;
    let total = (est_sum as f64 - ref_sum as f64).abs() / ref_sum as f64;
    eprintln!(
        "gemini estimate vs gemma3 tokenizer over {n} turns: mean abs error {:.1}%, corpus total error {:.1}%; \
         anthropic estimate / o200k = {:.3}",
        mean * 100.0,
        total * 100.0,
        claude_sum as f64 / o200k_sum as f64
    );
    assert!(mean < 0.25, "per-turn estimate error {mean}");
    assert!(total < 0.10, "corpus-level estimate error {total}");
}
