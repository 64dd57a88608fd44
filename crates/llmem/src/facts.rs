//! Facts drawn from user messages for long-term memory.
//!
//! The heuristic (no model call) keeps the sentences in which the user states something about
//! themselves or their world: declarative sentences (not questions) of at least three words
//! with a first-person word (`I`, `I'm`, `my`, `we`, `our`, …), or that correct a value with one
//! of the same kind ("Actually it's Tuesday, not Monday"). A fact gets a *key* when it
//! assigns an attribute (`my <thing> is/are/was …`, `I live in/moved to …`, `I work at/as/for …`):
//! a later fact with the same key supersedes the earlier one, which stays findable by id.
//!
//! With [`crate::config::FactMode::Llm`] the chat model lists the facts instead (see
//! [`llm_facts`]); the heuristic is the fallback when the model fails.
//!
//! What a new fact changes ([`Decision`]: add, update, delete, or nothing) is decided against
//! the closest facts already stored: by its words ([`heuristic_decision`]: negations, endings,
//! corrections and moves, [`cues`]), or with `facts = "llm"` by the chat model
//! ([`llm_judgement`]), the words deciding when the model's answer is not a decision. Nothing is
//! deleted: a changed fact is superseded. docs/eval.md ("Changes and contradictions") has the
//! rules' score on the hand-written cases of `crates/llmem/tests/data/changes.json`.

use std::collections::HashSet;
use std::sync::LazyLock;

use llmem_core::{ChatModel, ChatRequest, Message, Result};
use llmem_tiers::text::tokenize;
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
            if words.len() < 3
                || !(words.iter().any(|w| FIRST_PERSON.contains(&w.as_str()))
                    || corrects_a_value(&s))
            {
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

// ---------------------------------------------------------------------------------------------
// Changes and contradictions
// ---------------------------------------------------------------------------------------------

/// What a new fact does to the facts already stored, as memory systems that keep facts decide
/// it: it is new ([`Decision::Add`]), it replaces older facts ([`Decision::Update`]), it says
/// older facts are no longer true ([`Decision::Delete`]: it is stored too, so that the history
/// says who said what when), or it is already known ([`Decision::Noop`]: not stored again).
/// Nothing is ever deleted: an updated or deleted fact is superseded (`superseded_by`), stays
/// findable by id, and searches skip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Add,
    Update,
    Delete,
    Noop,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Add => "add",
            Decision::Update => "update",
            Decision::Delete => "delete",
            Decision::Noop => "noop",
        }
    }
}

/// What decided: the words (the rules of [`heuristic_decision`]), facts' keys alone (a fact
/// the words would add gives an attribute a new value: "my X is …"), or the chat model
/// ([`llm_judgement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    Words,
    Key,
    Model,
}

impl DecidedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Words => "words",
            DecidedBy::Key => "key",
            DecidedBy::Model => "model",
        }
    }
}

/// What became of one fact given to long-term memory.
#[derive(Debug, Clone, PartialEq)]
pub struct FactOutcome {
    pub text: String,
    pub decision: Decision,
    pub decided_by: DecidedBy,
    /// The stored fact's id; none for [`Decision::Noop`].
    pub id: Option<String>,
    /// The facts it superseded.
    pub superseded: Vec<String>,
    /// The chat model's answer, when it was asked (whether or not it was taken).
    pub model_answer: Option<String>,
}

/// The most facts one cue of [`Decision::Delete`] (or a change of place) supersedes.
pub const MAX_CHANGED: usize = 3;
/// Existing facts a new fact is compared with by its words (the store's best by text).
pub const FACT_CANDIDATES: usize = 20;
/// Existing facts the chat model is shown with a new fact, numbered from 1.
pub const JUDGE_CANDIDATES: usize = 5;
/// Metadata key of a stored fact's decision: `add`, `update` or `delete` ([`Decision`]).
pub const FACT_CHANGE: &str = "fact_change";
/// Metadata key of what decided it: `words`, `key` or `model` ([`DecidedBy`]).
pub const FACT_DECIDED_BY: &str = "fact_decided_by";

