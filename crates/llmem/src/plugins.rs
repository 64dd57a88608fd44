//! [`Plugins`]: the provider kinds a program can build from `llmem.toml`: the built-in ones of
//! `llmem-providers`, plus those of the plugin crates the program links, each added with the
//! plugin's `register` function.
//!
//! ```no_run
//! # fn demo(my_plugin_register: fn(&mut llmem::core::Registry<dyn llmem::core::ChatModel>)) -> llmem::Result<()> {
//! use llmem::{Config, Plugins, Providers};
//! let plugins = Plugins::builtin().with_chat_models(my_plugin_register);
//! let config = Config::discover(None)?;          // [chat] provider = "mine", [providers.mine] kind = …
//! let providers = Providers::from_config_with(&config, &plugins)?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use llmem_core::{ChatModel, Embedder, Registry, Result, Summarizer};

/// The local embedder: MiniLM on ONNX Runtime, from the assets `cargo xtask setup` installs
/// (`$LLMEM_CACHE_DIR`, `ORT_DYLIB_PATH`). An error says what is missing: the `onnx` feature
/// in this build, or the model and runtime (and the command that installs them).
pub fn local_embedder() -> Result<Arc<dyn Embedder>> {
    #[cfg(feature = "onnx")]
    {
        Ok(Arc::new(
            llmem_providers::onnx::OnnxEmbedder::builder().build()?,
        ))
    }
    #[cfg(not(feature = "onnx"))]
    {
        Err(llmem_core::Error::config(
            "embedder",
            "this build has no local embedder: build llmem with the `onnx` feature",
        ))
    }
}

use crate::config::Config;

/// Registries of provider factories by `kind`, for the `[chat]`, `[embedder]` and
/// `[summarizer]` sections and the `[providers.<name>]` tables they name.
#[derive(Debug)]
pub struct Plugins {
    chat: Registry<dyn ChatModel>,
    embedders: Registry<dyn Embedder>,
    summarizers: Registry<dyn Summarizer>,
}

impl Default for Plugins {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Plugins {
    /// The kinds built into `llmem-providers` (those of disabled features answer with the
    /// feature to turn on).
    pub fn builtin() -> Self {
        Plugins {
            chat: llmem_providers::chat_registry(),
            embedders: llmem_providers::embedder_registry(),
            summarizers: llmem_providers::summarizer_registry(),
        }
    }

    /// Adds a plugin's chat models (its `register(&mut Registry<dyn ChatModel>)`).
    #[must_use]
    pub fn with_chat_models(mut self, register: impl FnOnce(&mut Registry<dyn ChatModel>)) -> Self {
        register(&mut self.chat);
        self
    }

    /// Adds a plugin's embedders.
    #[must_use]
    pub fn with_embedders(mut self, register: impl FnOnce(&mut Registry<dyn Embedder>)) -> Self {
        register(&mut self.embedders);
        self
    }

    /// Adds a plugin's summarizers.
    #[must_use]
    pub fn with_summarizers(
        mut self,
        register: impl FnOnce(&mut Registry<dyn Summarizer>),
    ) -> Self {
        register(&mut self.summarizers);
        self
    }

    /// The chat kinds known, for help texts and errors.
    pub fn chat_kinds(&self) -> Vec<&str> {
        self.chat.kinds()
    }

    /// The embedder kinds known.
    pub fn embedder_kinds(&self) -> Vec<&str> {
        self.embedders.kinds()
    }

    /// The chat model `[chat]` describes, if any.
    pub fn chat_model(&self, config: &Config) -> Result<Option<Arc<dyn ChatModel>>> {
        config
            .provider_table("chat")?
            .map(|t| self.chat.build(&t))
            .transpose()
    }

    /// The embedder `[embedder]` describes, if any.
    pub fn embedder(&self, config: &Config) -> Result<Option<Arc<dyn Embedder>>> {
        config
            .provider_table("embedder")?
            .map(|t| self.embedders.build(&t))
            .transpose()
    }

    /// The summarizer `[summarizer]` describes, if any.
    pub fn summarizer(&self, config: &Config) -> Result<Option<Arc<dyn Summarizer>>> {
        config
            .provider_table("summarizer")?
            .map(|t| self.summarizers.build(&t))
            .transpose()
    }
}
