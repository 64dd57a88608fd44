//! Embedding off the request path (`DeferredStore`) on the real MiniLM embedder: records
//! stored at once and searchable by their words, their vectors set in batches; an update or a
//! forget while a record waits is never undone by its queued vector; the queue's bound holds
//! writers back; a failing embedder leaves records stored; the journal re-queues what a
//! process that died left waiting; the manager stores its turns through the queue.
#![cfg(feature = "onnx")]

use std::sync::Arc;
use std::time::Duration;

use llmem::core::{Embedder, Filter, MemoryRecord, MemoryStore, Scope, SearchRequest};
use llmem::tiers::{WarmConfig, WarmStore};
use llmem::{Config, DeferredSettings, DeferredStore, MemoryManager, Message, Providers};
use tokio::sync::Semaphore;

use crate::minilm;

/// MiniLM behind a gate: each call waits for a permit (the test decides when the background
/// task may embed), and fails while `failing` is set.
#[derive(Debug)]
struct Gated {
    inner: Arc<dyn Embedder>,
    gate: Arc<Semaphore>,
    failing: bool,
}

#[async_trait::async_trait]
impl Embedder for Gated {
    fn name(&self) -> &str {
        "minilm-gated"
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    async fn embed(&self, texts: &[String]) -> llmem::Result<Vec<Vec<f32>>> {
        self.gate
            .acquire()
            .await
            .map_err(|_| llmem::core::Error::invalid("gate closed"))?
            .forget();
        if self.failing {
            return Err(llmem::core::Error::invalid("the embedding service is down"));
        }
        self.inner.embed(texts).await
    }
}

fn gated(inner: &Arc<dyn Embedder>, failing: bool) -> (Arc<dyn Embedder>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let e = Gated {
        inner: inner.clone(),
        gate: gate.clone(),
        failing,
    };
    (Arc::new(e), gate)
}

fn said(i: usize) -> String {
    const TOPICS: [&str; 6] = [
        "practised the clarinet before the school concert",
        "adopted a grey puppy from the shelter",
        "repainted the kitchen a pale yellow",
        "took the kids to a pottery class downtown",
        "ran a half marathon by the river",
        "planted tomatoes and basil on the balcony",
    ];
    format!("Note {i}: on day {i} Priya {}.", TOPICS[i % TOPICS.len()])
}

fn records(tenant: &str, n: usize) -> Vec<MemoryRecord> {
    (0..n)
        .map(|i| MemoryRecord::new(tenant, said(i)).with_id(format!("m{i}")))
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

async fn vector_of(store: &dyn MemoryStore, tenant: &str, id: &str) -> Option<Vec<f32>> {
    store
        .get(&Scope::tenant(tenant), &[id.to_owned()])
        .await
        .unwrap()
        .pop()
        .and_then(|r| r.embedding)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_stored_at_once_and_get_their_vectors_in_batches() {
    let minilm = minilm();
    let (embedder, gate) = gated(&minilm, false);
    let inner: Arc<dyn MemoryStore> = Arc::new(WarmStore::in_memory());
    let store =
        DeferredStore::open(inner.clone(), embedder, None, &DeferredSettings::default()).unwrap();
    let n = 150;
    store.put(records("priya", n)).await.unwrap();
    // Before any vector: every record is stored, and found by its words.
    let s = Scope::tenant("priya");
    assert_eq!(store.count(&s, &Filter::All).await.unwrap(), n);
    assert_eq!(store.queue_stats().pending, n);
    let hits = store
        .search(&s, &SearchRequest::text("grey puppy shelter", 3))
        .await
        .unwrap();
    assert!(hits[0].record.text.contains("puppy"), "{:?}", hits[0]);
    assert!(vector_of(&*store, "priya", "m1").await.is_none());
    gate.add_permits(1000);
    store.drain().await;
    let st = store.queue_stats();
    assert_eq!((st.pending, st.embedded, st.failed), (0, n as u64, 0));
    assert!(
        st.batches <= (n as u64).div_ceil(64) + 1,
        "embedded in batches, not one by one: {st:?}"
    );
    // Each vector is the text's own.
    let want = minilm.embed(&[said(7)]).await.unwrap().pop().unwrap();
    let got = vector_of(&*store, "priya", "m7").await.unwrap();
    assert!(cosine(&want, &got) > 0.999, "{}", cosine(&want, &got));
    // And a search by meaning finds them now.
    let q = minilm
        .embed(&["Which musical instrument?".to_owned()])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let hits = inner
        .search(&s, &SearchRequest::vector(q, 1))
        .await
        .unwrap();
    assert!(hits[0].record.text.contains("clarinet"), "{:?}", hits[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_or_a_forget_while_waiting_is_never_undone_by_the_queued_vector() {
    let minilm = minilm();
    let (embedder, gate) = gated(&minilm, false);
    let store = DeferredStore::open(
        Arc::new(WarmStore::in_memory()),
        embedder,
        None,
        &DeferredSettings::default(),
    )
    .unwrap();
    let s = Scope::tenant("priya");
    store.put(records("priya", 3)).await.unwrap();
    // While all three wait: m0 is rewritten, m1 forgotten.
    let new_text = "Priya moved to Lisbon in the spring.";
    store
        .put(vec![MemoryRecord::new("priya", new_text).with_id("m0")])
        .await
        .unwrap();
    let gone = store
        .forget(
            &s,
            &Filter::parse(&serde_json::json!({"text": {"$contains": "Note 1:"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(gone, 1);
    gate.add_permits(100);
    store.drain().await;
    let left = store.query(&s, &Filter::All, None).await.unwrap();
    let ids: Vec<&str> = left.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        2,
        "the forgotten record is not brought back: {ids:?}"
    );
    assert!(!ids.contains(&"m1"));
    let m0 = left.iter().find(|r| r.id == "m0").unwrap();
    assert_eq!(m0.text, new_text);
    let want = minilm
        .embed(&[new_text.to_owned()])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let got = m0.embedding.as_ref().expect("the new text has its vector");
    assert!(cosine(&want, got) > 0.999, "the vector is of the new text");
    let st = store.queue_stats();
    assert_eq!(
        st.skipped, 2,
        "the old text's vector and the forgotten one's: {st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_holds_writers_back_until_there_is_room() {
    let minilm = minilm();
    let (embedder, gate) = gated(&minilm, false);
    let settings = DeferredSettings {
        queue: 4,
        batch: 4,
        ..DeferredSettings::default()
    };
    let store =
        DeferredStore::open(Arc::new(WarmStore::in_memory()), embedder, None, &settings).unwrap();
    let all = records("priya", 5);
    store.put(all[..4].to_vec()).await.unwrap();
    let fifth =
        tokio::time::timeout(Duration::from_millis(300), store.put(all[4..].to_vec())).await;
    assert!(
        fifth.is_err(),
        "the fifth waits while four wait for their vectors"
    );
    gate.add_permits(100);
    tokio::time::timeout(Duration::from_secs(30), store.put(all[4..].to_vec()))
        .await
        .expect("room once the batch is embedded")
        .unwrap();
    store.drain().await;
    assert_eq!(store.queue_stats().embedded, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_embedder_leaves_records_stored_and_found_by_their_words() {
    let minilm = minilm();
    let (embedder, gate) = gated(&minilm, true);
    gate.add_permits(1000);
    let settings = DeferredSettings {
        retry_after: Duration::from_millis(5),
        ..DeferredSettings::default()
    };
    let store =
        DeferredStore::open(Arc::new(WarmStore::in_memory()), embedder, None, &settings).unwrap();
    store.put(records("priya", 10)).await.unwrap();
    store.drain().await;
    let st = store.queue_stats();
    assert_eq!((st.failed, st.embedded, st.pending), (10, 0, 0), "{st:?}");
    assert_eq!(st.batches, u64::from(llmem::ATTEMPTS));
    let s = Scope::tenant("priya");
    assert_eq!(store.count(&s, &Filter::All).await.unwrap(), 10);
    let hits = store
        .search(&s, &SearchRequest::text("pottery class", 1))
        .await
        .unwrap();
    assert!(hits[0].record.text.contains("pottery"));
}

#[test]
fn the_journal_queues_again_what_a_dead_process_left_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let warm = dir.path().join("warm");
    let journal = dir.path().join("embedding-queue.log");
    let minilm = minilm();
    let settings = DeferredSettings {
        journal: Some(journal.clone()),
        ..DeferredSettings::default()
    };
    // A process that stores 40 records, embeds none and dies.
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (embedder, _closed) = gated(&minilm, false);
        rt.block_on(async {
            let inner: Arc<dyn MemoryStore> =
                Arc::new(WarmStore::open(WarmConfig::default().persist_in(&warm)).unwrap());
            let store = DeferredStore::open(inner, embedder, None, &settings).unwrap();
            store.put(records("priya", 40)).await.unwrap();
            let tom = records("tom", 2)
                .into_iter()
                .map(|r| {
                    let id = format!("tom-{}", r.id);
                    r.with_id(id)
                })
                .collect();
            store.put(tom).await.unwrap();
            assert_eq!(store.queue_stats().pending, 42);
        });
        rt.shutdown_background();
    }
    // The next start: every record is there without a vector, and gets one.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let inner: Arc<dyn MemoryStore> =
            Arc::new(WarmStore::open(WarmConfig::default().persist_in(&warm)).unwrap());
        let all = inner.scan_all(&Filter::All, None).await.unwrap();
        assert_eq!(all.len(), 42);
        assert!(all.iter().all(|r| r.embedding.is_none()));
        let store = DeferredStore::open(inner.clone(), minilm.clone(), None, &settings).unwrap();
        store.drain().await;
        let st = store.queue_stats();
        assert_eq!((st.recovered, st.embedded), (42, 42), "{st:?}");
        let all = inner.scan_all(&Filter::All, None).await.unwrap();
        assert!(all.iter().all(|r| r.embedding.is_some()));
    });
    // And the one after has nothing left to do.
    rt.block_on(async {
        let inner: Arc<dyn MemoryStore> =
            Arc::new(WarmStore::open(WarmConfig::default().persist_in(&warm)).unwrap());
        let store = DeferredStore::open(inner, minilm.clone(), None, &settings).unwrap();
        store.drain().await;
        assert_eq!(store.queue_stats().recovered, 0);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_stores_turns_through_the_queue_and_recalls_them_by_meaning() {
    let mut config = Config::default();
    config.memory.max_context_tokens = 2000;
    config.memory.compression_threshold = 600;
    config.memory.short_term_size = 4;
    config.retrieval.deferred_embedding = true;
    let providers = Providers::default()
        .with_store(Arc::new(WarmStore::in_memory()))
        .with_embedder(minilm())
        .with_deferred_embedding(DeferredSettings::default())
        .unwrap();
    let mut m =
        MemoryManager::for_session(config, providers.clone(), Scope::session("priya", "s1"))
            .unwrap();
    for i in 0..60 {
        m.add_message(Message::user(said(i)), None).await.unwrap();
    }
    m.end_session().await.unwrap();
    providers.drain_embeddings().await;
    let st = providers.deferred.as_ref().unwrap().queue_stats();
    assert!(st.embedded >= 60, "{st:?}");
    let all = providers
        .store
        .as_ref()
        .unwrap()
        .query(&Scope::tenant("priya"), &Filter::All, None)
        .await
        .unwrap();
    assert!(
        all.iter().all(|r| r.embedding.is_some()),
        "every memory has its vector"
    );
    let hits = m.search("Which musical instrument?", 3).await.unwrap();
    assert!(
        hits.iter().any(|h| h.record.text.contains("clarinet")),
        "{:?}",
        hits.iter().map(|h| &h.record.text).collect::<Vec<_>>()
    );
}

#[test]
fn the_queue_settings_are_checked() {
    let mut c = Config::default();
    c.retrieval.deferred_embedding = true;
    c.retrieval.embedding_queue = 0;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("retrieval.embedding_queue"), "{e}");
    c.retrieval.embedding_queue = 16;
    c.tiers.shared = true;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("retrieval.deferred_embedding") && e.contains("tiers.shared"),
        "{e}"
    );
    // Without a runtime the task cannot start: an error, not a panic.
    let e = DeferredStore::open(
        Arc::new(WarmStore::in_memory()),
        minilm(),
        None,
        &DeferredSettings::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tokio runtime"), "{e}");
}
