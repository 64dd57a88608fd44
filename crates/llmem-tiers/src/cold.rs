//! The cold tier: a Lance dataset on local disk or object storage (feature `lance`).
//!
//! - Where: [`ColdConfig::path`], or [`ColdConfig::url`] (`s3://bucket/prefix`, `gs://…`,
//!   `az://…`, with the same options and `AWS_*` environment as glacier,
//!   [`crate::objects`]). On object storage Lance commits a version with a conditional put
//!   (`If-None-Match: *` on the version's manifest), so several processes can write one
//!   dataset: a write that loses the race is rebased on the winner's version and committed
//!   again ([`COMMIT_RETRIES`] times, then [`ColdStore`] itself retries with a back-off for up
//!   to [`CONFLICT_PATIENCE`] before it reports a conflict storm; nothing is written then).
//!
//! One row per record: scalar columns (`id`, `tenant`, `session`, `kind`, `text`, times as
//! milliseconds, `supersedes`, `superseded_by`), the metadata as a JSON string, and the
//! embedding as `FixedSizeList<Float32>`. Two more string columns hold what a filter sees at
//! `kind` and `created_at` (RFC 3339 text), so that those filters run in Lance too.
//!
//! - Filters are translated with [`Filter::to_sql`] for the columns above, and every row read
//!   is checked again with [`Filter::matches`]; a filter on metadata falls back to Rust.
//!   Tenancy (and session) is always part of the predicate.
//! - Search is exact (flat scan) until the table holds [`ColdConfig::index_threshold`] rows
//!   (default [`DEFAULT_INDEX_THRESHOLD`]); past it a vector index of the kind
//!   [`ColdConfig::index`] names (IVF-SQ by default, cosine) is built, and queries probe
//!   `nprobes` partitions (at least 1/16 of them) and re-rank `refine_factor × k` candidates
//!   exactly; scalar indexes on `tenant`, `superseded_by`, `kind`, `session` and `created_at`
//!   serve the prefilters.
//! - Writes are Lance merge-inserts on `id` (one atomic commit per batch).
//! - [`Tier::snapshot`] returns the Lance version; [`Tier::restore`] checks it out and commits
//!   it as the latest version.
//! - Text search uses this crate's BM25 index, rebuilt from the `text` column on open.
//! - Reads are counted in batches ([`Tier::record_reads`], called by `TieredStore` when its
//!   pending reads are flushed): one merge-insert per batch moves `accessed_at` up and grows
//!   `access_count`, never a commit per read.
//! - Forget ([`MemoryStore::forget`], `docs/forget.md`): delete, then compaction rewrites every
//!   fragment with a deleted row, then every older version is cleaned up at once (no
//!   retention window), with files no manifest lists. A snapshot (Lance version) taken before
//!   a forget cannot be restored after it; [`Tier::restore`] says so. The vector and tenant
//!   indices hold PQ codes and tenant names, never the text.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{
    FixedSizeListBuilder, Float32Builder, Int64Builder, StringBuilder, UInt64Builder,
};
use arrow_array::{
    Array, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, RecordBatchIterator,
    StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use lance::Dataset;
use lance::dataset::builder::DatasetBuilder;
use lance::dataset::{MergeInsertBuilder, WhenMatched, WhenNotMatched, WriteMode, WriteParams};
use lance::index::DatasetIndexExt;
use lance::index::vector::VectorIndexParams;
use lance::io::{ObjectStoreParams, ObjectStoreRegistry};
use lance::session::Session;
use lance_index::IndexType;
use lance_index::scalar::{BuiltinIndexType, ScalarIndexParams};
use lance_linalg::distance::DistanceType;
use llmem_core::{
    Error, Filter, MemoryRecord, MemoryStore, RecordKind, Result, Scope, ScoredRecord,
    SearchRequest, StoreCapabilities, StoreStats, Timestamp,
};
use parking_lot::Mutex;
use tokio::sync::RwLock;

use crate::text::{TextIndex, fuse};
use crate::tier::{ReadMark, Tier};
use crate::vector::{TopK, dot, norm};
use crate::warm::HYBRID_CANDIDATES;

/// Rows past which the cold tier builds an ANN index ([`ColdConfig::index`]) instead of
/// scanning exactly.
pub const DEFAULT_INDEX_THRESHOLD: usize = 50_000;

/// Times Lance rebases and re-commits a merge-insert that lost a commit race.
pub const COMMIT_RETRIES: u32 = 20;

/// How long a write keeps retrying commit conflicts (with a growing, jittered back-off) after
/// Lance's own retries are used up, before it fails with nothing written.
pub const CONFLICT_PATIENCE: Duration = Duration::from_secs(30);

/// Settings of a [`ColdStore`].
#[derive(Debug, Clone)]
pub struct ColdConfig {
    /// The dataset directory (unused when `url` is set).
    pub path: PathBuf,
    /// The dataset on object storage: `s3://bucket/prefix`, `gs://…`, `az://…`.
    pub url: Option<String>,
    /// Object store options for `url` (`aws_endpoint`, `aws_region`, …; see
    /// [`crate::objects`]), on top of the `AWS_*` environment.
    pub options: Vec<(String, String)>,
    /// Other processes write this dataset too (replicas): the store keeps no BM25 index of its
    /// own (a [`crate::SharedStore`] keeps one over what it reads), each write starts from the
    /// latest version, and a forget's cleanup leaves alone files that no version lists yet
    /// (another writer's commit in flight).
    pub shared: bool,
    /// Embedding dimensions; `None` takes them from the first embedded record.
    pub dimensions: Option<usize>,
    /// Build the ANN index once the table has this many rows (and rebuild when it doubles).
    pub index_threshold: usize,
    /// IVF partitions probed per query, at least (a sixteenth of the partitions are probed
    /// when that is more).
    pub nprobes: usize,
    /// Candidates re-ranked exactly on the full vectors per result (`refine_factor × k`; 0:
    /// none). Default 5: with the default IVF-SQ index over 1M clustered 384-d vectors it took
    /// recall@10 from 0.98 to 1.00 for about 3 ms (docs/benchmarks.md; IVF-PQ and IVF-RQ need 20).
    pub refine_factor: u32,
    /// The kind of vector index [`ColdStore::build_index`] builds.
    pub index: ColdIndex,
    /// Candidates an HNSW index keeps while it searches (`ef`; 0: Lance's default). Only for
    /// [`ColdIndex::IvfHnswSq`].
    pub ef: usize,
}

/// The vector index of the cold tier: IVF partitions (√rows, at most 1,024) and, inside each,
/// how vectors are kept and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColdIndex {
    /// Product quantisation: sub-vectors of 8 dimensions, 8 bits each (48 bytes a 384-d vector).
    IvfPq,
    /// Scalar quantisation: 8 bits a dimension (384 bytes a 384-d vector). The default: the
    /// 1M sweep's fastest at recall@10 ≥ 0.95 (docs/benchmarks.md).
    #[default]
    IvfSq,
    /// An HNSW graph per partition over 8-bit scalar-quantised vectors.
    IvfHnswSq,
    /// RaBitQ: 1 bit a dimension (after a random rotation), re-ranked by the estimate's bound.
    IvfRq,
    /// Full vectors, scanned in the probed partitions.
    IvfFlat,
}

