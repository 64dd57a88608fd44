//! Long-term memory over the tiers `[tiers]` describes, as the manager uses them: warm over a
//! real Lance cold tier and a glacier archive in a directory (features `lance` and `glacier`).
#![cfg(all(feature = "lance", feature = "glacier"))]

use llmem::core::{Filter, MemoryRecord, MemoryStore, Scope, Timestamp};
use llmem::tiers::{ColdConfig, ColdStore, GlacierConfig, GlacierStore};
use llmem::{Config, MemoryManager, Providers};

use crate::{conversation, gpt4o};

fn tiered(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.memory.max_context_tokens = 4000;
    c.memory.compression_threshold = 600;
    c.memory.short_term_size = 6;
    c.memory.answer_reserve = 256;
    c.tiers.dir = Some(dir.join("data"));
    c.tiers.cold = true;
    c.tiers.warm_max_items = Some(5);
    c.tiers.glacier = Some(dir.join("archive").display().to_string());
    c
}

#[tokio::test]
async fn the_manager_remembers_through_warm_cold_and_glacier() {
    let dir = tempfile::tempdir().unwrap();
    let c = tiered(dir.path());
    let scope = Scope::tenant("default");
    {
        let mut m =
            MemoryManager::new(c.clone(), Providers::default().with_counter(gpt4o())).unwrap();
        for msg in conversation() {
            m.add_message(msg, None).await.unwrap();
        }
        m.end_session().await.unwrap();
        // Warm keeps five memories; the others went to the Lance dataset, and retrieval
        // still finds them there.
        let cold = ColdStore::open(ColdConfig::new(dir.path().join("data/cold")))
            .await
            .unwrap();
        let in_cold = cold.count(&scope, &Filter::All).await.unwrap();
        assert!(in_cold > 20, "{in_cold} memories in cold");
        let hits = m.search("rabies booster vaccine", 5).await.unwrap();
        let ids: Vec<String> = hits.iter().map(|h| h.record.id.clone()).collect();
        assert!(
            hits.iter()
                .any(|h| h.record.text.to_lowercase().contains("rabies")),
            "{hits:?}"
        );
        assert!(
            !cold.get(&scope, &ids).await.unwrap().is_empty(),
            "search reached into cold"
        );
        let p = m
            .prepare(Some("Which vaccine booster does Biscuit need, and where?"))
            .await
            .unwrap();
        assert!(
            p.retrieved
                .iter()
                .any(|r| r.record.text.to_lowercase().contains("rabies")),
            "{:?}",
            p.retrieved
        );
    }

    // A memory nobody read for 100 days, stored through the same configured store.
    let old = Timestamp(Timestamp::now().0 - 100 * 24 * 3_600_000);
    let forgotten =
        MemoryRecord::new("default", "the old locker code was 4711").with_created_at(old);
    {
        let store = llmem::open_store(&c.tiers).unwrap();
        store.put(vec![forgotten.clone()]).await.unwrap();
    }
    // Reopened (as after a restart), the store runs the age thresholds: the old memory
    // cascades warm → cold → glacier; everything else stays searchable.
    let store = llmem::open_store(&c.tiers).unwrap();
    let total = store.count(&scope, &Filter::All).await.unwrap();
    let glacier = GlacierStore::open(GlacierConfig::new(
        dir.path().join("archive").display().to_string(),
    ))
    .await
    .unwrap();
    let archived = glacier
        .get(&scope, std::slice::from_ref(&forgotten.id))
        .await
        .unwrap();
    assert_eq!(archived.len(), 1, "the unread memory is in the archive");
    assert_eq!(archived[0].text, forgotten.text);
    assert!(total > 25, "{total} memories across the tiers");
    let back = store
        .get(&scope, std::slice::from_ref(&forgotten.id))
        .await
        .unwrap();
    assert_eq!(back.len(), 1, "a read by id reaches the archive");
    let hits = store
        .search(
            &scope,
            &llmem::core::SearchRequest::text("rabies booster", 3),
        )
        .await
        .unwrap();
    assert!(
        !hits.is_empty(),
        "the archived conversation is still searchable after a restart"
    );
}

#[tokio::test]
async fn the_cold_index_settings_are_checked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiered(dir.path());
    c.tiers.cold_index = "hnsw".into();
    let e = llmem::open_tiered(&c.tiers).await.unwrap_err().to_string();
    assert!(
        e.contains("tiers.cold_index") && e.contains("ivf_hnsw_sq"),
        "names the key and the kinds: {e}"
    );
    c.tiers.cold_index = "IVF_SQ".into();
    c.tiers.cold_nprobes = 0;
    let e = llmem::open_tiered(&c.tiers).await.unwrap_err().to_string();
    assert!(e.contains("tiers.cold_nprobes"), "{e}");
    c.tiers.cold_nprobes = 8;
    llmem::open_tiered(&c.tiers).await.unwrap();
}
