//! Sentence embeddings from a BERT-style ONNX model (MiniLM-L6-v2 by default): tokenise, run,
//! mean-pool with the attention mask, L2-normalise. The same run gives each text's token
//! vectors (special tokens left out) for late interaction ([`Embedder::embed_with_tokens`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use llmem_core::{Embedded, Embedder, Error, Result, TokenVectors};
use ort::session::Session;
use ort::value::Tensor;
use serde::{Deserialize, Serialize};
use tokenizers::{Encoding, Tokenizer};

use super::{Device, Provider, SessionOptions, environment, ort_error, session};
use crate::assets;

/// The default model directory under the llmem cache.
pub const DEFAULT_MODEL_DIR: &str = "models/all-minilm-l6-v2";

/// The quantised copy of the default model in [`DEFAULT_MODEL_DIR`], which `cargo xtask setup`
/// writes beside `model.onnx` ([`OnnxEmbedderConfig::quantized`]).
pub const QUANTIZED_MODEL_FILE: &str = "model-int8.onnx";

/// Configuration of [`OnnxEmbedder`] (TOML keys of `kind = "onnx-embedder"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxEmbedderConfig {
    /// `model.onnx`; default `<cache>/models/all-minilm-l6-v2/model.onnx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<PathBuf>,
    /// Run the default model's quantised copy (`model-int8.onnx`, written by `cargo xtask
    /// setup`) on the CPU: its weight products run in int8, one text a run (its scales are
    /// taken per run, so a text embeds the same alone as among others), on `threads` one-thread
    /// sessions. On 2 cores, 2.6 times the default's texts/s on conversation turns; vectors
    /// within cosine 0.96 of the default model's (0.99 on average), so a store's vectors should
    /// come from one of the two. Not with `model_path`, `batch_size` or `device = "cuda"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantized: Option<bool>,
    /// `tokenizer.json`; default next to the default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_path: Option<PathBuf>,
    /// The ONNX Runtime library; default `$ORT_DYLIB_PATH` or the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_path: Option<PathBuf>,
    /// Texts per model run (default 16). A call with more texts runs them shortest first, so
    /// that each run pads little.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Intra-op threads (default: ONNX Runtime's choice). With `quantized`, the number of
    /// one-thread sessions that share a call's texts (default: the cores, at most 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Longest input in tokens; longer texts are truncated (default: the tokenizer's setting, else 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// `auto` (default: CUDA when built with `cuda` and available, else CPU), `cpu` or `cuda`
    /// (an error when CUDA cannot be used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

/// Builds an [`OnnxEmbedder`].
#[derive(Debug, Clone, Default)]
pub struct OnnxEmbedderBuilder {
    config: OnnxEmbedderConfig,
    profile: Option<PathBuf>,
}

