//! A data directory remembers which model embedded its memories: another model is refused
//! with the way out, `llmem::reembed`, which embeds every memory again in the tier it is in
//! (real MiniLM and its int8 copy, a real Lance cold tier).
#![cfg(all(feature = "onnx", feature = "lance"))]

use std::sync::Arc;

use llmem::core::{Embedder, Error, Filter, MemoryRecord, MemoryStore, Scope};
use llmem::tiers::TierKind;
use llmem::{Config, EMBEDDER_FILE, Plugins, Providers, VectorModel};

/// MiniLM (`quantized`: its int8 copy) as `[embedder]`, over warm (two memories) and cold in
/// `dir`.
fn config(dir: &std::path::Path, quantized: bool) -> Config {
    let mut c = Config::from_toml_str(&format!(
        "[embedder]\nkind = \"onnx-embedder\"\nquantized = {quantized}\n"
    ))
    .unwrap();
    c.tiers.dir = Some(dir.to_path_buf());
    c.tiers.cold = true;
    c.tiers.warm_max_items = Some(2);
    c
}

const TEXTS: [&str; 5] = [
    "Priya has been practising the clarinet for the spring concert",
    "Ben hiked Mount Tamalpais last weekend; the view was unreal",
    "The dentist appointment moved to Thursday at 3 pm",
    "Biscuit needs his rabies booster at the vet on Elm Street",
    "We booked the cabin by the lake for the second week of August",
];

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn another_model_is_refused_until_every_memory_is_embedded_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (exact, int8) = (config(&data, false), config(&data, true));
    let scope = Scope::tenant("u");

    // Memories embedded by the exact model, and one stored without a vector.
    let ids: Vec<String> = {
        let p = Providers::from_config(&exact).unwrap();
        let e = p.embedder.clone().unwrap();
        let texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
        let vectors = e.embed(&texts[..4]).await.unwrap();
        let mut recs: Vec<MemoryRecord> = texts
            .iter()
            .map(|t| MemoryRecord::new("u", t.as_str()))
            .collect();
        for (r, v) in recs.iter_mut().zip(vectors) {
            *r = r.clone().with_embedding(v);
        }
        let ids = recs.iter().map(|r| r.id.clone()).collect();
        p.store.clone().unwrap().put(recs).await.unwrap();
        ids
    };
    let recorded = VectorModel::read(&data)
        .unwrap()
        .expect("the model is recorded");
    assert_eq!(recorded.dimensions, 384);
    assert!(!recorded.embedder.contains("int8"), "{recorded:?}");

    // The int8 model is refused, with both models and the command that fixes it named.
    let err = Providers::from_config(&int8).unwrap_err().to_string();
    assert!(err.contains("llmem reembed"), "{err}");
    assert!(
        err.contains(&recorded.embedder) && err.contains("model-int8"),
        "{err}"
    );
    // The same model opens it again.
    Providers::from_config(&exact).unwrap();

    // Re-embedding: every memory, each left in its tier, the model recorded.
    let mut calls = Vec::new();
    let done = llmem::reembed(&int8, &Plugins::builtin(), |d, t| calls.push((d, t)))
        .await
        .unwrap();
    assert_eq!(done.records(), 5);
    assert_eq!(
        done.per_tier,
        vec![("warm".to_owned(), 2), ("cold".to_owned(), 3)]
    );
    assert_eq!(calls.last(), Some(&(5, 5)));
    assert_eq!(done.from.as_ref(), Some(&recorded));
    assert!(done.to.embedder.contains("model-int8"), "{:?}", done.to);
    assert_eq!(VectorModel::read(&data).unwrap().as_ref(), Some(&done.to));

    // The int8 model opens it now, and each memory holds that model's vector of its text.
    let p = Providers::from_config(&int8).unwrap();
    let e = p.embedder.clone().unwrap();
    let store = p.store.clone().unwrap();
    let stored = store.get(&scope, &ids).await.unwrap();
    assert_eq!(stored.len(), 5, "nothing lost");
    let exact_e = Plugins::builtin().embedder(&exact).unwrap().unwrap();
    let texts: Vec<String> = stored.iter().map(|r| r.text.clone()).collect();
    let (wanted, olds) = (
        e.embed(&texts).await.unwrap(),
        exact_e.embed(&texts).await.unwrap(),
    );
    for ((r, want), old) in stored.iter().zip(&wanted).zip(&olds) {
        let v = r.embedding.as_ref().expect("every memory has a vector now");
        assert!(
            cosine(v, want) > 0.9999,
            "{}: the int8 model's vector",
            r.text
        );
        assert!(cosine(v, old) < 0.9999, "{}: not the exact model's", r.text);
    }
    let tiered = llmem::open_tiered(&int8.tiers).await.unwrap();
    let cold = tiered.tier(TierKind::Cold).unwrap();
    assert_eq!(
        cold.count(&scope, &Filter::All).await.unwrap(),
        3,
        "cold kept its three"
    );
    drop((p, tiered));

    // Now the exact model is the other one.
    let err = Providers::from_config(&exact).unwrap_err().to_string();
    assert!(err.contains("llmem reembed"), "{err}");
}

