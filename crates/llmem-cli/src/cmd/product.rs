//! What `llmem chat` and `llmem serve` share: the configuration (file, environment, then the
//! flags) and the providers it names, with the local SmolLM2 on llama.cpp as the chat model on
//! request.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use llmem::providers::llamacpp::LlamaCppServer;
use llmem::{Config, Providers};

#[derive(Debug, clap::Args)]
pub struct ProductArgs {
    /// llmem.toml (default: $LLMEM_CONFIG, else ./llmem.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where sessions and long-term memory persist (overrides tiers.dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Start the local SmolLM2 on llama.cpp as the chat model.
    #[arg(long)]
    pub llamacpp: bool,
}

impl ProductArgs {
    /// The configuration, with `--dir` applied.
    pub fn config(&self) -> Result<Config> {
        let mut config = Config::discover(self.config.as_deref())?;
        if let Some(d) = &self.dir {
            config.tiers.dir = Some(d.clone());
        }
        Ok(config)
    }

    /// The providers `config` names; with `--llamacpp`, the local server (which the caller
    /// keeps alive as long as it uses the chat model) is started and is the chat model.
    pub async fn providers(&self, config: &Config) -> Result<(Providers, Option<LlamaCppServer>)> {
        let mut providers = Providers::from_config(config)?;
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
