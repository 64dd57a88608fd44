//! Embedding off the request path (`retrieval.deferred_embedding`).
//!
//! [`DeferredStore`] sits in front of the long-term store. A record put without an embedding
//! is stored at once, as it is (so a search finds it by its words from then on), and queued;
//! a background task embeds the queue in batches and sets each vector on the stored record
//! (then a search finds it by meaning too). What this guarantees:
//! - **Bounded.** At most `queue` records wait; a put that would pass the bound waits for room
//!   (the ingest then runs at the embedder's speed, as it would inline).
//! - **Never a stale vector.** A vector is set only on a record whose text is still the text
//!   that was embedded and that has no vector yet, checked and written while no other write
//!   through this store runs: a memory updated or forgotten while it waited keeps its new
//!   state (an update is queued again; a forgotten one is not brought back).
//! - **Nothing lost.** The record is stored before the put returns; the queue only adds its
//!   vector. With a journal file (`<tiers.dir>/embedding-queue.log`), the ids waiting are
//!   appended (and fsynced) before the put, marked done after their vector is stored, and the
//!   ones left by a process that died are queued again when the store opens. A batch the
//!   embedder fails on is retried; after [`ATTEMPTS`] failures its records stay searchable by
//!   their words, stay in the journal for the next start, and are counted in
//!   [`DeferredStats::failed`].
//! - [`DeferredStore::drain`] waits until everything queued has its vector (an eval before
//!   its questions; a test).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use llmem_core::{
    Embedder, Error, Filter, MemoryRecord, MemoryStore, Result, Scope, ScoredRecord, SearchRequest,
    StoreCapabilities, StoreStats,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, Semaphore, mpsc, watch};

use crate::late::{LateIndex, text_hash};

/// Embedder calls per batch before its records are left for the next start.
pub const ATTEMPTS: u32 = 4;

/// The settings of a [`DeferredStore`].
#[derive(Debug, Clone)]
pub struct DeferredSettings {
    /// Records waiting for their vector, at most (a put past it waits for room).
    pub queue: usize,
    /// Records embedded in one embedder call, at most (default 256). A call takes what is
    /// waiting, up to this; a local embedder runs it in runs of texts of about one length
    /// (`OnnxEmbedder` runs 16 at a time, shortest first), so a larger call pads less.
    pub batch: usize,
    /// The journal of the ids waiting (none: a record whose process dies before its vector
    /// is stored stays searchable by its words only).
    pub journal: Option<PathBuf>,
    /// The wait before a failed embedder call is tried again, doubled at each attempt.
    pub retry_after: Duration,
}

impl Default for DeferredSettings {
    fn default() -> Self {
        DeferredSettings {
            queue: 4096,
            batch: 256,
            journal: None,
            retry_after: Duration::from_millis(200),
        }
    }
}

/// What the queue has done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeferredStats {
    /// Records waiting for their vector now.
    pub pending: usize,
    /// Vectors set on stored records.
    pub embedded: u64,
    /// Records whose vector was not set because the record had changed or gone meanwhile.
    pub skipped: u64,
    /// Records left without a vector after [`ATTEMPTS`] failed embedder calls.
    pub failed: u64,
    /// Embedder calls.
    pub batches: u64,
    /// Records queued again from the journal when the store opened.
    pub recovered: u64,
}

/// One record waiting for its vector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    tenant: String,
    id: String,
    /// The text the vector is of.
    text: String,
    /// [`text_hash`] of `text` (for a record from the journal: the hash the journal holds).
    hash: u64,
    /// Whether it holds a place in the queue's bound (a put of more records than the bound
    /// holds only the bound).
    counted: bool,
}

/// A line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Entry {
    Queued {
        tenant: String,
        id: String,
        hash: u64,
    },
    Done {
        id: String,
        hash: u64,
    },
}

/// A record the journal says waits for its vector, under the hash of its queued text.
#[derive(Debug, Clone)]
struct Waiting {
    tenant: String,
    id: String,
    hash: u64,
}

/// Journal lines past which (and past four times the records waiting) the journal is
/// rewritten with just the records waiting.
const JOURNAL_COMPACT_AT: usize = 4096;

