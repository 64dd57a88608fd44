//! The tiered memory flow with `MemoryManager`: a sliding window of raw messages
//! (tier 1), a rolling summary once the context passes a small compression threshold (tier 2),
//! and long-term memory (tier 3) that a later question ("What was my API key?") retrieves from,
//! and only then.
//!
//! Run: `eval "$(cargo xtask env)" && cargo run -p llmem --example tiered_conversation`
//! (summaries come from the local SmolLM2 model when its llama.cpp server starts, else they are
//! extractive).

use std::sync::Arc;

use llmem::core::ChatModel;
use llmem::{Config, MemoryManager, Message, Providers};

#[cfg(feature = "http")]
async fn local_chat() -> (
    Option<llmem::providers::llamacpp::LlamaCppServer>,
    Option<Arc<dyn ChatModel>>,
) {
    use llmem::providers::llamacpp::LlamaCppServer;
    match LlamaCppServer::builder().start().await {
        Ok(server) => match server.chat_model() {
            Ok(chat) => {
                println!("summarizer: SmolLM2 via llama.cpp at {}", server.base_url());
                (Some(server), Some(Arc::new(chat) as Arc<dyn ChatModel>))
            }
            Err(e) => {
                println!("note: no chat model ({e}); summaries are extractive");
                (Some(server), None)
            }
        },
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            println!(
                "note: the llama.cpp server did not start ({first}); summaries are extractive"
            );
            (None, None)
        }
    }
}

#[cfg(not(feature = "http"))]
async fn local_chat() -> (Option<()>, Option<Arc<dyn ChatModel>>) {
    println!("note: built without the `http` feature; summaries are extractive");
    (None, None)
}

/// One line, at most `n` characters.
fn short(s: &str, n: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

fn show(messages: &[Message]) {
    for m in messages {
        let text = m.text();
        // Keep retrieved memories whole; shorten the rest.
        let text = if text.starts_with("Relevant memories") {
            text.replace('\n', "\n    ")
        } else {
            short(&text, 160)
        };
        println!("[{}]: {text}", m.role.as_str().to_uppercase());
    }
}

/// The conversation: (user, assistant) turns; the last user message is the question.
const TURNS: &[(&str, &str)] = &[
    (
        "My name is Kha. I am learning AI engineering.",
        "Nice to meet you Kha! What language do you use?",
    ),
    (
        "I mostly use Python, specifically FastAPI for backend and ChromaDB for vector storage.",
        "A solid stack: FastAPI serves the API and ChromaDB keeps the embeddings.",
    ),
    (
        "My API key is 123. Keep it handy for later.",
        "Noted. I will not repeat it unless you ask.",
    ),
    (
        "The /search endpoint of the service returns HTTP 500 since this morning.",
        "Let's check the server logs first. What does the traceback say?",
    ),
    (
        "The traceback ends in a timeout while connecting to the vector database.",
        "Then the database container may be down, or its port changed after an update.",
    ),
    (
        "I restarted the server but the error is still there.",
        "Restarting the API will not help if the database is unreachable. Can you ping its port?",
    ),
    (
        "The port answers, but queries hang for thirty seconds before failing.",
        "That points to a lock or an index rebuild. Check the database's own log for compaction.",
    ),
    (
        "The log shows a compaction running on a collection with two million vectors.",
        "Compaction blocks queries on that collection. Wait for it, or raise the client timeout.",
    ),
    (
        "I raised the client timeout to ninety seconds and the endpoint works again.",
        "Great. Schedule compactions at night so that daytime queries do not hang.",
    ),
    ("What was my API key?", ""),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A tiny threshold (seed: `max_raw_tokens=50`) so that compression triggers after a few turns.
    let config = Config::from_toml_str(
        r#"
        [memory]
        compression_threshold = 220
        short_term_size = 4
        max_context_tokens = 2048
        answer_reserve = 256
        "#,
    )?;
    let (_server, chat) = local_chat().await;
    let mut providers = Providers::default();
    if let Some(c) = chat {
        providers = providers.with_chat(c);
    }
    let mut memory = MemoryManager::new(config, providers)?;
    memory
        .add_message(
            Message::system("You are a concise assistant for an AI engineering student."),
            None,
        )
        .await?;

    let mut api_key_in_window = true;
    for (i, (user, assistant)) in TURNS.iter().enumerate() {
        println!("\n--- Turn {} ---", i + 1);
        println!("[USER]: {user}");
        memory.add_message(Message::user(*user), None).await?;
        report_compression(&memory);
        if assistant.is_empty() {
            break;
        }
        // What the app would send to the model for this turn.
        let prepared = memory.prepare(None).await?;
        println!(
            "(context: {} messages, {} tokens, {} long-term memories loaded)",
            prepared.messages.len(),
            prepared.tokens,
            prepared.retrieved.len()
        );
        println!("[ASSISTANT]: {assistant}");
        memory
            .add_message(Message::assistant(*assistant), None)
            .await?;
        report_compression(&memory);
        api_key_in_window = memory
            .messages()
            .iter()
            .any(|m| m.role == llmem::Role::User && m.text().contains("API key is 123"));
    }

    println!("\n--- Final Context to Send ---");
    let prepared = memory.prepare(None).await?;
    show(&prepared.messages);

    println!("\n--- Retrieved from long-term memory ---");
    for r in &prepared.retrieved {
        println!("{:.2}  {}", r.relevance, r.line());
    }
    let stats = memory.stats();
    let in_context = prepared
        .messages
        .iter()
        .any(|m| m.text().contains("API key is 123"));
    println!(
        "\ncompressions: {}, facts stored: {}, memories stored: {}, context now {} tokens",
        stats.compression_count, stats.facts, stats.memories_stored, stats.current_tokens
    );
    println!(
        "API key statement still raw in the window: {api_key_in_window}; API key 123 in the final context: {in_context}"
    );
    Ok(())
}

fn report_compression(memory: &MemoryManager) {
    if !memory.was_compressed_last_iteration() {
        return;
    }
    let now = memory.counter().count_messages(memory.messages());
    println!(
        "⚠️ Memory Full ({} tokens). Compressing...",
        now + memory.last_compression_savings()
    );
    println!(
        "✅ Compression Complete. Saved {} tokens; {} messages left. New Summary: {}",
        memory.last_compression_savings(),
        memory.messages().len(),
        short(
            memory
                .summary()
                .unwrap_or("(none)")
                .trim_start_matches("Previous conversation summary: "),
            200
        )
    );
}
