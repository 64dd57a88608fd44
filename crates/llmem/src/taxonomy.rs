//! Broader terms for a memory's lexical search, from WordNet's noun hierarchy.
//!
//! A question often names a kind of thing ("What instruments does Melanie play?") where the
//! conversation named instances ("I play clarinet", "playing my violin"). Lexical search cannot
//! link them, and a small embedding model links them weakly. Document expansion does: each
//! noun of a memory adds its broader terms (clarinet → woodwind, instrument) to the memory's
//! record ([`llmem_core::BROADER`]), which lexical search indexes at a lower weight than the
//! words said, so the question's own word finds it.
//!
//! The hierarchy is WordNet 3.1's (`index.noun` and `data.noun` of its database, installed by
//! `cargo xtask setup wordnet` into `<cache>/wordnet`). A word takes its most frequent sense;
//! inside a sentence, a capitalised word only a proper-noun sense (a name such as "Shadow" is
//! not read as a shadow) and a lower-case one only a common-noun sense. Broader terms come from
//! [`LEVELS`] steps up, each word of each ("musical instrument" → "musical", "instrument"), but
//! only those at least [`MIN_DEPTH`] steps below the root: "entity", "object" or "act" would match
//! everything. Each noun is walked on its own, so a turn's terms do not depend on the order of
//! its nouns. On LoCoMo (docs/eval.md) two levels and depth 5 were measured best of those
//! tried.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use llmem_core::{Error, Result};
use llmem_tiers::text::tokenize;

/// Steps up the hierarchy a word's broader terms come from.
pub const LEVELS: usize = 2;
/// Broader terms closer to the root than this are too general to keep.
pub const MIN_DEPTH: u16 = 5;

/// A noun sense: its words (as WordNet spells them, `_` between the words of a compound), the
/// senses directly above it, and its distance from the root.
#[derive(Debug)]
struct Synset {
    words: Vec<Box<str>>,
    hypernyms: Vec<u32>,
    depth: u16,
}

/// WordNet's nouns: each lemma's senses, most frequent first, and the hierarchy above them.
#[derive(Debug)]
pub struct Taxonomy {
    senses: HashMap<Box<str>, Vec<u32>>,
    synsets: Vec<Synset>,
}

fn config_error(message: String) -> Error {
    Error::Config {
        key: "retrieval.taxonomy".into(),
        message,
    }
}

fn bad(file: &Path, line: usize, what: &str) -> Error {
    config_error(format!(
        "{}:{line}: {what}; this is not a WordNet database file (run `cargo xtask setup wordnet`)",
        file.display()
    ))
}

fn read(file: &Path) -> Result<String> {
    let bytes = std::fs::read(file).map_err(|e| {
        config_error(format!(
            "cannot read {}: {e} (run `cargo xtask setup wordnet`, or point retrieval.taxonomy at a WordNet `dict` directory)",
            file.display()
        ))
    })?;
    // WordNet 3.1's files are ASCII; an older database may be Latin-1, read byte for byte.
    String::from_utf8(bytes).or_else(|e| Ok(e.into_bytes().into_iter().map(char::from).collect()))
}