impl ColdIndex {
    /// Every kind, in the order the sweep runs them.
    pub const ALL: [ColdIndex; 5] = [
        ColdIndex::IvfPq,
        ColdIndex::IvfSq,
        ColdIndex::IvfHnswSq,
        ColdIndex::IvfRq,
        ColdIndex::IvfFlat,
    ];

    /// The kind named `ivf_pq`, `ivf_sq`, `ivf_hnsw_sq`, `ivf_rq` or `ivf_flat`.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown cold index `{name}`; use one of ivf_pq, ivf_sq, ivf_hnsw_sq, ivf_rq, ivf_flat"
                ))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            ColdIndex::IvfPq => "ivf_pq",
            ColdIndex::IvfSq => "ivf_sq",
            ColdIndex::IvfHnswSq => "ivf_hnsw_sq",
            ColdIndex::IvfRq => "ivf_rq",
            ColdIndex::IvfFlat => "ivf_flat",
        }
    }

    /// Lance's build parameters for `rows` vectors of `dim` dimensions.
    fn params(self, rows: usize, dim: usize) -> VectorIndexParams {
        use lance_index::vector::hnsw::builder::HnswBuildParams;
        use lance_index::vector::ivf::IvfBuildParams;
        use lance_index::vector::sq::builder::SQBuildParams;
        let partitions = partitions(rows);
        let metric = DistanceType::Cosine;
        match self {
            ColdIndex::IvfPq => {
                // Sub-vectors of 8 dimensions where that divides evenly (384 → 48), else fewer.
                let sub = [dim / 8, dim / 4, dim / 2, 1]
                    .into_iter()
                    .find(|s| *s > 0 && dim.is_multiple_of(*s))
                    .unwrap_or(1);
                VectorIndexParams::ivf_pq(partitions, 8, sub, metric, 25)
            }
            ColdIndex::IvfSq => VectorIndexParams::with_ivf_sq_params(
                metric,
                IvfBuildParams::new(partitions),
                SQBuildParams::default(),
            ),
            ColdIndex::IvfHnswSq => VectorIndexParams::with_ivf_hnsw_sq_params(
                metric,
                IvfBuildParams::new(partitions),
                HnswBuildParams::default(),
                SQBuildParams::default(),
            ),
            ColdIndex::IvfRq => VectorIndexParams::ivf_rq(partitions, 1, metric),
            ColdIndex::IvfFlat => VectorIndexParams::ivf_flat(partitions, metric),
        }
    }
}

impl ColdConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ColdConfig {
            path: path.into(),
            url: None,
            options: Vec::new(),
            shared: false,
            dimensions: None,
            index_threshold: DEFAULT_INDEX_THRESHOLD,
            nprobes: 20,
            refine_factor: 5,
            index: ColdIndex::default(),
            ef: 0,
        }
    }

    /// The dataset at `url`: object storage (`s3://…`, `gs://…`, `az://…`), or a local
    /// directory (a path or `file://`).
    pub fn at(url: &str) -> Self {
        if let Some(dir) = url.strip_prefix("file://") {
            return Self::new(dir);
        }
        if !crate::objects::is_url(url) {
            return Self::new(url);
        }
        let mut c = Self::new(PathBuf::new());
        c.url = Some(url.to_owned());
        c
    }

    /// Adds an object store option (see [`ColdConfig::options`]).
    #[must_use]
    pub fn option(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.options.push((k.into(), v.into()));
        self
    }

    /// The dataset as Lance opens it: its URI and, on object storage, a Lance session whose
    /// registry serves the URL's scheme with the store built here (object_store, with the
    /// options and `AWS_*` environment glacier reads), so one set of options serves both and
    /// Lance's own cloud clients are not compiled in.
    fn location(&self) -> Result<(String, Option<Arc<Session>>)> {
        let Some(url) = &self.url else {
            return Ok((uri(&self.path)?, None));
        };
        let (store, _) = crate::objects::open(url, &self.options, "cold")?;
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::config("cold.url", format!("`{url}` is not a URL: {e}")))?;
        let registry = ObjectStoreRegistry::default();
        registry.insert(parsed.scheme(), Arc::new(Provider(store)));
        Ok((
            url.clone(),
            Some(Arc::new(Session::new(
                lance::dataset::DEFAULT_INDEX_CACHE_SIZE,
                lance::dataset::DEFAULT_METADATA_CACHE_SIZE,
                Arc::new(registry),
            ))),
        ))
    }

    /// IVF partitions a query probes on an index built over `rows` rows: `nprobes`, or a
    /// sixteenth of the partitions when that is more (the same share at every size: 20 of 316
    /// at 100k rows).
    pub fn probes(&self, rows: usize) -> usize {
        self.nprobes.max(partitions(rows) / 16)
    }
}

/// Serves a URL scheme to Lance with one object store made by [`crate::objects::open`].
#[derive(Debug)]
struct Provider(Arc<dyn object_store::ObjectStore>);

#[async_trait]
impl lance_io::object_store::ObjectStoreProvider for Provider {
    async fn new_store(
        &self,
        base: url::Url,
        params: &ObjectStoreParams,
    ) -> lance::Result<lance::io::ObjectStore> {
        Ok(lance::io::ObjectStore::new(
            self.0.clone(),
            base,
            params.block_size,
            params.object_store_wrapper.clone(),
            params.use_constant_size_upload_parts,
            // S3, GCS and Azure list keys in lexical order.
            params.list_is_lexically_ordered.unwrap_or(true),
            lance_io::object_store::DEFAULT_CLOUD_IO_PARALLELISM,
            lance_io::object_store::DEFAULT_DOWNLOAD_RETRY_COUNT,
            None,
        ))
    }
}

