//! The glacier tier: an archive on object storage (feature `glacier`).
//!
//! - Where: a local directory by default, or `s3://bucket/prefix` with options (endpoint,
//!   region, credentials, `allow_http`, … as object_store's `AmazonS3ConfigKey` names them, and
//!   the `AWS_*` environment); `gs://bucket/prefix` (feature `gcp`) and `az://container/prefix`
//!   (feature `azure`) with object_store's Google and Azure options. The tests run each against
//!   a real server on 127.0.0.1: moto (S3), a GCS emulator and Azurite (Azure Blob Storage).
//! - What: each `put` writes one batch object `batches/<id>.jsonl.zst` (JSON lines, zstd), or
//!   `.jsonl.zst.aes` when a key is set: AES-256-GCM with a random 96-bit nonce in front. The
//!   key comes from [`GlacierConfig::key`] or the `LLMEM_GLACIER_KEY` environment variable
//!   (64 hex digits).
//! - A manifest (`manifest.json`: live id → batch, tenant, session, created_at) is rewritten
//!   after each change, so `get`, `query` and `count` read only the batches that hold the
//!   scope's records and never list the bucket. A delete updates the manifest; the bytes stay
//!   in their batch until [`GlacierStore::compact`] rewrites live records into a new batch.
//! - Search: an index of what the archive holds, keyed by record id (`index.bin.zst`, or
//!   `index.bin.zst.aes` encrypted like the batches when a key is set: nothing of a record is
//!   written in the clear then), holds per record its BM25 terms and its embedding quantised
//!   to int8 (one scale a row). It is loaded at open and checked against the manifest there
//!   (ids the manifest no longer lists are dropped; live ids missing from it, as in an archive
//!   written before it existed, are read from their batches and added), and rewritten after
//!   each `put` and delete. [`MemoryStore::search`] (vector, text or hybrid) ranks the index,
//!   finds each candidate's batch in the manifest, and reads back only the batches that hold
//!   the hits it returns (vector hits are re-scored exactly from the batch's f32 embedding).
//!   [`GlacierStore::bytes_read`] and [`GlacierStore::batches_read`] count what was fetched.
//! - Forget ([`MemoryStore::forget`], `docs/forget.md`): every listed batch is read; the
//!   records in scope that pass the filter leave the manifest (and its snapshots) and the
//!   search index, each batch that held a copy of one is rewritten into a new object without
//!   it (written before the manifest points to it), and the old objects are deleted after the
//!   manifest is saved, with any unlisted object under `batches/`. Bucket versioning would
//!   keep old object versions: see the doc.
//! - One writer per archive (the manifest is rewritten in place, not with conditional puts).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use llmem_core::{
    Error, Filter, MemoryRecord, MemoryStore, Result, Scope, ScoredRecord, SearchRequest,
    StoreCapabilities, StoreStats, new_id,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::glacier_index::GlacierIndex;
use crate::text::fuse;
use crate::tier::{Candidates, Tier};
use crate::vector::{dot, norm};
use crate::warm::{HYBRID_CANDIDATES, MIN_CANDIDATES, REFINE};

/// The environment variable holding the AES-256 key (64 hex digits).
pub const KEY_ENV: &str = "LLMEM_GLACIER_KEY";

/// Settings of a [`GlacierStore`].
#[derive(Clone, Default)]
pub struct GlacierConfig {
    /// A local directory path, `file:///dir`, or `s3://bucket/prefix`.
    pub url: String,
    /// Object store options (`aws_endpoint`, `aws_region`, `aws_access_key_id`, …).
    pub options: Vec<(String, String)>,
    /// AES-256-GCM key; `None` reads [`KEY_ENV`], and without it batches are not encrypted.
    pub key: Option<[u8; 32]>,
    /// zstd level (default 3).
    pub zstd_level: i32,
}

impl std::fmt::Debug for GlacierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlacierConfig")
            .field("url", &self.url)
            .field(
                "options",
                &self.options.iter().map(|o| &o.0).collect::<Vec<_>>(),
            )
            .field("key", &self.key.map(|_| "<set>"))
            .finish()
    }
}

impl GlacierConfig {
    pub fn new(url: impl Into<String>) -> Self {
        GlacierConfig {
            url: url.into(),
            zstd_level: 3,
            ..Default::default()
        }
    }

    #[must_use]
    pub fn option(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.options.push((k.into(), v.into()));
        self
    }

    #[must_use]
    pub fn with_key(mut self, key: [u8; 32]) -> Self {
        self.key = Some(key);
        self
    }
}

/// Parses a 64-hex-digit key.
pub fn parse_key(hex: &str) -> Result<[u8; 32]> {
    let hex = hex.trim();
    let bad = || Error::config(KEY_ENV, "an AES-256 key is 64 hex digits (32 bytes)");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(key)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    batch: String,
    tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    created_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    /// Live record id → where it is.
    records: BTreeMap<String, Entry>,
    /// Batch name → compressed size in bytes.
    batches: BTreeMap<String, u64>,
    /// Snapshots: id → the records map at that time.
    #[serde(default)]
    snapshots: BTreeMap<String, BTreeMap<String, Entry>>,
}

