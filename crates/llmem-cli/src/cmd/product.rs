//! What `llmem chat` and `llmem serve` share: the configuration (file, environment, then the
//! flags) and the providers it names, built-in kinds and those of the plugins this binary links
//! ([`plugins`]), with the local SmolLM2 on llama.cpp as the chat model on request.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use llmem::providers::llamacpp::LlamaCppServer;
use llmem::{Config, Plugins, Providers};

/// Where the configuration and the data are: what every command that opens them takes.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// llmem.toml (default: $LLMEM_CONFIG, else ./llmem.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where sessions, long-term memory and API keys persist (overrides tiers.dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// The configuration, with `--dir` applied.
    pub fn config(&self) -> Result<Config> {
        let mut config = Config::discover(self.config.as_deref())?;
        if let Some(d) = &self.dir {
            config.tiers.dir = Some(d.clone());
        }
        Ok(config)
    }
}

#[derive(Debug, clap::Args)]
pub struct ProductArgs {
    #[command(flatten)]
    pub place: ConfigArgs,
    /// Start the local SmolLM2 on llama.cpp as the chat model.
    #[arg(long)]
    pub llamacpp: bool,
}

impl ProductArgs {
    /// The configuration, with `--dir` applied.
    pub fn config(&self) -> Result<Config> {
        self.place.config()
    }

    /// The providers `config` names; with `--llamacpp`, the local server (which the caller
    /// keeps alive as long as it uses the chat model) is started and is the chat model.
    pub async fn providers(&self, config: &Config) -> Result<(Providers, Option<LlamaCppServer>)> {
        let mut providers = Providers::from_config_with(config, &plugins())?;
        if !self.llamacpp {
            return Ok((providers, None));
        }
        let server = LlamaCppServer::builder()
            .start()
            .await
            .context("starting the local llama.cpp server (--llamacpp); run `cargo xtask setup`")?;
        providers.chat = Some(Arc::new(server.chat_model()?));
        Ok((providers, Some(server)))
    }
}

/// The provider kinds `llmem.toml` can name in this binary: the built-in ones and the
/// `ollama` plugin's (chat and embeddings).
pub fn plugins() -> Plugins {
    Plugins::builtin()
        .with_chat_models(llmem_provider_ollama::register)
        .with_embedders(llmem_provider_ollama::register_embedder)
}