impl OnnxEmbedderBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Paths from `$LLMEM_CACHE_DIR` (the default), threads from `$LLMEM_ONNX_THREADS`.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        b.config.threads = std::env::var("LLMEM_ONNX_THREADS")
            .ok()
            .and_then(|t| t.parse().ok());
        b
    }

    pub fn from_config(config: OnnxEmbedderConfig) -> Self {
        OnnxEmbedderBuilder {
            config,
            profile: None,
        }
    }

    pub fn from_table(table: &toml::Table) -> Result<Self> {
        let mut t = table.clone();
        t.remove("kind");
        let config = t
            .try_into()
            .map_err(|e: toml::de::Error| Error::config("onnx-embedder", e.message().to_owned()))?;
        Ok(Self::from_config(config))
    }

    #[must_use]
    pub fn with_model_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.config.model_path = Some(p.into());
        self
    }

    /// Runs the default model's quantised copy ([`OnnxEmbedderConfig::quantized`]).
    #[must_use]
    pub fn with_quantized(mut self, on: bool) -> Self {
        self.config.quantized = Some(on);
        self
    }

    #[must_use]
    pub fn with_tokenizer_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.config.tokenizer_path = Some(p.into());
        self
    }

    #[must_use]
    pub fn with_library_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.config.library_path = Some(p.into());
        self
    }

    #[must_use]
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = Some(n.max(1));
        self
    }

    #[must_use]
    pub fn with_threads(mut self, n: usize) -> Self {
        self.config.threads = Some(n);
        self
    }

    #[must_use]
    pub fn with_max_length(mut self, n: usize) -> Self {
        self.config.max_length = Some(n);
        self
    }

    #[must_use]
    pub fn with_device(mut self, d: Device) -> Self {
        self.config.device = Some(d);
        self
    }

    /// Has ONNX Runtime profile every run (what ran on which execution provider, and how long)
    /// into a file whose name starts with `prefix`; [`OnnxEmbedder::end_profiling`] closes it.
    #[must_use]
    pub fn with_profiling(mut self, prefix: impl Into<PathBuf>) -> Self {
        self.profile = Some(prefix.into());
        self
    }

    /// Loads the runtime, the tokenizer and the model; errors name `cargo xtask setup` when an
    /// asset is missing.
    pub fn build(self) -> Result<OnnxEmbedder> {
        let c = self.config;
        let quantized = c.quantized.unwrap_or(false);
        // The quantised model runs one text at a time, on as many one-thread sessions as
        // `threads` (default: the cores, at most 4), each a share of a call's texts: a single
        // text's products are too small to split over threads well.
        let (sessions, threads) = if quantized {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (c.threads.filter(|&t| t > 0).unwrap_or(cores.min(4)), 1)
        } else {
            (1, c.threads.unwrap_or(0))
        };
        let options = SessionOptions {
            threads,
            // The int8 products are CPU kernels: the quantised model runs on the CPU.
            device: match (quantized, c.device.unwrap_or_default()) {
                (true, Device::Cuda) => {
                    return Err(Error::config(
                        "onnx-embedder",
                        "`quantized = true` runs on the CPU (its int8 products are CPU \
                         kernels): remove `device = \"cuda\"`, or `quantized` to embed on the GPU",
                    ));
                }
                (true, _) => Device::Cpu,
                (false, d) => d,
            },
            profile: self.profile,
        };
        if quantized && c.model_path.is_some() {
            return Err(Error::config(
                "onnx-embedder",
                "`quantized = true` runs the default model's quantised copy, so it cannot be \
                 combined with `model_path`: remove one of them (to run a quantised model of \
                 your own, name it in `model_path`)",
            ));
        }
        // The quantised model scales each product's inputs by their largest value in the run,
        // so a text run with others would embed a little differently from the same text alone.
        let batch_size = match (quantized, c.batch_size) {
            (true, Some(n)) if n > 1 => {
                return Err(Error::config(
                    "onnx-embedder",
                    format!(
                        "`quantized = true` runs one text at a time (its int8 scales are taken \
                         over a whole run, so a text batched with others would get another \
                         vector than alone): remove `batch_size = {n}`"
                    ),
                ));
            }
            (true, _) => 1,
            (false, n) => n.unwrap_or(16).max(1),
        };
        let (what, file) = if quantized {
            ("the quantised embedding model", QUANTIZED_MODEL_FILE)
        } else {
            ("the embedding model", "model.onnx")
        };
        let model = assets::resolve(
            what,
            c.model_path.as_deref(),
            &format!("{DEFAULT_MODEL_DIR}/{file}"),
        )?;
        let tok_default = match &c.model_path {
            Some(m) => m.with_file_name("tokenizer.json"),
            None => assets::cache_dir()
                .join(DEFAULT_MODEL_DIR)
                .join("tokenizer.json"),
        };
        let tok_path = assets::resolve(
            "the tokenizer",
            Some(c.tokenizer_path.as_deref().unwrap_or(&tok_default)),
            "",
        )?;
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| Error::Other {
            context: format!("reading {}", tok_path.display()),
            source: e,
        })?;
        // The shipped tokenizer pads every input to 128. Texts are tokenised without padding
        // and each model run pads to its own longest (`Inner::run`), with this id.
        let pad_id = tokenizer.get_padding().map_or(0, |p| p.pad_id);
        tokenizer.with_padding(None);
        let max_length = c
            .max_length
            .or_else(|| tokenizer.get_truncation().map(|t| t.max_length))
            .unwrap_or(256);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Other {
                context: "configuring truncation".into(),
                source: e,
            })?;
        let env = environment(c.library_path.as_deref())?;
        let (session, provider) = session(&env, &model, &options)?;
        // Only the first session writes the profile that `end_profiling` returns.
        let others = SessionOptions {
            profile: None,
            ..options
        };
        let mut all = vec![Mutex::new(session)];
        for _ in 1..sessions {
            all.push(Mutex::new(super::session(&env, &model, &others)?.0));
        }
        let first = all[0]
            .get_mut()
            .map_err(|_| Error::invalid("the ONNX session lock was poisoned"))?;
        let inputs: Vec<String> = first.inputs().iter().map(|i| i.name().to_owned()).collect();
        for needed in ["input_ids", "attention_mask"] {
            if !inputs.iter().any(|i| i == needed) {
                return Err(Error::invalid(format!(
                    "{} has no `{needed}` input (inputs: {inputs:?})",
                    model.display()
                )));
            }
        }
        let output = first
            .outputs()
            .first()
            .map(|o| o.name().to_owned())
            .unwrap_or_default();
        let mut e = OnnxEmbedder {
            inner: Arc::new(Inner {
                sessions: all,
                tokenizer,
                pad_id,
                token_type_ids: inputs.iter().any(|i| i == "token_type_ids"),
                output,
            }),
            dimensions: 0,
            provider,
            batch_size,
            name: model_name(&model),
        };
        e.dimensions = e
            .inner
            .embed(&["dimension probe".to_owned()], 1)?
            .first()
            .map(|e| e.vector.len())
            .unwrap_or(0);
        tracing::info!(model = %model.display(), dimensions = e.dimensions, provider, "ONNX embedder loaded");
        Ok(e)
    }
}