/// IVF partitions for a table of `rows`: √rows, at most 1024.
fn partitions(rows: usize) -> usize {
    ((rows as f64).sqrt() as usize).clamp(1, 1024)
}

#[derive(Debug, Default)]
struct State {
    ds: Option<Dataset>,
    dim: usize,
    /// Rows when the index was last built (0: none).
    indexed_rows: usize,
}

/// The cold tier on Lance.
#[derive(Debug)]
pub struct ColdStore {
    cfg: ColdConfig,
    uri: String,
    /// On object storage: the Lance session serving the URL's scheme.
    session: Option<Arc<Session>>,
    state: RwLock<State>,
    text: Mutex<TextIndex<String>>,
}

/// The BM25 index of a dataset, rebuilt from its rows: the same key as at insert, the text plus
/// `metadata.keywords` ([`MemoryRecord::search_text`]); with the number of rows.
async fn text_index(ds: &Dataset) -> Result<(TextIndex<String>, usize)> {
    let mut text = TextIndex::new();
    let mut scan = ds.scan();
    scan.project(&["id", "text", "metadata"])
        .map_err(|e| lance_err("scan", e))?;
    let b = scan
        .try_into_batch()
        .await
        .map_err(|e| lance_err("scan", e))?;
    let (ids, texts, metas) = (
        col::<StringArray>(&b, "id")?,
        col::<StringArray>(&b, "text")?,
        col::<StringArray>(&b, "metadata")?,
    );
    for i in 0..b.num_rows() {
        let meta: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(metas.value(i)).unwrap_or_default();
        text.insert_fields(
            ids.value(i).to_owned(),
            &llmem_core::search_fields(texts.value(i), &meta),
        );
    }
    Ok((text, b.num_rows()))
}

pub(crate) fn lance_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::storage("cold", format!("{what}: {e}"))
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL column for a filter path, where the column holds exactly what the filter sees.
fn column(path: &str) -> Option<String> {
    Some(
        match path {
            "id" | "tenant" | "session" | "text" | "supersedes" | "superseded_by" => path,
            "kind" => "f_kind",
            "created_at" => "f_created_at",
            _ => return None,
        }
        .to_owned(),
    )
}

fn scope_sql(scope: &Scope) -> String {
    let mut s = format!("tenant = {}", sql_str(&scope.tenant));
    if let Some(sess) = &scope.session {
        s.push_str(&format!(" AND session = {}", sql_str(sess)));
    }
    s
}

fn ids_sql(ids: &[String]) -> String {
    format!(
        "id IN ({})",
        ids.iter()
            .map(|i| sql_str(i))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn schema(dim: usize) -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("id", false),
        s("tenant", false),
        s("session", true),
        s("kind", false),
        s("text", false),
        s("metadata", false),
        Field::new("created_at", DataType::Int64, false),
        Field::new("accessed_at", DataType::Int64, false),
        Field::new("access_count", DataType::UInt64, false),
        s("supersedes", true),
        s("superseded_by", true),
        s("f_kind", true),
        s("f_created_at", true),
        Field::new(
            "embedding",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                dim as i32,
            ),
            true,
        ),
    ]))
}

fn to_batch(records: &[MemoryRecord], dim: usize) -> Result<RecordBatch> {
    let mut cols: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
    let mut extra: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
    let (mut created, mut accessed, mut count) = (
        Int64Builder::new(),
        Int64Builder::new(),
        UInt64Builder::new(),
    );
    let mut emb = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
    let as_str = |v: Option<serde_json::Value>| v.and_then(|v| v.as_str().map(str::to_owned));
    for r in records {
        cols[0].append_value(&r.id);
        cols[1].append_value(&r.tenant);
        cols[2].append_option(r.session.as_deref());
        cols[3].append_value(r.kind.as_str());
        cols[4].append_value(&r.text);
        cols[5].append_value(
            serde_json::to_string(&r.metadata).map_err(|e| Error::serde("metadata", e))?,
        );
        created.append_value(r.created_at.0);
        accessed.append_value(r.accessed_at.0);
        count.append_value(r.access_count);
        extra[0].append_option(r.supersedes.as_deref());
        extra[1].append_option(r.superseded_by.as_deref());
        extra[2].append_option(as_str(r.field("kind")));
        extra[3].append_option(as_str(r.field("created_at")));
        match &r.embedding {
            Some(e) if e.len() == dim => {
                emb.values().append_slice(e);
                emb.append(true);
            }
            Some(e) => {
                return Err(Error::invalid(format!(
                    "record `{}` has a {}-dimensional embedding but the cold tier holds {dim}-dimensional ones",
                    r.id,
                    e.len()
                )));
            }
            None => {
                emb.values().append_slice(&vec![0.0; dim]);
                emb.append(false);
            }
        }
    }
    let mut arrays: Vec<Arc<dyn Array>> = cols
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as Arc<dyn Array>)
        .collect();
    arrays.push(Arc::new(created.finish()));
    arrays.push(Arc::new(accessed.finish()));
    arrays.push(Arc::new(count.finish()));
    arrays.extend(
        extra
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as Arc<dyn Array>),
    );
    arrays.push(Arc::new(emb.finish()));
    RecordBatch::try_new(schema(dim), arrays).map_err(|e| lance_err("building a batch", e))
}

pub(crate) fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            lance_err(
                "reading",
                format!("column `{name}` is missing or of the wrong type"),
            )
        })
}

