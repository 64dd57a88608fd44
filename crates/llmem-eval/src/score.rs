//! Scoring an answer as the benchmark does: whether the gold answer is in a text (normalised,
//! whole words, dates by their parts), and the token F1 of a model's answer (LoCoMo's
//! `task_eval/evaluation.py`: its normalisation, then NLTK's Porter stemmer).

use nltk_porter::{Mode, PorterStemmer};

use llmem::core::time::MONTHS;

/// Lower case, punctuation and articles removed, single spaces, padded with one space at each
/// end so that `contains` matches whole words only. Dates compare by their parts, not the way
/// they are written: a number and a word written together are two words ("14September"), an
/// ordinal is its number ("13th"), and a month before its day ("February 24, 2023") is put
/// after it ("24 february 2023"), as the benchmark's own bag-of-words F1 would match them.
pub fn normalise(s: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for w in s
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let w = w.to_lowercase();
        if is_article(&w) {
            continue;
        }
        for part in digit_runs(&w) {
            match words.last() {
                Some(n) if is_ordinal_suffix(part) && n.bytes().all(|b| b.is_ascii_digit()) => {}
                _ => words.push(part.to_owned()),
            }
        }
    }
    let mut i = 1;
    while i < words.len() {
        let day =
            words[i].len() <= 2 && words[i].parse::<u8>().is_ok_and(|d| (1..=31).contains(&d));
        if day && MONTHS.iter().any(|m| m.eq_ignore_ascii_case(&words[i - 1])) {
            words.swap(i - 1, i);
            i += 1;
        }
        i += 1;
    }
    let mut out = String::from(" ");
    for w in &words {
        out.push_str(w);
        out.push(' ');
    }
    out
}

/// A word split where digits meet letters: "14september" is "14", "september".
pub fn digit_runs(w: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut prev: Option<bool> = None;
    for (i, c) in w.char_indices() {
        let digit = c.is_ascii_digit();
        if prev.is_some_and(|p| p != digit) {
            parts.push(&w[start..i]);
            start = i;
        }
        prev = Some(digit);
    }
    parts.push(&w[start..]);
    parts
}

/// The words both answer tests leave out, as the benchmark's normalisation does.
pub fn is_article(w: &str) -> bool {
    matches!(w, "a" | "an" | "the" | "and")
}

/// The ending of an ordinal written in figures ("13th" is 13).
pub fn is_ordinal_suffix(w: &str) -> bool {
    matches!(w, "st" | "nd" | "rd" | "th")
}

/// The items of a gold answer: a multi-hop answer is a list ("pottery, camping, swimming"),
/// split at its commas as the benchmark's own scorer splits it; any other answer is one item.
pub fn answer_items(answer: &str, category: u8) -> Vec<&str> {
    if category == 1 {
        answer.split(',').filter(|p| !p.trim().is_empty()).collect()
    } else {
        vec![answer]
    }
}

/// A gold answer's items ([`answer_items`]), normalised: what it must be found by.
pub fn gold_items(answer: &str, category: u8) -> Vec<String> {
    answer_items(answer, category)
        .into_iter()
        .map(normalise)
        .filter(|p| !p.trim().is_empty())
        .collect()
}

/// Token F1 of an answer as the benchmark scores it (LoCoMo's `task_eval/evaluation.py`): a
/// multi-hop answer's items each take their best F1 against the prediction's comma-separated
/// parts, and the answer scores their mean; an open-domain answer is its first alternative
/// (before any `;`); any other answer is [`token_f1`] of the whole.
pub fn answer_f1(pred: &str, gold: &str, category: u8) -> f64 {
    // An open-domain answer may give alternatives after a semicolon; the scorer takes the first.
    let gold = match category {
        3 => gold.split(';').next().unwrap_or(gold).trim(),
        _ => gold,
    };
    let items = answer_items(gold, category);
    if category != 1 || items.is_empty() {
        return token_f1(pred, gold);
    }
    let parts: Vec<&str> = pred.split(',').collect();
    items
        .iter()
        .map(|g| parts.iter().map(|p| token_f1(p, g)).fold(0.0, f64::max))
        .sum::<f64>()
        / items.len() as f64
}

/// Whether every item of a gold answer is in `text` (normalised), as whole words; an empty
/// answer is.
pub fn answer_in(text: &str, items: &[String]) -> bool {
    items.iter().all(|i| text.contains(i.as_str()))
}

