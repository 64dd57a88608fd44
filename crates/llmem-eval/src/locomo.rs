//! The LoCoMo data: a JSON list of samples, each a conversation in dated sessions of turns
//! (`dia_id`, `speaker`, `text`, an optional `blip_caption`) and its questions (`qa`: the
//! question, the gold answer, the `dia_id`s of the evidence turns and a category).

use std::collections::HashSet;
use std::io::Read as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use llmem::core::time::MONTHS;
use llmem::when::{CivilDate, with_times};
use serde_json::Value;

/// One LoCoMo conversation, parsed.
#[derive(Debug)]
pub struct Sample {
    pub id: String,
    pub turns: Vec<Turn>,
    pub questions: Vec<Question>,
}

/// One turn of a conversation, with its session's date.
#[derive(Debug)]
pub struct Turn {
    pub dia_id: String,
    pub session: u32,
    pub date: CivilDate,
    pub speaker: String,
    /// What was said, with a shared photo's caption appended.
    pub text: String,
}

/// One question of a conversation.
#[derive(Debug)]
pub struct Question {
    pub text: String,
    /// The gold answer (for adversarial questions: none; the right reply is "not mentioned").
    pub answer: Option<String>,
    /// The `dia_id`s of the turns that hold the answer (those that name a turn).
    pub evidence: Vec<String>,
    pub category: u8,
}

/// LoCoMo's question categories by number.
pub const CATEGORIES: [(u8, &str); 5] = [
    (1, "multi-hop"),
    (2, "temporal"),
    (3, "open-domain"),
    (4, "single-hop"),
    (5, "adversarial"),
];

/// The name of a question category (`other` for a number LoCoMo does not use).
pub fn category_name(c: u8) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(n, _)| *n == c)
        .map_or("other", |(_, name)| name)
}

/// Reads `path` (`-` for stdin) as UTF-8 text; an error names the path and what to do.
fn read_text(path: &Path) -> Result<String> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        buf
    } else {
        match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => bail!(
                "cannot read `{}` ({e}); give --data (or LLMEM_LOCOMO) the LoCoMo JSON file, e.g. locomo-dev.json",
                path.display()
            ),
        }
    };
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            bail!(
                "`{}` is not valid UTF-8 (first bad byte at offset {at}); convert it to UTF-8 first, e.g. `iconv -f latin1 -t utf-8`",
                path.display()
            )
        }
    }
}

