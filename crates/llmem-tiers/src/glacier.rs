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
//! - One writer per archive (the manifest is rewritten in place, not with conditional puts).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use llmem_core::{
    Error, Filter, MemoryRecord, MemoryStore, Result, Scope, StoreCapabilities, StoreStats, new_id,
};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::tier::Tier;

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
}

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

/// A Google Cloud Storage or Azure store from a `gs://` / `az://` URL and its options
/// (`google_service_account`, `azure_storage_account_name`, …; credentials also from the
/// environment, as object_store reads them).
#[cfg(any(feature = "gcp", feature = "azure"))]
fn cloud_store(cfg: &GlacierConfig) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let url = url::Url::parse(&cfg.url)
        .map_err(|e| Error::config("glacier.url", format!("`{}` is not a URL: {e}", cfg.url)))?;
    // object_store skips keys it does not know; a typo must not silently drop a setting.
    for (k, _) in &cfg.options {
        let known = match url.scheme() {
            #[cfg(feature = "gcp")]
            "gs" => k.parse::<object_store::gcp::GoogleConfigKey>().is_ok(),
            #[cfg(feature = "azure")]
            "az" | "abfs" | "abfss" | "azure" => {
                k.parse::<object_store::azure::AzureConfigKey>().is_ok()
            }
            _ => true,
        };
        if !known {
            return Err(Error::config(
                format!("glacier.options.{k}"),
                format!(
                    "not an option of the `{}` object store (see object_store's config keys)",
                    url.scheme()
                ),
            ));
        }
    }
    let (store, path) = object_store::parse_url_opts(
        &url,
        cfg.options.iter().map(|(k, v)| (k.as_str(), v.clone())),
    )
    .map_err(|e| Error::config("glacier.url", format!("`{}`: {e}", cfg.url)))?;
    Ok((Arc::from(store), path))
}

#[cfg(not(any(feature = "gcp", feature = "azure")))]
fn cloud_store(cfg: &GlacierConfig) -> Result<(Arc<dyn ObjectStore>, Path)> {
    Err(Error::config(
        "glacier.url",
        format!(
            "`{}` needs llmem-tiers built with the `gcp` (gs://) or `azure` (az://) feature",
            cfg.url
        ),
    ))
}

