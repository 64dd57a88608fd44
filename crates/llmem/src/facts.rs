//! Facts drawn from user messages for long-term memory.
//!
//! The heuristic (no model call) keeps the sentences in which the user states something about
//! themselves or their world: declarative sentences (not questions) of at least three words
//! with a first-person word (`I`, `I'm`, `my`, `we`, `our`, …). A fact gets a *key* when it
//! assigns an attribute (`my <thing> is/are/was …`, `I live in/moved to …`, `I work at/as/for …`):
//! a later fact with the same key supersedes the earlier one, which stays findable by id.
//!
//! With [`crate::config::FactMode::Llm`] the chat model lists the facts instead (see
//! [`llm_facts`]); the heuristic is the fallback when the model fails.

use std::sync::LazyLock;

use llmem_core::{ChatModel, ChatRequest, Message, Result};
use regex::Regex;

/// One fact: its sentence and, when it assigns an attribute, the attribute's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub text: String,
    pub key: Option<String>,
}

const FIRST_PERSON: [&str; 12] = [
    "i", "i'm", "im", "i've", "i'd", "i'll", "my", "me", "mine", "we", "our", "we're",
];

static KEYED: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (
            r"(?i)\b(?:my|user's|the user's)\s+((?:[a-z]+\s+){0,3}?[a-z]+)\s+(?:is|are|was|were|'s)\b",
            "my",
        ),
        (
            r"(?i)\b(?:i|the user)\s+(?:live|lives|moved|move|relocated)\s+(?:in|to)\b",
            "home",
        ),
        (
            r"(?i)\b(?:i|the user)\s+(?:work|works|am working)\s+(?:at|as|for)\b",
            "work",
        ),
    ]
    .into_iter()
    .filter_map(|(re, kind)| Regex::new(re).ok().map(|r| (r, kind)))
    .collect()
});

/// Sentences of `text` with their terminator (`.`, `!`, `?`, or none at a line end).
fn sentences(text: &str) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        match c {
            '.' | '!' | '?' => {
                out.push((std::mem::take(&mut cur), Some(c)));
            }
            '\n' => out.push((std::mem::take(&mut cur), None)),
            c => cur.push(c),
        }
    }
    out.push((cur, None));
    out.into_iter()
        .map(|(s, t)| (s.trim().to_owned(), t))
        .filter(|(s, _)| !s.is_empty())
        .collect()
}

/// The key of a fact that assigns an attribute.
pub fn fact_key(sentence: &str) -> Option<String> {
    KEYED.iter().find_map(|(re, kind)| {
        re.captures(sentence).map(|c| match c.get(1) {
            Some(thing) => format!("{kind} {}", thing.as_str().to_lowercase()),
            None => (*kind).to_owned(),
        })
    })
}

/// The facts the heuristic finds in one user message.
pub fn heuristic_facts(text: &str) -> Vec<Fact> {
    sentences(text)
        .into_iter()
        .filter(|(_, end)| *end != Some('?'))
        .filter_map(|(s, end)| {
            let words: Vec<String> = s
                .split(|c: char| !(c.is_alphanumeric() || c == '\''))
                .filter(|w| !w.is_empty())
                .map(|w| w.to_lowercase().replace('’', "'"))
                .collect();
            if words.len() < 3 || !words.iter().any(|w| FIRST_PERSON.contains(&w.as_str())) {
                return None;
            }
            let text = match end {
                Some(c) if c != '?' => format!("{s}{c}"),
                _ => s,
            };
            Some(Fact {
                key: fact_key(&text),
                text,
            })
        })
        .collect()
}

/// The prompt of [`llm_facts`].
const PROMPT: &str = "List the facts the user states about themselves or their world in the message below: one per line, each a short standalone sentence starting with \"User\" (\"User's sister is called Ana.\"). Keep names, numbers and dates. If there are none, answer NONE.";

/// The facts `model` lists for one user message.
pub async fn llm_facts(model: &dyn ChatModel, text: &str) -> Result<Vec<Fact>> {
    let req = ChatRequest::new(vec![
        Message::system(PROMPT),
        Message::user(format!("Message: {text}")),
    ])
    .with_max_tokens(200)
    .with_temperature(0.0);
    let answer = model.chat(req).await?.message.text();
    Ok(answer
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches(['-', '*', '•'])
                .trim()
                .to_owned()
        })
        .filter(|l| l.split_whitespace().count() >= 3 && !l.eq_ignore_ascii_case("none"))
        .map(|l| Fact {
            key: fact_key(&l),
            text: l,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_person_statements_and_skips_questions() {
        let f = heuristic_facts(
            "Hi there! My dog is called Rex. What is the weather like? I moved to Lisbon in May 2023.",
        );
        let texts: Vec<&str> = f.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(
            texts,
            ["My dog is called Rex.", "I moved to Lisbon in May 2023."]
        );
        assert_eq!(f[0].key.as_deref(), Some("my dog"));
        assert_eq!(f[1].key.as_deref(), Some("home"));
    }

    #[test]
    fn keys_match_across_phrasings() {
        assert_eq!(fact_key("My API key is 123"), fact_key("my api key is 456"));
        assert_eq!(fact_key("I work at Acme"), Some("work".into()));
        assert_eq!(fact_key("The weather is nice"), None);
    }
}