/// Reads and checks a LoCoMo file, keeping only the samples in `only` (all when empty); errors
/// name the sample and field that is wrong. Also returns how many evidence ids named no turn
/// (they are skipped).
pub fn read_samples(path: &Path, only: &[String]) -> Result<(Vec<Sample>, usize)> {
    let text = read_text(path)?;
    let v: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON; expected the LoCoMo list of samples",
            path.display()
        )
    })?;
    let Some(list) = v.as_array() else {
        bail!(
            "{}: expected a JSON list of samples with `conversation` and `qa`",
            path.display()
        );
    };
    let mut out = Vec::new();
    let mut malformed = 0;
    for (i, s) in list.iter().enumerate() {
        let id = s["sample_id"]
            .as_str()
            .map_or_else(|| format!("#{i}"), str::to_owned);
        if !only.is_empty() && !only.contains(&id) {
            continue;
        }
        let conv = s["conversation"]
            .as_object()
            .with_context(|| format!("sample {id}: `conversation` is missing or not an object"))?;
        let mut sessions: Vec<u32> = conv
            .keys()
            .filter_map(|k| k.strip_prefix("session_")?.parse().ok())
            .collect();
        sessions.sort_unstable();
        let mut turns = Vec::new();
        for n in sessions {
            let key = format!("session_{n}_date_time");
            let when = conv
                .get(&key)
                .and_then(Value::as_str)
                .with_context(|| format!("sample {id}: `{key}` is missing"))?;
            let date = parse_locomo_date(when)
                .with_context(|| format!("sample {id}: `{key}` = {when:?}"))?;
            for t in conv[&format!("session_{n}")]
                .as_array()
                .into_iter()
                .flatten()
            {
                let (Some(dia), Some(speaker), Some(text)) = (
                    t["dia_id"].as_str(),
                    t["speaker"].as_str(),
                    t["text"].as_str(),
                ) else {
                    bail!(
                        "sample {id}, session {n}: a turn lacks `dia_id`, `speaker` or `text`: {t}"
                    );
                };
                let mut text = text.to_owned();
                if let Some(c) = t["blip_caption"].as_str() {
                    text.push_str(&format!(" [shares a photo: {c}]"));
                }
                turns.push(Turn {
                    dia_id: dia.to_owned(),
                    session: n,
                    date,
                    speaker: speaker.to_owned(),
                    text,
                });
            }
        }
        let known: HashSet<&str> = turns.iter().map(|t| t.dia_id.as_str()).collect();
        let mut questions = Vec::new();
        for q in s["qa"].as_array().into_iter().flatten() {
            let Some(text) = q["question"].as_str() else {
                bail!("sample {id}: a qa item has no `question`: {q}");
            };
            let category = q["category"].as_u64().unwrap_or(0) as u8;
            let answer = match &q["answer"] {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            };
            let mut evidence = Vec::new();
            for e in q["evidence"].as_array().into_iter().flatten() {
                for part in e.as_str().unwrap_or_default().split([';', ',']) {
                    let part = part.trim();
                    if known.contains(part) {
                        evidence.push(part.to_owned());
                    } else if !part.is_empty() {
                        malformed += 1;
                    }
                }
            }
            questions.push(Question {
                text: text.to_owned(),
                answer: if category == 5 { None } else { answer },
                evidence,
                category,
            });
        }
        out.push(Sample {
            id,
            turns,
            questions,
        });
    }
    if out.is_empty() {
        bail!(
            "no samples to evaluate in {}{}",
            path.display(),
            if only.is_empty() {
                String::new()
            } else {
                format!(" (asked for {})", only.join(", "))
            }
        );
    }
    Ok((out, malformed))
}

/// A LoCoMo session date: `1:56 pm on 8 May, 2023`.
pub fn parse_locomo_date(s: &str) -> Result<CivilDate> {
    let bad = || anyhow::anyhow!("expected a date like `1:56 pm on 8 May, 2023`");
    let (clock, day) = s.split_once(" on ").ok_or_else(bad)?;
    let mut c = clock.split_whitespace();
    let (hm, ampm) = (c.next().ok_or_else(bad)?, c.next().unwrap_or("am"));
    let (h, mi) = hm.split_once(':').ok_or_else(bad)?;
    let (mut h, mi): (u32, u32) = (h.parse()?, mi.parse()?);
    if ampm.eq_ignore_ascii_case("pm") && h < 12 {
        h += 12;
    } else if ampm.eq_ignore_ascii_case("am") && h == 12 {
        h = 0;
    }
    let parts: Vec<&str> = day
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    let [d, month, y] = parts[..] else {
        return Err(bad());
    };
    let m = MONTHS
        .iter()
        .position(|n| n.eq_ignore_ascii_case(month))
        .ok_or_else(bad)? as u32
        + 1;
    let date = CivilDate {
        year: y.parse()?,
        month: m,
        day: d.parse()?,
        minute: h * 60 + mi,
    };
    if date.day == 0 || date.day > 31 || h > 23 || mi > 59 {
        return Err(bad());
    }
    Ok(date)
}

/// The memory's text: who said what, when, with relative times resolved.
pub fn memory_text(t: &Turn) -> String {
    format!(
        "[{}] {}: {}",
        t.date.long(),
        t.speaker,
        with_times(&t.text, t.date.timestamp())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locomo_dates_parse() {
        let x = parse_locomo_date("1:56 pm on 8 May, 2023").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            (x.year, x.month, x.day, x.minute),
            (2023, 5, 8, 13 * 60 + 56)
        );
        assert_eq!(x.long(), "8 May 2023");
        assert!(parse_locomo_date("8 May 2023").is_err());
        assert!(parse_locomo_date("1:56 pm on 8 Mai, 2023").is_err());
        assert!(parse_locomo_date("13:60 am on 8 May, 2023").is_err());
    }
}