/// Words that say nothing about what a fact is about.
#[rustfmt::skip]
const FILLER: &[&str] = &[
    "not", "no", "never", "anymore", "longer", "now", "still", "actually", "really", "sorry",
    "sadly", "unfortunately", "well", "oh", "yes", "yeah", "ok", "okay", "even", "already",
    "currently", "recently", "lately", "ever", "much", "lot", "bit", "again", "though",
    "however", "anyway", "maybe", "probably", "please", "thanks", "thank", "hi", "hello",
];
/// Verbs and nouns too light to name what a negation is about ("I don't know").
#[rustfmt::skip]
const LIGHT: &[&str] = &[
    "know", "think", "want", "need", "mind", "remember", "understand", "believe", "feel", "see",
    "get", "got", "say", "said", "guess", "expect", "sure", "thing", "something", "anything",
    "everything", "nothing", "way", "yet", "mean", "do", "doing",
];
#[rustfmt::skip]
const NUMBERS: &[(&str, &str)] = &[
    ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"), ("six", "6"),
    ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"), ("eleven", "11"),
    ("twelve", "12"), ("thirteen", "13"), ("fourteen", "14"), ("fifteen", "15"),
    ("sixteen", "16"), ("seventeen", "17"), ("eighteen", "18"), ("nineteen", "19"),
    ("twenty", "20"), ("thirty", "30"), ("forty", "40"), ("fifty", "50"), ("hundred", "100"),
];
/// Liking, in any of its words (as stemmed, without a final `e`): one term.
#[rustfmt::skip]
const LIKE: &[&str] = &[
    "lov", "lik", "like", "enjoy", "ador", "fond",
];
/// People a fact can be about instead of the user ("my sister lives with me").
#[rustfmt::skip]
const PERSONS: &[&str] = &[
    "sister", "brother", "mother", "mom", "mum", "father", "dad", "parents", "son", "daughter",
    "kids", "children", "child", "wife", "husband", "partner", "boyfriend", "girlfriend",
    "friend", "neighbour", "neighbor", "boss", "manager", "colleague", "coworker", "cousin",
    "aunt", "uncle", "grandma", "grandmother", "grandpa", "grandfather", "roommate", "flatmate",
    "fiance", "fiancee", "niece", "nephew", "family",
];
/// Words of a relationship that a break-up ends.
#[rustfmt::skip]
const RELATION: &[&str] = &[
    "boyfriend", "girlfriend", "partner", "husband", "wife", "fiance", "fiancee", "spouse",
    "dating", "married", "marriage", "engaged", "relationship", "wedding",
];
/// Words of a job that say nothing of which job.
#[rustfmt::skip]
const JOB_GENERIC: &[&str] = &[
    "job", "work", "position", "role", "career", "company", "employer", "firm", "office",
    "team",
];
/// Words of a job that quitting, retiring or being fired ends: "job" (which a fact that holds
/// one, "I work at Acme", has too) and common occupations.
#[rustfmt::skip]
const JOB: &[&str] = &[
    "job", "employer", "employed", "employee", "engineer", "developer", "programmer",
    "designer", "nurse", "teacher", "lawyer", "accountant", "chef", "waiter",
    "waitress", "barista", "pilot", "analyst", "consultant", "scientist", "researcher",
    "professor", "lecturer", "architect", "electrician", "plumber", "mechanic", "cashier",
    "clerk", "secretary", "journalist", "editor", "pharmacist", "therapist", "firefighter",
    "farmer", "carpenter", "salesman",
];
/// Words of where someone lives, that a move changes.
#[rustfmt::skip]
const LIVE: &[&str] = &[
    "live", "lives", "living", "rent", "renting", "flat", "apartment", "reside", "lodge",
];
#[rustfmt::skip]
const WEEKDAYS: &[&str] = &[
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
];
#[rustfmt::skip]
const MONTHS: &[&str] = &[
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
];
#[rustfmt::skip]
const COLOURS: &[&str] = &[
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "black", "white", "grey",
    "gray", "brown",
];
/// Where the object of a verb ends ("sold my car last week": "my car").
#[rustfmt::skip]
const OBJECT_END: &[&str] = &[
    "and", "or", "on", "in", "to", "with", "from", "by", "after", "before", "during", "since",
    "for", "at", "because", "when", "but", "so", "than", "then", "last", "this", "next", "ago",
    "yesterday", "today", "which", "who", "that", "as",
];

/// The canonical terms of a word list.
fn canon_set(words: &[&str]) -> HashSet<String> {
    words.iter().flat_map(|w| terms_of(w, false)).collect()
}

static FILLER_C: LazyLock<HashSet<String>> = LazyLock::new(|| {
    FILLER
        .iter()
        .flat_map(|w| tokenize(w))
        .map(|t| canon_term(&t))
        .collect()
});
static LIGHT_C: LazyLock<HashSet<String>> = LazyLock::new(|| canon_set(LIGHT));
static PERSONS_C: LazyLock<HashSet<String>> = LazyLock::new(|| canon_set(PERSONS));
static RELATION_C: LazyLock<HashSet<String>> = LazyLock::new(|| canon_set(RELATION));
static JOB_GENERIC_C: LazyLock<HashSet<String>> = LazyLock::new(|| canon_set(JOB_GENERIC));
static JOB_C: LazyLock<HashSet<String>> = LazyLock::new(|| canon_set(JOB));
static LIVE_C: LazyLock<HashSet<String>> = LazyLock::new(|| canon_set(LIVE));
static WEEKDAYS_C: LazyLock<HashSet<String>> = LazyLock::new(|| canon_set(WEEKDAYS));
static MONTHS_C: LazyLock<HashSet<String>> = LazyLock::new(|| canon_set(MONTHS));
static COLOURS_C: LazyLock<HashSet<String>> = LazyLock::new(|| canon_set(COLOURS));

fn re(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

/// Contractions written out, and the user as the first person (the model writes "User …").
static CONTRACTIONS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"\bcan'?t\b", "can not"),
        (r"\bwon'?t\b", "will not"),
        (r"n't\b", " not"),
        (
            r"\b(do|does|did|is|are|was|were|have|has|had)nt\b",
            "$1 not",
        ),
        (r"\bdont\b", "do not"),
        (r"\bi'?m\b", "i am"),
        (r"'re\b", " are"),
        (r"'ve\b", " have"),
        (r"'ll\b", " will"),
        (r"\b(it|that|there|he|she|what|who|this)'s\b", "$1 is"),
        (r"\b(?:the )?user's\b", "my"),
        (r"\b(?:the )?user\b", "i"),
    ]
    .into_iter()
    .filter_map(|(p, to)| re(p).map(|r| (r, to)))
    .collect()
});

/// Times at which a change happened ("last week", "in May", "two years ago"): not what it is
/// about.
static WHEN_SAID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let units = "minutes?|hours?|days?|weeks?|weekends?|months?|years?|summer|winter|spring|autumn|fall|night|time";
    let months = MONTHS.join("|");
    let days = WEEKDAYS.join("|");
    re(&format!(
        r"\b(?:last|this|next|past)\s+(?:{units}|{days}|{months})\b|\b(?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|a few|few|several|a couple of|couple of)\s+(?:{units})\s+ago\b|\b(?:in|since|until|by)\s+(?:early\s+|late\s+|mid\s+)?(?:{months})(?:\s+\d{{4}})?\b|\b(?:in|since)\s+\d{{4}}\b|\b(?:yesterday|today|tonight|tomorrow|recently|lately|ago)\b"
    ))
});

