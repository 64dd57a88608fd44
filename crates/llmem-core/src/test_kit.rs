//! Conformance suites (feature `test-kit`). Every implementation of a core trait, in this
//! workspace or in a third-party plugin, runs the matching suite against itself:
//!
//! ```text
//! #[tokio::test]
//! async fn conforms() {
//!     let store = MyStore::open(tmp).await?;
//!     llmem_core::test_kit::store_conformance(&store).await;
//! }
//! ```
//!
//! The suites panic with a message naming the broken rule, like `assert!` in a test.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use crate::Error;
use crate::filter::Filter;
use crate::message::{Message, Role};
use crate::provider::{ChatModel, ChatRequest, Embedder, Summarizer, SummaryRequest};
use crate::record::{MemoryRecord, RecordKind, Scope, new_id};
use crate::store::{MemoryStore, SearchRequest};
use crate::time::Timestamp;
use crate::tokens::TokenCounter;

/// `n` deterministic values in [-0.5, 0.5) from `seed` (xorshift64): test and benchmark data.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
        })
        .collect()
}

/// A deterministic unit vector of `dim` values from `seed` ([`values`], L2-normalised).
pub fn unit_vec(dim: usize, seed: u64) -> Vec<f32> {
    let mut v = values(dim, seed);
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

fn unit(dim: usize, hot: usize) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[hot % dim] = 1.0;
    v
}