/// The MiniLM configuration of `data`, where one memory was stored through it.
async fn one_memory_by_minilm(data: &std::path::Path) -> Config {
    let c = config(data, false);
    let p = Providers::from_config(&c).unwrap();
    p.store
        .clone()
        .unwrap()
        .put(vec![MemoryRecord::new("u", TEXTS[0])])
        .await
        .unwrap();
    c
}

#[tokio::test]
async fn an_unfinished_reembed_is_refused_until_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = one_memory_by_minilm(&data).await;
    // What a run that stopped half-way leaves.
    let mut m = VectorModel::read(&data).unwrap().unwrap();
    m.reembedding = true;
    m.write(&data).unwrap();
    let err = Providers::from_config(&c).unwrap_err().to_string();
    assert!(
        err.contains("did not finish") && err.contains("llmem reembed"),
        "{err}"
    );

    let done = llmem::reembed(&c, &Plugins::builtin(), |_, _| {})
        .await
        .unwrap();
    assert_eq!(done.records(), 1);
    assert!(done.from.unwrap().reembedding);
    Providers::from_config(&c).unwrap();
    assert!(data.join(EMBEDDER_FILE).is_file());
}

#[tokio::test]
async fn reembed_says_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), false);
    c.tiers.dir = None;
    let err = llmem::reembed(&c, &Plugins::builtin(), |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tiers.dir"), "{err}");
    let mut c = Config::default();
    c.tiers.dir = Some(dir.path().to_path_buf());
    let err = llmem::reembed(&c, &Plugins::builtin(), |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("[embedder]"), "{err}");
    // A record that is not one says what to do.
    std::fs::write(dir.path().join(EMBEDDER_FILE), "not json").unwrap();
    let err = VectorModel::read(dir.path()).unwrap_err().to_string();
    assert!(err.contains("delete it"), "{err}");
}

/// An embedder whose every call fails (a provider that is down).
#[derive(Debug)]
struct Down;

#[async_trait::async_trait]
impl Embedder for Down {
    fn name(&self) -> &str {
        "down"
    }
    fn dimensions(&self) -> usize {
        384
    }
    async fn embed(&self, _: &[String]) -> llmem::Result<Vec<Vec<f32>>> {
        Err(Error::invalid("the embedding service is down"))
    }
}

#[tokio::test]
async fn an_embedder_that_fails_at_once_leaves_the_directory_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let exact = one_memory_by_minilm(&data).await;
    let before = VectorModel::read(&data).unwrap();
    let mut down = Config::from_toml_str("[embedder]\nkind = \"down\"\n").unwrap();
    down.tiers = exact.tiers.clone();
    let plugins = Plugins::builtin().with_embedders(|r| {
        r.register("down", |_| Ok(Arc::new(Down) as Arc<dyn Embedder>));
    });
    let err = llmem::reembed(&down, &plugins, |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("down"), "{err}");
    // Nothing changed: the record still names MiniLM, which opens the directory.
    assert_eq!(VectorModel::read(&data).unwrap(), before);
    Providers::from_config(&exact).unwrap();
}
