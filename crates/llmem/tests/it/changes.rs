//! Changes and contradictions: the hand-written cases of `tests/it/data/changes.json` run through
//! the real `LongTerm` over a real warm store, scored (the table printed, floors asserted for
//! the cases written before the rules and for those written after them); and the chat model's
//! decisions (`memory.facts = "llm"`) wired to the real SmolLM2 on llama.cpp: taken when they
//! parse, the words' decision when they do not or when the model is gone, no fact lost.
#![cfg(feature = "internals")]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use llmem::RetrievalSettings;
use llmem::core::{ChatModel, Filter, MemoryRecord, MemoryStore, RecordKind, Scope, Timestamp};
use llmem::internals::{
    DecidedBy, Decision, FactOutcome, LongTerm, heuristic_facts, parse_judgement,
};
use llmem::providers::llamacpp::LlamaCppServer;
use llmem::tiers::WarmStore;
use serde::Deserialize;

/// Share of the cases written before the rules (`dev`) that must come out right: measured
/// 1.00 (46 of 46).
const DEV_FLOOR: f64 = 0.95;
/// Share of the cases written after the rules (`held-out`), never tuned on: measured 0.64 (9 of
/// 14; 7 on their first run, 8 once a bug they showed was fixed, 9 once negations of past
/// events were told from those of present states for everyday conversation, see docs/eval.md).
const HELD_OUT_FLOOR: f64 = 0.55;

#[derive(Debug, Deserialize)]
struct Data {
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
struct Case {
    id: String,
    group: String,
    category: String,
    before: Vec<String>,
    message: String,
    superseded: Vec<String>,
    #[serde(default)]
    stored: Option<usize>,
}

fn cases() -> Vec<Case> {
    let data: Data = serde_json::from_str(include_str!("data/changes.json"))
        .unwrap_or_else(|e| panic!("tests/it/data/changes.json: {e}"));
    data.cases
}

/// Noon on the `day`th day after 1 March 2024: each message of a case is said a day after the
/// one before.
fn day(day: i64) -> Timestamp {
    Timestamp::from_millis(1_709_294_400_000 + day * 86_400_000)
}

/// A case's earlier messages stored as facts by the words, one message a day, in a fresh warm
/// store: the long-term memory, its store, the scope, and the earlier facts (id, text).
async fn earlier(case: &Case) -> (LongTerm, Arc<dyn MemoryStore>, Scope, Vec<(String, String)>) {
    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::in_memory());
    let lt = LongTerm::new(store.clone(), None, RetrievalSettings::default());
    let scope = Scope::session(format!("user-{}", case.id), "s1");
    let mut facts = Vec::new();
    for (i, m) in case.before.iter().enumerate() {
        let out = lt
            .remember_facts(
                &scope,
                heuristic_facts(m),
                day(i as i64),
                &Default::default(),
                None,
            )
            .await
            .unwrap();
        facts.extend(out.into_iter().filter_map(|o| o.id.map(|id| (id, o.text))));
    }
    (lt, store, scope, facts)
}