static CLAUSES: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"\s*(?:[,;:!.]|\s-\s|\bbut\b|\bwhen\b|\bbecause\b|\bso\b|\balthough\b|\bthough\b|\bwhile\b|\bwhereas\b)\s*",
    )
});
/// A negation that says a thing stopped ("no longer", "not … anymore").
static NO_LONGER: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(r"\bno longer\b|\bnot\b.*\b(?:anymore|any more|any longer)\b|\bnever\b.*\bagain\b")
});
/// A plain negation of a present state ("I don't have a car", "I'm not a nurse", "I haven't
/// got a car"), not of a past event ("I didn't grow tomatoes this year", "I haven't talked to
/// her").
static NEGATED: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"\b(?:do|does|am|is|are)\s+not\b|\b(?:have|has)\s+not\s+(?:got\s+)?(?:a|an|any|the|my|our)\b",
    )
});
/// A negated modal ("I won't give up", "I can't have dairy"): no statement of what is so.
static MODAL_NOT: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"\b(?:will|would|can|could|should|shall|might|must)\s+not\b"));
/// Not yet ("I haven't tried it yet").
static NOT_YET: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"\byet\b"));
/// Any negation word, in an existing fact.
static NEGATIVE: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"\b(?:not|no|never|nobody|nothing|none)\b"));
static CONDITIONAL: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"\b(?:if|unless|whether|wish|hope)\b"));
/// A verb that ends having or doing its object ("sold my car", "quit my job at X").
static ENDS_OBJECT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"\b(?P<verb>sold|sell|selling|lost|losing|gave away|given away|give away|giving away|gave up|given up|give up|giving up|got rid of|get rid of|gotten rid of|quit|quitting|stopped|stopping|cancelled|canceled|dumped|moved out of|left)\s+(?P<obj>.+)$",
    )
});
/// A subject and a verb that ends it ("my cat Luna passed away", "Tom and I broke up").
static ENDS_SUBJECT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"^(?P<subj>.*?)\s*\b(?P<verb>passed away|died|has died|ran away|was put down|broke up|split up|separated|got divorced|are divorced|were divorced|divorced|retired|got fired|was fired|been fired|got laid off|was laid off|were laid off|been laid off|resigned|moved out)\b(?P<rest>.*)$",
    )
});
/// Someone moved house ("my parents moved to Florida").
static MOVED_HOME: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(r"^(?P<subj>.*?)\s*\b(?:moved|relocated)\s+(?:back\s+)?(?:to|into|in with|over to)\b")
});
/// Something was moved to another time or place ("we moved the party to Sunday").
static MOVED_THING: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"\b(?:moved|rescheduled|postponed|pushed|shifted|changed)\s+(?:the|my|our|his|her|their)\s+(?P<z>[\w']+(?:\s+[\w']+)?)\s+(?:to|until|till|from|back)\b",
    )
});
static USED_TO: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"\bused to\s+(?P<v>.+)$"));
/// Corrections naming the value they reject: `x` rejected, `y` its replacement.
static REJECTED: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    let art = r"(?:a\s+|an\s+|the\s+|my\s+|our\s+)?";
    [
        // "not blue but green"
        format!(r"\bnot\s+{art}(?P<x>[\w']+(?:\s+[\w']+){{0,2}}?)\s*,?\s+but\s+(?:rather\s+)?(?:to\s+|in\s+|at\s+|on\s+)?{art}(?P<y>[\w']+)"),
        // "Tuesday, not Monday"
        format!(r"(?P<y>[\w']+(?:\s+[\w']+){{0,2}})\s*,\s*(?:and\s+)?not\s+{art}(?P<x>[\w']+(?:\s+[\w']+){{0,2}}?)\s*(?:[.!;,]|$)"),
        // "Spain instead of Italy"
        format!(r"(?P<y>[\w']+)\s+(?:instead of|rather than)\s+{art}(?P<x>[\w']+)"),
        // "moved from Berlin to Munich"
        format!(r"\b(?:moved|move|moving|changed|change|changing|switched|switch|switching|went|gone|upgraded|downgraded|rescheduled|postponed|pushed|shifted|transferred|relocated|promoted|converted)\b.*?\bfrom\s+{art}(?P<x>[\w']+(?:\s+[\w']+)?)\s+to\s+{art}(?P<y>[\w']+)"),
    ]
    .iter()
    .filter_map(|p| re(p))
    .collect()
});
/// Corrections that say so ("correction:", "I meant", "I changed my mind").
static CORRECTS: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"^\W*correction\b|\bto correct myself\b|\bi meant\b|\bi misspoke\b|\bmy mistake\b|\bscratch that\b|\bchanged (?:my|our) minds?\b|\bon second thought\b|\bi was wrong\b",
    )
});
/// Words that may start a correction, or just a sentence ("actually", "sorry").
static MAY_CORRECT: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"^\W*(?:actually|sorry|oops|wait|no)\b|\bactually\b|\bi mean\b"));

fn found(r: &LazyLock<Option<Regex>>, s: &str) -> bool {
    r.as_ref().is_some_and(|r| r.is_match(s))
}