/// The storage contract: upserts, scoped reads, tenancy, filters, deletes, search (when the
/// store claims it), stats.
pub async fn store_conformance(store: &dyn MemoryStore) {
    let run = new_id();
    let (a, b) = (format!("tenant-a-{run}"), format!("tenant-b-{run}"));
    let dim = 8;
    let t0 = Timestamp::parse("2024-01-01T00:00:00Z").unwrap().0;
    let rec = |tenant: &str, session: &str, i: i64, text: &str| {
        MemoryRecord::new(tenant, text)
            .with_session(session)
            .with_created_at(Timestamp(t0 + i * 60_000))
            .with_metadata("n", i)
            .with_embedding(unit(dim, i as usize))
    };
    let a1 =
        rec(&a, "s1", 1, "the squirrel lives in the oak tree").with_kind(RecordKind::Knowledge);
    let a2 = rec(&a, "s1", 2, "my api key is stored in the vault")
        .with_metadata("tags", json!(["secret", "ops"]));
    let a3 = rec(&a, "s2", 3, "we moved to Lisbon in March 2023");
    let b1 = rec(&b, "s1", 1, "tenant b private note about the squirrel");
    store
        .put(vec![a3.clone(), a1.clone(), b1.clone(), a2.clone()])
        .await
        .expect("put");

    let sa = Scope::tenant(&a);
    let ids = |rs: &[MemoryRecord]| rs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    // get: in the order asked, unknown ids skipped, other tenants invisible.
    let got = store
        .get(
            &sa,
            &[a2.id.clone(), "nope".into(), a1.id.clone(), b1.id.clone()],
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&got),
        vec![a2.id.clone(), a1.id.clone()],
        "get must keep order, skip unknown ids and other tenants"
    );
    assert_eq!(got[0].text, a2.text, "get returns the stored text");
    assert_eq!(
        got[0].metadata.get("tags"),
        Some(&json!(["secret", "ops"])),
        "metadata round-trips"
    );
    assert_eq!(got[1].kind, RecordKind::Knowledge, "kind round-trips");
    assert_eq!(got[1].created_at, a1.created_at, "created_at round-trips");

    // count and query with filters, oldest first.
    assert_eq!(
        store.count(&sa, &Filter::All).await.unwrap(),
        3,
        "count(all) in tenant a"
    );
    assert_eq!(
        store.count(&Scope::tenant(&b), &Filter::All).await.unwrap(),
        1,
        "count(all) in tenant b"
    );
    assert_eq!(
        store
            .count(&Scope::session(&a, "s1"), &Filter::All)
            .await
            .unwrap(),
        2,
        "session scope"
    );
    let f = Filter::parse(&json!({"n": {"$gte": 2}})).unwrap();
    let q = store.query(&sa, &f, None).await.unwrap();
    assert_eq!(
        ids(&q),
        vec![a2.id.clone(), a3.id.clone()],
        "query filter and oldest-first order"
    );
    let q = store.query(&sa, &Filter::All, Some(2)).await.unwrap();
    assert_eq!(
        ids(&q),
        vec![a1.id.clone(), a2.id.clone()],
        "query limit keeps the oldest"
    );
    let f = Filter::parse(&json!({"tags": {"$in": ["ops"]}})).unwrap();
    assert_eq!(
        store.count(&sa, &f).await.unwrap(),
        1,
        "$in on an array field"
    );
    let f = Filter::parse(&json!({"$or": [{"kind": "knowledge"}, {"n": 3}]})).unwrap();
    assert_eq!(store.count(&sa, &f).await.unwrap(), 2, "$or");
    // A filter naming another tenant still sees only the scope's records.
    let f = Filter::parse(&json!({"tenant": b.clone()})).unwrap();
    assert_eq!(
        store.count(&sa, &f).await.unwrap(),
        0,
        "a filter cannot cross tenants"
    );

    // Upsert by id replaces.
    let mut a1v2 = a1.clone();
    a1v2.text = "the squirrel moved to the pine tree".into();
    store.put(vec![a1v2.clone()]).await.unwrap();
    assert_eq!(
        store.count(&sa, &Filter::All).await.unwrap(),
        3,
        "put with an existing id replaces, not adds"
    );
    assert_eq!(
        store.get(&sa, std::slice::from_ref(&a1.id)).await.unwrap()[0].text,
        a1v2.text,
        "replaced text"
    );

    // Search, when claimed.
    let caps = store.capabilities();
    if caps.vector_search {
        let hits = store
            .search(&sa, &SearchRequest::vector(unit(dim, 2), 2))
            .await
            .unwrap();
        assert!(
            !hits.is_empty() && hits.len() <= 2,
            "vector search returns at most k"
        );
        assert_eq!(
            hits[0].record.id, a2.id,
            "vector search puts the nearest first"
        );
        assert!(
            hits.iter().all(|h| h.record.tenant == a),
            "vector search stays in the tenant"
        );
        assert!(
            hits.windows(2).all(|w| w[0].score >= w[1].score),
            "scores are sorted best first"
        );
        let f = Filter::parse(&json!({"n": {"$ne": 2}})).unwrap();
        let hits = store
            .search(&sa, &SearchRequest::vector(unit(dim, 2), 3).with_filter(f))
            .await
            .unwrap();
        assert!(
            hits.iter().all(|h| h.record.id != a2.id),
            "vector search honours the filter"
        );
        let hits = store
            .search(&Scope::tenant(&b), &SearchRequest::vector(unit(dim, 2), 5))
            .await
            .unwrap();
        assert!(
            hits.iter().all(|h| h.record.tenant == b),
            "vector search never crosses tenants"
        );
    } else {
        let err = store
            .search(&sa, &SearchRequest::vector(unit(dim, 2), 2))
            .await;
        assert!(
            matches!(err, Err(Error::Unsupported { .. })),
            "search without the capability is Unsupported"
        );
    }
    if caps.text_search {
        let hits = store
            .search(&sa, &SearchRequest::text("Lisbon March", 2))
            .await
            .unwrap();
        assert_eq!(
            hits.first().map(|h| h.record.id.clone()),
            Some(a3.id.clone()),
            "text search finds the words"
        );
        let hits = store
            .search(&sa, &SearchRequest::text("private note", 5))
            .await
            .unwrap();
        assert!(
            hits.iter().all(|h| h.record.tenant == a),
            "text search never crosses tenants"
        );
    }

    // Deletes are scoped.
    assert_eq!(
        store
            .delete(&sa, std::slice::from_ref(&b1.id))
            .await
            .unwrap(),
        0,
        "cannot delete another tenant's record"
    );
    assert_eq!(
        store.count(&Scope::tenant(&b), &Filter::All).await.unwrap(),
        1,
        "tenant b's record survived"
    );
    assert_eq!(
        store
            .delete(&sa, std::slice::from_ref(&a3.id))
            .await
            .unwrap(),
        1,
        "delete returns how many went"
    );
    assert!(
        store
            .get(&sa, std::slice::from_ref(&a3.id))
            .await
            .unwrap()
            .is_empty(),
        "deleted record is gone"
    );
    let f = Filter::parse(&json!({"n": 2})).unwrap();
    assert_eq!(
        store.delete_by_filter(&sa, &f).await.unwrap(),
        1,
        "delete_by_filter"
    );
    assert_eq!(
        store.count(&sa, &Filter::All).await.unwrap(),
        1,
        "one record left in tenant a"
    );

    let stats = store.stats().await.unwrap();
    assert!(stats.items >= 2, "stats count items ({} < 2)", stats.items);

    // Clean up what this run stored.
    store.delete_by_filter(&sa, &Filter::All).await.unwrap();
    store
        .delete_by_filter(&Scope::tenant(&b), &Filter::All)
        .await
        .unwrap();
    assert_eq!(
        store.count(&sa, &Filter::All).await.unwrap(),
        0,
        "clean-up emptied tenant a"
    );
}