/// Every record of the scope's user, superseded or not, by id.
async fn all(store: &Arc<dyn MemoryStore>, scope: &Scope) -> HashMap<String, MemoryRecord> {
    store
        .query(&Scope::tenant(scope.tenant.clone()), &Filter::All, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect()
}

/// One case's result.
struct Scored {
    correct: bool,
    line: String,
}

/// Runs a case: the new message's facts decided by the words (or by `judge`); correct when
/// the earlier facts it leaves superseded are exactly the expected ones (and it stored as many
/// facts as expected, when the case says). Nothing is ever removed from the store.
async fn run(case: &Case, judge: Option<&dyn ChatModel>) -> (Scored, Vec<FactOutcome>) {
    let (lt, store, scope, before) = earlier(case).await;
    let at = day(case.before.len() as i64);
    let outcomes = lt
        .remember_facts(
            &scope,
            heuristic_facts(&case.message),
            at,
            &Default::default(),
            judge,
        )
        .await
        .unwrap();
    let records = all(&store, &scope).await;
    let new_ids: HashSet<&str> = outcomes.iter().filter_map(|o| o.id.as_deref()).collect();
    for (id, text) in &before {
        assert!(
            records.contains_key(id),
            "{}: `{text}` was removed",
            case.id
        );
    }
    let got: HashSet<&str> = before
        .iter()
        .filter(|(id, _)| {
            records[id.as_str()]
                .superseded_by
                .as_deref()
                .is_some_and(|by| new_ids.contains(by))
        })
        .map(|(_, t)| t.as_str())
        .collect();
    let want: HashSet<&str> = case
        .superseded
        .iter()
        .map(|s| {
            let hits: Vec<&str> = before
                .iter()
                .map(|(_, t)| t.as_str())
                .filter(|t| t.to_lowercase().contains(&s.to_lowercase()))
                .collect();
            assert_eq!(
                hits.len(),
                1,
                "{}: `{s}` must name one earlier fact: {before:?}",
                case.id
            );
            hits[0]
        })
        .collect();
    let stored = new_ids.len();
    let correct = got == want && case.stored.is_none_or(|n| n == stored);
    let decisions: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{} by {}", o.decision.as_str(), o.decided_by.as_str()))
        .collect();
    let line = format!(
        "{:<8} {:<4} {:<60} superseded {:?}, expected {:?}; {} stored ({})",
        case.id,
        if correct { "ok" } else { "FAIL" },
        case.message,
        got,
        want,
        stored,
        decisions.join(", ")
    );
    (Scored { correct, line }, outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_contradictions_are_scored_on_the_hand_written_cases() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut ids = HashSet::new();
    // (group, category) -> (correct, cases)
    let mut table: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut lines = Vec::new();
    for case in &cases {
        assert!(ids.insert(case.id.clone()), "case {} twice", case.id);
        assert!(
            ["dev", "held-out"].contains(&case.group.as_str()),
            "{}",
            case.id
        );
        let (scored, _) = run(case, None).await;
        lines.push(scored.line);
        for group in [case.group.as_str(), "all"] {
            let e = table
                .entry((group.to_owned(), case.category.clone()))
                .or_default();
            e.0 += usize::from(scored.correct);
            e.1 += 1;
        }
    }
    println!("{}", lines.join("\n"));
    let mut score = HashMap::new();
    println!(
        "\n{:<10} {:<16} {:>7} {:>5} {:>8}",
        "group", "category", "correct", "cases", "accuracy"
    );
    for group in ["dev", "held-out", "all"] {
        let (mut c, mut n) = (0, 0);
        for ((g, category), (ok, all)) in &table {
            if g == group {
                println!(
                    "{g:<10} {category:<16} {ok:>7} {all:>5} {:>8.2}",
                    *ok as f64 / *all as f64
                );
                c += ok;
                n += all;
            }
        }
        let acc = c as f64 / n.max(1) as f64;
        println!("{group:<10} {:<16} {c:>7} {n:>5} {acc:>8.2}", "(overall)");
        score.insert(group, acc);
    }
    assert!(
        score["dev"] >= DEV_FLOOR,
        "dev accuracy {:.2} < {DEV_FLOOR}",
        score["dev"]
    );
    assert!(
        score["held-out"] >= HELD_OUT_FLOOR,
        "held-out accuracy {:.2} < {HELD_OUT_FLOOR}",
        score["held-out"]
    );
}

/// A repeat is not stored again (NOOP); a repeat with a relative time is another event and
/// is; a correction carries the fact it corrects in its lexical key, so that its words find it;
/// keys still supersede; the old fact keeps its id.
#[tokio::test]
async fn repeats_corrections_and_keys() {
    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::in_memory());
    let lt = LongTerm::new(store.clone(), None, RetrievalSettings::default());
    let scope = Scope::session("u", "s");
    let meta = Default::default();
    let say = |text: &'static str, d: i64| {
        let lt = &lt;
        let scope = &scope;
        let meta = &meta;
        async move {
            lt.remember_facts(scope, heuristic_facts(text), day(d), meta, None)
                .await
                .unwrap()
        }
    };
    let first = say("My dentist appointment is on Monday.", 0).await;
    let again = say("my dentist appointment is on monday", 1).await;
    assert_eq!(again[0].decision, Decision::Noop);
    assert_eq!(again[0].id, None);
    let went = say("I went to the gym today.", 1).await;
    let went_again = say("I went to the gym today.", 2).await;
    assert_eq!(went_again[0].decision, Decision::Add, "{went:?}");
    let fix = say("Actually it's Tuesday, not Monday.", 3).await;
    assert_eq!(fix[0].decision, Decision::Update);
    assert_eq!(fix[0].decided_by, DecidedBy::Words);
    assert_eq!(fix[0].superseded, vec![first[0].id.clone().unwrap()]);
    let hits = lt
        .search(&scope, "When is the dentist appointment?", 3)
        .await
        .unwrap();
    assert_eq!(
        hits[0].record.text, "Actually it's Tuesday, not Monday.",
        "{hits:?}"
    );
    let old = store.get(&scope, &fix[0].superseded).await.unwrap();
    assert_eq!(old[0].superseded_by, fix[0].id);
    assert_eq!(old[0].kind, RecordKind::Knowledge);
    // Keys as before: a new value of the same attribute supersedes the old one.
    let a = say("My API key is 123.", 4).await;
    let b = say("My API key is 456.", 5).await;
    assert_eq!(b[0].decision, Decision::Update);
    assert_eq!(b[0].superseded, vec![a[0].id.clone().unwrap()]);
}

/// The cases the model is asked about: each kind of change, a negative and a repeat.
const ASKED: [&str; 8] = [
    "pet-1", "job-2", "date-1", "pref-4", "num-1", "rel-3", "none-1", "none-7",
];