/// A fact's words, lower-case, contractions written out, the user in the first person.
fn norm(text: &str) -> String {
    let mut s = text.to_lowercase().replace(['’', '‘'], "'");
    for (r, to) in CONTRACTIONS.iter() {
        s = r.replace_all(&s, *to).into_owned();
    }
    s
}

/// A stemmed term in canonical form: numbers as digits, no final `e` (`live`, `living` and
/// `lived` agree), one term for liking.
fn canon_term(t: &str) -> String {
    let mut s = NUMBERS
        .iter()
        .find(|(w, _)| *w == t)
        .map_or_else(|| t.to_owned(), |(_, d)| (*d).to_owned());
    if s.len() > 3 && s.ends_with('e') {
        s.pop();
    }
    if LIKE.contains(&s.as_str()) {
        return "like".into();
    }
    s
}

/// The content terms of normalised text, in order, once each: stop words, filler and (with
/// `drop_when`) the times a change happened dropped.
fn terms_of(s: &str, drop_when: bool) -> Vec<String> {
    let s = match (&*WHEN_SAID, drop_when) {
        (Some(r), true) => r.replace_all(s, " ").into_owned(),
        _ => s.to_owned(),
    };
    let mut out: Vec<String> = Vec::new();
    for t in tokenize(&s) {
        let c = canon_term(&t);
        if !FILLER_C.contains(&c) && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The content terms of a fact.
pub fn fact_terms(text: &str) -> Vec<String> {
    terms_of(&norm(text), true)
}

/// Whether two facts say the same words (case and punctuation aside).
pub fn same_fact(a: &str, b: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        norm(s)
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let a = words(a);
    !a.is_empty() && a == words(b)
}

/// The person a fact is about when it is not the user ("my sister lives …": `sister`).
fn owner(normalised: &str) -> Option<String> {
    let mut words = normalised
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .skip_while(|w| {
            [
                "so", "well", "oh", "and", "but", "actually", "sadly", "also",
            ]
            .contains(w)
        });
    if !matches!(words.next(), Some("my" | "our")) {
        return None;
    }
    words
        .take(3)
        .flat_map(|w| terms_of(w, false))
        .find(|t| PERSONS_C.contains(t))
}

/// The kind of value a term is, for corrections that swap one value for another.
fn kind_of(term: &str, names: &HashSet<String>) -> Option<&'static str> {
    if term.chars().all(|c| c.is_ascii_digit()) {
        Some("number")
    } else if WEEKDAYS_C.contains(term) {
        Some("weekday")
    } else if MONTHS_C.contains(term) {
        Some("month")
    } else if COLOURS_C.contains(term) {
        Some("colour")
    } else if names.contains(term) {
        Some("name")
    } else {
        None
    }
}

/// Words written with a capital inside a sentence (names), as terms.
fn names_in(text: &str) -> HashSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .skip(1)
        .filter(|w| {
            w.chars().next().is_some_and(char::is_uppercase) && *w != "I" && !w.starts_with("I'")
        })
        .flat_map(|w| terms_of(&w.to_lowercase(), false))
        .collect()
}

/// A change a fact's words announce, and what an existing fact must have for it to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    /// [`Decision::Update`] or [`Decision::Delete`].
    pub decision: Decision,
    /// Terms the existing fact must all have: what the change is about.
    pub must: Vec<String>,
    /// Terms of which the existing fact must have one, when there are any (a break-up: the
    /// words of a relationship).
    pub any: Vec<String>,
    /// The new fact's other terms: they rank the facts the cue applies to.
    pub context: Vec<String>,
    /// The share of `context` the existing fact must have (0: none needed).
    pub share: f32,
    /// Whether that share must be exceeded rather than reached, and by the share of the
    /// existing fact's terms in it too (a weak correction: "actually", "sorry").
    pub strict: bool,
    /// The most terms the existing fact may have besides `must` (a plain negation ends only
    /// the same statement: "I don't have a car" ends "I have a car", not "I have a car and a
    /// dog"), when limited.
    pub extra: Option<usize>,
    /// Whether the existing fact must differ from the new one by a term each way (a weak
    /// correction swaps a value).
    pub swap: bool,
    /// Only the best existing fact changes (a correction), else up to [`MAX_CHANGED`].
    pub one: bool,
    /// Words to search the existing facts with besides the new fact's own.
    pub hint: &'static [&'static str],
}

impl Cue {
    fn new(decision: Decision, must: Vec<String>) -> Self {
        Cue {
            decision,
            must,
            any: Vec::new(),
            context: Vec::new(),
            share: 0.0,
            strict: false,
            extra: None,
            swap: false,
            one: false,
            hint: &[],
        }
    }

    fn any(mut self, words: &'static [&'static str], set: &HashSet<String>) -> Self {
        self.must.retain(|t| !set.contains(t));
        self.any = words.iter().flat_map(|w| terms_of(w, false)).collect();
        self.hint = words;
        self
    }
}

