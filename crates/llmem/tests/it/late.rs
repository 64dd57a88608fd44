//! Late interaction on the real MiniLM embedder: memories re-ranked by their token vectors'
//! match with the question, the vectors kept when memories are stored and computed when a
//! search first meets a memory stored elsewhere; a reply matched with the question it answers.
#![cfg(all(feature = "onnx", feature = "internals"))]

use std::collections::HashMap;
use std::sync::Arc;

use llmem::Message;
use llmem::RetrievalSettings;
use llmem::compress::ArchiveSink;
use llmem::core::{Embedded, Embedder, Filter, MemoryRecord, MemoryStore, Scope, SearchRequest};
use llmem::internals::{Archive, LongTerm, REPLY_TO};
use llmem::tiers::WarmStore;

use crate::minilm;

const SAID: [&str; 6] = [
    "Priya: I've been practising the clarinet every evening this month.",
    "Priya: The weather at the beach was lovely on Saturday.",
    "Tom: I adopted a puppy from the shelter last week.",
    "Priya: My kids loved the pottery class we took together.",
    "Tom: The support group meets on Tuesdays downtown.",
    "Priya: We finally repainted the kitchen a pale yellow.",
];
const QUESTION: &str = "What musical instrument does Priya play?";

fn settings(late: f32) -> RetrievalSettings {
    // Questions and sessions left out of the ranking, so that a score is the store's plus the
    // late-interaction gain.
    RetrievalSettings {
        late_interaction: late,
        late_reply_share: 0.0,
        question_weight: 1.0,
        session_weight: 0.0,
        ..RetrievalSettings::default()
    }
}

async fn scores(lt: &LongTerm, scope: &Scope) -> HashMap<String, f32> {
    lt.search(scope, QUESTION, SAID.len())
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.record.text, h.score))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_interaction_reranks_by_token_matches_with_vectors_kept_or_computed() {
    let embedder = minilm();
    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::in_memory());
    let scope = Scope::tenant("u1");
    let writer = LongTerm::new(store.clone(), Some(embedder.clone()), settings(0.5));
    let records = SAID
        .iter()
        .map(|t| MemoryRecord::new("u1", *t))
        .collect::<Vec<_>>();
    writer.remember(records).await.unwrap();
    let (held, bytes) = writer.late_index_size();
    assert_eq!(
        held,
        SAID.len(),
        "every stored memory's token vectors are kept"
    );
    assert!(bytes > 0 && bytes < SAID.len() * 64 * 1024, "{bytes} bytes");

    // Another handle on the same store, as after a restart: its index is empty, and the
    // search computes the vectors of the memories it meets.
    let fresh = LongTerm::new(store.clone(), Some(embedder.clone()), settings(0.5));
    assert_eq!(fresh.late_index_size().0, 0);
    let kept = scores(&writer, &scope).await;
    let computed = scores(&fresh, &scope).await;
    assert_eq!(fresh.late_index_size().0, SAID.len());
    for (text, s) in &kept {
        assert!(
            (s - computed[text]).abs() < 1e-5,
            "{text}: {s} vs {}",
            computed[text]
        );
    }

    // Against the same search without late interaction, each memory gains between 0 and the
    // weight: the best token match all of it, the worst none.
    let off = LongTerm::new(store.clone(), Some(embedder.clone()), settings(0.0));
    let plain = scores(&off, &scope).await;
    assert_eq!(off.late_index_size().0, 0, "off: no token vectors computed");
    let gains: Vec<(&str, f32)> = SAID.iter().map(|t| (*t, kept[*t] - plain[*t])).collect();
    for (t, g) in &gains {
        assert!((-1e-5..=0.5 + 1e-5).contains(g), "{t}: gain {g}");
    }
    let best = gains.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert!((best.1 - 0.5).abs() < 1e-4, "{gains:?}");
    assert!(gains.iter().any(|(_, g)| g.abs() < 1e-4), "{gains:?}");
    // The clarinet is the best token match of "musical instrument" and "play".
    assert_eq!(best.0, SAID[0], "{gains:?}");
}

