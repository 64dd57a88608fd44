//! `llmem chat`: an interactive chat with any configured provider, through a [`MemoryManager`]:
//! each prompt is budgeted, old turns are summarised, facts are remembered and recalled. Lines
//! starting with `/` are commands: `/stats`, `/context`, `/search TEXT`, `/quit`.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use futures::StreamExt;
use llmem::Sessions;
use llmem::core::{ChatRequest, Message};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub product: super::product::ProductArgs,
    /// A system prompt for a new session.
    #[arg(long)]
    pub system: Option<String>,
    /// The user whose memories this is.
    #[arg(long, default_value = "me")]
    pub user: String,
    /// The session (resumed when `tiers.dir` or --dir keeps it).
    #[arg(long, default_value = "chat")]
    pub session: String,
}

pub async fn run(args: Args) -> Result<()> {
    let config = args.product.config()?;
    let (providers, _local) = args.product.providers(&config).await?;
    let chat = providers
        .chat
        .clone()
        .context("no chat model: configure [chat] in llmem.toml or pass --llamacpp")?;
    let sessions = Sessions::new(config, providers)?;
    let handle = sessions.get(&args.user, &args.session)?;
    let mut m = handle.lock().await;
    if let Some(s) = &args.system
        && m.messages().is_empty()
    {
        m.add_message(Message::system(s.clone()), None).await?;
    }
    eprintln!(
        "llmem chat with {} ({}); {} messages in this session. /stats /context /search TEXT /quit",
        chat.name(),
        chat.model(),
        m.messages().len()
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.context("reading stdin")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once(' ').map_or((line, ""), |(a, b)| (a, b)) {
            ("/quit" | "/exit", _) => break,
            ("/stats", _) => {
                println!("{}", serde_json::to_string_pretty(&m.stats())?);
                continue;
            }
            ("/context", _) => {
                for msg in m.messages() {
                    println!("[{}] {}", msg.role.as_str(), msg.text());
                }
                continue;
            }
            ("/search", q) => {
                for h in m.search(q, 5).await? {
                    println!("{:.2} {}", h.score, h.record.text);
                }
                continue;
            }
            _ => {}
        }
        m.add_message(Message::user(line), None).await?;
        let prepared = m.prepare(None).await?;
        if !prepared.retrieved.is_empty() {
            eprintln!("(recalled {} memories)", prepared.retrieved.len());
        }
        let request = ChatRequest::new(prepared.messages)
            .with_max_tokens(m.config().memory.answer_reserve as u32);
        let mut text = String::new();
        let mut usage = None;
        match chat.chat_stream(request.clone()).await {
            Ok(mut stream) => {
                while let Some(c) = stream.next().await {
                    let c = c?;
                    print!("{}", c.delta);
                    out.flush()?;
                    text.push_str(&c.delta);
                    usage = c.usage.or(usage);
                }
                println!();
            }
            Err(llmem::Error::Unsupported { .. }) => {
                let r = chat.chat(request).await?;
                text = r.message.text();
                usage = r.usage;
                println!("{text}");
            }
            Err(e) => return Err(e.into()),
        }
        m.add_message(Message::assistant(text), usage).await?;
        if m.was_compressed_last_iteration() {
            eprintln!(
                "(compressed: {} tokens saved)",
                m.last_compression_savings()
            );
        }
    }
    let s = m.stats();
    eprintln!(
        "--- Memory Statistics ---\nTotal tokens: {}\nCompressions: {}\nNet savings: {} tokens ({:.1}%)\nTotal cost: ${:.4}",
        s.current_tokens, s.compression_count, s.net_savings, s.savings_percentage, s.total_cost
    );
    Ok(())
}