/// Token F1 between a prediction and the gold answer, on the benchmark's tokens
/// ([`scored_tokens`]).
pub fn token_f1(pred: &str, gold: &str) -> f64 {
    let p = scored_tokens(pred);
    let mut g = scored_tokens(gold);
    if p.is_empty() || g.is_empty() {
        return f64::from(u8::from(p.is_empty() && g.is_empty()));
    }
    let (np, ng) = (p.len() as f64, g.len() as f64);
    let mut common = 0.0;
    for w in &p {
        if let Some(i) = g.iter().position(|x| x == w) {
            g.swap_remove(i);
            common += 1.0;
        }
    }
    if common == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (common / np, common / ng);
    2.0 * precision * recall / (precision + recall)
}

/// The words the benchmark's F1 compares (its `normalize_answer`, then NLTK's Porter stemmer):
/// lower case, ASCII punctuation deleted (so "Potter's" is "potters", one word), the words
/// "a", "an", "the" and "and" taken out wherever they stand between word boundaries, and each
/// word left stemmed ("paintings" is "paint").
pub fn scored_tokens(s: &str) -> Vec<String> {
    static STEMMER: std::sync::OnceLock<PorterStemmer> = std::sync::OnceLock::new();
    let stemmer = STEMMER.get_or_init(|| PorterStemmer::new(Mode::Nltk));
    let text: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let mut words = Vec::new();
    for token in text.split_whitespace() {
        // Runs of word characters and of others, as a regex's `\b` sees them; an article run
        // becomes a space, which splits the token there.
        let mut word = String::new();
        let mut run = String::new();
        let mut in_word = None;
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        for c in token.chars().chain(std::iter::once(' ')) {
            let w = is_word(c);
            if in_word.is_some_and(|was| was != w) || c == ' ' {
                if in_word == Some(true) && is_article(&run) {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                } else {
                    word.push_str(&run);
                }
                run.clear();
            }
            run.push(c);
            in_word = Some(w);
        }
        if !word.is_empty() {
            words.push(word);
        }
    }
    words.into_iter().map(|w| stemmer.stem(&w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_on_whole_normalised_words() {
        let ctx = normalise("[7 May 2023] Caroline: I went to the LGBTQ support group!");
        assert!(ctx.contains(&normalise("LGBTQ support group")));
        assert!(ctx.contains(&normalise("7 May, 2023")));
        assert!(!ctx.contains(&normalise("LGBT")), "no partial words");
        // A multi-hop answer is a list: each item must be there, in any order.
        // Dates match however they are written.
        for gold in [
            "May 7, 2023",
            "7May, 2023",
            "May 7th 2023",
            "the 7th of May, 2023",
        ] {
            let g = normalise(gold);
            assert!(
                ctx.contains(&g) || gold.contains(" of "),
                "{gold:?} normalised to {g:?}"
            );
        }
        assert_eq!(normalise("May 7th, 2023"), " 7 may 2023 ");
        assert_eq!(
            normalise("the week before 14September, 2022"),
            " week before 14 september 2022 "
        );
        assert_eq!(normalise("18th birthday"), " 18 birthday ");
        assert_eq!(normalise("May 40 people"), " may 40 people ");
        assert_eq!(normalise("item 5th"), " item 5 ");
        assert_eq!(normalise("May 7, 8 or 9"), " 7 may 8 or 9 ");
        let list = gold_items("support group, 7 May", 1);
        assert_eq!(list.len(), 2);
        assert!(answer_in(&ctx, &list));
        assert!(!answer_in(
            &ctx,
            &gold_items("support group, pride parade", 1)
        ));
        // Other answers are one phrase, commas and all.
        assert!(!answer_in(&ctx, &gold_items("support group, 7 May", 4)));
        assert!(answer_in(&ctx, &gold_items("7 May, 2023", 2)));
        assert!((token_f1("the pottery class", "Pottery class") - 1.0).abs() < 1e-9);
        // A list answer scores each gold item against the best part of the prediction.
        let f = answer_f1("camping, pottery", "pottery, camping, swimming", 1);
        assert!((f - 2.0 / 3.0).abs() < 1e-9, "{f}");
        assert!((answer_f1("pottery", "pottery", 4) - 1.0).abs() < 1e-9);
        assert!(token_f1("dogs", "cats") == 0.0);
        let f = token_f1("a pottery class in July", "pottery class");
        assert!((f - 2.0 * 0.5 / 1.5).abs() < 1e-9, "{f}");
        // The benchmark's words: punctuation deleted, articles out, Porter stems.
        assert_eq!(
            scored_tokens("The paintings, and Harry Potter's books!"),
            ["paint", "harri", "potter", "book"]
        );
        assert_eq!(scored_tokens("the’s a’b ’the x"), ["’s", "’b", "’", "x"]);
        assert!((token_f1("She paints", "painting") - 2.0 / 3.0).abs() < 1e-9);
        // An open-domain answer's first alternative is the one scored.
        assert!(
            (answer_f1("likely yes", "Likely yes; because she enjoys it", 3) - 1.0).abs() < 1e-9
        );
    }
}