#[derive(Debug)]
struct Inner {
    /// One session, or for the quantised model one a thread, each running a share of a call.
    sessions: Vec<Mutex<Session>>,
    tokenizer: Tokenizer,
    /// The id that pads a shorter text to its batch's longest.
    pad_id: u32,
    token_type_ids: bool,
    output: String,
}

impl Inner {
    /// Embeds `texts`, in model runs of at most `batch` texts. The texts are run shortest
    /// first, so that each run holds texts of about one length: a run pads each text to its
    /// longest, and on conversation turns of 5 to 100 tokens, runs in the given order spend
    /// about half their work on padding. The results come back in the order of `texts`.
    fn embed(&self, texts: &[String], batch: usize) -> Result<Vec<Embedded>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| Error::Other {
                context: "tokenising".into(),
                source: e,
            })?;
        let mut order: Vec<usize> = (0..enc.len()).collect();
        order.sort_by_key(|&i| enc[i].len());
        let runs: Vec<&[usize]> = order.chunks(batch.max(1)).collect();
        let share = |k: usize| -> Result<Vec<(usize, Embedded)>> {
            let mut got = Vec::new();
            // Session k takes runs k, k + n, …: as the runs grow longer, each gets its share.
            for run in runs.iter().skip(k).step_by(self.sessions.len()) {
                let encodings: Vec<&Encoding> = run.iter().map(|&i| &enc[i]).collect();
                got.extend(
                    run.iter()
                        .copied()
                        .zip(self.run(&self.sessions[k], &encodings)?),
                );
            }
            Ok(got)
        };
        let shares: Vec<Result<Vec<(usize, Embedded)>>> =
            if self.sessions.len() == 1 || runs.len() == 1 {
                vec![share(0)]
            } else {
                std::thread::scope(|scope| {
                    let workers: Vec<_> = (1..self.sessions.len().min(runs.len()))
                        .map(|k| scope.spawn(move || share(k)))
                        .collect();
                    let mut all = vec![share(0)];
                    all.extend(workers.into_iter().map(|w| {
                        w.join()
                            .unwrap_or_else(|_| Err(Error::invalid("an embedding thread panicked")))
                    }));
                    all
                })
            };
        let mut out: Vec<Option<Embedded>> = (0..enc.len()).map(|_| None).collect();
        for share in shares {
            for (i, e) in share? {
                out[i] = Some(e);
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| Error::invalid("the model returned fewer vectors than texts")))
            .collect()
    }

    /// One model run over `enc`, each padded to the longest: each one's pooled vector, and
    /// its token vectors when the model's output is token states.
    fn run(&self, session: &Mutex<Session>, enc: &[&Encoding]) -> Result<Vec<Embedded>> {
        let (b, len) = (enc.len(), enc.iter().map(|e| e.len()).max().unwrap_or(0));
        let mut ids = Vec::with_capacity(b * len);
        let mut mask = Vec::with_capacity(b * len);
        let mut types = Vec::with_capacity(b * len);
        for e in enc {
            let pad = len - e.len();
            ids.extend(e.get_ids().iter().map(|&x| i64::from(x)));
            ids.extend(std::iter::repeat_n(i64::from(self.pad_id), pad));
            mask.extend(e.get_attention_mask().iter().map(|&x| i64::from(x)));
            mask.extend(std::iter::repeat_n(0, pad));
            types.extend(e.get_type_ids().iter().map(|&x| i64::from(x)));
            types.extend(std::iter::repeat_n(0, pad));
        }
        let shape = [b, len];
        let t = |v: Vec<i64>| {
            Tensor::from_array((shape, v)).map_err(|e| ort_error("building an input tensor", e))
        };
        let mut inputs = ort::inputs!["input_ids" => t(ids)?, "attention_mask" => t(mask.clone())?];
        if self.token_type_ids {
            inputs.push(("token_type_ids".into(), t(types)?.into()));
        }
        let mut session = session
            .lock()
            .map_err(|_| Error::invalid("the ONNX session lock was poisoned"))?;
        let outputs = session
            .run(inputs)
            .map_err(|e| ort_error("running the embedding model", e))?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| Error::invalid(format!("the model has no output `{}`", self.output)))?;
        let (oshape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| ort_error("reading the model output", e))?;
        let dims: Vec<usize> = oshape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect();
        let mut out = Vec::with_capacity(b);
        match dims.as_slice() {
            // Token states: mean over the tokens the mask keeps; the tokens that are not
            // special are the token vectors.
            [ob, ol, h] if *ob == b && *ol == len => {
                for (i, e) in enc.iter().enumerate() {
                    let mut v = vec![0.0f32; *h];
                    let mut n = 0.0f32;
                    let mut tokens = Vec::new();
                    for j in 0..len {
                        if mask[i * len + j] == 0 {
                            continue;
                        }
                        n += 1.0;
                        let row = &data[(i * len + j) * h..(i * len + j + 1) * h];
                        v.iter_mut().zip(row).for_each(|(a, x)| *a += x);
                        if e.get_special_tokens_mask().get(j) == Some(&0) {
                            tokens.extend_from_slice(row);
                        }
                    }
                    v.iter_mut().for_each(|a| *a /= n.max(1e-9));
                    crate::l2_normalize(&mut v);
                    out.push(Embedded {
                        vector: v,
                        tokens: Some(TokenVectors::new(*h, tokens)?),
                    });
                }
            }
            // Already pooled.
            [ob, h] if *ob == b => {
                for i in 0..b {
                    let mut v = data[i * h..(i + 1) * h].to_vec();
                    crate::l2_normalize(&mut v);
                    out.push(Embedded {
                        vector: v,
                        tokens: None,
                    });
                }
            }
            other => {
                return Err(Error::invalid(format!(
                    "unexpected output shape {other:?} for {b} texts of {len} tokens"
                )));
            }
        }
        Ok(out)
    }
}

