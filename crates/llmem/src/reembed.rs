//! Which model embedded a data directory's memories, and embedding them all again with another.
//!
//! The vectors of two models cannot be compared: a question embedded by one model finds
//! nothing meaningful among memories embedded by another, though both give 384 numbers (MiniLM
//! and its int8 copy, `quantized = true`, say). So the data directory keeps
//! [`EMBEDDER_FILE`], written the first time a configured embedder opens it
//! ([`crate::Providers::from_config_with`]), and opening it with another embedder is an error
//! that names both and the way out: [`reembed`] (`llmem reembed`), which embeds every memory of
//! every tier again with the configured embedder and then records it.
//!
//! While [`reembed`] runs, the file says so: a run that stops half-way (a crash, a killed
//! process) leaves memories of both models, and every open is refused until a rerun finishes.
//! Nothing is lost by stopping: each memory keeps its text, and its old vector until its batch
//! is written with the new one.

use std::path::Path;

use llmem_core::{Embedder, Error, Filter, Result};
use serde::{Deserialize, Serialize};

use crate::{Config, Plugins};

/// The file in the data directory (`tiers.dir`) that names the model of its vectors.
pub const EMBEDDER_FILE: &str = "embedder.json";

/// Memories embedded a call while re-embedding.
const BATCH: usize = 256;

/// The model whose vectors a data directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorModel {
    /// The embedder's name (`onnx:all-minilm-l6-v2`, `openai`, …).
    pub embedder: String,
    /// The `model` its `[embedder]` table names, where it names one (the HTTP providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Length of its vectors (0 where the embedder learns it at its first call).
    pub dimensions: usize,
    /// True while [`reembed`] gives the memories this model's vectors: they hold both models'.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reembedding: bool,
}

impl VectorModel {
    /// The model of `embedder`, built from `config`'s `[embedder]` table.
    pub fn of(config: &Config, embedder: &dyn Embedder) -> Result<Self> {
        let model = config
            .provider_table("embedder")?
            .and_then(|t| t.get("model").and_then(|m| m.as_str()).map(str::to_owned));
        Ok(VectorModel {
            embedder: embedder.name().to_owned(),
            model,
            dimensions: embedder.dimensions(),
            reembedding: false,
        })
    }

    /// Whether the vectors of `self` and `other` can be compared.
    pub fn same(&self, other: &VectorModel) -> bool {
        self.embedder == other.embedder
            && self.model == other.model
            && (self.dimensions == other.dimensions
                || self.dimensions == 0
                || other.dimensions == 0)
    }

    fn describe(&self) -> String {
        let mut s = format!("`{}`", self.embedder);
        if let Some(m) = &self.model {
            s.push_str(&format!(" model `{m}`"));
        }
        if self.dimensions > 0 {
            s.push_str(&format!(" ({} dimensions)", self.dimensions));
        }
        s
    }

    /// The model recorded in `dir`, if one is.
    pub fn read(dir: &Path) -> Result<Option<VectorModel>> {
        let path = dir.join(EMBEDDER_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::invalid(format!(
                "{} is not a model record ({e}); delete it if its memories' vectors are those \
                 of the configured embedder",
                path.display()
            ))
        })
    }

    /// Records `self` in `dir` (written whole and synced, then renamed over the old record).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::invalid(format!("encoding the model record: {e}")))?;
        crate::manager::write_durable(&dir.join(EMBEDDER_FILE), &body)
    }

    /// Checks that the memories in `dir` may be searched with `self`'s vectors: records
    /// `self` when the directory names no model yet; an error, saying what to do, when it
    /// names another or an unfinished [`reembed`].
    pub fn check(&self, dir: &Path) -> Result<()> {
        let Some(stored) = Self::read(dir)? else {
            return self.write(dir);
        };
        if stored.reembedding {
            return Err(Error::config(
                "embedder",
                format!(
                    "re-embedding the memories in {} with {} did not finish, so they hold the \
                     vectors of two models; run `llmem reembed` again with the configuration \
                     that names it",
                    dir.display(),
                    stored.describe()
                ),
            ));
        }
        if stored.same(self) {
            return Ok(());
        }
        Err(Error::config(
            "embedder",
            format!(
                "the memories in {} were embedded by {}, and [embedder] names {}: their \
                 vectors cannot be compared. Run `llmem reembed` with this configuration to \
                 embed every memory again with the new model, or configure the old one again",
                dir.display(),
                stored.describe(),
                self.describe()
            ),
        ))
    }
}