impl GlacierStore {
    /// Opens (or starts) the archive at `cfg.url`, reading its manifest.
    pub async fn open(cfg: GlacierConfig) -> Result<Self> {
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = if let Some(rest) =
            cfg.url.strip_prefix("s3://")
        {
            let mut b = AmazonS3Builder::from_env().with_url(format!("s3://{rest}"));
            for (k, v) in &cfg.options {
                let key: AmazonS3ConfigKey = k
                    .parse()
                    .map_err(|e| Error::config(format!("glacier.options.{k}"), format!("{e}")))?;
                b = b.with_config(key, v);
            }
            let prefix = rest
                .split_once('/')
                .map(|(_, p)| p.trim_matches('/'))
                .unwrap_or("");
            (
                Arc::new(b.build().map_err(|e| os_err("configuring S3", e))?),
                Path::from(prefix),
            )
        } else if ["gs://", "az://", "abfs://", "abfss://", "azure://"]
            .iter()
            .any(|p| cfg.url.starts_with(p))
        {
            cloud_store(&cfg)?
        } else if cfg.url.contains("://") && !cfg.url.starts_with("file://") {
            return Err(Error::config(
                "glacier.url",
                format!(
                    "`{}`: use a local directory, file://, s3://, gs:// (feature `gcp`) or az:// (feature `azure`)",
                    cfg.url
                ),
            ));
        } else {
            let dir = cfg.url.strip_prefix("file://").unwrap_or(&cfg.url);
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {dir}"), e))?;
            (
                Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(|e| os_err(dir, e))?),
                Path::from(""),
            )
        };
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
        Ok(g)
    }

    fn path(&self, name: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix.as_ref()))
        }
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
        let z = zstd::encode_all(&jsonl[..], self.level)
            .map_err(|e| Error::io("zstd compression", e))?;
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

    fn decode(&self, name: &str, bytes: &[u8]) -> Result<Vec<MemoryRecord>> {
        let z = if name.ends_with(".aes") {
            let c = self.cipher.as_ref().ok_or_else(|| {
                Error::config(
                    KEY_ENV,
                    format!("batch `{name}` is encrypted; set the key to read it"),
                )
            })?;
            if bytes.len() < 12 {
                return Err(Error::storage(
                    "glacier",
                    format!("batch `{name}` is truncated"),
                ));
            }
            let (nonce, body) = bytes.split_at(12);
            c.decrypt(Nonce::from_slice(nonce), body).map_err(|_| {
                Error::storage(
                    "glacier",
                    format!("batch `{name}` does not decrypt with this key"),
                )
            })?
        } else {
            bytes.to_vec()
        };
        let jsonl = zstd::decode_all(&z[..])
            .map_err(|e| Error::io(format!("zstd of batch `{name}`"), e))?;
        jsonl
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).map_err(|e| Error::serde(format!("batch `{name}`"), e))
            })
            .collect()
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
            let bytes = self
                .store
                .get(&self.path(&format!("batches/{batch}")))
                .await
                .map_err(|e| os_err(&format!("reading batch {batch}"), e))?
                .bytes()
                .await
                .map_err(|e| os_err(&format!("reading batch {batch}"), e))?;
            let ids: std::collections::HashSet<&str> = ids.into_iter().collect();
            for r in self.decode(batch, &bytes)? {
                if ids.contains(r.id.as_str()) {
                    out.insert(r.id.clone(), r);
                }
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

#[async_trait]
impl MemoryStore for GlacierStore {
    fn name(&self) -> &str {
        "glacier"
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities {
            vector_search: false,
            text_search: false,
            persistent: true,
            snapshots: true,
        }
    }

    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
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
        self.save(&m).await
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
        let mut n = 0;
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
                n += 1;
            }
        }
        if n > 0 {
            self.save(&m).await?;
        }
        Ok(n)
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
        self.save(&m).await
    }
}

#[cfg(test)]
mod tests {

    #[cfg(feature = "gcp")]
    #[test]
    fn gs_urls_build_a_gcs_store_with_options() {
        let mut cfg = GlacierConfig::new("gs://llmem-archive/tenant-a");
        cfg.options
            .push(("google_bucket".into(), "llmem-archive".into()));
        let (store, path) = cloud_store(&cfg).unwrap();
        assert_eq!(path.as_ref(), "tenant-a");
        assert!(store.to_string().contains("llmem-archive"), "{store}");
        cfg.options.push(("no_such_option".into(), "x".into()));
        let e = cloud_store(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("no_such_option") || e.contains("not a valid"),
            "{e}"
        );
    }

    #[cfg(feature = "azure")]
    #[test]
    fn az_urls_build_an_azure_store_and_say_what_is_missing() {
        let mut cfg = GlacierConfig::new("az://archive/tenant-a");
        let e = cloud_store(&cfg).unwrap_err().to_string();
        assert!(e.contains("az://archive/tenant-a"), "{e}");
        cfg.options.push((
            "azure_storage_account_name".into(),
            "devstoreaccount1".into(),
        ));
        cfg.options
            .push(("azure_storage_use_emulator".into(), "true".into()));
        let (_, path) = cloud_store(&cfg).unwrap();
        assert_eq!(path.as_ref(), "tenant-a");
    }
    use super::*;

    #[test]
    fn keys_parse_from_hex_only() {
        let k = parse_key(&"ab".repeat(32)).unwrap();
        assert_eq!(k[0], 0xab);
        assert!(parse_key("abc").is_err());
        assert!(parse_key(&"zz".repeat(32)).is_err());
    }
}