/// The glacier tier.
pub struct GlacierStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    cipher: Option<Aes256Gcm>,
    level: i32,
    manifest: Mutex<Manifest>,
    /// Held shared by each `put` from before its batch object is written until the manifest
    /// lists it, and exclusively by `forget`, which removes batch objects the manifest does
    /// not list (an unlisted object is then never one still being written).
    writes: tokio::sync::RwLock<()>,
    /// The search index (see the module docs); `None` when it is encrypted and no key is set.
    /// Changed under the manifest lock, so index saves happen in the order of the changes.
    index: parking_lot::RwLock<Option<GlacierIndex>>,
    /// A plain index object is left from before a key was set: removed at the next save.
    plain_index_left: AtomicBool,
    bytes_read: AtomicU64,
    batches_read: AtomicU64,
}

/// The index object, plain and encrypted.
const INDEX_PLAIN: &str = "index.bin.zst";
const INDEX_SEALED: &str = "index.bin.zst.aes";

impl std::fmt::Debug for GlacierStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlacierStore")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .field("encrypted", &self.cipher.is_some())
            .finish()
    }
}

fn os_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::storage("glacier", format!("{what}: {e}"))
}

impl GlacierStore {
    /// Opens (or starts) the archive at `cfg.url`, reading its manifest.
    pub async fn open(cfg: GlacierConfig) -> Result<Self> {
        let (store, prefix) = crate::objects::open(&cfg.url, &cfg.options, "glacier")?;
        let key = match cfg.key {
            Some(k) => Some(k),
            None => std::env::var(KEY_ENV)
                .ok()
                .filter(|k| !k.is_empty())
                .map(|k| parse_key(&k))
                .transpose()?,
        };
        let cipher = key.map(|k| Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&k)));
        let g = GlacierStore {
            store,
            prefix,
            cipher,
            level: if cfg.zstd_level == 0 {
                3
            } else {
                cfg.zstd_level
            },
            manifest: Mutex::new(Manifest::default()),
            writes: tokio::sync::RwLock::new(()),
            index: parking_lot::RwLock::new(Some(GlacierIndex::default())),
            plain_index_left: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            batches_read: AtomicU64::new(0),
        };
        let mpath = g.path("manifest.json");
        match g.store.get(&mpath).await {
            Ok(r) => {
                let bytes = r
                    .bytes()
                    .await
                    .map_err(|e| os_err("reading the manifest", e))?;
                *g.manifest.lock().await = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::serde("glacier manifest", e))?;
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(os_err("reading the manifest", e)),
        }
        g.open_index().await?;
        Ok(g)
    }

    fn path(&self, name: &str) -> Path {
        crate::objects::child(&self.prefix, name)
    }

    /// Whether batches are encrypted.
    pub fn encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    fn encode(&self, records: &[MemoryRecord]) -> Result<Vec<u8>> {
        let mut jsonl = Vec::new();
        for r in records {
            serde_json::to_writer(&mut jsonl, r).map_err(|e| Error::serde("glacier record", e))?;
            jsonl.push(b'\n');
        }
        self.seal(&jsonl)
    }

    /// zstd, then AES-256-GCM (a random nonce in front) when a key is set.
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let z =
            zstd::encode_all(plain, self.level).map_err(|e| Error::io("zstd compression", e))?;
        match &self.cipher {
            None => Ok(z),
            Some(c) => {
                let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
                let mut out = nonce.to_vec();
                out.extend(
                    c.encrypt(&nonce, &z[..])
                        .map_err(|_| Error::storage("glacier", "encryption failed"))?,
                );
                Ok(out)
            }
        }
    }

    /// The zstd bytes of object `name`, decrypted when it is sealed (`.aes`).
    fn unseal(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        if !name.ends_with(".aes") {
            return Ok(bytes.to_vec());
        }
        let c = self.cipher.as_ref().ok_or_else(|| {
            Error::config(
                KEY_ENV,
                format!("`{name}` is encrypted; set the key to read it"),
            )
        })?;
        if bytes.len() < 12 {
            return Err(Error::storage("glacier", format!("`{name}` is truncated")));
        }
        let (nonce, body) = bytes.split_at(12);
        c.decrypt(Nonce::from_slice(nonce), body).map_err(|_| {
            Error::storage(
                "glacier",
                format!("`{name}` does not decrypt with this key"),
            )
        })
    }

    fn decode(&self, name: &str, bytes: &[u8]) -> Result<Vec<MemoryRecord>> {
        self.decode_some(name, bytes, &|_| true)
    }

    /// The records of a batch whose id `keep` accepts. A line is parsed only when its id
    /// (read from the line's start, `{"id":"…"`, as records are written) is kept, so reading
    /// a few records back from a large batch does not parse the others.
    fn decode_some(
        &self,
        name: &str,
        bytes: &[u8],
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<MemoryRecord>> {
        let z = self.unseal(&format!("batch {name}"), bytes)?;
        let jsonl = zstd::decode_all(&z[..])
            .map_err(|e| Error::io(format!("zstd of batch `{name}`"), e))?;
        let mut out = Vec::new();
        for l in jsonl.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if line_id(l).is_some_and(|id| !keep(id)) {
                continue;
            }
            let r: MemoryRecord = serde_json::from_slice(l)
                .map_err(|e| Error::serde(format!("batch `{name}`"), e))?;
            if keep(&r.id) {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn save(&self, m: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec(m).map_err(|e| Error::serde("glacier manifest", e))?;
        self.store
            .put(&self.path("manifest.json"), PutPayload::from(bytes))
            .await
            .map_err(|e| os_err("writing the manifest", e))?;
        Ok(())
    }

    /// Reads the live records named in `wanted` (id → entry), one fetch per batch.
    async fn load(&self, wanted: &[(String, Entry)]) -> Result<HashMap<String, MemoryRecord>> {
        let mut by_batch: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, e) in wanted {
            by_batch
                .entry(e.batch.as_str())
                .or_default()
                .push(id.as_str());
        }
        let mut out = HashMap::new();
        for (batch, ids) in by_batch {
            let ids: std::collections::HashSet<&str> = ids.into_iter().collect();
            for r in self.read_batch(batch, &|id| ids.contains(id)).await? {
                out.insert(r.id.clone(), r);
            }
        }
        Ok(out)
    }

    async fn entries(&self, scope: Option<&Scope>) -> Vec<(String, Entry)> {
        let m = self.manifest.lock().await;
        m.records
            .iter()
            .filter(|(_, e)| {
                scope.is_none_or(|s| {
                    e.tenant == s.tenant
                        && s.session
                            .as_ref()
                            .is_none_or(|x| e.session.as_ref() == Some(x))
                })
            })
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    async fn select(
        &self,
        scope: Option<&Scope>,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        let wanted = self.entries(scope).await;
        let mut recs: Vec<MemoryRecord> = self
            .load(&wanted)
            .await?
            .into_values()
            .filter(|r| scope.is_none_or(|s| r.in_scope(s)) && filter.matches(r))
            .collect();
        recs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        recs.truncate(limit.unwrap_or(usize::MAX));
        Ok(recs)
    }

    /// Rewrites the live records into one new batch and deletes the batches nothing refers to.
    pub async fn compact(&self) -> Result<usize> {
        let live = self.select(None, &Filter::All, None).await?;
        if !live.is_empty() {
            self.put(live).await?;
        }
        let mut m = self.manifest.lock().await;
        let used: std::collections::HashSet<String> = m
            .records
            .values()
            .chain(m.snapshots.values().flat_map(|s| s.values()))
            .map(|e| e.batch.clone())
            .collect();
        let dead: Vec<String> = m
            .batches
            .keys()
            .filter(|b| !used.contains(*b))
            .cloned()
            .collect();
        for b in &dead {
            self.store
                .delete(&self.path(&format!("batches/{b}")))
                .await
                .map_err(|e| os_err("deleting a batch", e))?;
            m.batches.remove(b);
        }
        self.save(&m).await?;
        Ok(dead.len())
    }
}

/// What a forget does to one batch object that holds a copy to forget.
struct Rewrite {
    /// The records of the batch that some entry (live or of a snapshot) still refers to.
    keep: Vec<MemoryRecord>,
    /// The new batch's name, when `keep` is not empty.
    new_name: Option<String>,
}

impl GlacierStore {
    /// Reads and decodes one batch object.
    async fn fetch(&self, batch: &str) -> Result<Vec<MemoryRecord>> {
        let bytes = self
            .store
            .get(&self.path(&format!("batches/{batch}")))
            .await
            .map_err(|e| os_err(&format!("reading batch {batch}"), e))?
            .bytes()
            .await
            .map_err(|e| os_err(&format!("reading batch {batch}"), e))?;
        self.decode(batch, &bytes)
    }

    /// Deletes one batch object; one already gone is fine.
    async fn remove_batch(&self, batch: &str) -> Result<()> {
        match self
            .store
            .delete(&self.path(&format!("batches/{batch}")))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(os_err(&format!("forget: deleting batch {batch}"), e)),
        }
    }

    /// The forget of the glacier tier (see [`MemoryStore::forget`] and `docs/forget.md`).
    ///
    /// The archive has no text index, so every batch the manifest lists is read once. A copy
    /// of a record is forgotten when it is in `scope` and passes `filter`; a manifest entry
    /// (live, or of a snapshot) goes when the copy it points to is forgotten, and a snapshot's
    /// entry also goes when the live record of that id is forgotten. Then, in this order:
    ///
    /// 1. each batch that held a forgotten copy is rewritten: the records of it that an entry
    ///    still points to go to a new batch object (written before anything refers to it);
    /// 2. the manifest is saved without the forgotten entries and with the others pointing to
    ///    the new batches: from here on nothing lists the forgotten records;
    /// 3. the old batch objects are deleted, and so is every object under `batches/` that the
    ///    manifest does not list (left by a crash mid-write or mid-forget).
    ///
    /// A crash before 2 leaves the old manifest and the old batches (and unlisted new ones,
    /// which the next forget removes); after 2, only unlisted objects, likewise. No live
    /// record is lost at any point. `put`s wait meanwhile (see `writes`).
    async fn forget_now(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        use futures::TryStreamExt;
        use std::collections::HashSet;

        let _exclusive = self.writes.write().await;
        let mut m = self.manifest.lock().await;
        let entry_in_scope = |e: &Entry| {
            e.tenant == scope.tenant
                && scope
                    .session
                    .as_ref()
                    .is_none_or(|s| e.session.as_ref() == Some(s))
        };
        // 1. Which copies (batch, id) to forget, and the batches that hold them.
        let mut hits: HashSet<(String, String)> = HashSet::new();
        let mut rewrites: BTreeMap<String, Rewrite> = BTreeMap::new();
        let names: Vec<String> = m.batches.keys().cloned().collect();
        for name in names {
            let recs = self.fetch(&name).await?;
            let hit: HashSet<String> = recs
                .iter()
                .filter(|r| r.in_scope(scope) && filter.matches(r))
                .map(|r| r.id.clone())
                .collect();
            if hit.is_empty() {
                continue;
            }
            // The last copy of an id in a batch is the one a read sees.
            let mut last: BTreeMap<String, MemoryRecord> = BTreeMap::new();
            for r in recs {
                last.insert(r.id.clone(), r);
            }
            hits.extend(hit.into_iter().map(|id| (name.clone(), id)));
            rewrites.insert(
                name,
                Rewrite {
                    keep: last.into_values().collect(),
                    new_name: None,
                },
            );
        }
        let forgotten = |id: &str, e: &Entry| {
            entry_in_scope(e) && hits.contains(&(e.batch.clone(), id.to_owned()))
        };
        let gone: HashSet<String> = m
            .records
            .iter()
            .filter(|(id, e)| forgotten(id, e))
            .map(|(id, _)| id.clone())
            .collect();
        let stays =
            |id: &str, e: &Entry| !(forgotten(id, e) || (gone.contains(id) && entry_in_scope(e)));
        // 2. The new batches: what entries that stay point to in each rewritten batch.
        let mut referenced: HashSet<(String, String)> = HashSet::new();
        for (id, e) in m
            .records
            .iter()
            .chain(m.snapshots.values().flat_map(|s| s.iter()))
        {
            if rewrites.contains_key(&e.batch) && stays(id, e) {
                referenced.insert((e.batch.clone(), id.clone()));
            }
        }
        let mut sizes = Vec::new();
        for (old, rw) in rewrites.iter_mut() {
            rw.keep
                .retain(|r| referenced.contains(&(old.clone(), r.id.clone())));
            if rw.keep.is_empty() {
                continue;
            }
            let name = format!(
                "{}.jsonl.zst{}",
                new_id(),
                if self.cipher.is_some() { ".aes" } else { "" }
            );
            let bytes = self.encode(&rw.keep)?;
            sizes.push((name.clone(), bytes.len() as u64));
            self.store
                .put(
                    &self.path(&format!("batches/{name}")),
                    PutPayload::from(bytes),
                )
                .await
                .map_err(|e| os_err(&format!("forget: writing the rewrite of batch {old}"), e))?;
            rw.new_name = Some(name);
        }
        // 3. The manifest: forgotten entries out, the others pointed at the new batches.
        let repoint = |map: &mut BTreeMap<String, Entry>| {
            map.retain(|id, e| stays(id, e));
            for e in map.values_mut() {
                if let Some(rw) = rewrites.get(&e.batch)
                    && let Some(n) = &rw.new_name
                {
                    e.batch = n.clone();
                }
            }
        };
        let mut records = std::mem::take(&mut m.records);
        repoint(&mut records);
        m.records = records;
        let mut snapshots = std::mem::take(&mut m.snapshots);
        for snap in snapshots.values_mut() {
            repoint(snap);
        }
        m.snapshots = snapshots;
        for old in rewrites.keys() {
            m.batches.remove(old);
        }
        m.batches.extend(sizes);
        self.save(&m).await?;
        // The search index holds each record's terms: the forgotten ids leave it, and the
        // index object is rewritten (a crash before that: the open's check drops them).
        self.unindex_unlisted(&m).await?;
        // 4. Old and unlisted batch objects.
        for old in rewrites.keys() {
            self.remove_batch(old).await?;
        }
        let prefix = self.path("batches");
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| os_err("forget: listing the batches", e))?;
        for meta in listed {
            if let Some(name) = meta.location.filename()
                && !m.batches.contains_key(name)
            {
                self.remove_batch(name).await?;
            }
        }
        Ok(gone.len())
    }
}