/// The terms of the object a verb ends: up to the first preposition, a time or a new clause;
/// through `at/for/with X` when the object is a job in general ("my job at Globex": `globex`,
/// with the words of a job to choose from).
fn object_cue(decision: Decision, obj: &str, through_verb: bool) -> Option<Cue> {
    let obj = match &*WHEN_SAID {
        Some(r) => r.replace_all(obj, " ").into_owned(),
        None => obj.to_owned(),
    };
    let words: Vec<&str> = obj
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let end = words
        .iter()
        .position(|w| OBJECT_END.contains(w))
        .unwrap_or(words.len());
    let light = |ts: Vec<String>| -> Vec<String> {
        ts.into_iter().filter(|t| !LIGHT_C.contains(t)).collect()
    };
    let head = light(terms_of(&words[..end].join(" "), false));
    // The phrase after the first preposition, up to the next one.
    let after = || -> Vec<String> {
        let rest = words.get(end + 1..).unwrap_or(&[]);
        let stop = rest
            .iter()
            .position(|w| OBJECT_END.contains(w))
            .unwrap_or(rest.len());
        light(terms_of(&rest[..stop].join(" "), false))
    };
    if !head.is_empty() && head.iter().all(|t| JOB_GENERIC_C.contains(t)) {
        let at = words
            .get(end)
            .is_some_and(|w| ["at", "for", "with"].contains(w));
        let must = if at { after() } else { Vec::new() };
        return Some(Cue::new(decision, must).any(JOB, &JOB_C));
    }
    let must = if through_verb && head.len() == 1 {
        // "used to live in Paris": a verb alone says too little.
        let mut m = head;
        m.extend(after());
        m
    } else {
        head
    };
    (!must.is_empty()).then(|| Cue::new(decision, must))
}

/// A correction that names the value it rejects.
struct Rejected {
    /// The rejected value's terms.
    must: Vec<String>,
    /// The terms of its replacement left out of the context: the one of the same kind as the
    /// rejected value ("three kids, not two": `3`), else a one-word replacement.
    replacement: Vec<String>,
    /// The replacement's term of the same kind (number, weekday, month, colour, name).
    typed: Option<String>,
}

/// The corrections of normalised text `s` that name the value they reject.
fn rejected(s: &str, names: &HashSet<String>) -> Vec<Rejected> {
    let mut out = Vec::new();
    for r in REJECTED.iter() {
        for c in r.captures_iter(s) {
            let (Some(x), Some(y)) = (c.name("x"), c.name("y")) else {
                continue;
            };
            let must = terms_of(x.as_str(), true);
            let Some(last) = must.last() else { continue };
            let ys = terms_of(y.as_str(), true);
            let kind = kind_of(last, names);
            let typed = ys
                .iter()
                .find(|t| kind.is_some() && kind_of(t, names) == kind)
                .cloned();
            let replacement = match &typed {
                Some(t) => vec![t.clone()],
                None if ys.len() == 1 => ys,
                None => Vec::new(),
            };
            out.push(Rejected {
                must,
                replacement,
                typed,
            });
        }
    }
    out
}

/// The changes the words of a fact announce (none for most facts).
pub fn cues(text: &str) -> Vec<Cue> {
    let s = norm(text);
    let names = names_in(text);
    let all_terms = terms_of(&s, true);
    let mut out = Vec::new();
    // Corrections naming the value they reject.
    for r in rejected(&s, &names) {
        let context: Vec<String> = all_terms
            .iter()
            .filter(|t| !r.must.contains(t) && !r.replacement.contains(t))
            .cloned()
            .collect();
        if r.typed.is_none() && context.is_empty() && r.must.len() < 2 {
            // "fun, not scary": nothing says which fact it corrects.
            continue;
        }
        let mut cue = Cue::new(Decision::Update, r.must);
        cue.share = if r.typed.is_some() || context.is_empty() {
            0.0
        } else {
            0.5
        };
        cue.context = context;
        cue.one = true;
        if !out.contains(&cue) {
            out.push(cue);
        }
    }
    // Corrections that do not name the value they reject: the closest fact, if close enough.
    let strong = found(&CORRECTS, &s);
    if out.is_empty() && (strong || found(&MAY_CORRECT, &s)) {
        let mut bare = s.clone();
        for r in [&*CORRECTS, &*MAY_CORRECT].into_iter().flatten() {
            bare = r.replace_all(&bare, " ").into_owned();
        }
        let context = terms_of(&bare, true);
        if !context.is_empty() {
            let mut cue = Cue::new(Decision::Update, Vec::new());
            cue.context = context;
            cue.share = 0.5;
            cue.strict = !strong;
            cue.swap = !strong;
            cue.one = true;
            out.push(cue);
        }
    }
    let Some(split) = &*CLAUSES else { return out };
    for clause in split.split(&s).map(str::trim).filter(|c| !c.is_empty()) {
        if found(&CONDITIONAL, clause) {
            continue;
        }
        let no_longer = found(&NO_LONGER, clause);
        if no_longer || found(&NEGATED, clause) || found(&MODAL_NOT, clause) {
            let must: Vec<String> = terms_of(clause, true)
                .into_iter()
                .filter(|t| !LIGHT_C.contains(t))
                .collect();
            // "I won't give up", "I haven't tried it yet": not a statement that something is
            // over.
            let plain = !no_longer && found(&NEGATED, clause) && !found(&NOT_YET, clause);
            if !must.is_empty() && (no_longer || plain) {
                let mut cue = Cue::new(Decision::Delete, must);
                if !no_longer {
                    cue.extra = Some(1);
                }
                out.push(cue);
            }
            continue;
        }
        if let Some(c) = ENDS_OBJECT.as_ref().and_then(|r| r.captures(clause)) {
            let verb = c.name("verb").map_or("", |m| m.as_str());
            let obj = c.name("obj").map_or("", |m| m.as_str());
            let first = obj.split_whitespace().next().unwrap_or("");
            let ok = match verb {
                "left" => {
                    names.contains(&canon_term(first))
                        || [
                            "my job",
                            "my position",
                            "my company",
                            "the company",
                            "the firm",
                            "my team",
                        ]
                        .iter()
                        .any(|p| obj.starts_with(p))
                }
                "stopped" | "stopping" => first != "by",
                // "lost my camera", not "lost all my work" or "lost the game".
                "lost" | "losing" => matches!(first, "my" | "our"),
                _ => true,
            };
            if ok && let Some(cue) = object_cue(Decision::Delete, obj, false) {
                out.push(cue);
            }
        }
        if let Some(c) = USED_TO.as_ref().and_then(|r| r.captures(clause))
            && let Some(cue) = object_cue(
                Decision::Delete,
                c.name("v").map_or("", |m| m.as_str()),
                true,
            )
        {
            out.push(cue);
        }
        if let Some(c) = ENDS_SUBJECT.as_ref().and_then(|r| r.captures(clause)) {
            let verb = c.name("verb").map_or("", |m| m.as_str());
            let subj = terms_of(c.name("subj").map_or("", |m| m.as_str()), true);
            let rest = terms_of(c.name("rest").map_or("", |m| m.as_str()), true);
            let both: Vec<String> = subj.iter().chain(&rest).cloned().collect();
            let cue = if verb.contains("fired")
                || verb.contains("laid off")
                || verb == "retired"
                || verb == "resigned"
            {
                Some(Cue::new(Decision::Delete, both).any(JOB, &JOB_C))
            } else if verb.contains("up") || verb.contains("divorced") || verb == "separated" {
                Some(Cue::new(Decision::Delete, both).any(RELATION, &RELATION_C))
            } else if verb == "moved out" {
                Some(Cue::new(Decision::Delete, subj).any(LIVE, &LIVE_C))
            } else {
                (!subj.is_empty()).then(|| Cue::new(Decision::Delete, subj))
            };
            out.extend(cue);
        }
        if let Some(c) = MOVED_HOME.as_ref().and_then(|r| r.captures(clause)) {
            let subj = terms_of(c.name("subj").map_or("", |m| m.as_str()), true);
            out.push(Cue::new(Decision::Update, subj).any(LIVE, &LIVE_C));
        }
        if let Some(c) = MOVED_THING.as_ref().and_then(|r| r.captures(clause)) {
            let z = terms_of(c.name("z").map_or("", |m| m.as_str()), true);
            if !z.is_empty() {
                let mut cue = Cue::new(Decision::Update, z);
                cue.one = true;
                out.push(cue);
            }
        }
    }
    out
}