/// What [`reembed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reembedded {
    /// The model recorded before (none: the directory named none).
    pub from: Option<VectorModel>,
    pub to: VectorModel,
    /// Memories embedded again, per tier (`warm`, `cold`, `glacier`), in the tiers' order.
    pub per_tier: Vec<(String, usize)>,
}

impl Reembedded {
    pub fn records(&self) -> usize {
        self.per_tier.iter().map(|(_, n)| n).sum()
    }
}

/// Embeds every memory in the data directory `config` describes again, each in the tier it is
/// in, with the embedder `[embedder]` names (built from `plugins`' kinds), and then records
/// that model in the directory ([`EMBEDDER_FILE`]). Memories without a vector (stored with no
/// embedder) get one. `progress` is called after each batch with the memories done and the
/// total. Run it while no other process has the directory open; a run that stops may be run
/// again.
pub async fn reembed(
    config: &Config,
    plugins: &Plugins,
    mut progress: impl FnMut(usize, usize),
) -> Result<Reembedded> {
    let Some(dir) = config.tiers.dir.clone() else {
        return Err(Error::config(
            "tiers.dir",
            "not set: memory kept in RAM has nothing to re-embed; name the data directory \
             (`--dir` or tiers.dir)",
        ));
    };
    let embedder = plugins.embedder(config)?.ok_or_else(|| {
        Error::config(
            "embedder",
            "missing: name the model to embed the memories with in [embedder]",
        )
    })?;
    let to = VectorModel::of(config, &*embedder)?;
    let from = VectorModel::read(&dir)?;
    let tiered = crate::storage::open_tiered(&config.tiers).await?;
    let mut tiers = Vec::new();
    for kind in tiered.tiers() {
        let Some(tier) = tiered.tier(kind) else {
            continue;
        };
        tiers.push((kind, tier.scan_all(&Filter::All, None).await?));
    }
    let total = tiers.iter().map(|(_, r)| r.len()).sum();
    let mut done = 0;
    let mut per_tier = Vec::new();
    // Marked just before the first memory changes: an embedder that fails at once leaves the
    // directory as it was, usable with its model.
    let mut marked = false;
    for (kind, records) in tiers {
        let n = records.len();
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let mut batch: Vec<_> = records.by_ref().take(BATCH).collect();
            let texts: Vec<String> = batch.iter().map(|r| r.text.clone()).collect();
            let vectors = embedder.embed(&texts).await?;
            if vectors.len() != batch.len() {
                return Err(Error::invalid(format!(
                    "the embedder `{}` returned {} vectors for {} texts",
                    embedder.name(),
                    vectors.len(),
                    batch.len()
                )));
            }
            for (r, v) in batch.iter_mut().zip(vectors) {
                r.embedding = Some(v);
            }
            if !marked {
                VectorModel {
                    reembedding: true,
                    ..to.clone()
                }
                .write(&dir)?;
                marked = true;
            }
            done += batch.len();
            tiered.store_batch_in(batch, kind).await?;
            progress(done, total);
        }
        per_tier.push((kind.as_str().to_owned(), n));
    }
    tiered.flush_reads().await?;
    // Dimensions learnt at the first call (the HTTP embedders) are recorded too.
    let to = VectorModel::of(config, &*embedder)?;
    to.write(&dir)?;
    tracing::info!(model = %to.describe(), records = done, "memories re-embedded");
    Ok(Reembedded { from, to, per_tier })
}
