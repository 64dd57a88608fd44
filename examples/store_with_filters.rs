//! Conversation memory over a store: messages stored with metadata (role,
//! session_id, type), retrieved with Mongo-style filters (by type and session, recent ones by
//! `created_at`), searched by hybrid (vector + BM25) or lexical search, counted by type and
//! cleaned up by age, on a `WarmStore` persisted in a temporary directory.
//!
//! Run: `eval "$(cargo xtask env)" && cargo run -p llmem --features onnx --example store_with_filters`
//! (hybrid with the local MiniLM ONNX embedder; without `--features onnx` or its model: lexical).

use std::sync::Arc;

use llmem::core::{
    Embedder, Filter, MemoryRecord, MemoryStore, RecordKind, Scope, ScoredRecord, SearchRequest,
    Timestamp,
};
use llmem::tiers::{WarmConfig, WarmStore};
use serde_json::json;

const HOUR: i64 = 3_600_000;

/// An application's conversation memory for one user, over any `MemoryStore`.
#[derive(Debug)]
struct ConversationMemory {
    store: Arc<dyn MemoryStore>,
    embedder: Option<Arc<dyn Embedder>>,
    scope: Scope,
}

impl ConversationMemory {
    /// Stores a message with its role, session and type (and its embedding, when there is an
    /// embedder), said at `at`.
    async fn add_message(
        &self,
        text: &str,
        role: &str,
        session_id: &str,
        at: Timestamp,
    ) -> anyhow::Result<String> {
        let record = MemoryRecord::new(self.scope.tenant.clone(), text)
            .with_kind(RecordKind::Conversation)
            .with_created_at(at)
            .with_metadata("role", role)
            .with_metadata("session_id", session_id)
            .with_metadata("type", "conversation");
        self.put(record).await
    }

    /// A knowledge-base entry with a category and tags.
    async fn add_knowledge(
        &self,
        text: &str,
        category: &str,
        tags: &[&str],
    ) -> anyhow::Result<String> {
        let record = MemoryRecord::new(self.scope.tenant.clone(), text)
            .with_kind(RecordKind::Knowledge)
            .with_metadata("type", "knowledge")
            .with_metadata("category", category)
            .with_metadata("tags", json!(tags));
        self.put(record).await
    }

    async fn put(&self, mut record: MemoryRecord) -> anyhow::Result<String> {
        if let Some(e) = &self.embedder {
            record.embedding = e.embed(&[record.text.clone()]).await?.pop();
        }
        let id = record.id.clone();
        self.store.put(vec![record]).await?;
        Ok(id)
    }

    /// The conversation messages relevant to `query` (of one session, if given): hybrid search
    /// with an embedder, BM25 without.
    async fn get_context(
        &self,
        query: &str,
        top_k: usize,
        session_id: Option<&str>,
    ) -> anyhow::Result<Vec<ScoredRecord>> {
        let mut filter = Filter::eq("metadata.type", "conversation");
        if let Some(s) = session_id {
            filter = filter.and(Filter::eq("metadata.session_id", s));
        }
        let mut req = SearchRequest::text(query, top_k).with_filter(filter);
        if let Some(e) = &self.embedder
            && let Some(v) = e.embed(&[query.to_owned()]).await?.pop()
        {
            req = req.with_vector(v);
        }
        Ok(self.store.search(&self.scope, &req).await?)
    }

    /// The conversation messages of the last `hours`, newest last, at most `top_k`.
    async fn get_recent_context(
        &self,
        hours: i64,
        top_k: usize,
    ) -> anyhow::Result<Vec<MemoryRecord>> {
        let cutoff = Timestamp(Timestamp::now().0 - hours * HOUR).to_rfc3339();
        let filter = Filter::parse(&json!({
            "type": "conversation",
            "created_at": {"$gte": cutoff},
        }))?;
        let mut recent = self.store.query(&self.scope, &filter, None).await?;
        let skip = recent.len().saturating_sub(top_k);
        Ok(recent.split_off(skip))
    }

    /// Records per type.
    async fn stats(&self) -> anyhow::Result<Vec<(&'static str, usize)>> {
        let mut out = vec![("total", self.store.count(&self.scope, &Filter::All).await?)];
        for t in ["conversation", "knowledge", "episode"] {
            out.push((
                t,
                self.store
                    .count(&self.scope, &Filter::eq("type", t))
                    .await?,
            ));
        }
        Ok(out)
    }

    /// Deletes the memories created more than `days` ago.
    async fn cleanup_old_memories(&self, days: i64) -> anyhow::Result<usize> {
        let cutoff = Timestamp(Timestamp::now().0 - days * 24 * HOUR).to_rfc3339();
        let filter = Filter::parse(&json!({"created_at": {"$lt": cutoff}}))?;
        Ok(self.store.delete_by_filter(&self.scope, &filter).await?)
    }
}

