//! Hybrid retrieval: BM25 and vector rankings fused by reciprocal rank.

use llmem_core::{MemoryStore, Scope, SearchRequest};
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