/// The append-only journal of ids waiting for their vector. It keeps in RAM what its lines
/// leave waiting, and rewrites itself to just that now and then.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: File,
    /// Id → (tenant, hash of the text queued last) of what waits.
    open: HashMap<String, (String, u64)>,
    /// Lines in the file.
    lines: usize,
}

impl Journal {
    /// Opens `path` and returns it with the records queued and not done, rewriting the file to
    /// hold just those. A torn last line (a crash mid-append) is ignored.
    fn open(path: &Path) -> Result<(Journal, Vec<Waiting>)> {
        let mut open = HashMap::new();
        // In order: an id queued again (its text changed) waits until its last text is done.
        let mut order: Vec<String> = Vec::new();
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            for line in text.lines() {
                match serde_json::from_str::<Entry>(line) {
                    Ok(e) => {
                        if let Entry::Queued { id, .. } = &e {
                            order.push(id.clone());
                        }
                        note(&mut open, e);
                    }
                    // A torn last line: never acknowledged.
                    Err(_) => break,
                }
            }
        }
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut seen = HashSet::new();
        for id in order {
            if let (Some((tenant, hash)), true) = (open.get(&id), seen.insert(id.clone())) {
                waiting.push(Waiting {
                    tenant: tenant.clone(),
                    id,
                    hash: *hash,
                });
            }
        }
        let file = rewrite(path, &open)?;
        let lines = open.len();
        Ok((
            Journal {
                path: path.to_owned(),
                file,
                open,
                lines,
            },
            waiting,
        ))
    }

    /// Appends `entries`; with `sync`, fsynced before it returns. Rewrites the file when it has
    /// grown past [`JOURNAL_COMPACT_AT`] lines and four times what waits.
    fn append(&mut self, entries: Vec<Entry>, sync: bool) -> Result<()> {
        let mut bytes = Vec::new();
        for e in &entries {
            bytes.extend(line(e)?);
        }
        self.file
            .write_all(&bytes)
            .map_err(|e| Error::io(format!("appending to {}", self.path.display()), e))?;
        if sync {
            self.file
                .sync_data()
                .map_err(|e| Error::io(format!("fsync of {}", self.path.display()), e))?;
        }
        self.lines += entries.len();
        for e in entries {
            note(&mut self.open, e);
        }
        if self.lines > JOURNAL_COMPACT_AT.max(4 * self.open.len()) {
            self.file = rewrite(&self.path, &self.open)?;
            self.lines = self.open.len();
        }
        Ok(())
    }
}

/// Takes a journal entry into `open` (id → tenant and hash of what waits).
fn note(open: &mut HashMap<String, (String, u64)>, e: Entry) {
    match e {
        Entry::Queued { tenant, id, hash } => {
            open.insert(id, (tenant, hash));
        }
        Entry::Done { id, hash } => {
            if open.get(&id).is_some_and(|(_, h)| *h == hash) {
                open.remove(&id);
            }
        }
    }
}

