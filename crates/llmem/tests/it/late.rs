//! Late interaction on the real MiniLM embedder: memories re-ranked by their token vectors'
//! match with the question, the vectors kept when memories are stored and computed when a
//! search first meets a memory stored elsewhere.
#![cfg(feature = "onnx")]

use std::collections::HashMap;
use std::sync::Arc;

use llmem::config::RetrievalSettings;
use llmem::core::{Embedded, Embedder, MemoryRecord, MemoryStore, Scope};
use llmem::longterm::LongTerm;
use llmem::providers::onnx::OnnxEmbedderBuilder;
use llmem::tiers::WarmStore;

const SAID: [&str; 6] = [
    "Priya: I've been practising the clarinet every evening this month.",
    "Priya: The weather at the beach was lovely on Saturday.",
    "Tom: I adopted a puppy from the shelter last week.",
    "Priya: My kids loved the pottery class we took together.",
    "Tom: The support group meets on Tuesdays downtown.",
    "Priya: We finally repainted the kitchen a pale yellow.",
];
const QUESTION: &str = "What musical instrument does Priya play?";

fn embedder() -> Arc<dyn Embedder> {
    Arc::new(
        OnnxEmbedderBuilder::from_env()
            .with_threads(2)
            .build()
            .unwrap_or_else(|e| panic!("the ONNX embedder could not load: {e}\nRun `cargo xtask setup`, then `eval \"$(cargo xtask env)\"`.")),
    )
}

fn settings(late: f32) -> RetrievalSettings {
    // Questions and sessions left out of the ranking, so that a score is the store's plus the
    // late-interaction gain.
    RetrievalSettings {
        late_interaction: late,
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
    let embedder = embedder();
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
    let minilm = embedder();
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