/// What the rules need to know of an existing fact.
struct Known {
    terms: HashSet<String>,
    /// It says something is not so ("I don't eat meat"), or ended ("I lost my job"): another
    /// negation or ending does not end it.
    negative: bool,
    owner: Option<String>,
}

/// A job held ("I work at Acme", "I'm employed"), which "work" alone does not say ("working on
/// my studio", "I worked at a café in college").
static HOLDS_A_JOB: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"\b(?:work|works|working)\s+(?:at|for|as)\b|\bemployed\b"));

impl Known {
    fn new(text: &str) -> Self {
        let s = norm(text);
        let mut terms: HashSet<String> = terms_of(&s, false).into_iter().collect();
        if found(&HOLDS_A_JOB, &s) {
            terms.insert("job".into());
        }
        Known {
            terms,
            negative: found(&NEGATIVE, &s)
                || cues(text).iter().any(|c| c.decision == Decision::Delete),
            owner: owner(&s),
        }
    }
}

/// How well `cue`, from a new fact about `new_owner` with terms `new_terms`, applies to the
/// existing fact `old`: `None` when it does not.
fn cue_match(cue: &Cue, new_owner: Option<&str>, new_terms: &[String], old: &Known) -> Option<f32> {
    let have = &old.terms;
    if cue.decision == Decision::Delete && old.negative {
        return None;
    }
    if !cue.must.iter().all(|t| have.contains(t)) {
        return None;
    }
    if cue.extra.is_some_and(|n| have.len() > cue.must.len() + n) {
        return None;
    }
    if !cue.any.is_empty() && !cue.any.iter().any(|t| have.contains(t)) {
        return None;
    }
    // A fact about someone else is changed only by a fact that names them, and the other way.
    if let Some(p) = new_owner
        && !have.contains(p)
    {
        return None;
    }
    if let Some(q) = &old.owner
        && !new_terms.contains(q)
        && !cue.any.contains(q)
    {
        return None;
    }
    let shared = cue.context.iter().filter(|t| have.contains(*t)).count();
    if cue.share > 0.0 && !cue.context.is_empty() {
        let share = shared as f32 / cue.context.len() as f32;
        // A weak correction: more than half of the new fact's terms, and of the old one's.
        let back = shared as f32 / have.len().max(1) as f32;
        if share < cue.share || (cue.strict && (share <= cue.share || back <= cue.share)) {
            return None;
        }
    }
    if cue.swap {
        let new_set: HashSet<&String> = new_terms.iter().collect();
        let gained = new_terms.iter().any(|t| !have.contains(t));
        let lost = have.iter().any(|t| !new_set.contains(t));
        if !(gained && lost) {
            return None;
        }
    }
    let any = cue.any.iter().any(|t| have.contains(t));
    Some(cue.must.len() as f32 + shared as f32 + if any { 0.5 } else { 0.0 })
}