/// Replaces the journal at `path` with one line per record in `open`, durably, and opens it
/// for appending.
fn rewrite(path: &Path, open: &HashMap<String, (String, u64)>) -> Result<File> {
    let mut bytes = Vec::new();
    for (id, (tenant, hash)) in open {
        bytes.extend(line(&Entry::Queued {
            tenant: tenant.clone(),
            id: id.clone(),
            hash: *hash,
        })?);
    }
    crate::manager::write_durable(path, &bytes)?;
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

fn line(e: &Entry) -> Result<Vec<u8>> {
    let mut l = serde_json::to_vec(e).map_err(|e| Error::serde("embedding journal entry", e))?;
    l.push(b'\n');
    Ok(l)
}

/// What the store and its background task share.
#[derive(Debug)]
struct Shared {
    inner: Arc<dyn MemoryStore>,
    embedder: Arc<dyn Embedder>,
    /// Where token vectors go, when late interaction is on.
    late: Option<Arc<parking_lot::Mutex<LateIndex>>>,
    /// Writes through the store hold it shared; setting vectors holds it alone.
    gate: RwLock<()>,
    room: Semaphore,
    /// Ids queued and not yet done, with the hash of the text last queued for each.
    queued: parking_lot::Mutex<HashMap<String, u64>>,
    pending: watch::Sender<usize>,
    journal: Option<parking_lot::Mutex<Journal>>,
    batch: usize,
    retry_after: Duration,
    embedded: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    batches: AtomicU64,
    recovered: AtomicU64,
}

/// A [`MemoryStore`] that stores at once and embeds later: see the [module](self).
#[derive(Debug)]
pub struct DeferredStore {
    shared: Arc<Shared>,
    queue: usize,
    tx: mpsc::UnboundedSender<Vec<Job>>,
}

impl DeferredStore {
    /// Puts `inner` behind a queue embedded by `embedder`; `late` takes the token vectors when
    /// late interaction is on. Starts the background task on the current tokio runtime, and
    /// queues again what the journal left waiting.
    pub fn open(
        inner: Arc<dyn MemoryStore>,
        embedder: Arc<dyn Embedder>,
        late: Option<Arc<parking_lot::Mutex<LateIndex>>>,
        settings: &DeferredSettings,
    ) -> Result<Arc<Self>> {
        if settings.queue == 0 || settings.batch == 0 {
            return Err(Error::config(
                "retrieval.embedding_queue",
                "the queue of records waiting for their vector needs room for at least one \
                 (set it to 1 or more, or turn retrieval.deferred_embedding off)",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid(
                "deferred embedding runs a background task: open it inside a tokio runtime",
            )
        })?;
        let (journal, waiting) = match &settings.journal {
            Some(p) => {
                let (j, w) = Journal::open(p)?;
                (Some(parking_lot::Mutex::new(j)), w)
            }
            None => (None, Vec::new()),
        };
        let shared = Arc::new(Shared {
            inner,
            embedder,
            late,
            gate: RwLock::new(()),
            room: Semaphore::new(settings.queue),
            queued: parking_lot::Mutex::new(
                waiting.iter().map(|w| (w.id.clone(), w.hash)).collect(),
            ),
            pending: watch::Sender::new(waiting.len()),
            journal,
            batch: settings.batch,
            retry_after: settings.retry_after,
            embedded: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(shared.clone(), rx, waiting));
        Ok(Arc::new(DeferredStore {
            shared,
            queue: settings.queue,
            tx,
        }))
    }

    /// The store behind the queue.
    pub fn inner(&self) -> &Arc<dyn MemoryStore> {
        &self.shared.inner
    }

    /// Waits until every record queued so far has its vector (or has failed [`ATTEMPTS`]
    /// times).
    pub async fn drain(&self) {
        let mut rx = self.shared.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// What the queue has done.
    pub fn queue_stats(&self) -> DeferredStats {
        let s = &self.shared;
        DeferredStats {
            pending: *s.pending.borrow(),
            embedded: s.embedded.load(Ordering::Relaxed),
            skipped: s.skipped.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            recovered: s.recovered.load(Ordering::Relaxed),
        }
    }
}

/// An id and the hash of the text queued for it.
type Key = (String, u64);

impl Job {
    fn of(r: &MemoryRecord, counted: bool) -> Job {
        Job {
            tenant: r.tenant.clone(),
            id: r.id.clone(),
            text: r.text.clone(),
            hash: text_hash(&r.text),
            counted,
        }
    }

    fn key(&self) -> Key {
        (self.id.clone(), self.hash)
    }
}

/// The background task: the journal's leftovers first, then batches as they come.
async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Vec<Job>>,
    waiting: Vec<Waiting>,
) {
    if !waiting.is_empty() {
        let (jobs, unread) = recover(&shared, &waiting).await;
        shared
            .recovered
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        tracing::info!(
            waiting = waiting.len(),
            queued = jobs.len(),
            "embedding the records a stopped process left without a vector"
        );
        // Ids the journal names that are gone or embedded need nothing more.
        let kept: HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let (gone, unreadable): (Vec<Key>, Vec<Key>) = waiting
            .iter()
            .filter(|w| !kept.contains(w.id.as_str()))
            .map(|w| (w.id.clone(), w.hash))
            .partition(|(id, _)| !unread.contains(id));
        finish(&shared, &gone, 0);
        release(&shared, &unreadable, 0);
        for chunk in jobs.chunks(shared.batch) {
            embed_batch(&shared, chunk.to_vec()).await;
        }
    }
    let mut buffer: Vec<Job> = Vec::new();
    loop {
        if buffer.is_empty() {
            match rx.recv().await {
                Some(jobs) => buffer.extend(jobs),
                None => return,
            }
        }
        while buffer.len() < shared.batch {
            match rx.try_recv() {
                Ok(jobs) => buffer.extend(jobs),
                Err(_) => break,
            }
        }
        let take = buffer.len().min(shared.batch);
        let batch: Vec<Job> = buffer.drain(..take).collect();
        embed_batch(&shared, batch).await;
    }
}

/// The jobs of the journal's waiting ids whose records are still stored without a vector
/// (their vectors checked against the stored text), and the ids that could not be read (left in the
/// journal for the next start).
async fn recover(shared: &Shared, waiting: &[Waiting]) -> (Vec<Job>, HashSet<String>) {
    let mut by_tenant: HashMap<&str, Vec<String>> = HashMap::new();
    for w in waiting {
        by_tenant.entry(&w.tenant).or_default().push(w.id.clone());
    }
    // Done under the journal's hash, so that the journal closes the line it holds.
    let hashes: HashMap<&str, u64> = waiting.iter().map(|w| (w.id.as_str(), w.hash)).collect();
    let mut jobs = Vec::new();
    let mut unread = HashSet::new();
    for (tenant, ids) in by_tenant {
        match shared.inner.get(&Scope::tenant(tenant), &ids).await {
            Ok(records) => jobs.extend(
                records
                    .iter()
                    .filter(|r| r.embedding.is_none() && wants_vector(r))
                    .map(|r| Job {
                        hash: hashes.get(r.id.as_str()).copied().unwrap_or(0),
                        ..Job::of(r, false)
                    }),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "reading the records the embedding journal names");
                unread.extend(ids);
            }
        }
    }
    // `queued` holds these ids under the same hashes since the store opened.
    (jobs, unread)
}

fn wants_vector(r: &MemoryRecord) -> bool {
    !r.text.trim().is_empty()
}

/// Embeds one batch (retried [`ATTEMPTS`] times) and sets the vectors, then marks it done.
async fn embed_batch(shared: &Shared, batch: Vec<Job>) {
    let texts: Vec<String> = batch.iter().map(|j| j.text.clone()).collect();
    let mut attempt = 0;
    let embedded = loop {
        attempt += 1;
        shared.batches.fetch_add(1, Ordering::Relaxed);
        let result = if shared.late.is_some() {
            shared.embedder.embed_with_tokens(&texts).await
        } else {
            shared.embedder.embed(&texts).await.map(|v| {
                v.into_iter()
                    .map(|vector| llmem_core::Embedded {
                        vector,
                        tokens: None,
                    })
                    .collect()
            })
        };
        match result {
            Ok(v) if v.len() == batch.len() => break Some(v),
            Ok(v) => tracing::warn!(
                asked = batch.len(),
                got = v.len(),
                "the embedder gave the wrong number of vectors"
            ),
            Err(e) => tracing::warn!(error = %e, attempt, "embedding a queued batch failed"),
        }
        if attempt >= ATTEMPTS {
            break None;
        }
        tokio::time::sleep(shared.retry_after * (1 << (attempt - 1))).await;
    };
    let counted = batch.iter().filter(|j| j.counted).count();
    let Some(embedded) = embedded else {
        shared
            .failed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        tracing::warn!(
            records = batch.len(),
            "records left without a vector (searchable by their words; queued again at the next start)"
        );
        let keys: Vec<Key> = batch.iter().map(Job::key).collect();
        release(shared, &keys, counted);
        return;
    };
    match set_vectors(shared, &batch, embedded).await {
        Ok(()) => {
            let keys: Vec<Key> = batch.iter().map(Job::key).collect();
            finish(shared, &keys, counted);
        }
        Err(e) => {
            shared
                .failed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::warn!(error = %e, records = batch.len(), "storing queued vectors failed; the records stay searchable by their words");
            let keys: Vec<Key> = batch.iter().map(Job::key).collect();
            release(shared, &keys, counted);
        }
    }
}

/// Sets each vector on its record when the record still has the embedded text and no vector,
/// with no other write through the store running meanwhile.
async fn set_vectors(
    shared: &Shared,
    batch: &[Job],
    embedded: Vec<llmem_core::Embedded>,
) -> Result<()> {
    let _alone = shared.gate.write().await;
    let mut by_tenant: HashMap<&str, Vec<(&Job, llmem_core::Embedded)>> = HashMap::new();
    for (j, e) in batch.iter().zip(embedded) {
        by_tenant.entry(j.tenant.as_str()).or_default().push((j, e));
    }
    let mut set = 0u64;
    let mut skipped = 0u64;
    for (tenant, jobs) in by_tenant {
        let ids: Vec<String> = jobs.iter().map(|(j, _)| j.id.clone()).collect();
        let mut stored: HashMap<String, MemoryRecord> = shared
            .inner
            .get(&Scope::tenant(tenant), &ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut out = Vec::new();
        for (j, e) in jobs {
            // A batch can hold two texts of one id (rewritten while the first waited): the
            // stored record goes to the job of its own text, whichever comes first.
            let current = stored
                .get(&j.id)
                .is_some_and(|r| r.embedding.is_none() && r.text == j.text);
            match current.then(|| stored.remove(&j.id)).flatten() {
                Some(mut r) => {
                    if let (Some(late), Some(t)) = (&shared.late, &e.tokens) {
                        late.lock().insert(&r.id, &r.text, t);
                    }
                    r.embedding = Some(e.vector);
                    out.push(r);
                }
                None => skipped += 1,
            }
        }
        set += out.len() as u64;
        if !out.is_empty() {
            shared.inner.put(out).await?;
        }
    }
    shared.embedded.fetch_add(set, Ordering::Relaxed);
    shared.skipped.fetch_add(skipped, Ordering::Relaxed);
    Ok(())
}

/// Marks `keys` done in the journal, then [`release`]s them.
fn finish(shared: &Shared, keys: &[Key], counted: usize) {
    if let Some(j) = &shared.journal {
        let entries: Vec<Entry> = keys
            .iter()
            .map(|(id, hash)| Entry::Done {
                id: id.clone(),
                hash: *hash,
            })
            .collect();
        // Not fsynced: a done mark lost in a crash only has the record looked at again.
        if let Err(e) = j.lock().append(entries, false) {
            tracing::warn!(error = %e, "marking embedded records in the journal");
        }
    }
    release(shared, keys, counted);
}

/// Frees the queue's room and the ids' places (an id queued again since, for a new text,
/// keeps its place).
fn release(shared: &Shared, keys: &[Key], counted: usize) {
    {
        let mut q = shared.queued.lock();
        for (id, hash) in keys {
            if q.get(id) == Some(hash) {
                q.remove(id);
            }
        }
    }
    shared.room.add_permits(counted);
    shared
        .pending
        .send_modify(|n| *n = n.saturating_sub(keys.len()));
}

#[async_trait]
impl MemoryStore for DeferredStore {
    fn name(&self) -> &str {
        self.shared.inner.name()
    }

    fn capabilities(&self) -> StoreCapabilities {
        self.shared.inner.capabilities()
    }

    /// Stores `records` at once; those without a vector are queued for one (waiting for room
    /// when the queue is full).
    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        let mut jobs: Vec<Job> = {
            let queued = self.shared.queued.lock();
            let mut seen = HashSet::new();
            records
                .iter()
                .filter(|r| r.embedding.is_none() && wants_vector(r))
                .map(|r| Job::of(r, false))
                .filter(|j| queued.get(&j.id) != Some(&j.hash) && seen.insert(j.id.clone()))
                .collect()
        };
        let counted = jobs.len().min(self.queue);
        if counted > 0 {
            self.shared
                .room
                .acquire_many(counted as u32)
                .await
                .map_err(|_| Error::invalid("the embedding queue is closed"))?
                .forget();
        }
        for j in jobs.iter_mut().take(counted) {
            j.counted = true;
        }
        if let (Some(journal), false) = (&self.shared.journal, jobs.is_empty()) {
            let entries: Vec<Entry> = jobs
                .iter()
                .map(|j| Entry::Queued {
                    tenant: j.tenant.clone(),
                    id: j.id.clone(),
                    hash: j.hash,
                })
                .collect();
            if let Err(e) = journal.lock().append(entries, true) {
                self.shared.room.add_permits(counted);
                return Err(e);
            }
        }
        let stored = {
            let _writing = self.shared.gate.read().await;
            self.shared.inner.put(records).await
        };
        if let Err(e) = stored {
            self.shared.room.add_permits(counted);
            return Err(e);
        }
        if jobs.is_empty() {
            return Ok(());
        }
        {
            let mut q = self.shared.queued.lock();
            // A concurrent put of the same text may have queued it meanwhile.
            jobs.retain(|j| q.insert(j.id.clone(), j.hash) != Some(j.hash));
        }
        let dropped = counted - jobs.iter().filter(|j| j.counted).count();
        self.shared.room.add_permits(dropped);
        if jobs.is_empty() {
            return Ok(());
        }
        self.shared.pending.send_modify(|n| *n += jobs.len());
        if let Err(mpsc::error::SendError(jobs)) = self.tx.send(jobs) {
            let keys: Vec<Key> = jobs.iter().map(Job::key).collect();
            release(
                &self.shared,
                &keys,
                jobs.iter().filter(|j| j.counted).count(),
            );
            tracing::warn!(
                records = keys.len(),
                "the embedding task has stopped; the records are searchable by their words"
            );
        }
        Ok(())
    }

    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        self.shared.inner.get(scope, ids).await
    }

    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        let _writing = self.shared.gate.read().await;
        self.shared.inner.delete(scope, ids).await
    }

    async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        self.shared.inner.query(scope, filter, limit).await
    }

    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        self.shared.inner.count(scope, filter).await
    }

    async fn delete_by_filter(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        let _writing = self.shared.gate.read().await;
        self.shared.inner.delete_by_filter(scope, filter).await
    }

    async fn forget(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        let _writing = self.shared.gate.read().await;
        self.shared.inner.forget(scope, filter).await
    }

    async fn search(&self, scope: &Scope, request: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        self.shared.inner.search(scope, request).await
    }

    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        self.shared.inner.scan_all(filter, limit).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.shared.inner.stats().await
    }

    /// The store's own flush. Records still queued keep their place in the journal (the next
    /// start embeds them); [`DeferredStore::drain`] first to leave none.
    async fn flush(&self) -> Result<()> {
        self.shared.inner.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(id: &str, hash: u64) -> Entry {
        Entry::Queued {
            tenant: "t".into(),
            id: id.into(),
            hash,
        }
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    #[test]
    fn the_journal_keeps_what_waits_and_stays_small() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("q.log");
        let (mut j, waiting) = Journal::open(&path)?;
        assert!(waiting.is_empty());
        // 10,000 records queued and done, one left waiting, one re-queued with a new text
        // whose old text's done mark must not close it.
        for i in 0..10_000u64 {
            j.append(vec![queued(&format!("r{i}"), i)], false)?;
            if i != 7 && i != 8 {
                j.append(
                    vec![Entry::Done {
                        id: format!("r{i}"),
                        hash: i,
                    }],
                    false,
                )?;
            }
        }
        j.append(vec![queued("r8", 42)], true)?;
        j.append(
            vec![Entry::Done {
                id: "r8".into(),
                hash: 8,
            }],
            false,
        )?;
        assert!(
            lines(&path) <= JOURNAL_COMPACT_AT + 2,
            "rewritten as it grew: {} lines",
            lines(&path)
        );
        drop(j);
        let (_, mut waiting) = Journal::open(&path)?;
        waiting.sort_by(|a, b| a.id.cmp(&b.id));
        let got: Vec<(&str, u64)> = waiting.iter().map(|w| (w.id.as_str(), w.hash)).collect();
        assert_eq!(got, vec![("r7", 7), ("r8", 42)]);
        assert_eq!(lines(&path), 2);
        // A torn last line (a crash mid-append) is ignored.
        std::fs::write(
            &path,
            format!(
                "{}{{\"op\":\"queued\",\"ten",
                String::from_utf8_lossy(&line(&queued("r1", 1))?)
            ),
        )
        .map_err(|e| Error::io("write", e))?;
        let (_, waiting) = Journal::open(&path)?;
        assert_eq!(waiting.len(), 1);
        Ok(())
    }
}