impl Taxonomy {
    /// Loads `index.noun` and `data.noun` from a WordNet `dict` directory.
    pub fn load(dir: &Path) -> Result<Taxonomy> {
        let data_file = dir.join("data.noun");
        let data = read(&data_file)?;
        let mut synsets = Vec::new();
        // Each synset's offset (its byte position: the file is in offset order) and pointers.
        let mut offsets: Vec<u32> = Vec::new();
        let mut pointers: Vec<Vec<u32>> = Vec::new();
        let mut f: Vec<&str> = Vec::new();
        for (n, line) in data.lines().enumerate() {
            if line.starts_with(' ') || line.is_empty() {
                continue; // the licence at the top
            }
            // The gloss, after ` | `, is not needed.
            f.clear();
            f.extend(line.split_once(" | ").map_or(line, |(f, _)| f).split(' '));
            let field = |i: usize| {
                f.get(i)
                    .copied()
                    .ok_or_else(|| bad(&data_file, n + 1, "line ends early"))
            };
            let offset = |i: usize| {
                field(i)?
                    .parse::<u32>()
                    .map_err(|_| bad(&data_file, n + 1, "a synset offset is not a number"))
            };
            let count = usize::from_str_radix(field(3)?, 16)
                .map_err(|_| bad(&data_file, n + 1, "word count is not hexadecimal"))?;
            let words = (0..count)
                .map(|i| field(4 + 2 * i).map(Box::from))
                .collect::<Result<Vec<_>>>()?;
            let at = 4 + 2 * count;
            let links: usize = field(at)?
                .parse()
                .map_err(|_| bad(&data_file, n + 1, "pointer count is not a number"))?;
            let mut up = Vec::new();
            for i in 0..links {
                let (symbol, pos) = (field(at + 1 + 4 * i)?, field(at + 3 + 4 * i)?);
                // `@` a hypernym, `@i` the class of an instance (Rome → national capital).
                if (symbol == "@" || symbol == "@i") && pos == "n" {
                    up.push(offset(at + 2 + 4 * i)?);
                }
            }
            offsets.push(offset(0)?);
            synsets.push(Synset {
                words,
                hypernyms: Vec::new(),
                depth: u16::MAX,
            });
            pointers.push(up);
        }
        if !offsets.is_sorted() {
            return Err(config_error(format!(
                "{}: synsets are not in offset order; this is not a WordNet database file (run `cargo xtask setup wordnet`)",
                data_file.display()
            )));
        }
        let find = |o: u32| offsets.binary_search(&o).ok().map(|i| i as u32);
        for (s, up) in synsets.iter_mut().zip(&pointers) {
            s.hypernyms = up.iter().filter_map(|&o| find(o)).collect();
        }
        let index_file = dir.join("index.noun");
        let index = read(&index_file)?;
        let mut senses = HashMap::new();
        for (n, line) in index.lines().enumerate() {
            // The licence, and compounds: a word of running text is never one.
            let Some((lemma, rest)) = line.split_once(' ') else {
                continue;
            };
            if line.starts_with(' ') || lemma.contains('_') {
                continue;
            }
            f.clear();
            f.extend(rest.split(' ').filter(|s| !s.is_empty()));
            let pointer_kinds: usize = f
                .get(2)
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| bad(&index_file, n + 1, "no pointer count"))?;
            let ids: Vec<u32> = f
                .iter()
                .skip(3 + pointer_kinds + 2)
                .filter_map(|o| o.parse().ok().and_then(find))
                .collect();
            if !ids.is_empty() {
                senses.insert(Box::from(lemma), ids);
            }
        }
        if senses.is_empty() || synsets.is_empty() {
            return Err(config_error(format!(
                "{} holds no WordNet nouns (run `cargo xtask setup wordnet`)",
                dir.display()
            )));
        }
        let mut t = Taxonomy { senses, synsets };
        for i in 0..t.synsets.len() {
            t.depth(i as u32);
        }
        Ok(t)
    }

    /// The taxonomy `retrieval.taxonomy` names: none for `off`; for `auto`, WordNet in
    /// `<cache>/wordnet` when it is there, else none; else the directory given, which must
    /// hold WordNet.
    pub fn from_setting(setting: &str) -> Result<Option<Arc<Taxonomy>>> {
        match setting.trim() {
            "off" => Ok(None),
            "auto" => {
                let dir = llmem_providers::assets::cache_dir().join("wordnet");
                if dir.join("data.noun").is_file() && dir.join("index.noun").is_file() {
                    Taxonomy::shared(&dir).map(Some)
                } else {
                    tracing::debug!(
                        "no WordNet in the cache directory: memories get no broader terms"
                    );
                    Ok(None)
                }
            }
            dir => Taxonomy::shared(Path::new(dir)).map(Some),
        }
    }

    /// One taxonomy per directory in a process: every manager of an application shares it.
    pub fn shared(dir: &Path) -> Result<Arc<Taxonomy>> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Taxonomy>>>> = OnceLock::new();
        let loaded = LOADED.get_or_init(Default::default);
        if let Some(t) = loaded.lock().ok().and_then(|m| m.get(dir).cloned()) {
            return Ok(t);
        }
        let t = Arc::new(Taxonomy::load(dir)?);
        if let Ok(mut m) = loaded.lock() {
            m.insert(dir.to_owned(), t.clone());
        }
        Ok(t)
    }

    /// Distance from the root (the shortest way up), computed once per synset.
    fn depth(&mut self, i: u32) -> u16 {
        let mut stack = vec![i];
        while let Some(&s) = stack.last() {
            if self.synsets[s as usize].depth != u16::MAX {
                stack.pop();
                continue;
            }
            let up = &self.synsets[s as usize].hypernyms;
            let pending: Vec<u32> = up
                .iter()
                .copied()
                .filter(|&h| self.synsets[h as usize].depth == u16::MAX && !stack.contains(&h))
                .collect();
            if pending.is_empty() {
                let d = up
                    .iter()
                    .map(|&h| self.synsets[h as usize].depth)
                    .filter(|&d| d != u16::MAX)
                    .min()
                    .map_or(0, |d| d + 1);
                self.synsets[s as usize].depth = d;
                stack.pop();
            } else {
                stack.extend(pending);
            }
        }
        self.synsets[i as usize].depth
    }

    /// The sense a word of running text takes: at the start of a sentence, its lemma's most
    /// frequent sense; inside one, its most frequent proper-noun sense if it is capitalised
    /// (a name WordNet does not know is not read as the common noun it spells: "Shadow"),
    /// else its most frequent common-noun sense.
    fn sense(&self, word: &str, sentence_start: bool) -> Option<u32> {
        let proper = word.chars().next().is_some_and(char::is_uppercase);
        lemmas(&word.to_lowercase()).into_iter().find_map(|lemma| {
            let ids = self.senses.get(lemma.as_str())?;
            ids.iter().copied().find(|&id| {
                sentence_start
                    || self.synsets[id as usize].words.iter().any(|w| {
                        w.eq_ignore_ascii_case(&lemma)
                            && w.chars().next().is_some_and(char::is_uppercase) == proper
                    })
            })
        })
    }

    /// The broader terms of `text`'s nouns, lower case, each once, none that `text` already
    /// says: the words of its `broader` field ([`llmem_core::BROADER`]).
    pub fn broader(&self, text: &str) -> Vec<String> {
        let said: HashSet<String> = tokenize(text).into_iter().collect();
        // Senses already walked: a noun said twice is walked once.
        let mut walked = HashSet::new();
        let mut out = Vec::new();
        let mut sentence_start = true;
        for piece in text.split_inclusive(|c: char| !c.is_alphabetic()) {
            let word = piece.trim_end_matches(|c: char| !c.is_alphabetic());
            let start = sentence_start;
            sentence_start = piece.ends_with(['.', '!', '?', '\n']) || (word.is_empty() && start);
            if word.chars().count() < 3 || tokenize(word).is_empty() {
                continue;
            }
            let Some(sense) = self.sense(word, start) else {
                continue;
            };
            if !walked.insert(sense) {
                continue;
            }
            // Each noun's walk is its own, so that what a turn gains does not depend on the
            // order of its nouns: a sense one noun reaches at the last level is still walked
            // past when another reaches it sooner.
            let mut seen = HashSet::new();
            let mut level = vec![sense];
            for _ in 0..LEVELS {
                let mut next = Vec::new();
                for s in level {
                    for &h in &self.synsets[s as usize].hypernyms {
                        if !seen.insert(h) {
                            continue;
                        }
                        next.push(h);
                        let up = &self.synsets[h as usize];
                        if up.depth < MIN_DEPTH {
                            continue;
                        }
                        // Each word of a compound: "musical instrument" is found by
                        // "instruments", "martial art" by "martial arts".
                        for part in up.words.iter().flat_map(|w| w.split('_')) {
                            let part = part.to_lowercase();
                            let stemmed = tokenize(&part);
                            if stemmed.is_empty()
                                || stemmed.iter().all(|t| said.contains(t))
                                || out.contains(&part)
                            {
                                continue;
                            }
                            out.push(part);
                        }
                    }
                }
                level = next;
            }
        }
        out
    }
}