/// The words' decision on the new fact `new` against `existing` facts of the same user, newest
/// first: [`Decision::Noop`] when it repeats one (and `noop` allows it), else the facts the
/// changes its words announce ([`cues`]) apply to, as indices of `existing`: a correction the
/// best one, a negation or an ending up to [`MAX_CHANGED`]. [`Decision::Update`] when a
/// correction or a change applied, [`Decision::Delete`] when only a negation did,
/// [`Decision::Add`] when none did. Facts' keys are the caller's (see
/// [`crate::longterm::LongTerm::remember_facts`]).
pub fn heuristic_decision(new: &str, existing: &[&str], noop: bool) -> (Decision, Vec<usize>) {
    if noop && existing.iter().any(|e| same_fact(new, e)) {
        return (Decision::Noop, Vec::new());
    }
    let cues = cues(new);
    if cues.is_empty() {
        return (Decision::Add, Vec::new());
    }
    let new_terms = fact_terms(new);
    let new_owner = owner(&norm(new));
    let known: Vec<Option<Known>> = existing
        .iter()
        .map(|e| (!same_fact(new, e)).then(|| Known::new(e)))
        .collect();
    let mut chosen: Vec<usize> = Vec::new();
    let mut update = false;
    for cue in cues {
        let mut hits: Vec<(usize, f32)> = known
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let s = cue_match(&cue, new_owner.as_deref(), &new_terms, k.as_ref()?)?;
                Some((i, s))
            })
            .collect();
        // Stable: of equal scores, the newest.
        hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        let take = if cue.one { 1 } else { MAX_CHANGED };
        for (i, _) in hits.into_iter().take(take) {
            update |= cue.decision == Decision::Update;
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
    }
    let decision = match (chosen.is_empty(), update) {
        (true, _) => Decision::Add,
        (false, true) => Decision::Update,
        (false, false) => Decision::Delete,
    };
    (decision, chosen)
}

/// What to search existing facts with for `new`: its words, and the words a cue of it looks
/// for ("we broke up": the words of a relationship).
pub fn change_query(new: &str) -> String {
    let mut q = new.to_owned();
    let mut hints: Vec<&str> = Vec::new();
    for c in cues(new) {
        for h in c.hint {
            if !hints.contains(h) {
                hints.push(h);
            }
        }
    }
    for h in hints {
        q.push(' ');
        q.push_str(h);
    }
    q
}

/// Whether a sentence corrects a value with one of the same kind ("it's Tuesday, not Monday",
/// "the meeting is at 4, not 3") or starts with "correction": such a sentence is a fact even
/// without a first-person word.
fn corrects_a_value(text: &str) -> bool {
    let s = norm(text);
    s.trim_start().starts_with("correction")
        || rejected(&s, &names_in(text))
            .iter()
            .any(|r| r.typed.is_some())
}

/// The prompt of [`llm_judgement`].
const JUDGE: &str = "You keep a user's memory up to date. You get the user's EXISTING facts, numbered, and one NEW fact. Answer with exactly one line:\nADD if the new fact is new information\nUPDATE <number> if it replaces that existing fact (the same thing with a new value)\nDELETE <number> if it says that existing fact is no longer true\nNOOP if it is already known";

/// Worked examples shown before the question: small models answer in the format far more
/// often after them.
const JUDGE_EXAMPLES: [(&str, &str, &str); 4] = [
    (
        "I live in Paris.\nI have a cat.",
        "I moved to Rome.",
        "UPDATE 1",
    ),
    ("I play chess.", "I have two sisters.", "ADD"),
    (
        "I work at Acme.\nI have a car.",
        "I sold my car.",
        "DELETE 2",
    ),
    ("My dog is called Rex.", "My dog's name is Rex.", "NOOP"),
];

/// The question of [`judge_request`]: the existing facts numbered from 1, and the new one.
fn judge_question(new: &str, existing: &[&str]) -> String {
    let mut list = String::new();
    for (i, e) in existing.iter().enumerate() {
        list.push_str(&format!("{}. {}\n", i + 1, e.trim()));
    }
    format!("EXISTING facts:\n{list}NEW fact: {}\nAnswer:", new.trim())
}

/// The request of [`llm_judgement`]: the instructions, the worked examples as earlier turns,
/// then the existing facts numbered from 1 and the new one.
pub fn judge_request(new: &str, existing: &[&str]) -> ChatRequest {
    let mut messages = vec![Message::system(JUDGE)];
    for (facts, fact, answer) in JUDGE_EXAMPLES {
        let facts: Vec<&str> = facts.lines().collect();
        messages.push(Message::user(judge_question(fact, &facts)));
        messages.push(Message::assistant(answer));
    }
    messages.push(Message::user(judge_question(new, existing)));
    ChatRequest::new(messages)
        .with_max_tokens(12)
        .with_temperature(0.0)
}

static ANSWER: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"(?i)^[\W_]*(?:answer\s*:\s*)?[\W_]*(ADD|UPDATE|DELETE|NOOP|NO-OP|NO OP)\b[\s:#*.\-]*(?:fact\s*)?#?\s*(\d+)?",
    )
});

/// The decision in a model's answer, with the existing fact it names (0-based, below
/// `existing`): the answer's first non-empty line must start with `ADD`, `UPDATE <n>`,
/// `DELETE <n>` or `NOOP` (any case; `Answer:`, markup and a `#` before the number
/// allowed). `None` when it does not, or names no fact, or one out of range.
pub fn parse_judgement(answer: &str, existing: usize) -> Option<(Decision, Option<usize>)> {
    let line = answer.lines().map(str::trim).find(|l| !l.is_empty())?;
    let c = ANSWER.as_ref()?.captures(line)?;
    let word = c.get(1)?.as_str().to_uppercase();
    let n = c.get(2).and_then(|m| m.as_str().parse::<usize>().ok());
    let named = |d: Decision| -> Option<(Decision, Option<usize>)> {
        let n = n?;
        (1..=existing).contains(&n).then(|| (d, Some(n - 1)))
    };
    match word.as_str() {
        "ADD" => Some((Decision::Add, None)),
        "UPDATE" => named(Decision::Update),
        "DELETE" => named(Decision::Delete),
        _ => Some((Decision::Noop, None)),
    }
}

