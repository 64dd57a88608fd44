//! Hybrid retrieval: BM25 and vector rankings fused by weighted scores or reciprocal rank;
//! lexical keys expanded by `metadata.keywords`.

use llmem_core::{Fusion, KEYWORDS, MemoryStore, Scope, SearchRequest};
use llmem_tiers::WarmStore;

use crate::common::{rec, unit_vec};

#[tokio::test]
async fn hybrid_finds_what_either_ranking_alone_misses() {
    let dim = 32;
    let warm = WarmStore::in_memory();
    let mut recs: Vec<_> = (0..30u64)
        .map(|i| {
            rec(
                "u",
                &format!("r{i}"),
                &format!("an ordinary note number {i}"),
                dim,
                i,
            )
        })
        .collect();
    // The lexical match has an embedding far from the query vector.
    let q = unit_vec(dim, 5);
    let far: Vec<f32> = q.iter().map(|x| -x).collect();
    recs.push(rec("u", "lisbon", "we moved to Lisbon in March 2023", dim, 0).with_embedding(far));
    recs.push(rec("other", "spy", "Lisbon Lisbon Lisbon", dim, 5));
    warm.put(recs).await.unwrap();
    let s = Scope::tenant("u");

    let by_vec = warm
        .search(&s, &SearchRequest::vector(q.clone(), 3))
        .await
        .unwrap();
    assert_eq!(by_vec[0].record.id, "r5");
    assert!(by_vec.iter().all(|h| h.record.id != "lisbon"));

    let by_text = warm
        .search(&s, &SearchRequest::text("when did we move to lisbon", 3))
        .await
        .unwrap();
    assert_eq!(
        by_text.len(),
        1,
        "only one of the tenant's records has the words"
    );
    assert_eq!(by_text[0].record.id, "lisbon");

    let both = warm
        .search(&s, &SearchRequest::vector(q, 2).with_text("lisbon"))
        .await
        .unwrap();
    let ids: Vec<&str> = both.iter().map(|h| h.record.id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"r5") && ids.contains(&"lisbon"), "{ids:?}");
    assert!(both.iter().all(|h| h.record.tenant == "u"));
}

#[tokio::test]
async fn keywords_expand_the_lexical_key_without_changing_the_text() {
    let warm = WarmStore::in_memory();
    warm.put(vec![
        rec(
            "u",
            "answer",
            "Marley, because it is grippy but lets you move.",
            8,
            1,
        )
        .with_metadata(KEYWORDS, "What flooring are you after for the studio?"),
        rec("u", "other", "The studio opens in June.", 8, 2),
        rec("v", "spy", "flooring flooring", 8, 3).with_metadata(KEYWORDS, "flooring"),
    ])
    .await
    .unwrap();
    let hits = warm
        .search(
            &Scope::tenant("u"),
            &SearchRequest::text("which flooring", 5),
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].record.id, "answer");
    assert_eq!(
        hits[0].record.text, "Marley, because it is grippy but lets you move.",
        "the keywords are a key, not part of what is shown"
    );
}

#[tokio::test]
async fn weighted_fusion_keeps_a_strong_lexical_hit_and_rejects_bad_weights() {
    let dim = 16;
    let q = unit_vec(dim, 7);
    let warm = WarmStore::in_memory();
    // 20 records near the query vector that share one weak query word; one far record that
    // has the rare words of the query.
    let mut recs: Vec<_> = (0..20u64)
        .map(|i| {
            let v: Vec<f32> = q
                .iter()
                .zip(unit_vec(dim, 100 + i))
                .map(|(a, b)| a + 0.3 * b)
                .collect();
            rec("u", &format!("near{i}"), &format!("a note {i}"), dim, i).with_embedding(v)
        })
        .collect();
    let far: Vec<f32> = q.iter().map(|x| -x).collect();
    recs.push(rec("u", "exact", "the saxophone recital was on Sunday", dim, 0).with_embedding(far));
    warm.put(recs).await.unwrap();
    let s = Scope::tenant("u");
    let req = |f: Fusion| {
        SearchRequest::vector(q.clone(), 3)
            .with_text("note about the saxophone recital")
            .with_fusion(f)
    };
    let weighted = warm.search(&s, &req(Fusion::default())).await.unwrap();
    assert_eq!(weighted[0].record.id, "exact", "{weighted:?}");
    let vectors_only = warm
        .search(&s, &req(Fusion::Weighted { vector_weight: 1.0 }))
        .await
        .unwrap();
    assert!(
        vectors_only.iter().all(|h| h.record.id != "exact"),
        "{vectors_only:?}"
    );
    let rrf = warm.search(&s, &req(Fusion::Rrf)).await.unwrap();
    assert_eq!(rrf.len(), 3);
    let err = warm
        .search(&s, &req(Fusion::Weighted { vector_weight: 1.5 }))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("outside 0..=1"), "{err}");
}