/// A search's candidates, best first: id, score from the index, and the batch the manifest
/// names for it.
type Ranked = Vec<(String, f32, String)>;

/// What one search read: the batches fetched and, from them, its candidates' records.
#[derive(Default)]
struct Fetched {
    /// Candidate id → the batch the manifest names for it (a copy in another batch is stale).
    wanted: HashMap<String, String>,
    batches: HashSet<String>,
    recs: HashMap<String, MemoryRecord>,
}

/// The id of a batch line as records are written (`{"id":"…",…`), when it needs no
/// unescaping; `None` otherwise (the line is then parsed to know).
fn line_id(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(br#"{"id":""#)?;
    let id = &rest[..rest.iter().position(|b| *b == b'"')?];
    if id.contains(&b'\\') {
        return None;
    }
    std::str::from_utf8(id).ok()
}

fn entry_in_scope(e: &Entry, scope: &Scope) -> bool {
    e.tenant == scope.tenant
        && scope
            .session
            .as_ref()
            .is_none_or(|s| e.session.as_ref() == Some(s))
}

/// The error of a search when the index is encrypted and no key is set.
fn index_locked() -> Error {
    Error::config(
        KEY_ENV,
        "the glacier index is encrypted; set the key to search the archive",
    )
}

/// Search: the index and the batches it leads to (see the module docs).
impl GlacierStore {
    /// Bytes of batch objects fetched so far (by gets, queries and searches).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Batch objects fetched so far (by gets, queries and searches).
    pub fn batches_read(&self) -> u64 {
        self.batches_read.load(Ordering::Relaxed)
    }

    /// Records in the search index (`None`: it is encrypted and no key is set).
    pub fn indexed(&self) -> Option<usize> {
        self.index.read().as_ref().map(GlacierIndex::len)
    }

    /// Reads one batch, counting the bytes, and decodes the records `keep` accepts; `None`
    /// when the object is gone.
    async fn read_batch_opt(
        &self,
        batch: &str,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Option<Vec<MemoryRecord>>> {
        let what = || format!("reading batch {batch}");
        let got = match self
            .store
            .get(&self.path(&format!("batches/{batch}")))
            .await
        {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(os_err(&what(), e)),
        };
        let bytes = got.bytes().await.map_err(|e| os_err(&what(), e))?;
        self.bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.batches_read.fetch_add(1, Ordering::Relaxed);
        self.decode_some(batch, &bytes, keep).map(Some)
    }

    async fn read_batch(
        &self,
        batch: &str,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<MemoryRecord>> {
        self.read_batch_opt(batch, keep).await?.ok_or_else(|| {
            os_err(
                &format!("reading batch {batch}"),
                "the manifest lists it but the object is missing",
            )
        })
    }

    /// An object's bytes, `None` when there is none.
    async fn object(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&self.path(name)).await {
            Ok(g) => Ok(Some(
                g.bytes()
                    .await
                    .map_err(|e| os_err(&format!("reading {name}"), e))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(os_err(&format!("reading {name}"), e)),
        }
    }

    fn parse_index(&self, name: &str, bytes: &[u8]) -> Result<GlacierIndex> {
        let z = self.unseal(name, bytes)?;
        let plain =
            zstd::decode_all(&z[..]).map_err(|e| Error::io(format!("zstd of `{name}`"), e))?;
        GlacierIndex::from_bytes(&plain)
    }

    /// Loads the index at open and checks it against the manifest (see the module docs).
    /// Without the key, an encrypted index stays unread (searches say so). An index that does
    /// not read back is rebuilt from the batches, with a warning.
    async fn open_index(&self) -> Result<()> {
        let sealed = self.object(INDEX_SEALED).await?;
        let plain = match (&sealed, &self.cipher) {
            (Some(_), Some(_)) => None,
            _ => self.object(INDEX_PLAIN).await?,
        };
        let loaded = match (sealed, plain) {
            (Some(b), _) if self.cipher.is_some() => Some(self.parse_index(INDEX_SEALED, &b)),
            (_, Some(b)) => {
                self.plain_index_left
                    .store(self.cipher.is_some(), Ordering::SeqCst);
                Some(self.parse_index(INDEX_PLAIN, &b))
            }
            (Some(_), None) => {
                tracing::warn!(
                    "the glacier index is encrypted and no key is set: the archive cannot be searched"
                );
                *self.index.write() = None;
                return Ok(());
            }
            (None, None) => None,
        };
        let index = match loaded {
            Some(Ok(ix)) => ix,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the glacier index does not read back; rebuilding it from the batches");
                GlacierIndex::default()
            }
            None => GlacierIndex::default(),
        };
        *self.index.write() = Some(index);
        let m = self.manifest.lock().await;
        let force = self.plain_index_left.load(Ordering::SeqCst);
        if let Err(e) = self.reconcile(&m, force).await {
            tracing::warn!(error = %e, "glacier: the index could not be brought up to date with the manifest");
        }
        Ok(())
    }

    /// Makes the index hold exactly the manifest's live records: drops the ids the manifest
    /// no longer lists and reads the missing ones from their batches (a batch that cannot be
    /// read is skipped with a warning: its records are not searchable until it can). Saves
    /// the index when it changed, or when `force`. The caller holds the manifest lock.
    async fn reconcile(&self, m: &Manifest, force: bool) -> Result<()> {
        let (stale, missing) = {
            let g = self.index.read();
            let Some(ix) = g.as_ref() else {
                return Ok(());
            };
            let stale: Vec<String> = ix
                .ids()
                .filter(|id| !m.records.contains_key(*id))
                .cloned()
                .collect();
            let mut missing: BTreeMap<String, Vec<(String, Entry)>> = BTreeMap::new();
            for (id, e) in &m.records {
                if !ix.contains(id) {
                    missing
                        .entry(e.batch.clone())
                        .or_default()
                        .push((id.clone(), e.clone()));
                }
            }
            (stale, missing)
        };
        let mut found = Vec::new();
        for (batch, wanted) in missing {
            match self.load(&wanted).await {
                Ok(got) => found.extend(got.into_values()),
                Err(e) => {
                    tracing::warn!(%batch, error = %e, "glacier: records left out of the search index");
                }
            }
        }
        if stale.is_empty() && found.is_empty() && !force {
            return Ok(());
        }
        if let Some(ix) = self.index.write().as_mut() {
            for id in &stale {
                ix.remove(id);
            }
            for r in &found {
                ix.insert(r);
            }
        }
        self.save_index().await
    }

    /// Drops from the index the ids the manifest `m` no longer lists, and saves it if any
    /// went (for a change of the manifest made without `delete`, like a forget's).
    async fn unindex_unlisted(&self, m: &Manifest) -> Result<()> {
        let changed = match self.index.write().as_mut() {
            Some(ix) => {
                let stale: Vec<String> = ix
                    .ids()
                    .filter(|id| !m.records.contains_key(*id))
                    .cloned()
                    .collect();
                for id in &stale {
                    ix.remove(id);
                }
                !stale.is_empty()
            }
            None => false,
        };
        if changed {
            self.save_index().await?;
        }
        Ok(())
    }

    /// Writes the index object (sealed when a key is set; then a plain one left from before
    /// is deleted).
    async fn save_index(&self) -> Result<()> {
        let plain = match self.index.read().as_ref() {
            Some(ix) => ix.to_bytes(),
            None => return Ok(()),
        };
        let name = if self.cipher.is_some() {
            INDEX_SEALED
        } else {
            INDEX_PLAIN
        };
        let bytes = self.seal(&plain)?;
        self.store
            .put(&self.path(name), PutPayload::from(bytes))
            .await
            .map_err(|e| os_err("writing the search index", e))?;
        if self.cipher.is_some() && self.plain_index_left.swap(false, Ordering::SeqCst) {
            match self.store.delete(&self.path(INDEX_PLAIN)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    self.plain_index_left.store(true, Ordering::SeqCst);
                    return Err(os_err("deleting the plain search index", e));
                }
            }
        }
        Ok(())
    }

    /// The index's best `n` by vector and by text (whichever `req` has), in `scope` by the
    /// manifest, with each candidate's batch.
    async fn rank(&self, scope: &Scope, req: &SearchRequest, n: usize) -> Result<(Ranked, Ranked)> {
        let m = self.manifest.lock().await;
        let g = self.index.read();
        let ix = g.as_ref().ok_or_else(index_locked)?;
        let accept = |id: &str| m.records.get(id).is_some_and(|e| entry_in_scope(e, scope));
        let by_vec = match &req.vector {
            Some(q) => ix.vector_ranking(q, n, accept)?,
            None => Vec::new(),
        };
        let by_text = match &req.text {
            Some(q) => ix.text_ranking(q, n, accept),
            None => Vec::new(),
        };
        let with_batch = |l: Vec<(String, f32)>| -> Ranked {
            l.into_iter()
                .filter_map(|(id, s)| {
                    let b = m.records.get(&id)?.batch.clone();
                    Some((id, s, b))
                })
                .collect()
        };
        Ok((with_batch(by_vec), with_batch(by_text)))
    }

    /// Reads `batch` for this search (once), keeping the candidates' records it holds. A
    /// batch gone meanwhile (rewritten by a forget or a compaction) is skipped.
    async fn fetch_into(&self, f: &mut Fetched, batch: &str) -> Result<()> {
        if !f.batches.insert(batch.to_owned()) {
            return Ok(());
        }
        let wanted = &f.wanted;
        let keep = |id: &str| wanted.get(id).is_some_and(|b| b == batch);
        let got = self.read_batch_opt(batch, &keep).await?;
        for r in got.unwrap_or_default() {
            f.recs.insert(r.id.clone(), r);
        }
        Ok(())
    }

    /// The first `n` of `ranked` that are in scope and pass the request's filter, reading
    /// only the batches they are in. With `exact` (the query vector), hits are re-scored from
    /// their f32 embeddings, and candidates further down whose batch was read anyway may
    /// still enter.
    async fn pick(
        &self,
        f: &mut Fetched,
        ranked: &Ranked,
        scope: &Scope,
        req: &SearchRequest,
        n: usize,
        exact: Option<&[f32]>,
    ) -> Result<Vec<ScoredRecord>> {
        let mut out = Vec::new();
        for (id, score, batch) in ranked {
            if out.len() >= n {
                if exact.is_none() {
                    break;
                }
                if !f.batches.contains(batch) {
                    continue;
                }
            } else {
                self.fetch_into(f, batch).await?;
            }
            let Some(r) = f.recs.get(id) else { continue };
            if !(r.in_scope(scope)
                && (req.include_superseded || !r.is_superseded())
                && req.filter.matches(r))
            {
                continue;
            }
            let score = match exact {
                Some(q) => {
                    let Some(e) = &r.embedding else { continue };
                    dot(q, e) / (norm(q).max(f32::MIN_POSITIVE) * norm(e).max(f32::MIN_POSITIVE))
                }
                None => *score,
            };
            out.push(ScoredRecord {
                record: r.clone(),
                score,
            });
        }
        if exact.is_some() {
            out.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        out.truncate(n);
        Ok(out)
    }

    /// The best `n` by vector and by text, each read back from its batch. The index offers
    /// `REFINE × n` candidates (at least `MIN_CANDIDATES`); when the filter turns too many
    /// away, a longer list is tried.
    async fn search_by_kind(
        &self,
        scope: &Scope,
        req: &SearchRequest,
        n: usize,
    ) -> Result<Candidates> {
        let mut limit = (n * REFINE).max(MIN_CANDIDATES);
        loop {
            let (vr, tr) = self.rank(scope, req, limit).await?;
            let mut f = Fetched {
                wanted: vr
                    .iter()
                    .chain(&tr)
                    .map(|(id, _, b)| (id.clone(), b.clone()))
                    .collect(),
                ..Fetched::default()
            };
            let by_vector = self
                .pick(&mut f, &vr, scope, req, n, req.vector.as_deref())
                .await?;
            let by_text = self.pick(&mut f, &tr, scope, req, n, None).await?;
            let short = |got: usize, had: usize| got < n && had >= limit;
            if !(short(by_vector.len(), vr.len()) || short(by_text.len(), tr.len())) {
                return Ok(Candidates { by_vector, by_text });
            }
            limit = limit.saturating_mul(8);
        }
    }

    /// A hybrid search: the two rankings of the index fused first, then only the fused top
    /// `k` read back.
    async fn search_hybrid(&self, scope: &Scope, req: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        let mut limit = (req.k * 4).max(HYBRID_CANDIDATES);
        loop {
            let (vr, tr) = self.rank(scope, req, limit).await?;
            let cut = vr.len() >= limit || tr.len() >= limit;
            let batch: HashMap<String, String> = vr
                .iter()
                .chain(&tr)
                .map(|(id, _, b)| (id.clone(), b.clone()))
                .collect();
            let plain = |l: &Ranked| {
                l.iter()
                    .map(|(id, s, _)| (id.clone(), *s))
                    .collect::<Vec<_>>()
            };
            let fused: Ranked = fuse(&plain(&vr), &plain(&tr), req.fusion, usize::MAX)?
                .into_iter()
                .filter_map(|(id, s)| {
                    let b = batch.get(&id)?.clone();
                    Some((id, s, b))
                })
                .collect();
            let mut f = Fetched {
                wanted: batch,
                ..Fetched::default()
            };
            let hits = self.pick(&mut f, &fused, scope, req, req.k, None).await?;
            if hits.len() >= req.k || !cut {
                return Ok(hits);
            }
            limit = limit.saturating_mul(8);
        }
    }
}

#[async_trait]
impl MemoryStore for GlacierStore {
    fn name(&self) -> &str {
        "glacier"
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities {
            vector_search: true,
            text_search: true,
            persistent: true,
            snapshots: true,
        }
    }

    /// Vector, text or hybrid search through the index; only the batches holding the hits
    /// are read (see the module docs).
    async fn search(&self, scope: &Scope, req: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        match (&req.vector, &req.text) {
            (Some(_), None) => Ok(self.search_by_kind(scope, req, req.k).await?.by_vector),
            (None, Some(_)) => Ok(self.search_by_kind(scope, req, req.k).await?.by_text),
            (Some(_), Some(_)) => self.search_hybrid(scope, req).await,
            (None, None) => Err(Error::invalid(
                "a search needs a query vector, a query text, or both",
            )),
        }
    }

    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let _writing = self.writes.read().await;
        {
            let m = self.manifest.lock().await;
            if let Some(r) = records
                .iter()
                .find(|r| m.records.get(&r.id).is_some_and(|e| e.tenant != r.tenant))
            {
                return Err(crate::tier::taken(&r.id));
            }
        }
        let name = format!(
            "{}.jsonl.zst{}",
            new_id(),
            if self.cipher.is_some() { ".aes" } else { "" }
        );
        let bytes = self.encode(&records)?;
        let size = bytes.len() as u64;
        self.store
            .put(
                &self.path(&format!("batches/{name}")),
                PutPayload::from(bytes),
            )
            .await
            .map_err(|e| os_err("writing a batch", e))?;
        let mut m = self.manifest.lock().await;
        m.batches.insert(name.clone(), size);
        for r in &records {
            m.records.insert(
                r.id.clone(),
                Entry {
                    batch: name.clone(),
                    tenant: r.tenant.clone(),
                    session: r.session.clone(),
                    created_at: r.created_at.0,
                },
            );
        }
        self.save(&m).await?;
        if let Some(ix) = self.index.write().as_mut() {
            for r in &records {
                ix.insert(r);
            }
        }
        self.save_index().await
    }

    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        let wanted: Vec<(String, Entry)> = {
            let m = self.manifest.lock().await;
            ids.iter()
                .filter_map(|id| Some((id.clone(), m.records.get(id)?.clone())))
                .collect()
        };
        let wanted: Vec<_> = wanted
            .into_iter()
            .filter(|(_, e)| e.tenant == scope.tenant)
            .collect();
        let mut got = self.load(&wanted).await?;
        Ok(ids
            .iter()
            .filter_map(|id| got.remove(id))
            .filter(|r| r.in_scope(scope))
            .collect())
    }

    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        let mut m = self.manifest.lock().await;
        let mut gone = Vec::new();
        for id in ids {
            let mine = m.records.get(id).is_some_and(|e| {
                e.tenant == scope.tenant
                    && scope
                        .session
                        .as_ref()
                        .is_none_or(|s| e.session.as_ref() == Some(s))
            });
            if mine {
                m.records.remove(id);
                gone.push(id);
            }
        }
        let n = gone.len();
        if n > 0 {
            self.save(&m).await?;
            let dropped = match self.index.write().as_mut() {
                Some(ix) => gone.iter().filter(|id| ix.remove(id)).count(),
                None => 0,
            };
            if dropped > 0 {
                self.save_index().await?;
            }
        }
        Ok(n)
    }

    async fn forget(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        self.forget_now(scope, filter).await
    }

    async fn query(
        &self,
        scope: &Scope,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryRecord>> {
        self.select(Some(scope), filter, limit).await
    }

    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        if *filter == Filter::All {
            return Ok(self.entries(Some(scope)).await.len());
        }
        Ok(self.select(Some(scope), filter, None).await?.len())
    }

    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        self.select(None, filter, limit).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let m = self.manifest.lock().await;
        Ok(StoreStats {
            items: m.records.len() as u64,
            bytes: m.batches.values().sum(),
            capacity_bytes: None,
        })
    }
}

