//! A four-tier memory with `TieredStore`: hot (the working set, LRU-demoting to warm),
//! warm (RAM with a write-ahead log), cold and glacier; placement, retrieval by id and by
//! metadata, search, migration by age, promotion on access, snapshot/restore and per-tier
//! metrics. Everything lives in a temporary directory.
//!
//! Run: `cargo run -p llmem --example four_tiers` (add `--features glacier` for the real
//! glacier tier, zstd batches in a local directory; otherwise a disk-backed stand-in). The cold
//! tier here is a disk-backed `WarmStore` stand-in (the Lance cold tier needs `--features lance`).

use std::sync::Arc;

use llmem::core::{Filter, MemoryRecord, Scope, SearchRequest, Timestamp};
use llmem::tiers::{HotStore, MigrationPolicy, Tier, TierKind, TieredStore, WarmConfig, WarmStore};
use serde_json::json;

#[cfg(feature = "glacier")]
async fn glacier(dir: &std::path::Path) -> anyhow::Result<(Arc<dyn Tier>, &'static str)> {
    use llmem::tiers::{GlacierConfig, GlacierStore};
    let url = dir.to_string_lossy().into_owned();
    let g = GlacierStore::open(GlacierConfig::new(url)).await?;
    Ok((
        Arc::new(g),
        "GlacierStore (zstd batches in a local directory)",
    ))
}

#[cfg(not(feature = "glacier"))]
async fn glacier(dir: &std::path::Path) -> anyhow::Result<(Arc<dyn Tier>, &'static str)> {
    let g = WarmStore::open(WarmConfig::default().named("glacier").persist_in(dir))?;
    Ok((
        Arc::new(g),
        "disk-backed stand-in (build with --features glacier for GlacierStore)",
    ))
}

async fn print_metrics(store: &TieredStore) -> anyhow::Result<()> {
    println!(
        "  {:<8} {:>5} {:>8} {:>7} {:>5} {:>6} {:>5} {:>7} {:>7}",
        "tier", "items", "bytes", "usage", "hits", "misses", "ops", "p50 µs", "p95 µs"
    );
    for m in store.metrics().await? {
        let usage = m
            .usage_percent
            .map_or_else(|| "-".to_owned(), |u| format!("{u:.1}%"));
        println!(
            "  {:<8} {:>5} {:>8} {:>7} {:>5} {:>6} {:>5} {:>7} {:>7}",
            m.tier, m.items, m.bytes, usage, m.hits, m.misses, m.ops, m.p50_us, m.p95_us
        );
    }
    Ok(())
}

async fn tier_of(store: &TieredStore, scope: &Scope, id: &str) -> anyhow::Result<String> {
    Ok(store
        .locate(scope, id)
        .await?
        .map_or_else(|| "gone".to_owned(), |(t, _)| t.to_string()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (glacier, glacier_kind) = glacier(&dir.path().join("glacier")).await?;
    let cold: Arc<dyn Tier> = Arc::new(WarmStore::open(
        WarmConfig::default()
            .named("cold")
            .persist_in(dir.path().join("cold")),
    )?);
    let store = TieredStore::builder()
        // The working set: 3 records; the least recently used one moves to warm.
        .hot(Arc::new(HotStore::new(3)?))
        .warm(Arc::new(WarmStore::open(
            WarmConfig::default()
                .persist_in(dir.path().join("warm"))
                .max_bytes(64 * 1024),
        )?))
        .cold(cold)
        .glacier(glacier)
        // The policy: hot→warm 24 h, warm→cold 72 h, cold→glacier 30 days; 3 reads promote.
        .policy(MigrationPolicy::default())
        .state_dir(dir.path())
        .build()?;
    println!(
        "tiers: {} (glacier: {glacier_kind})",
        store
            .tiers()
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" → ")
    );

    let scope = Scope::tenant("geo-team");
    let rec = |id: &str, text: &str| MemoryRecord::new("geo-team", text).with_id(id);

    println!("\n--- store ---");
    for i in 1..=4 {
        store
            .store_in(
                rec(
                    &format!("turn-{i}"),
                    &format!("Chat turn {i} about the imagery pipeline."),
                ),
                TierKind::Hot,
            )
            .await?;
    }
    store
        .store(
            rec(
                "satellite_imagery",
                "Sentinel-2 satellite imagery tile over San Francisco.",
            )
            .with_metadata("location", "San Francisco")
            .with_metadata("date", "2025-02-15")
            .with_metadata("source", "sentinel-2"),
        )
        .await?;
    store
        .store(
            rec(
                "location_data",
                "GPS traces of delivery vans in San Francisco.",
            )
            .with_metadata("location", "San Francisco")
            .with_metadata("date", "2024-11-02")
            .with_metadata("source", "fleet"),
        )
        .await?;
    store
        .store_in(
            rec(
                "archive_2024",
                "Archived 2024 land-cover classification results.",
            )
            .with_metadata("source", "legacy"),
            TierKind::Glacier,
        )
        .await?;
    for id in ["turn-1", "turn-4", "satellite_imagery", "archive_2024"] {
        println!("  {id:<18} in {}", tier_of(&store, &scope, id).await?);
    }
    println!("  (turn-1 was the least recently used of 4 turns in a 3-record hot tier: demoted)");
    print_metrics(&store).await?;

    println!("\n--- retrieve ---");
    let got = store.get(&scope, "location_data").await?;
    println!(
        "  get(location_data): {}",
        got.map_or_else(|| "none".to_owned(), |r| r.text)
    );
    println!(
        "  exists(location_data): {}",
        store.exists(&scope, "location_data").await?
    );
    let filter =
        Filter::parse(&json!({"location": "San Francisco", "date": {"$gte": "2025-01-01"}}))?;
    let ids: Vec<String> = store
        .query(&scope, &filter, None)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    println!("  query({}): {ids:?}", filter.to_json());
    let hits = store
        .search(&scope, &SearchRequest::text("San Francisco imagery", 3))
        .await?;
    let hits: Vec<String> = hits
        .iter()
        .map(|h| format!("{} ({:.2})", h.record.id, h.score))
        .collect();
    println!("  search(\"San Francisco imagery\"): {}", hits.join(", "));

    let snapshot = store.snapshot().await?;
    println!("\n--- snapshot {snapshot} ---");

    println!("\n--- migrate_at(now + 100 h) ---");
    let later = Timestamp(Timestamp::now().0 + 100 * 3_600_000);
    let report = store.migrate_at(later).await?;
    for (from, to, n) in &report.moved {
        println!("  {from} → {to}: {n} record(s)");
    }
    for id in ["turn-4", "satellite_imagery", "archive_2024"] {
        println!("  {id:<18} in {}", tier_of(&store, &scope, id).await?);
    }

    println!("\n--- promotion on access ---");
    for read in 1..=3 {
        store.get(&scope, "satellite_imagery").await?;
        println!(
            "  read {read}: satellite_imagery in {}",
            tier_of(&store, &scope, "satellite_imagery").await?
        );
    }

    println!("\n--- restore ---");
    let deleted = store.delete(&scope, &["location_data".to_owned()]).await?;
    println!(
        "  delete(location_data): {deleted}; records now {}",
        store.count(&scope, &Filter::All).await?
    );
    store.restore(&snapshot).await?;
    println!(
        "  restore({snapshot}): records {}; location_data in {}, turn-4 in {}",
        store.count(&scope, &Filter::All).await?,
        tier_of(&store, &scope, "location_data").await?,
        tier_of(&store, &scope, "turn-4").await?
    );

    println!("\n--- metrics ---");
    print_metrics(&store).await?;
    Ok(())
}
