//! Runs llama.cpp's OpenAI-compatible HTTP server (from the `xllamacpp` Python package) as a
//! child process on 127.0.0.1, for a local chat model and summariser without any network.
//!
//! ```text
//! let server = LlamaCppServer::builder().start().await?;     // SmolLM2 from the llmem cache
//! let summarizer = server.summarizer(2048)?;                  // ChatSummarizer over OpenAI-compatible
//! ```
//! The process is stopped when the [`LlamaCppServer`] is dropped (and exits by itself when its
//! parent dies, since it watches its stdin).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmem_core::{ChatModel, ChatSummarizer, Error, Result};

use crate::assets;
use crate::openai::{OpenAi, OpenAiBuilder};

/// The GGUF model used when none is configured, relative to the llmem cache.
pub const DEFAULT_MODEL: &str = "models/smollm2-135m-instruct/model.gguf";

const LAUNCHER: &str = r#"
import sys, threading
import xllamacpp as x
model, port, n_ctx, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
p = x.CommonParams()
p.model.path = model
p.hostnames = ["127.0.0.1"]
p.port = port
p.n_ctx = n_ctx
p.n_parallel = 1
if threads > 0:
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
s = x.Server(p)
print("llmem-llamacpp listening", s.listening_address, flush=True)
sys.stdin.read()  # EOF: the parent is gone
"#;

/// Builds and starts a [`LlamaCppServer`].
#[derive(Debug, Clone)]
pub struct LlamaCppServerBuilder {
    python: Option<PathBuf>,
    model: Option<PathBuf>,
    n_ctx: u32,
    threads: u32,
    startup_timeout: Duration,
}

impl Default for LlamaCppServerBuilder {
    fn default() -> Self {
        LlamaCppServerBuilder {
            python: None,
            model: None,
            n_ctx: 2048,
            threads: 0,
            startup_timeout: Duration::from_secs(120),
        }
    }
}

impl LlamaCppServerBuilder {
    /// The Python with `xllamacpp`: default `$LLMEM_PYTHON`, else `<cache>/venv/bin/python`.
    #[must_use]
    pub fn with_python(mut self, python: impl Into<PathBuf>) -> Self {
        self.python = Some(python.into());
        self
    }

    /// The GGUF file; default SmolLM2-135M-Instruct in the llmem cache.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<PathBuf>) -> Self {
        self.model = Some(model.into());
        self
    }

    #[must_use]
    pub fn with_context(mut self, n_ctx: u32) -> Self {
        self.n_ctx = n_ctx;
        self
    }

    /// CPU threads (0: llama.cpp's default).
    #[must_use]
    pub fn with_threads(mut self, threads: u32) -> Self {
        self.threads = threads;
        self
    }

    #[must_use]
    pub fn with_startup_timeout(mut self, t: Duration) -> Self {
        self.startup_timeout = t;
        self
    }

    fn python(&self) -> Result<PathBuf> {
        if let Some(p) = &self.python {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("LLMEM_PYTHON").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        assets::resolve(
            "the Python environment with xllamacpp",
            None,
            "venv/bin/python",
        )
    }

    /// Starts the server on a free loopback port and waits until `/health` answers.
    pub async fn start(self) -> Result<LlamaCppServer> {
        let python = self.python()?;
        let model = assets::resolve("the GGUF model", self.model.as_deref(), DEFAULT_MODEL)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("finding a free port for llama.cpp", e))?
            .port();
        let log_path =
            std::env::temp_dir().join(format!("llmem-llamacpp-{}-{port}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::io(log_path.display().to_string(), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io(log_path.display().to_string(), e))?;
        let child = Command::new(&python)
            .arg("-c")
            .arg(LAUNCHER)
            .arg(&model)
            .arg(port.to_string())
            .arg(self.n_ctx.to_string())
            .arg(self.threads.to_string())
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| {
                Error::io(
                    format!(
                        "starting {} (run `{}`)",
                        python.display(),
                        assets::SETUP_COMMAND
                    ),
                    e,
                )
            })?;
        let mut server = LlamaCppServer {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            model: model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            log_path,
        };
        server.wait_healthy(self.startup_timeout).await?;
        tracing::info!(url = %server.base_url, model = %model.display(), "llama.cpp server started");
        Ok(server)
    }
}

/// A running llama.cpp server; stopped on drop.
#[derive(Debug)]
pub struct LlamaCppServer {
    child: Child,
    base_url: String,
    model: String,
    log_path: PathBuf,
}

impl LlamaCppServer {
    pub fn builder() -> LlamaCppServerBuilder {
        LlamaCppServerBuilder::default()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    async fn wait_healthy(&mut self, limit: Duration) -> Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/health", self.base_url);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Provider {
                    provider: "llama.cpp".into(),
                    status: None,
                    message: format!(
                        "the server exited ({status}) before it was ready:\n{}",
                        self.log_tail()
                    ),
                    retry_after: None,
                });
            }
            let probe = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(Error::Timeout {
                    what: format!("starting llama.cpp ({})", self.log_tail()),
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An OpenAI-compatible chat model talking to this server.
    pub fn chat_model(&self) -> Result<OpenAi> {
        OpenAiBuilder::compatible(format!("{}/v1", self.base_url))
            .with_model(self.model.clone())
            .build()
    }

    /// A [`ChatSummarizer`] over [`Self::chat_model`].
    pub fn summarizer(&self, context_window: usize) -> Result<ChatSummarizer> {
        let model: Arc<dyn ChatModel> = Arc::new(self.chat_model()?);
        Ok(ChatSummarizer::new(model, context_window))
    }
}

impl Drop for LlamaCppServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}