#[cfg(feature = "onnx")]
fn embedder() -> (Option<Arc<dyn Embedder>>, String) {
    match llmem::providers::onnx::OnnxEmbedder::builder().build() {
        Ok(e) => {
            let e: Arc<dyn Embedder> = Arc::new(e);
            let mode = format!("hybrid (BM25 + {} {}-d vectors)", e.name(), e.dimensions());
            (Some(e), mode)
        }
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            (
                None,
                format!("lexical (BM25; the ONNX embedder is unavailable: {first})"),
            )
        }
    }
}

#[cfg(not(feature = "onnx"))]
fn embedder() -> (Option<Arc<dyn Embedder>>, String) {
    (
        None,
        "lexical (BM25; built without `--features onnx`)".to_owned(),
    )
}

fn show_hits(hits: &[ScoredRecord]) {
    if hits.is_empty() {
        println!("  (nothing)");
    }
    for h in hits {
        let meta = |k: &str| {
            h.record
                .metadata
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_owned()
        };
        println!(
            "  {:.3}  [{} / {}] {}",
            h.score,
            meta("session_id"),
            meta("role"),
            h.record.text
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn MemoryStore> = Arc::new(WarmStore::open(
        WarmConfig::default().persist_in(dir.path().join("alice")),
    )?);
    let (embedder, mode) = embedder();
    println!("search: {mode}");
    let memory = ConversationMemory {
        store,
        embedder,
        scope: Scope::tenant("alice"),
    };

    let now = Timestamp::now().0;
    let three_days_ago = Timestamp(now - 72 * HOUR);
    let an_hour_ago = Timestamp(now - HOUR);
    let trip = [
        (
            "user",
            "I want to visit Kyoto in April to see the cherry blossoms.",
        ),
        (
            "assistant",
            "April is peak season in Kyoto, so book a ryokan early.",
        ),
        (
            "user",
            "My budget is about 2,000 dollars for the whole week.",
        ),
        (
            "assistant",
            "A week in Kyoto on 2,000 dollars works if you stay in guesthouses.",
        ),
    ];
    let cooking = [
        ("user", "How do I make ramen broth at home?"),
        (
            "assistant",
            "For tonkotsu, simmer pork bones for ten to twelve hours.",
        ),
        ("user", "I am vegetarian, actually."),
        (
            "assistant",
            "Then make a dashi from kombu and dried shiitake mushrooms instead.",
        ),
    ];
    for (i, (role, text)) in trip.iter().enumerate() {
        let at = Timestamp(three_days_ago.0 + i as i64 * 60_000);
        memory.add_message(text, role, "trip-planning", at).await?;
    }
    for (i, (role, text)) in cooking.iter().enumerate() {
        let at = Timestamp(an_hour_ago.0 + i as i64 * 60_000);
        memory.add_message(text, role, "cooking", at).await?;
    }
    memory
        .add_knowledge(
            "Kyoto's Philosopher's Path is lined with hundreds of cherry trees.",
            "travel",
            &["japan", "travel"],
        )
        .await?;
    memory
        .add_knowledge(
            "Kombu dashi is a vegan soup stock made by soaking kelp in water.",
            "cooking",
            &["japanese", "cooking"],
        )
        .await?;
    println!(
        "stored {} conversation messages in 2 sessions and 2 knowledge entries",
        trip.len() + cooking.len()
    );

    let q = "vegetarian soup stock for noodles";
    println!("\nget_context({q:?}, top_k=3):");
    show_hits(&memory.get_context(q, 3, None).await?);

    let q = "Where is the trip in spring?";
    println!("\nget_context({q:?}, top_k=2, session_id=\"trip-planning\"):");
    show_hits(&memory.get_context(q, 2, Some("trip-planning")).await?);

    println!(
        "\nget_recent_context(hours=24, top_k=10)  [filter: type = conversation, created_at >= now - 24h]:"
    );
    for r in memory.get_recent_context(24, 10).await? {
        let session = r
            .metadata
            .get("session_id")
            .and_then(|v| v.as_str())
            .unwrap_or("-");
        println!(
            "  {} [{session}] {}",
            &r.created_at.to_rfc3339()[..16],
            r.text
        );
    }

    let f = Filter::parse(&json!({"type": "knowledge", "tags": {"$in": ["cooking"]}}))?;
    println!("\nquery({}):", f.to_json());
    for r in memory.store.query(&memory.scope, &f, None).await? {
        println!("  {}", r.text);
    }

    let stats = memory.stats().await?;
    println!("\nstats: {}", fmt_stats(&stats));
    let deleted = memory.cleanup_old_memories(2).await?;
    println!("cleanup_old_memories(days=2): deleted {deleted}");
    println!("stats: {}", fmt_stats(&memory.stats().await?));

    // Another user sees nothing of alice's.
    let bob = Scope::tenant("bob");
    println!(
        "bob's view of the store: {} records",
        memory.store.count(&bob, &Filter::All).await?
    );
    Ok(())
}

fn fmt_stats(stats: &[(&str, usize)]) -> String {
    stats
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