/// Whether a model's decision is one to take. NOOP drops the fact, so it is taken only when an
/// existing fact has every term of the new one, negated alike ("I have a dog" is known from "I
/// have a dog named Rex"; "I don't have a dog anymore" is not). UPDATE or DELETE is taken only
/// of a fact that shares a term with the new one. A small model answers NOOP or UPDATE 1
/// whatever it is shown; such answers count as invalid, and the words decide.
pub fn plausible(decision: (Decision, Option<usize>), new: &str, existing: &[&str]) -> bool {
    let terms = fact_terms(new);
    let negated = |s: &str| found(&NEGATIVE, &norm(s));
    let shared = |e: &str| {
        let have: HashSet<String> = fact_terms(e).into_iter().collect();
        terms.iter().filter(|t| have.contains(*t)).count()
    };
    match decision {
        (Decision::Add, _) => true,
        (Decision::Noop, _) => {
            !terms.is_empty()
                && existing
                    .iter()
                    .any(|e| shared(e) == terms.len() && negated(e) == negated(new))
        }
        (_, Some(i)) => existing.get(i).is_some_and(|e| shared(e) > 0),
        (_, None) => false,
    }
}

/// Asks `model` what the new fact does to the `existing` facts closest to it ([`judge_request`]).
/// Returns its answer and the decision in it ([`parse_judgement`]; `None` when the answer is
/// not one).
pub async fn llm_judgement(
    model: &dyn ChatModel,
    new: &str,
    existing: &[&str],
) -> Result<(String, Option<(Decision, Option<usize>)>)> {
    let answer = model
        .chat(judge_request(new, existing))
        .await?
        .message
        .text();
    let parsed = parse_judgement(&answer, existing.len());
    Ok((answer, parsed))
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
    fn a_correction_of_a_value_is_a_fact_without_a_first_person_word() {
        let f = heuristic_facts("Actually it's Tuesday, not Monday. It was fun, not scary.");
        let texts: Vec<&str> = f.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts, ["Actually it's Tuesday, not Monday."]);
    }

    #[test]
    fn the_model_answer_parses_strictly() {
        use Decision::*;
        for (answer, want) in [
            ("ADD", Some((Add, None))),
            ("add.", Some((Add, None))),
            ("UPDATE 2", Some((Update, Some(1)))),
            (
                "Answer: delete #3 because it ended",
                Some((Delete, Some(2))),
            ),
            ("**UPDATE** fact 1", Some((Update, Some(0)))),
            ("\n NOOP\nADD", Some((Noop, None))),
            ("NO-OP", Some((Noop, None))),
            ("UPDATE", None),
            ("DELETE 6", None),
            ("UPDATE 0", None),
            ("The answer is ADD", None),
            ("ADDITIONAL", None),
            ("", None),
        ] {
            assert_eq!(parse_judgement(answer, 5), want, "{answer:?}");
        }
    }

    #[test]
    fn a_small_model_s_reflexes_are_not_taken() {
        let existing = ["I have a dog named Rex.", "I work at Acme."];
        let new = "I moved to Porto last year.";
        assert!(!plausible((Decision::Noop, None), new, &existing));
        assert!(!plausible((Decision::Update, Some(0)), new, &existing));
        assert!(plausible((Decision::Add, None), new, &existing));
        let new = "I don't have a dog anymore.";
        assert!(plausible((Decision::Delete, Some(0)), new, &existing));
        assert!(!plausible((Decision::Noop, None), new, &existing));
        assert!(plausible(
            (Decision::Noop, None),
            "I have a dog.",
            &existing
        ));
        let fix = "Actually it's Tuesday, not Monday.";
        assert!(!plausible(
            (Decision::Noop, None),
            fix,
            &["My dentist is on Monday."]
        ));
    }

    fn decide(new: &str, existing: &[&str]) -> (Decision, Vec<usize>) {
        heuristic_decision(new, existing, true)
    }

    #[test]
    fn the_words_decide() {
        let existing = [
            "My sister lives in Boston.",
            "I have a dog named Rex.",
            "I work at Acme.",
            "I don't eat meat.",
        ];
        assert_eq!(
            decide("I have a dog named Rex.", &existing),
            (Decision::Noop, vec![])
        );
        assert_eq!(
            decide("I don't have a dog anymore.", &existing),
            (Decision::Delete, vec![1])
        );
        assert_eq!(
            decide("I quit my job.", &existing),
            (Decision::Delete, vec![2])
        );
        assert_eq!(
            decide(
                "My sister moved to Denver.",
                &["I live in Oslo.", "My sister lives in Boston."]
            ),
            (Decision::Update, vec![1])
        );
        // A negation does not end a negation; an unrelated one ends nothing.
        assert_eq!(decide("I no longer eat meat.", &existing).0, Decision::Add);
        assert_eq!(decide("I don't like the rain.", &existing).0, Decision::Add);
        // Someone else's fact is not the user's.
        assert_eq!(
            decide("My brother doesn't work at Acme anymore.", &existing).0,
            Decision::Add
        );
        // The user, as the model writes facts.
        assert_eq!(
            decide("User no longer works at Acme.", &existing),
            (Decision::Delete, vec![2])
        );
    }

    #[test]
    fn keys_match_across_phrasings() {
        assert_eq!(fact_key("My API key is 123"), fact_key("my api key is 456"));
        assert_eq!(fact_key("I work at Acme"), Some("work".into()));
        assert_eq!(fact_key("The weather is nice"), None);
    }
}