#[test]
fn a_late_interaction_weight_outside_0_1_names_the_key() {
    let mut config = llmem::Config::default();
    config.retrieval.late_interaction = 1.5;
    let e = config.validate().unwrap_err().to_string();
    assert!(
        e.contains("retrieval.late_interaction") && e.contains("[0, 1]"),
        "{e}"
    );
}

/// MiniLM, except that token vectors of more than one text at a time fail.
#[derive(Debug)]
struct FailsOnMemories(Arc<dyn Embedder>);

#[async_trait::async_trait]
impl Embedder for FailsOnMemories {
    fn name(&self) -> &str {
        "minilm-failing-on-memories"
    }
    fn dimensions(&self) -> usize {
        self.0.dimensions()
    }
    async fn embed(&self, texts: &[String]) -> llmem::Result<Vec<Vec<f32>>> {
        self.0.embed(texts).await
    }
    async fn embed_with_tokens(&self, texts: &[String]) -> llmem::Result<Vec<Embedded>> {
        if texts.len() > 1 {
            return Err(llmem::core::Error::invalid("token vectors refused"));
        }
        self.0.embed_with_tokens(texts).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_embedder_leaves_the_search_unre_ranked_not_failed() {
    let minilm = minilm();
    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::in_memory());
    let scope = Scope::tenant("u1");
    // Stored without token vectors (late interaction off), so the search must compute them.
    let plain = LongTerm::new(store.clone(), Some(minilm.clone()), settings(0.0));
    let records = SAID.iter().map(|t| MemoryRecord::new("u1", *t)).collect();
    plain.remember(records).await.unwrap();
    let failing: Arc<dyn Embedder> = Arc::new(FailsOnMemories(minilm));
    let late = LongTerm::new(store, Some(failing), settings(0.5));
    let got = scores(&late, &scope).await;
    assert_eq!(late.late_index_size().0, 0, "nothing was computed");
    let want = scores(&plain, &scope).await;
    for (text, s) in &want {
        assert!((s - got[text]).abs() < 1e-5, "{text}: {s} vs {}", got[text]);
    }
}

fn said(who: &str, text: &str) -> Message {
    Message::user(text).with_name(who)
}

/// A long-term memory whose replies are matched with their questions by `share`.
fn replying(store: &Arc<dyn MemoryStore>, embedder: &Arc<dyn Embedder>, share: f32) -> LongTerm {
    LongTerm::new(
        store.clone(),
        Some(embedder.clone()),
        RetrievalSettings {
            late_reply_share: share,
            ..settings(0.5)
        },
    )
}

/// MiniLM, a store, one session's scope, a long-term memory whose replies are matched with
/// their questions (share 0.6), and the archive that turns that session's messages into memories.
struct Conversation {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn MemoryStore>,
    scope: Scope,
    writer: Arc<LongTerm>,
    archive: Archive,
}

fn conversation() -> Conversation {
    let embedder = minilm();
    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::in_memory());
    let scope = Scope::session("u1", "s1");
    let writer = Arc::new(replying(&store, &embedder, 0.6));
    let archive = Archive::new(writer.clone(), scope.clone());
    Conversation {
        embedder,
        store,
        scope,
        writer,
        archive,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_is_found_by_the_words_of_the_question_it_answers() {
    let c = conversation();
    // Two batches, as a compressor lets them go: the first reply's question is in the first.
    c.archive
        .archive(&[
            said("Tom", "I finally repainted the kitchen a pale yellow."),
            said("Tom", "Where did you go hiking last weekend?"),
        ])
        .await
        .unwrap();
    c.archive
        .archive(&[
            said(
                "Priya",
                "Mount Tamalpais, the view from the top was unreal!",
            ),
            said(
                "Tom",
                "The farmers market had great peaches. Have you been? It opens at eight.",
            ),
            said("Priya", "My kids loved the pottery class we took together."),
        ])
        .await
        .unwrap();
    let all = c.store.query(&c.scope, &Filter::All, None).await.unwrap();
    let id_of = |start: &str| {
        all.iter()
            .find(|r| r.text.starts_with(start))
            .unwrap_or_else(|| {
                let texts: Vec<&str> = all.iter().map(|r| r.text.as_str()).collect();
                panic!("{start}: {texts:?}")
            })
    };
    let question = id_of("Tom: Where did you go hiking");
    let reply = id_of("Priya: Mount Tamalpais");
    assert_eq!(
        reply.metadata.get(REPLY_TO).and_then(|v| v.as_str()),
        Some(question.id.as_str()),
        "the reply names the question before it, across batches"
    );
    // A question inside a message counts as well as one at its end.
    let market = id_of("Tom: The farmers market");
    let pottery = id_of("Priya: My kids loved");
    assert_eq!(
        pottery.metadata.get(REPLY_TO).and_then(|v| v.as_str()),
        Some(market.id.as_str())
    );
    for r in &all {
        if r.id != reply.id && r.id != pottery.id {
            assert!(
                !r.metadata.contains_key(REPLY_TO),
                "only a message after a question replies: {}",
                r.text
            );
        }
    }

    // "Where … hiking" is in the question, not the reply: with its question's words the reply
    // leads the other memories by more than when it is matched alone.
    let asked = "Where did Priya go hiking?";
    let alone = replying(&c.store, &c.embedder, 0.0);
    let lead = |hits: &[llmem::core::ScoredRecord]| {
        let mine = hits.iter().find(|h| h.record.id == reply.id).unwrap().score;
        let best_other = hits
            .iter()
            .filter(|h| h.record.id != reply.id)
            .map(|h| h.score)
            .fold(f32::NEG_INFINITY, f32::max);
        mine - best_other
    };
    let with = lead(&c.writer.search(&c.scope, asked, 5).await.unwrap());
    let without = lead(&alone.search(&c.scope, asked, 5).await.unwrap());
    assert!(
        with > without + 0.05,
        "lead {with} with its question, {without} alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replys_question_out_of_the_candidates_is_read_from_the_store() {
    let c = conversation();
    let mut said_then = vec![
        said("Tom", "Where did you go hiking last weekend?"),
        said(
            "Priya",
            "Mount Tamalpais, the view from the top was unreal!",
        ),
    ];
    // Memories that match the search below better than the question does (whose lexical key
    // holds the reply's words, at a lower weight than a memory's own), so that the question
    // is not among the 8 candidates of a search for 1.
    for place in [
        "the bay",
        "the bridge",
        "the ocean",
        "the city",
        "the fog",
        "the hills",
        "the lake",
    ] {
        said_then.push(said(
            "Priya",
            &format!("Mount Tamalpais gives a view of {place} from the top."),
        ));
    }
    c.archive.archive(&said_then).await.unwrap();
    let asked = "What did Priya say about the view from the top of Mount Tamalpais?";
    let req = SearchRequest::text(asked.to_owned(), 8).with_vector(
        c.embedder
            .embed(&[asked.to_owned()])
            .await
            .unwrap()
            .remove(0),
    );
    let head = c.store.search(&c.scope, &req).await.unwrap();
    assert!(
        head.iter().any(|h| h.record.text.contains("Tamalpais"))
            && !head.iter().any(|h| h.record.text.contains("hiking")),
        "the reply is a candidate, its question is not: {:?}",
        head.iter().map(|h| &h.record.text).collect::<Vec<_>>()
    );

    // A handle with an empty index (as after a restart) computes the candidates' token
    // vectors and reads the question from the store for its own: the same scores.
    let fresh = replying(&c.store, &c.embedder, 0.6);
    let kept = c.writer.search(&c.scope, asked, 1).await.unwrap();
    let computed = fresh.search(&c.scope, asked, 1).await.unwrap();
    assert_eq!(
        fresh.late_index_size().0,
        9,
        "8 candidates and one question"
    );
    assert!(
        kept[0].record.text.contains("Tamalpais, the view")
            && kept[0].record.id == computed[0].record.id,
        "the reply first: {} / {}",
        kept[0].record.text,
        computed[0].record.text
    );
    assert!(
        (kept[0].score - computed[0].score).abs() < 1e-5,
        "{kept:?} vs {computed:?}"
    );
}

#[test]
fn a_reply_share_outside_0_1_names_the_key() {
    let mut config = llmem::Config::default();
    config.retrieval.late_reply_share = -0.2;
    let e = config.validate().unwrap_err().to_string();
    assert!(
        e.contains("retrieval.late_reply_share") && e.contains("[0, 1]"),
        "{e}"
    );
}