pub(crate) fn from_batch(b: &RecordBatch) -> Result<Vec<MemoryRecord>> {
    let s = |n| col::<StringArray>(b, n);
    let (id, tenant, session, kind, text, meta) = (
        s("id")?,
        s("tenant")?,
        s("session")?,
        s("kind")?,
        s("text")?,
        s("metadata")?,
    );
    let (sup, supby) = (s("supersedes")?, s("superseded_by")?);
    let created = col::<Int64Array>(b, "created_at")?;
    let accessed = col::<Int64Array>(b, "accessed_at")?;
    let count = col::<UInt64Array>(b, "access_count")?;
    let emb = col::<FixedSizeListArray>(b, "embedding")?;
    let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
    (0..b.num_rows())
        .map(|i| {
            let embedding = if emb.is_null(i) {
                None
            } else {
                let v = emb.value(i);
                let f = v
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or_else(|| lance_err("reading", "embedding values are not f32"))?;
                Some(f.values().to_vec())
            };
            Ok(MemoryRecord {
                id: id.value(i).to_owned(),
                tenant: tenant.value(i).to_owned(),
                session: opt(session, i),
                kind: RecordKind::parse(kind.value(i))?,
                text: text.value(i).to_owned(),
                metadata: serde_json::from_str(meta.value(i))
                    .map_err(|e| Error::serde("metadata", e))?,
                created_at: Timestamp(created.value(i)),
                accessed_at: Timestamp(accessed.value(i)),
                access_count: count.value(i),
                embedding,
                supersedes: opt(sup, i),
                superseded_by: opt(supby, i),
            })
        })
        .collect()
}

impl ColdStore {
    /// Opens the dataset at `cfg.path` (created on the first write).
    pub async fn open(cfg: ColdConfig) -> Result<Self> {
        let mut state = State {
            dim: cfg.dimensions.unwrap_or(0),
            ..State::default()
        };
        let mut text = TextIndex::new();
        let (uri, session) = cfg.location()?;
        if let Some(ds) = open_dataset(&uri, session.as_ref(), &cfg.path).await? {
            if let Some(n) = embedding_dim(&ds) {
                state.dim = n;
            }
            let rows = if cfg.shared {
                ds.count_rows(None)
                    .await
                    .map_err(|e| lance_err("count", e))?
            } else {
                let rows;
                (text, rows) = text_index(&ds).await?;
                rows
            };
            state.indexed_rows = if ds
                .load_indices()
                .await
                .map_err(|e| lance_err("indices", e))?
                .is_empty()
            {
                0
            } else {
                rows
            };
            state.ds = Some(ds);
        }
        Ok(ColdStore {
            cfg,
            uri,
            session,
            state: RwLock::new(state),
            text: Mutex::new(text),
        })
    }

    /// Moves to the dataset's latest version (another process may have committed since) and
    /// returns it; `None` while nobody has written it.
    pub async fn latest(&self) -> Result<Option<Dataset>> {
        let mut st = self.state.write().await;
        self.checkout_latest(&mut st).await?;
        Ok(st.ds.clone())
    }

    async fn checkout_latest(&self, st: &mut State) -> Result<()> {
        match st.ds.as_mut() {
            Some(ds) => ds
                .checkout_latest()
                .await
                .map_err(|e| lance_err("reading the latest version", e))?,
            None => {
                st.ds = open_dataset(&self.uri, self.session.as_ref(), &self.cfg.path).await?;
                if st.dim == 0
                    && let Some(n) = st.ds.as_ref().and_then(embedding_dim)
                {
                    st.dim = n;
                }
            }
        }
        Ok(())
    }

    /// Whether this store shares its dataset with other writers ([`ColdConfig::shared`]).
    pub fn shared(&self) -> bool {
        self.cfg.shared
    }

    /// The dataset's current Lance version (0 before the first write).
    pub async fn version(&self) -> u64 {
        self.state
            .read()
            .await
            .ds
            .as_ref()
            .map_or(0, |d| d.version().version)
    }

    /// Whether an ANN index is in use.
    pub async fn indexed(&self) -> bool {
        self.state.read().await.indexed_rows > 0
    }

    /// Builds (or rebuilds) the vector index ([`ColdConfig::index`]) now, whatever the size.
    pub async fn build_index(&self) -> Result<()> {
        let mut st = self.state.write().await;
        let dim = st.dim;
        let Some(ds) = st.ds.as_mut() else {
            return Ok(());
        };
        let rows = ds
            .count_rows(None)
            .await
            .map_err(|e| lance_err("count", e))?;
        let params = self.cfg.index.params(rows, dim);
        ds.create_index(
            &["embedding"],
            IndexType::Vector,
            Some("embedding_idx".into()),
            &params,
            true,
        )
        .await
        .map_err(|e| lance_err("building the vector index", e))?;
        // Scalar indexes on the columns every query or a common filter tests, so that a
        // prefilter reads an index, not the column of every row: at 1M rows, the unindexed
        // `superseded_by IS NULL` of every query cost about 30 ms and a `kind` filter 40 ms
        // (docs/benchmarks.md). Bitmaps for the few-valued (and the mostly null), B-trees for
        // the many-valued.
        for (col, index_type, builtin) in [
            ("tenant", IndexType::Bitmap, BuiltinIndexType::Bitmap),
            ("superseded_by", IndexType::Bitmap, BuiltinIndexType::Bitmap),
            ("f_kind", IndexType::Bitmap, BuiltinIndexType::Bitmap),
            ("session", IndexType::BTree, BuiltinIndexType::BTree),
            ("f_created_at", IndexType::BTree, BuiltinIndexType::BTree),
        ] {
            ds.create_index(
                &[col],
                index_type,
                Some(format!("{col}_idx")),
                &ScalarIndexParams::for_builtin(builtin),
                true,
            )
            .await
            .map_err(|e| lance_err(&format!("building the index on {col}"), e))?;
        }
        st.indexed_rows = rows.max(1);
        Ok(())
    }

    async fn rows(&self, pred: &str) -> Result<Vec<MemoryRecord>> {
        let st = self.state.read().await;
        let Some(ds) = &st.ds else {
            return Ok(Vec::new());
        };
        let mut scan = ds.scan();
        scan.filter(pred).map_err(|e| lance_err("filter", e))?;
        let b = scan
            .try_into_batch()
            .await
            .map_err(|e| lance_err(&format!("scan where {pred}"), e))?;
        from_batch(&b)
    }

    /// Rows in `scope` (all tenants when `None`) passing `filter`, filtered in Lance where the
    /// filter translates and always re-checked in Rust.
    async fn select(
        &self,
        scope: Option<&Scope>,
        filter: &Filter,
        superseded: bool,
    ) -> Result<Vec<MemoryRecord>> {
        let mut parts = Vec::new();
        if let Some(s) = scope {
            parts.push(scope_sql(s));
        }
        if !superseded {
            parts.push("superseded_by IS NULL".to_owned());
        }
        if let Ok(sql) = filter.to_sql(&column) {
            parts.push(sql);
        }
        let pred = if parts.is_empty() {
            "TRUE".to_owned()
        } else {
            parts.join(" AND ")
        };
        let mut recs = self.rows(&pred).await?;
        recs.retain(|r| scope.is_none_or(|s| r.in_scope(s)) && filter.matches(r));
        Ok(recs)
    }

