//! Lexical tools shared by the extractive summarizer, redundancy removal and the quality
//! estimate: sentences, content words, shingles, facts.

use std::collections::HashSet;

use llmem_core::time::{MONTHS, WEEKDAYS};
use llmem_core::{Message, Role};

const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have",
    "he", "her", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me",
    "my", "no", "not", "of", "on", "or", "our", "out", "so", "some", "that", "the", "their",
    "them", "then", "there", "they", "this", "to", "too", "up", "us", "was", "we", "were", "what",
    "when", "which", "who", "will", "with", "would", "you", "your", "yeah", "wow", "hey", "hi",
    "thanks", "thank", "really", "very", "oh", "yes", "i'm", "it's", "that's", "you're", "i've",
    "don't", "get", "got", "like", "one", "more", "much", "been", "being", "than", "those",
    "these", "here", "where", "why",
];

/// Relative day words that, like month and weekday names, are capitalised or not without
/// being names.
const DAYS: &[&str] = &["yesterday", "today", "tomorrow"];

/// Whether `lower` (a lowercase word) is a month, a weekday or a relative day.
fn is_calendar(lower: &str) -> bool {
    DAYS.contains(&lower)
        || WEEKDAYS.contains(&lower)
        || MONTHS.iter().any(|m| m.eq_ignore_ascii_case(lower))
}

pub(crate) fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

/// Lowercase words of `text` (letters, digits, apostrophes).
pub(crate) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Words that carry content: not stopwords, at least 3 characters or a number.
pub(crate) fn content_words(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| {
            !is_stopword(w) && (w.chars().count() >= 3 || w.chars().any(|c| c.is_ascii_digit()))
        })
        .collect()
}

/// A normal form for exact-duplicate detection: lowercase words joined by single spaces.
pub(crate) fn normalize(text: &str) -> String {
    words(text).join(" ")
}

/// Hashes of the word `k`-shingles of `text` (or of its whole word sequence when shorter).
pub(crate) fn shingles(text: &str, k: usize) -> HashSet<u64> {
    use std::hash::{Hash, Hasher};
    let w = words(text);
    let k = k.min(w.len()).max(1);
    let mut out = HashSet::new();
    for win in w.windows(k) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        win.hash(&mut h);
        out.insert(h.finish());
    }
    out
}

/// |a ∩ b| / |a ∪ b|; 0 for two empty sets.
pub(crate) fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// Splits text into sentences: at line breaks, and after `.`, `!` or `?` followed by
/// whitespace. Pieces are trimmed; empty pieces are skipped.
pub(crate) fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut start = 0;
        let bytes: Vec<(usize, char)> = line.char_indices().collect();
        for (j, &(i, c)) in bytes.iter().enumerate() {
            if matches!(c, '.' | '!' | '?')
                && bytes.get(j + 1).is_some_and(|&(_, n)| n.is_whitespace())
            {
                let s = line[start..i + c.len_utf8()].trim();
                if !s.is_empty() {
                    out.push(s);
                }
                start = i + c.len_utf8();
            }
        }
        let s = line[start..].trim();
        if !s.is_empty() {
            out.push(s);
        }
    }
    out
}

/// Numbers in `text`: digit runs joined by single `.`, `,`, `:`, `/` or `-` (`3.5`, `1,200`,
/// `2023-05-08`, `10:30`).
pub(crate) fn numbers(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() {
                let joiner = matches!(b[i], b'.' | b',' | b':' | b'/' | b'-')
                    && b.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !(b[i].is_ascii_digit() || joiner) {
                    break;
                }
                i += 1;
            }
            out.push(&text[start..i]);
        } else {
            i += 1;
        }
    }
    out
}

/// The facts of a text, as the quality estimate counts them: numbers (`7`, `3.5`, `2023-05-08`),
/// calendar words (months, weekdays, yesterday…), and names (capitalised words that do not start
/// a sentence and are not stopwords). Lowercased.
pub fn facts(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for n in numbers(text) {
        out.insert(n.to_owned());
    }
    for s in sentences(text) {
        let mut first = true;
        for raw in s.split_whitespace() {
            let w = raw.trim_matches(|c: char| !c.is_alphanumeric());
            let lower = w.to_lowercase();
            let name = !first
                && w.chars().next().is_some_and(char::is_uppercase)
                && w.chars().count() > 1
                && !is_stopword(&lower);
            if name || is_calendar(&lower) {
                out.insert(lower);
            }
            // A label like "Caroline:" ends the sentence start too.
            first = raw.ends_with(':') && first;
        }
    }
    out
}

/// One line of a transcript for a summarizer: `Name: text`, `user: text`, tool calls and
/// results spelled out.
pub fn transcript_line(m: &Message) -> String {
    let who = m.name.clone().unwrap_or_else(|| m.role.as_str().to_owned());
    let mut line = match m.role {
        Role::Tool => format!(
            "tool result ({}): {}",
            m.tool_call_id.as_deref().unwrap_or("?"),
            m.text()
        ),
        _ => format!("{who}: {}", m.text()),
    };
    for c in &m.tool_calls {
        line.push_str(&format!(" [called {}({})]", c.name, c.arguments));
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_at_terminators_and_lines() {
        let s = sentences("Hi there! I went to Paris on 7 May. Did you?\nYes. v1.2 is out");
        assert_eq!(
            s,
            vec![
                "Hi there!",
                "I went to Paris on 7 May.",
                "Did you?",
                "Yes.",
                "v1.2 is out"
            ]
        );
    }

    #[test]
    fn facts_are_numbers_dates_and_names() {
        let f = facts("Caroline: I met Melanie in Paris on 7 May, 2023. It cost $1,200.");
        for want in ["melanie", "paris", "7", "may", "2023", "1,200"] {
            assert!(f.contains(want), "{want} missing from {f:?}");
        }
        assert!(!f.contains("i") && !f.contains("it"), "{f:?}");
    }

    #[test]
    fn near_duplicates_have_high_jaccard() {
        let a = shingles(
            "I went to the LGBTQ support group yesterday and it was powerful",
            3,
        );
        let b = shingles(
            "I went to the LGBTQ support group yesterday and it was so powerful",
            3,
        );
        let c = shingles("My kids are excited about summer break and camping", 3);
        assert!(jaccard(&a, &b) > 0.6);
        assert!(jaccard(&a, &c) < 0.1);
    }
}
