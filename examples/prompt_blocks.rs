//! Manual memory management: a prompt of named blocks under a token budget that is
//! summarised, paged out to a store on disk, loaded back by a question, garbage-collected and
//! compiled (`"context, question -> answer"`) by the local SmolLM2 chat model.
//!
//! Run: `eval "$(cargo xtask env)" && cargo run -p llmem --example prompt_blocks`
//! (without the llama.cpp server the LLM steps fall back or are skipped, with a note).

use std::sync::Arc;

use llmem::core::{ChatModel, Filter, MemoryStore, Scope, TokenCounter};
use llmem::{Block, Load, Memory};

const ARTICLE: &str = include_str!("data/squirrels.md");
const QUESTION: &str = "What is the average lifespan of a black squirrel?";

/// The local chat model, if the llama.cpp server starts; the server stops when the guard drops.
#[cfg(feature = "http")]
async fn local_chat() -> (
    Option<llmem::providers::llamacpp::LlamaCppServer>,
    Option<Arc<dyn ChatModel>>,
) {
    use llmem::providers::llamacpp::LlamaCppServer;
    match LlamaCppServer::builder().start().await {
        Ok(server) => match server.chat_model() {
            Ok(chat) => {
                println!(
                    "local chat model: SmolLM2 via llama.cpp at {}",
                    server.base_url()
                );
                (Some(server), Some(Arc::new(chat) as Arc<dyn ChatModel>))
            }
            Err(e) => {
                println!("note: no chat model ({e}); LLM steps are skipped");
                (Some(server), None)
            }
        },
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            println!("note: the llama.cpp server did not start ({first}); LLM steps are skipped");
            (None, None)
        }
    }
}

#[cfg(not(feature = "http"))]
async fn local_chat() -> (Option<()>, Option<Arc<dyn ChatModel>>) {
    println!("note: built without the `http` feature: no local chat model; LLM steps are skipped");
    (None, None)
}

/// The first `n` characters of `s` on one line.
fn short(s: &str, n: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counter: Arc<dyn TokenCounter> =
        llmem::tokens::Counters::embedded()?.for_model("gpt-4o")?;
    let (_server, chat) = local_chat().await;
    let dir = tempfile::tempdir()?;
    let scope = Scope::tenant("squirrel-demo");

    // Step 1: `Memory("A long article about squirrels…", max_tokens)` (seed: 8192; scaled down
    // so the local 2k-context model can summarise it).
    println!("\n--- Step 1: one text block ---");
    let mut prompt = Memory::from_text(counter.clone(), ARTICLE, 1024)?;
    if let Some(c) = &chat {
        prompt = prompt.with_chat(c.clone());
    }
    println!(
        "article: {} paragraphs, {} tokens used, free_memory() = {}",
        prompt.layout().block("text")?.len(),
        prompt.used(),
        prompt.free_memory()
    );

    // Virtual memory: page the full article out to a store on disk before compressing it.
    let db_path = dir.path().join("squirrel_prompt.db");
    let db = Memory::open_db(&db_path)?;
    let saved = prompt.save(&db, &scope).await?;
    println!(
        "save(): {saved} paragraphs written to {}",
        db_path.display()
    );

    // `prompt.summarize(max_tokens)`: the chat model writes it (extractive if there is none).
    let freed = prompt.summarize(256).await?;
    println!(
        "summarize(256): freed {freed} tokens, {} used, free_memory() = {} (>= 1024 - 256: {})",
        prompt.used(),
        prompt.free_memory(),
        prompt.free_memory() >= 1024 - 256
    );
    println!("summary: {}", short(&prompt.text("text")?, 240));
    prompt += "Question: What is the average lifespan of a black squirrel?";
    println!(
        "+= question: {} messages, free_memory() = {}",
        prompt.layout().block("text")?.len(),
        prompt.free_memory()
    );

    // The store is on disk: reopen it as another process would.
    drop(db);
    let db = Memory::open_db(&db_path)?;
    println!(
        "reopened {}: {} records",
        db_path.display(),
        db.count(&scope, &Filter::All).await?
    );

    // Step 2: three blocks with their own budgets (seed: 4096 / 512 / 512).
    println!("\n--- Step 2: context / question / answer blocks ---");
    let mut memory = Memory::new(
        counter.clone(),
        1024,
        vec![
            Block::new("context").with_max_tokens(640),
            Block::new("question").with_max_tokens(64),
            Block::new("answer").with_max_tokens(128),
        ],
    )?;
    if let Some(c) = &chat {
        memory = memory.with_chat(c.clone());
    }
    memory += "Leftover context from an earlier question about oak trees.";
    let cleared = memory.clear("context")?;
    println!("clear(\"context\"): dropped {} message(s)", cleared.len());
    memory.push_text("question", QUESTION)?;

    {
        // `with Memory(...) as prompt:`: the guard releases the context block when it drops.
        let mut m = memory.scoped("context")?;
        let loaded = m
            .load(&db, &scope, QUESTION, "context", Load::FillFree)
            .await?;
        println!(
            "load(query, \"context\", FillFree): {} paragraph(s) loaded, {} relevant left out; free_memory() = {}",
            loaded.loaded,
            loaded.left,
            m.free_memory()
        );
        for (i, msg) in m.layout().block("context")?.messages().iter().enumerate() {
            println!("  context[{i}]: {}", short(&msg.text(), 150));
        }

        m.push_text(
            "context",
            "Reminder: the garden shed needs a new padlock before Friday.",
        )?;
        let dropped = m.gc(QUESTION, &["question"]).await?;
        println!(
            "gc(question, keep [\"question\"]): dropped {dropped} unrelated message(s); context now {} message(s)",
            m.layout().block("context")?.len()
        );

        if chat.is_some() {
            match m.compile("context, question -> answer").await {
                Ok(answer) => println!(
                    "compile(\"context, question -> answer\"): {}",
                    short(&answer.text(), 300)
                ),
                Err(e) => println!("note: compile failed ({e}); skipped"),
            }
        } else {
            println!("note: compile skipped (no local chat model)");
        }
        println!("in scope: {} tokens used", m.used());
    }
    println!(
        "after the scope: context holds {} message(s), {} tokens used, free_memory() = {}",
        memory.layout().block("context")?.len(),
        memory.used(),
        memory.free_memory()
    );
    println!("prompt now: {} message(s) rendered", memory.render().len());
    Ok(())
}
