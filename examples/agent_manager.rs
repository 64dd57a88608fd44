//! The memory manager of a long-running agent: `Config` from TOML (the `aggressive`
//! preset with overrides), a 77-message conversation fed through `MemoryManager` with the
//! provider's actual token usage on some replies, and the "Memory Statistics" block.
//!
//! Run: `cargo run -p llmem --example agent_manager` (no model needed: summaries are
//! extractive here; set `summarizer = "auto"` and pass a chat model for LLM summaries).

use llmem::{Config, MemoryManager, Message, Role, Usage};

const CONVERSATION: &str = include_str!("data/conversation.jsonl");

/// `45234` as `45,234`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // An agent's llmem.toml: the aggressive preset, with the threshold
    // scaled to this ~3,500-token conversation (the preset's is 30,000).
    let config = Config::from_toml_str(
        r#"
        preset = "aggressive"

        [memory]
        compression_threshold = 1000
        summarizer = "extractive"
        "#,
    )?;
    let m = &config.memory;
    println!(
        "config: preset {:?}, threshold {} tokens, ratio {}, short-term {} messages, strategy {:?}, model {}",
        config.preset,
        m.compression_threshold,
        m.compression_ratio,
        m.short_term_size,
        m.compression_strategy,
        m.model
    );

    let mut messages = Vec::new();
    for (i, line) in CONVERSATION.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let msg: Message = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("conversation.jsonl line {}: {e}", i + 1))?;
        messages.push(msg);
    }
    println!("conversation: {} messages", messages.len());

    let mut memory = MemoryManager::new(config, llmem::Providers::default())?;
    let mut last_prompt = 0usize;
    let mut replies = 0usize;
    for msg in messages {
        match msg.role {
            Role::Assistant => {
                // Every other reply carries the provider's reported usage (as from
                // `response.usage`); the others are estimated by llmem's own counter.
                replies += 1;
                let usage = replies.is_multiple_of(2).then(|| Usage {
                    input_tokens: last_prompt as u64,
                    output_tokens: memory.counter().count(&msg.text()) as u64,
                    cached_input_tokens: 0,
                });
                memory.add_message(msg, usage).await?;
            }
            Role::User => {
                memory.add_message(msg, None).await?;
                if memory.was_compressed_last_iteration() {
                    println!(
                        "[Compressed: saved {} tokens]",
                        memory.last_compression_savings()
                    );
                }
                // The agent asks for its context before calling the model.
                last_prompt = memory.prepare(None).await?.tokens;
                continue;
            }
            _ => memory.add_message(msg, None).await?,
        }
        if memory.was_compressed_last_iteration() {
            println!(
                "[Compressed: saved {} tokens]",
                memory.last_compression_savings()
            );
        }
    }

    let stats = memory.stats();
    println!("\n--- Memory Statistics ---");
    println!("Total tokens: {}", thousands(stats.sent_tokens as i64));
    println!("Compressions: {}", stats.compression_count);
    println!(
        "Net savings: {} tokens ({:.1}%)",
        thousands(stats.net_savings),
        stats.savings_percentage
    );
    println!("Total cost: ${:.4}", stats.total_cost);

    println!("\n--- Details ---");
    println!(
        "requests: {}, messages: {}, tokens without memory: {}, context now: {} tokens in {} messages",
        stats.requests,
        stats.messages,
        thousands(stats.full_history_tokens as i64),
        stats.current_tokens,
        memory.messages().len()
    );
    println!(
        "cost without memory: ${:.4}, saved: ${:.4}; facts: {}, memories stored: {}, retrieved: {}",
        stats.full_history_cost,
        stats.net_cost,
        stats.facts,
        stats.memories_stored,
        stats.retrieved
    );
    if let Some(summary) = memory.summary() {
        let flat = summary.split_whitespace().collect::<Vec<_>>().join(" ");
        let cut = flat.char_indices().nth(160).map_or(flat.len(), |(i, _)| i);
        println!("summary: {}…", &flat[..cut]);
    }
    Ok(())
}