    async fn vector_search(
        &self,
        scope: &Scope,
        req: &SearchRequest,
        q: &[f32],
        k: usize,
    ) -> Result<Vec<ScoredRecord>> {
        let st = self.state.read().await;
        let Some(ds) = &st.ds else {
            return Ok(Vec::new());
        };
        if q.len() != st.dim {
            return Err(Error::invalid(format!(
                "the query vector has {} dimensions but the cold tier holds {}-dimensional embeddings",
                q.len(),
                st.dim
            )));
        }
        // The index holds only embedded rows; without it, the flat scan is told to skip the
        // others (a filter on the vector column reads all of it, so the indexed path avoids it).
        let mut parts = vec![scope_sql(scope)];
        if st.indexed_rows == 0 {
            parts.push("embedding IS NOT NULL".to_owned());
        }
        if !req.include_superseded {
            parts.push("superseded_by IS NULL".to_owned());
        }
        let Ok(fsql) = req.filter.to_sql(&column) else {
            drop(st);
            // A metadata filter: exact search over the rows that pass it, in Rust.
            let recs = self
                .select(Some(scope), &req.filter, req.include_superseded)
                .await?;
            let qn = norm(q).max(f32::MIN_POSITIVE);
            let mut top = TopK::new(k);
            for (i, r) in recs.iter().enumerate() {
                if let Some(e) = &r.embedding {
                    top.push(i, dot(q, e) / (qn * norm(e).max(f32::MIN_POSITIVE)));
                }
            }
            return Ok(top
                .into_sorted()
                .into_iter()
                .filter_map(|(i, score)| {
                    Some(ScoredRecord {
                        record: recs.get(i)?.clone(),
                        score,
                    })
                })
                .collect());
        };
        parts.push(fsql);
        let mut scan = ds.scan();
        let query = Float32Array::from(q.to_vec());
        scan.nearest("embedding", &query, k)
            .map_err(|e| lance_err("nearest", e))?;
        scan.distance_metric(DistanceType::Cosine);
        scan.prefilter(true);
        if st.indexed_rows > 0 {
            scan.nprobes(self.cfg.probes(st.indexed_rows));
            if self.cfg.refine_factor > 0 {
                scan.refine(self.cfg.refine_factor);
            }
            if self.cfg.ef > 0 {
                scan.ef(self.cfg.ef);
            }
        } else {
            scan.use_index(false);
        }
        scan.filter(&parts.join(" AND "))
            .map_err(|e| lance_err("filter", e))?;
        let b = scan
            .try_into_batch()
            .await
            .map_err(|e| lance_err("vector search", e))?;
        let dist = col::<Float32Array>(&b, "_distance")?;
        let recs = from_batch(&b)?;
        let mut hits: Vec<ScoredRecord> = recs
            .into_iter()
            .enumerate()
            .filter(|(_, r)| r.in_scope(scope) && r.embedding.is_some() && req.filter.matches(r))
            .map(|(i, r)| ScoredRecord {
                record: r,
                score: 1.0 - dist.value(i),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(hits)
    }

    async fn text_search(
        &self,
        scope: &Scope,
        req: &SearchRequest,
        q: &str,
        k: usize,
    ) -> Result<Vec<ScoredRecord>> {
        // Rank every lexical match, then keep those in scope that pass the filter.
        let ranked = self.text.lock().search(q, usize::MAX, |_| true);
        if ranked.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ranked.iter().map(|r| r.0.clone()).collect();
        let mut by_id: std::collections::HashMap<String, MemoryRecord> = Default::default();
        for chunk in ids.chunks(500) {
            let pred = format!("{} AND {}", scope_sql(scope), ids_sql(chunk));
            for r in self.rows(&pred).await? {
                by_id.insert(r.id.clone(), r);
            }
        }
        Ok(ranked
            .into_iter()
            .filter_map(|(id, score)| {
                let r = by_id.remove(&id)?;
                (r.in_scope(scope)
                    && (req.include_superseded || !r.is_superseded())
                    && req.filter.matches(&r))
                .then_some(ScoredRecord { record: r, score })
            })
            .take(k)
            .collect())
    }
}

impl ColdStore {
    /// The forget of the cold tier (see [`MemoryStore::forget`] and `docs/forget.md`):
    ///
    /// 1. The matching rows are deleted by id (a Lance commit: from then on no version that a
    ///    reopen reads holds them, and the BM25 index in RAM drops them).
    /// 2. Compaction rewrites every fragment with deleted rows (any share of them) into new
    ///    data files without those rows; the vector and scalar indices are remapped to the new
    ///    rows. Those indices hold vectors (quantised or whole), tenant and session names,
    ///    kinds, dates and ids, never the text.
    /// 3. Every version but the current one is cleaned up at once, with files no manifest lists
    ///    (a write a crash interrupted): old manifests, data files, deletion files, index files
    ///    and transaction files. Snapshots of this tier (Lance versions) taken before are gone;
    ///    [`Tier::restore`] refuses them with a message that says so.
    ///
    /// Steps 2 and 3 run even when nothing matched, so that a forget run again completes one
    /// that a crash interrupted. The state lock is held throughout, so no write of this store
    /// is in progress while unlisted files are removed.
    async fn forget_now(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        use lance::dataset::cleanup::CleanupPolicy;
        use lance::dataset::optimize::{CompactionMode, CompactionOptions, compact_files};

        let ids: Vec<String> = self
            .select(Some(scope), filter, true)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut n = 0;
        for chunk in ids.chunks(1000) {
            n += self.delete(scope, chunk).await?;
        }
        let mut st = self.state.write().await;
        let Some(ds) = st.ds.as_mut() else {
            return Ok(n);
        };
        let options = CompactionOptions {
            materialize_deletions: true,
            materialize_deletions_threshold: 0.0,
            compaction_mode: Some(CompactionMode::Reencode),
            ..CompactionOptions::default()
        };
        compact_files(ds, options, None)
            .await
            .map_err(|e| lance_err("forget: compacting the deleted rows away", e))?;
        if let Some(f) = ds
            .get_fragments()
            .iter()
            .find(|f| f.metadata().deletion_file.is_some())
        {
            return Err(lance_err(
                "forget",
                format!(
                    "fragment {} still has deleted rows after compaction",
                    f.id()
                ),
            ));
        }
        let policy = CleanupPolicy {
            before_version: Some(ds.version().version),
            // A shared dataset's unlisted files may be another writer's commit in flight.
            delete_unverified: !self.cfg.shared,
            error_if_tagged_old_versions: false,
            ..CleanupPolicy::default()
        };
        let stats = ds
            .cleanup_with_policy(policy)
            .await
            .map_err(|e| lance_err("forget: cleaning up old versions", e))?;
        if stats.failed_deletes > 0 {
            return Err(lance_err(
                "forget: cleaning up old versions",
                format!(
                    "{} files could not be deleted (they may hold forgotten rows); run the forget again",
                    stats.failed_deletes
                ),
            ));
        }
        tracing::debug!(
            deleted = n,
            old_versions = stats.old_versions,
            data_files = stats.data_files_removed,
            "cold tier: forget compacted and cleaned up"
        );
        Ok(n)
    }
}

impl ColdStore {
    /// Appends records whose ids are in no row yet (the caller knows them to be new: fresh
    /// ids), without reading any row: no owner check, no merge on `id`. For replicas, whose
    /// merge-insert would read the `id` column of every fragment on object storage.
    pub async fn append_new(&self, records: Vec<MemoryRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write_records(records, true).await
    }

    /// Fragments of the dataset (one per write until compaction).
    pub async fn fragments(&self) -> usize {
        self.state
            .read()
            .await
            .ds
            .as_ref()
            .map_or(0, |d| d.get_fragments().len())
    }

    /// Merges small fragments into larger ones (Lance compaction; deleted rows are dropped on
    /// the way). Returns the fragments removed.
    pub async fn compact(&self) -> Result<usize> {
        use lance::dataset::optimize::{CompactionOptions, compact_files};
        let mut st = self.state.write().await;
        if self.cfg.shared {
            self.checkout_latest(&mut st).await?;
        }
        let Some(ds) = st.ds.as_mut() else {
            return Ok(0);
        };
        let m = compact_files(ds, CompactionOptions::default(), None)
            .await
            .map_err(|e| lance_err("compacting fragments", e))?;
        Ok(m.fragments_removed)
    }

    /// Writes `records` (appended with `append`, else merged on `id`).
    async fn write_records(&self, records: Vec<MemoryRecord>, append: bool) -> Result<()> {
        let rows = {
            let mut st = self.state.write().await;
            if st.dim == 0 {
                st.dim = records.iter().find_map(|r| r.embedding.as_ref().map(Vec::len)).ok_or_else(|| {
                    Error::invalid("the cold tier needs its embedding dimensions: set ColdConfig::dimensions or store an embedded record first")
                })?;
            }
            let batch = to_batch(&records, st.dim)?;
            if self.cfg.shared {
                // Start from the latest version: a merge-insert on an old one has every
                // commit since to check for conflicts.
                self.checkout_latest(&mut st).await?;
            }
            let ds = self
                .write_batch(st.ds.take(), batch, append, &mut st)
                .await?;
            let rows = ds
                .count_rows(None)
                .await
                .map_err(|e| lance_err("count", e))?;
            st.ds = Some(ds);
            if !self.cfg.shared {
                let mut text = self.text.lock();
                for r in &records {
                    text.insert_fields(r.id.clone(), &r.search_fields());
                }
            }
            let due = if st.indexed_rows == 0 {
                rows >= self.cfg.index_threshold
            } else {
                rows >= st.indexed_rows * 2
            };
            due.then_some(rows)
        };
        if let Some(rows) = rows {
            tracing::info!(
                rows,
                index = self.cfg.index.name(),
                "cold tier: building the vector index"
            );
            self.build_index().await?;
        }
        Ok(())
    }
}

/// The size of the dataset's embedding vectors, from its schema.
fn embedding_dim(ds: &Dataset) -> Option<usize> {
    match ds.schema().field("embedding")?.data_type() {
        DataType::FixedSizeList(_, n) => Some(n as usize),
        _ => None,
    }
}

/// The dataset at `uri`, or `None` where nobody has written one yet.
async fn open_dataset(
    uri: &str,
    session: Option<&Arc<Session>>,
    dir: &Path,
) -> Result<Option<Dataset>> {
    let Some(session) = session else {
        if !dir.join("_versions").exists() {
            return Ok(None);
        }
        return Dataset::open(uri)
            .await
            .map(Some)
            .map_err(|e| lance_err("opening", e));
    };
    match DatasetBuilder::from_uri(uri)
        .with_session(session.clone())
        .load()
        .await
    {
        Ok(ds) => Ok(Some(ds)),
        Err(lance::Error::DatasetNotFound { .. }) => Ok(None),
        Err(e) => Err(lance_err(&format!("opening {uri}"), e)),
    }
}

/// A commit that lost to another writer's (after Lance's own retries).
fn conflict(e: &lance::Error) -> bool {
    matches!(
        e,
        lance::Error::CommitConflict { .. }
            | lance::Error::RetryableCommitConflict { .. }
            | lance::Error::TooMuchWriteContention { .. }
            | lance::Error::DatasetAlreadyExists { .. }
    )
}

impl ColdStore {
    /// Writes `batch`: creates the dataset, or merges on `id` (last write wins). A commit
    /// race lost past Lance's retries is retried here until [`CONFLICT_PATIENCE`] runs out.
    /// On error `st.ds` is back to what it was and nothing was written.
    async fn write_batch(
        &self,
        ds: Option<Dataset>,
        batch: RecordBatch,
        append: bool,
        st: &mut State,
    ) -> Result<Dataset> {
        let started = Instant::now();
        let mut ds = ds;
        if ds.is_none() && self.cfg.shared {
            // Replicas create the dataset empty (one of them wins; an empty loser loses
            // nothing) and every write is a merge-insert, whose commit races Lance resolves.
            let empty = RecordBatchIterator::new(
                Vec::<std::result::Result<RecordBatch, arrow_schema::ArrowError>>::new(),
                batch.schema(),
            );
            let params = WriteParams {
                mode: WriteMode::Create,
                session: self.session.clone(),
                ..Default::default()
            };
            match Dataset::write(empty, self.uri.as_str(), Some(params)).await {
                Ok(_) => {}
                Err(e) if conflict(&e) => {}
                Err(e) => return Err(lance_err("creating the shared dataset", e)),
            }
            self.checkout_latest(st).await?;
            ds = st.ds.take();
            if ds.is_none() {
                return Err(lance_err(
                    "creating the shared dataset",
                    format!("{} is still missing after it was created", self.uri),
                ));
            }
        }
        let mut attempt = 0u32;
        loop {
            let sch = batch.schema();
            let reader = RecordBatchIterator::new(vec![Ok(batch.clone())], sch);
            let res = match &ds {
                None => {
                    let params = WriteParams {
                        mode: WriteMode::Create,
                        session: self.session.clone(),
                        ..Default::default()
                    };
                    Dataset::write(reader, self.uri.as_str(), Some(params)).await
                }
                Some(_) if append => {
                    let params = WriteParams {
                        mode: WriteMode::Append,
                        session: self.session.clone(),
                        ..Default::default()
                    };
                    Dataset::write(reader, self.uri.as_str(), Some(params)).await
                }
                Some(d) => {
                    let job = MergeInsertBuilder::try_new(Arc::new(d.clone()), vec!["id".into()])
                        .map(|mut b| {
                            b.when_matched(WhenMatched::UpdateAll)
                                .when_not_matched(WhenNotMatched::InsertAll)
                                .conflict_retries(COMMIT_RETRIES)
                                .retry_timeout(CONFLICT_PATIENCE);
                            b
                        })
                        .and_then(|mut b| b.try_build());
                    match job {
                        Ok(job) => job.execute_reader(reader).await.map(|(d, _)| (*d).clone()),
                        Err(e) => Err(e),
                    }
                }
            };
            match res {
                Ok(d) => return Ok(d),
                Err(e) if conflict(&e) && started.elapsed() < CONFLICT_PATIENCE => {
                    attempt += 1;
                    // Back off (jittered, growing to 2 s) and start again from the latest
                    // version; one created meanwhile by another process is opened.
                    let ms = 20u64 << attempt.min(7);
                    let jitter = (llmem_core::Timestamp::now().0 as u64 * 7919) % ms.max(1);
                    tokio::time::sleep(Duration::from_millis(ms / 2 + jitter / 2)).await;
                    st.ds = ds.take();
                    self.checkout_latest(st).await?;
                    ds = st.ds.take();
                    tracing::debug!(attempt, error = %e, "cold tier: commit conflict, retrying");
                }
                Err(e) => {
                    st.ds = ds;
                    let what = if conflict(&e) {
                        format!(
                            "other writers kept winning the commit for {} s (a conflict storm); \
                             nothing was written, retry later",
                            CONFLICT_PATIENCE.as_secs()
                        )
                    } else {
                        "writing".to_owned()
                    };
                    return Err(lance_err(&what, e));
                }
            }
        }
    }
}

fn uri(path: &Path) -> Result<String> {
    std::fs::create_dir_all(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let abs = std::fs::canonicalize(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    abs.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid(format!("{} is not UTF-8", abs.display())))
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[async_trait]
impl MemoryStore for ColdStore {
    fn name(&self) -> &str {
        "cold"
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities {
            vector_search: true,
            text_search: true,
            persistent: true,
            snapshots: true,
        }
    }

    async fn put(&self, records: Vec<MemoryRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let records = crate::tier::last_write_wins(records);
        crate::tier::check_owners(self, &records).await?;
        self.write_records(records, false).await
    }

    async fn get(&self, scope: &Scope, ids: &[String]) -> Result<Vec<MemoryRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let recs = self
            .rows(&format!("{} AND {}", scope_sql(scope), ids_sql(ids)))
            .await?;
        let mut by_id: std::collections::HashMap<String, MemoryRecord> = recs
            .into_iter()
            .filter(|r| r.in_scope(scope))
            .map(|r| (r.id.clone(), r))
            .collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn delete(&self, scope: &Scope, ids: &[String]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut st = self.state.write().await;
        let Some(ds) = st.ds.as_mut() else {
            return Ok(0);
        };
        let res = ds
            .delete(&format!("{} AND {}", scope_sql(scope), ids_sql(ids)))
            .await
            .map_err(|e| lance_err("delete", e))?;
        *ds = (*res.new_dataset).clone();
        if res.num_deleted_rows > 0 {
            let mut text = self.text.lock();
            for id in ids {
                text.remove(id);
            }
        }
        drop(st);
        // Another tenant's record with one of these ids stays indexed: put its text back.
        let survivors = self.rows(&ids_sql(ids)).await?;
        let mut text = self.text.lock();
        for r in survivors {
            text.insert_fields(r.id.clone(), &r.search_fields());
        }
        Ok(res.num_deleted_rows as usize)
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
        let mut recs = self.select(Some(scope), filter, true).await?;
        recs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        recs.truncate(limit.unwrap_or(usize::MAX));
        Ok(recs)
    }

    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<usize> {
        if let Ok(sql) = filter.to_sql(&column) {
            let st = self.state.read().await;
            let Some(ds) = &st.ds else { return Ok(0) };
            return ds
                .count_rows(Some(format!("{} AND {sql}", scope_sql(scope))))
                .await
                .map_err(|e| lance_err("count", e));
        }
        Ok(self.select(Some(scope), filter, true).await?.len())
    }

    async fn search(&self, scope: &Scope, req: &SearchRequest) -> Result<Vec<ScoredRecord>> {
        match (&req.vector, &req.text) {
            (Some(v), None) => self.vector_search(scope, req, v, req.k).await,
            (None, Some(t)) => self.text_search(scope, req, t, req.k).await,
            (Some(v), Some(t)) => {
                let n = (req.k * 4).max(HYBRID_CANDIDATES);
                let by_vec = self.vector_search(scope, req, v, n).await?;
                let by_text = self.text_search(scope, req, t, n).await?;
                let scored = |l: &[ScoredRecord]| {
                    l.iter()
                        .map(|h| (h.record.id.clone(), h.score))
                        .collect::<Vec<_>>()
                };
                let fused = fuse(&scored(&by_vec), &scored(&by_text), req.fusion, req.k)?;
                let mut recs: std::collections::HashMap<String, MemoryRecord> = by_vec
                    .into_iter()
                    .chain(by_text)
                    .map(|h| (h.record.id.clone(), h.record))
                    .collect();
                Ok(fused
                    .into_iter()
                    .filter_map(|(id, score)| {
                        Some(ScoredRecord {
                            record: recs.remove(&id)?,
                            score,
                        })
                    })
                    .collect())
            }
            (None, None) => Err(Error::invalid(
                "a search needs a query vector, a query text, or both",
            )),
        }
    }

    async fn scan_all(&self, filter: &Filter, limit: Option<usize>) -> Result<Vec<MemoryRecord>> {
        let mut recs = self.select(None, filter, true).await?;
        recs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        recs.truncate(limit.unwrap_or(usize::MAX));
        Ok(recs)
    }

    async fn stats(&self) -> Result<StoreStats> {
        let st = self.state.read().await;
        let items = match &st.ds {
            Some(ds) => ds
                .count_rows(None)
                .await
                .map_err(|e| lance_err("count", e))? as u64,
            None => 0,
        };
        Ok(StoreStats {
            items,
            // On object storage the size is not listed (it would read every key).
            bytes: if self.cfg.url.is_some() {
                0
            } else {
                dir_size(&self.cfg.path)
            },
            capacity_bytes: None,
        })
    }
}

#[async_trait]
impl Tier for ColdStore {
    /// One Lance commit for the whole batch: the rows of the marked ids, read under the write
    /// lock, go back through a merge-insert on `id` with `accessed_at` moved up and
    /// `access_count` grown (matched rows are updated, nothing is inserted, so a record
    /// deleted meanwhile stays deleted).
    async fn record_reads(&self, reads: &[ReadMark]) -> Result<()> {
        if reads.is_empty() {
            return Ok(());
        }
        let marks: std::collections::HashMap<&str, &ReadMark> =
            reads.iter().map(|m| (m.id.as_str(), m)).collect();
        let ids: Vec<String> = marks.keys().map(|id| (*id).to_owned()).collect();
        let mut st = self.state.write().await;
        let dim = st.dim;
        let Some(ds) = st.ds.as_ref() else {
            return Ok(());
        };
        let mut rows = Vec::new();
        for chunk in ids.chunks(500) {
            let mut scan = ds.scan();
            scan.filter(&ids_sql(chunk))
                .map_err(|e| lance_err("filter", e))?;
            let b = scan
                .try_into_batch()
                .await
                .map_err(|e| lance_err("reading the rows read", e))?;
            rows.extend(from_batch(&b)?);
        }
        rows.retain_mut(|r| match marks.get(r.id.as_str()) {
            Some(m) if m.tenant == r.tenant => {
                r.accessed_at = r.accessed_at.max(m.at);
                r.access_count += m.reads;
                true
            }
            _ => false,
        });
        if rows.is_empty() {
            return Ok(());
        }
        let batch = to_batch(&rows, dim)?;
        let sch = batch.schema();
        let reader = RecordBatchIterator::new(vec![Ok(batch)], sch);
        let mut b = MergeInsertBuilder::try_new(Arc::new(ds.clone()), vec!["id".into()])
            .map_err(|e| lance_err("merge-insert of reads", e))?;
        b.when_matched(WhenMatched::UpdateAll)
            .when_not_matched(WhenNotMatched::DoNothing);
        let job = b
            .try_build()
            .map_err(|e| lance_err("merge-insert of reads", e))?;
        let (ds, _) = job
            .execute_reader(reader)
            .await
            .map_err(|e| lance_err("merge-insert of reads", e))?;
        st.ds = Some((*ds).clone());
        Ok(())
    }

    async fn foreign_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<String>> {
        let st = self.state.read().await;
        let Some(ds) = &st.ds else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for chunk in ids.chunks(10_000) {
            let mut scan = ds.scan();
            scan.project(&["id"]).map_err(|e| lance_err("scan", e))?;
            scan.filter(&format!(
                "{} AND tenant <> {}",
                ids_sql(chunk),
                sql_str(tenant)
            ))
            .map_err(|e| lance_err("filter", e))?;
            let b = scan
                .try_into_batch()
                .await
                .map_err(|e| lance_err("scan", e))?;
            let col_ids = col::<StringArray>(&b, "id")?;
            out.extend((0..b.num_rows()).map(|i| col_ids.value(i).to_owned()));
        }
        Ok(out)
    }

    async fn snapshot(&self) -> Result<String> {
        Ok(self.version().await.to_string())
    }

    async fn restore(&self, id: &str) -> Result<()> {
        let v: u64 = id
            .parse()
            .map_err(|_| Error::invalid(format!("`{id}` is not a cold-tier (Lance) version")))?;
        let mut st = self.state.write().await;
        if v == 0 {
            // Before the first write: empty the table.
            if let Some(ds) = st.ds.as_mut() {
                let res = ds
                    .delete("TRUE")
                    .await
                    .map_err(|e| lance_err("delete", e))?;
                *ds = (*res.new_dataset).clone();
            }
        } else {
            let Some(ds) = &st.ds else {
                return Err(Error::NotFound {
                    what: format!("cold-tier version {v}"),
                });
            };
            if v < ds.version().version
                && !ds
                    .versions()
                    .await
                    .map_err(|e| lance_err("listing versions", e))?
                    .iter()
                    .any(|x| x.version == v)
            {
                return Err(Error::NotFound {
                    what: format!(
                        "cold-tier version {v}: a forget cleaned up the older versions (so \
                         that no file keeps forgotten records), and a snapshot taken before a \
                         forget cannot be restored"
                    ),
                });
            }
            let mut old = ds
                .checkout_version(v)
                .await
                .map_err(|e| lance_err(&format!("checkout of version {v}"), e))?;
            old.restore()
                .await
                .map_err(|e| lance_err(&format!("restore of version {v}"), e))?;
            st.indexed_rows = if old
                .load_indices()
                .await
                .map_err(|e| lance_err("indices", e))?
                .is_empty()
            {
                0
            } else {
                1
            };
            st.ds = Some(old);
        }
        let text = match &st.ds {
            Some(ds) => text_index(ds).await?.0,
            None => TextIndex::new(),
        };
        *self.text.lock() = text;
        Ok(())
    }
}