/// The chat model's decision on each fact is parsed and taken, or, when its answer is not a
/// decision, left to the words (the same outcome as without the model); NOOP stores nothing,
/// anything else stores the fact and supersedes (never removes) only earlier facts. With the
/// model gone, the words decide everything, as without it. SmolLM2's judgement is not scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_model_decides_and_the_words_take_over_when_it_cannot() {
    let server = LlamaCppServer::builder().start().await.unwrap_or_else(|e| {
        panic!("could not start llama.cpp with SmolLM2: {e}\n(run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`)")
    });
    let chat: Arc<dyn ChatModel> = Arc::new(server.chat_model().unwrap());
    let asked: Vec<Case> = cases()
        .into_iter()
        .filter(|c| ASKED.contains(&c.id.as_str()))
        .collect();
    assert_eq!(asked.len(), ASKED.len());
    let words_only = |o: &[FactOutcome]| -> Vec<(Decision, usize)> {
        o.iter().map(|o| (o.decision, o.superseded.len())).collect()
    };
    let mut by_model = 0;
    for case in &asked {
        let (_, words) = run(case, None).await;
        let (_, judged) = run(case, Some(&*chat)).await;
        assert_eq!(judged.len(), words.len(), "{}: every fact decided", case.id);
        for (j, w) in judged.iter().zip(&words) {
            // Not asked when no earlier fact came close.
            let answer = j.model_answer.as_deref().unwrap_or("(not asked)");
            match j.decided_by {
                DecidedBy::Model => {
                    by_model += 1;
                    let (d, n) = parse_judgement(answer, 5).unwrap_or_else(|| {
                        panic!("{}: taken, yet `{answer}` does not parse", case.id)
                    });
                    assert_eq!(j.decision, d, "{}: `{answer}`", case.id);
                    match d {
                        Decision::Noop => assert!(j.id.is_none() && j.superseded.is_empty()),
                        Decision::Add => assert!(j.id.is_some()),
                        Decision::Update | Decision::Delete => {
                            assert!(n.is_some() && j.id.is_some(), "{}: `{answer}`", case.id);
                            assert!(!j.superseded.is_empty(), "{}: `{answer}`", case.id);
                        }
                    }
                }
                DecidedBy::Words | DecidedBy::Key => {
                    assert_eq!(
                        words_only(std::slice::from_ref(j)),
                        words_only(std::slice::from_ref(w)),
                        "{}: `{answer}`",
                        case.id
                    );
                }
            }
            println!(
                "{:<8} {:<50} model: {:<12} -> {} by {}",
                case.id,
                j.text,
                answer.trim(),
                j.decision.as_str(),
                j.decided_by.as_str()
            );
        }
    }
    println!("{by_model} decisions taken from the model");
    // The model gone: every call fails, the words decide, as without a model.
    drop(server);
    for case in &asked {
        let (_, words) = run(case, None).await;
        let (_, failed) = run(case, Some(&*chat)).await;
        for f in &failed {
            assert_ne!(f.decided_by, DecidedBy::Model);
            assert_eq!(f.model_answer, None);
        }
        assert_eq!(words_only(&failed), words_only(&words), "{}", case.id);
    }
}

#[path = "../../../llmem-eval/support/locomo.rs"]
mod locomo;

/// Most facts of everyday conversation change nothing. LoCoMo's dev conversations (2,809 facts
/// by the words, each conversation one user, as the eval stores it): measured, the words
/// supersede none (a first version of the rules superseded 44, nearly all wrongly: "I won't give
/// up", "I haven't talked to you in a while", "I lost all my work"); keys supersede 7, as before
/// this change ("my family is …"). Skipped without the data (`LLMEM_LOCOMO`).
#[tokio::test]
async fn the_words_leave_everyday_conversation_alone() {
    if !locomo::path().is_file() {
        eprintln!(
            "skipped: no LoCoMo data at {} (set LLMEM_LOCOMO)",
            locomo::path().display()
        );
        return;
    }
    let turns = locomo::turns();
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut by_words = Vec::new();
    let conversations = turns.iter().map(|t| t.conversation).max().unwrap_or(0) + 1;
    for c in 0..conversations {
        let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::in_memory());
        let lt = LongTerm::new(store.clone(), None, RetrievalSettings::default());
        let scope = Scope::session(format!("conversation-{c}"), "s");
        let mut said: HashMap<String, String> = HashMap::new();
        for (i, t) in turns.iter().filter(|t| t.conversation == c).enumerate() {
            let out = lt
                .remember_facts(
                    &scope,
                    heuristic_facts(&t.text),
                    day(i as i64 / 20),
                    &Default::default(),
                    None,
                )
                .await
                .unwrap();
            for o in out {
                *counts
                    .entry((o.decision.as_str(), o.decided_by.as_str()))
                    .or_default() += 1;
                if o.decided_by == DecidedBy::Words && !o.superseded.is_empty() {
                    let old: Vec<&str> = o
                        .superseded
                        .iter()
                        .filter_map(|id| said.get(id).map(String::as_str))
                        .collect();
                    by_words.push(format!("{}: {} ==> {old:?}", t.speaker, o.text));
                }
                if let Some(id) = o.id {
                    said.insert(id, format!("{}: {}", t.speaker, o.text));
                }
            }
        }
    }
    println!("{counts:?}\n{}", by_words.join("\n"));
    let facts: usize = counts.values().sum();
    assert!(facts > 2000, "{facts} facts");
    assert!(
        by_words.len() <= 3,
        "{} facts superseded by the words",
        by_words.len()
    );
}