#[async_trait]
impl Tier for GlacierStore {
    async fn foreign_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<String>> {
        let m = self.manifest.lock().await;
        Ok(ids
            .iter()
            .filter(|id| m.records.get(*id).is_some_and(|e| e.tenant != tenant))
            .cloned()
            .collect())
    }

    async fn snapshot(&self) -> Result<String> {
        let id = new_id();
        let mut m = self.manifest.lock().await;
        let records = m.records.clone();
        m.snapshots.insert(id.clone(), records);
        self.save(&m).await?;
        Ok(id)
    }

    async fn restore(&self, id: &str) -> Result<()> {
        let mut m = self.manifest.lock().await;
        let records = m
            .snapshots
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: format!("glacier snapshot `{id}`"),
            })?;
        m.records = records;
        self.save(&m).await?;
        // The records back in the manifest go back into the index (read from their batches).
        self.reconcile(&m, false).await
    }

    /// Both rankings from the index; only the batches holding the hits are read.
    async fn candidates(&self, scope: &Scope, req: &SearchRequest, n: usize) -> Result<Candidates> {
        self.search_by_kind(scope, req, n).await
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn keys_parse_from_hex_only() {
        let k = parse_key(&"ab".repeat(32)).unwrap();
        assert_eq!(k[0], 0xab);
        assert!(parse_key("abc").is_err());
        assert!(parse_key(&"zz".repeat(32)).is_err());
    }
}