/// The embedder's name: `onnx:` and the model's folder, then `/` and the file's stem unless it
/// is `model` (`onnx:all-minilm-l6-v2`, `onnx:all-minilm-l6-v2/model-int8`).
fn model_name(model: &std::path::Path) -> String {
    let dir = model
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    match model.file_stem().map(|s| s.to_string_lossy()) {
        Some(stem) if stem != "model" => format!("onnx:{dir}/{stem}"),
        _ => format!("onnx:{dir}"),
    }
}

/// A local sentence embedder on ONNX Runtime. Runs on a blocking thread; one model run at a
/// time per embedder (clone it to share; build several to run in parallel), except on the
/// quantised model, whose sessions each run a share of a call's texts at once.
#[derive(Debug, Clone)]
pub struct OnnxEmbedder {
    inner: Arc<Inner>,
    dimensions: usize,
    provider: Provider,
    batch_size: usize,
    name: String,
}

impl OnnxEmbedder {
    pub fn builder() -> OnnxEmbedderBuilder {
        OnnxEmbedderBuilder::new()
    }

    /// The execution provider the session was given: `"CUDA"` or `"CPU"` (which nodes ran
    /// where: [`OnnxEmbedderBuilder::with_profiling`]).
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Ends the profile asked for with [`OnnxEmbedderBuilder::with_profiling`] and returns its
    /// file (read it with [`super::ProfileSummary::read`]).
    pub fn end_profiling(&self) -> Result<PathBuf> {
        let mut session = self.inner.sessions[0]
            .lock()
            .map_err(|_| Error::invalid("the ONNX session lock was poisoned"))?;
        session
            .end_profiling()
            .map(PathBuf::from)
            .map_err(|e| ort_error("ending the profile", e))
    }

    /// Embeds synchronously (for benchmarks and non-async callers).
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .embed_with_tokens_blocking(texts)?
            .into_iter()
            .map(|e| e.vector)
            .collect())
    }

    /// [`Embedder::embed_with_tokens`], synchronously.
    pub fn embed_with_tokens_blocking(&self, texts: &[String]) -> Result<Vec<Embedded>> {
        self.inner.embed(texts, self.batch_size)
    }

    /// Runs `f` on a blocking thread with a clone of this embedder.
    async fn blocking<T: Send + 'static>(
        &self,
        texts: &[String],
        f: fn(&Self, &[String]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let this = self.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || f(&this, &texts))
            .await
            .map_err(|e| Error::Other {
                context: "the embedding task failed".into(),
                source: Box::new(e),
            })?
    }
}

#[async_trait]
impl Embedder for OnnxEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.blocking(texts, Self::embed_blocking).await
    }

    async fn embed_with_tokens(&self, texts: &[String]) -> Result<Vec<Embedded>> {
        self.blocking(texts, Self::embed_with_tokens_blocking).await
    }
}