/// The lemmas a word may be an inflection of, the word itself first (WordNet's noun rules:
/// `dogs` → `dog`, `cities` → `city`, `boxes` → `box`, `women` → `woman`).
fn lemmas(word: &str) -> Vec<String> {
    let mut out = vec![word.to_owned()];
    for (suffix, base) in [
        ("ies", "y"),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("s", ""),
    ] {
        if let Some(stem) = word.strip_suffix(suffix)
            && stem.len() >= 2
            && !word.ends_with("ss")
        {
            out.push(format!("{stem}{base}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synset: its offset, its words and its hypernym pointers (symbol, offset).
    type Row = (
        &'static str,
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
    );

    /// A few synsets, written below in WordNet's own file format.
    const SYNSETS: &[Row] = &[
        ("00000001", &["entity"], &[]),
        ("00000002", &["physical_entity"], &[("@", "00000001")]),
        ("00000003", &["object"], &[("@", "00000002")]),
        ("00000004", &["whole"], &[("@", "00000003")]),
        ("00000005", &["artifact"], &[("@", "00000004")]),
        ("00000006", &["instrumentality"], &[("@", "00000005")]),
        ("00000007", &["device"], &[("@", "00000006")]),
        (
            "00000008",
            &["musical_instrument", "instrument"],
            &[("@", "00000007")],
        ),
        ("00000009", &["stringed_instrument"], &[("@", "00000008")]),
        ("00000010", &["violin", "fiddle"], &[("@", "00000009")]),
        ("00000011", &["region"], &[("@", "00000003")]),
        ("00000012", &["area"], &[("@", "00000011")]),
        ("00000013", &["urban_area"], &[("@", "00000012")]),
        ("00000014", &["city", "metropolis"], &[("@", "00000013")]),
        (
            "00000015",
            &["national_capital", "capital"],
            &[("@", "00000014")],
        ),
        ("00000016", &["Rome"], &[("@i", "00000015")]),
        ("00000017", &["darkness"], &[("@", "00000012")]),
        ("00000018", &["shadow"], &[("@", "00000017")]),
    ];
    const INDEX: &[(&str, &[&str])] = &[
        ("capital", &["00000015"]),
        ("city", &["00000014"]),
        ("fiddle", &["00000010"]),
        ("rome", &["00000016"]),
        ("shadow", &["00000018"]),
        ("violin", &["00000010"]),
    ];

    fn wordnet() -> (tempfile::TempDir, Taxonomy) {
        let dir = tempfile::tempdir().unwrap();
        let mut data = String::from("  1 This software and database is being provided ...\n");
        for (offset, words, up) in SYNSETS {
            let words: Vec<String> = words.iter().map(|w| format!("{w} 0")).collect();
            let up: Vec<String> = up.iter().map(|(s, o)| format!("{s} {o} n 0000")).collect();
            data += &format!(
                "{offset} 03 n {:02x} {} {:03} {} | a gloss\n",
                words.len(),
                words.join(" "),
                up.len(),
                up.join(" ")
            );
        }
        let mut index = String::from("  1 This software and database is being provided ...\n");
        for (lemma, offsets) in INDEX {
            index += &format!(
                "{lemma} n {0} 1 @ {0} 0 {1}  \n",
                offsets.len(),
                offsets.join(" ")
            );
        }
        std::fs::write(dir.path().join("data.noun"), data).unwrap();
        std::fs::write(dir.path().join("index.noun"), index).unwrap();
        let t = Taxonomy::load(dir.path()).unwrap();
        (dir, t)
    }

    /// Two levels up, none too near the root, every word of a compound.
    #[test]
    fn a_noun_gains_the_kinds_it_is() {
        let (_dir, t) = wordnet();
        assert_eq!(
            t.broader("I play the violin at night."),
            ["stringed", "instrument", "musical"]
        );
        assert_eq!(
            t.broader("Violins!"),
            t.broader("a violin"),
            "plural, sentence start"
        );
        assert!(t.broader("my fiddle").contains(&"instrument".to_owned()));
        // "device" is three levels up; "artifact" is too general.
        assert!(
            !t.broader("the violin")
                .iter()
                .any(|w| w == "device" || w == "artifact")
        );
        // Words the text says are not repeated.
        assert_eq!(t.broader("my violin, a stringed instrument"), ["musical"]);
    }

    /// A place is an instance of its class; inside a sentence a capitalised word takes only a
    /// proper-noun sense, a lower-case one only a common-noun sense.
    #[test]
    fn capitals_choose_the_sense() {
        let (_dir, t) = wordnet();
        assert_eq!(
            t.broader("We flew to Rome."),
            ["national", "capital", "city", "metropolis"]
        );
        assert!(
            t.broader("we flew to rome").is_empty(),
            "a common noun, if any"
        );
        assert!(t.broader("My puppy Shadow sleeps").is_empty(), "a name");
        assert_eq!(t.broader("Shadow fell over the path"), ["darkness"]);
        assert_eq!(t.broader("a shadow fell"), ["darkness"]);
    }

    /// What a turn gains does not depend on the order of its nouns. Rome reaches "city" two
    /// levels up, "capital" one level up: "urban area", above the city, comes from the
    /// capital whichever is said first.
    #[test]
    fn the_order_of_the_nouns_does_not_matter() {
        let (_dir, t) = wordnet();
        let sorted = |text: &str| {
            let mut terms = t.broader(text);
            terms.sort();
            terms
        };
        let first = sorted("We saw Rome, a capital.");
        assert_eq!(first, sorted("A capital we saw: Rome."));
        assert_eq!(first, ["area", "city", "metropolis", "national", "urban"]);
    }

    /// Text of any shape gives terms or nothing, never a panic.
    #[test]
    fn odd_text_is_harmless() {
        let (_dir, t) = wordnet();
        for text in [
            "",
            "   ",
            "!!!",
            "🎻🎻 violins 🎻",
            "Ünïcödé ВИОЛИНЫ 小提琴",
            "s",
            "'s violin's",
        ] {
            let _ = t.broader(text);
        }
        assert!(
            t.broader("🎻🎻 violins 🎻")
                .contains(&"instrument".to_owned())
        );
        let long = "my violin ".repeat(10_000);
        assert_eq!(t.broader(&long).len(), 3, "each term once");
    }

    #[test]
    fn a_missing_or_broken_database_says_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let e = Taxonomy::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("data.noun") && e.contains("cargo xtask setup wordnet"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("data.noun"),
            "00000001 03 n zz entity 0 000 | x\n",
        )
        .unwrap();
        let e = Taxonomy::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("data.noun:1") && e.contains("hexadecimal"),
            "{e}"
        );
        let e = Taxonomy::from_setting(&dir.path().display().to_string()).unwrap_err();
        assert!(e.to_string().contains("retrieval.taxonomy"), "{e}");
        assert!(Taxonomy::from_setting("off").unwrap().is_none());
    }
}