/// The chat contract: an assistant answer with a model name, usage when reported, streaming and
/// token counting when claimed, `Unsupported` when not.
pub async fn chat_conformance(model: &dyn ChatModel) {
    let caps = model.capabilities();
    assert!(caps.chat, "a ChatModel must claim chat");
    let req = ChatRequest::new(vec![
        Message::system("You answer in one short sentence."),
        Message::user("Say hello."),
    ])
    .with_max_tokens(32);
    let resp = model.chat(req.clone()).await.expect("chat");
    assert_eq!(
        resp.message.role,
        Role::Assistant,
        "the answer is an assistant message"
    );
    assert!(
        !resp.message.text().trim().is_empty(),
        "the answer has text"
    );
    assert!(!resp.model.is_empty(), "the response names its model");
    if let Some(u) = resp.usage {
        assert!(u.input_tokens > 0, "reported usage counts the prompt");
    }
    if caps.streaming {
        use std::future::poll_fn;
        use std::pin::Pin;
        let mut stream = model.chat_stream(req.clone()).await.expect("chat_stream");
        let mut text = String::new();
        let mut finished = false;
        while let Some(chunk) = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
            let chunk = chunk.expect("stream chunk");
            text.push_str(&chunk.delta);
            finished |= chunk.finish_reason.is_some();
        }
        assert!(!text.trim().is_empty(), "the stream carries text");
        assert!(finished, "the stream ends with a finish reason");
    } else {
        assert!(
            matches!(
                model.chat_stream(req.clone()).await,
                Err(Error::Unsupported { .. })
            ),
            "chat_stream without the capability is Unsupported"
        );
    }
    if caps.token_count {
        let short = model.count_tokens(&req).await.expect("count_tokens");
        let mut long = req.clone();
        long.messages.push(Message::user(
            "Tell me more about squirrels, their habitats and their lifespans.",
        ));
        let longer = model.count_tokens(&long).await.expect("count_tokens");
        assert!(
            short > 0 && longer > short,
            "count_tokens grows with the prompt ({short} then {longer})"
        );
    } else {
        assert!(
            matches!(
                model.count_tokens(&req).await,
                Err(Error::Unsupported { .. })
            ),
            "count_tokens without the capability is Unsupported"
        );
    }
}

use futures_core::Stream;

/// The embedding contract: one unit vector of `dimensions()` per text, deterministic, batch
/// equal to singles, related texts closer than unrelated ones.
pub async fn embedder_conformance(embedder: &dyn Embedder) {
    let texts: Vec<String> = [
        "The cat sat on the mat.",
        "A cat was sitting on a rug.",
        "Quarterly revenue grew by twelve percent.",
    ]
    .map(String::from)
    .to_vec();
    assert!(
        embedder.embed(&[]).await.expect("embed([])").is_empty(),
        "no texts, no vectors"
    );
    let vs = embedder.embed(&texts).await.expect("embed");
    assert_eq!(vs.len(), texts.len(), "one vector per text");
    for v in &vs {
        assert_eq!(
            v.len(),
            embedder.dimensions(),
            "vector length equals dimensions()"
        );
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-3,
            "vectors are L2-normalised (norm {norm})"
        );
    }
    let single = embedder.embed(&texts[2..3]).await.expect("embed single");
    let diff: f32 = single[0]
        .iter()
        .zip(&vs[2])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        diff < 1e-3,
        "a text embeds the same alone and in a batch (max diff {diff})"
    );
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(
        cos(&vs[0], &vs[1]) > cos(&vs[0], &vs[2]),
        "related texts are closer than unrelated ones"
    );
    let both = embedder
        .embed_with_tokens(&texts)
        .await
        .expect("embed_with_tokens");
    assert_eq!(both.len(), texts.len(), "one result per text, with tokens");
    for (e, v) in both.iter().zip(&vs) {
        let diff = e
            .vector
            .iter()
            .zip(v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff < 1e-3,
            "embed_with_tokens gives embed's vectors (max diff {diff})"
        );
        if let Some(t) = &e.tokens {
            assert!(!t.is_empty(), "a text has token vectors");
            assert!(
                (t.max_sim(t) - 1.0).abs() < 1e-3,
                "token vectors are L2-normalised"
            );
        }
    }
}

/// The summariser contract: a non-empty summary, shorter than a long input, also when extending
/// a previous summary.
pub async fn summarizer_conformance(summarizer: &dyn Summarizer) {
    assert!(
        summarizer.context_window() > 0,
        "context_window() is positive"
    );
    let text = "user: My name is Kha and I am learning AI engineering.\n\
                assistant: Nice to meet you Kha! What language do you use?\n\
                user: I mostly use Python, specifically FastAPI for the backend and ChromaDB for vectors.\n\
                assistant: Great choices. FastAPI is fast and ChromaDB is simple to start with.\n"
        .repeat(3);
    let s = summarizer
        .summarize(SummaryRequest {
            text: text.clone(),
            max_tokens: 60,
            ..Default::default()
        })
        .await
        .expect("summarize");
    assert!(!s.trim().is_empty(), "the summary is not empty");
    assert!(
        s.len() < text.len(),
        "the summary is shorter than the input"
    );
    let s2 = summarizer
        .summarize(SummaryRequest {
            text: "user: I also deploy on Kubernetes.".into(),
            previous_summary: Some(s.clone()),
            max_tokens: 80,
            instructions: None,
        })
        .await
        .expect("summarize with a previous summary");
    assert!(!s2.trim().is_empty(), "an extended summary is not empty");
}

/// The counting contract: empty is zero, counts are additive within a token, framing is
/// counted, `split` keeps every character and respects its limit.
pub fn token_counter_conformance(counter: &dyn TokenCounter) {
    assert_eq!(counter.count(""), 0, "the empty text has no tokens");
    let a = "Hello world, this is a test of token counting.";
    let b = " The quick brown fox jumps over the lazy dog 1234567.";
    let (na, nb, nab) = (
        counter.count(a),
        counter.count(b),
        counter.count(&format!("{a}{b}")),
    );
    assert!(na > 0 && nb > 0, "non-empty text has tokens");
    assert!(
        nab <= na + nb + 1 && nab + 2 >= na + nb,
        "counts are near-additive ({na}+{nb} vs {nab})"
    );
    let msgs = [Message::system("Be brief."), Message::user(a)];
    let total = counter.count_messages(&msgs);
    let parts: usize = msgs.iter().map(|m| counter.count_message(m)).sum();
    assert!(total >= parts, "count_messages includes every message");
    assert!(
        counter.count_message(&msgs[1]) >= na,
        "a message costs at least its text"
    );
    let long = format!("{a}{b}").repeat(20);
    let pieces = counter.split(&long, 25);
    assert_eq!(pieces.concat(), long, "split keeps every character");
    assert!(
        pieces.iter().all(|p| counter.count(p) <= 25),
        "split respects the limit"
    );
}
