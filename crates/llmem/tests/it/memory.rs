//! `Memory`, the prompt of blocks: summarise to a budget, save and load through a store on disk, `gc`,
//! the scope guard, and `compile` with the real SmolLM2.
use std::sync::Arc;

use llmem::core::{ChatModel, Message, Scope};
use llmem::providers::llamacpp::LlamaCppServer;
use llmem::{Block, Load, Memory};

use crate::{conversation, gpt4o};

fn transcript() -> String {
    conversation()
        .iter()
        .skip(1)
        .map(Message::text)
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn blocks() -> Memory {
    Memory::new(
        gpt4o(),
        1400,
        vec![
            Block::new("context").with_max_tokens(1024),
            Block::new("question").with_max_tokens(128),
            Block::new("answer").with_max_tokens(128),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn a_text_is_summarised_into_its_budget_and_frees_memory() {
    let text = transcript();
    let mut prompt = Memory::from_text(gpt4o(), &text, 8192).unwrap();
    let before = prompt.free_memory();
    assert!(prompt.used() > 2000, "{}", prompt.used());
    let freed = prompt.summarize(500).await.unwrap();
    assert!(freed > 1500, "{freed}");
    assert!(prompt.used() <= 520, "{}", prompt.used());
    assert_eq!(prompt.free_memory(), before + freed);
    assert!(prompt.free_memory() >= 8192 - 520);
    prompt += "Question: what is the name of Priya's dog?";
    assert!(
        prompt
            .text("text")
            .unwrap()
            .ends_with("Question: what is the name of Priya's dog?")
    );
    assert!(prompt.layout_mut().take_rejected().is_empty());
}

#[tokio::test]
async fn save_load_gc_and_a_scope_guard() {
    let dir = tempfile::tempdir().unwrap();
    let scope = Scope::tenant("reader");
    let text = transcript();
    let n = {
        let prompt = Memory::from_text(gpt4o(), &text, 16_000).unwrap();
        let db = Memory::open_db(dir.path().join("priya.db")).unwrap();
        prompt.save(&db, &scope).await.unwrap()
    };
    assert!(n >= 70, "{n}");
    // Reopened from disk, loaded by a query into the context block.
    let db = Memory::open_db(dir.path().join("priya.db")).unwrap();
    let mut memory = blocks();
    memory
        .push_text("context", "Unrelated: the weather in Oslo was grey.")
        .unwrap();
    let q = "Where does Priya's sister Anjali live?";
    let loaded = memory
        .load(&db, &scope, q, "context", Load::Overwrite)
        .await
        .unwrap();
    assert!(loaded.loaded >= 1);
    let context = memory.text("context").unwrap();
    assert!(context.contains("Porto"), "{context}");
    assert!(
        !context.contains("Oslo"),
        "Overwrite clears the block first"
    );
    assert!(memory.layout().block("context").unwrap().used() <= 1024);
    // gc drops what is unrelated to the question, keeps the rest and the question block.
    memory
        .push_text("context", "Bananas are rich in potassium.")
        .unwrap();
    memory.push_text("question", q).unwrap();
    let dropped = memory.gc(q, &[]).await.unwrap();
    assert!(dropped >= 1);
    let context = memory.text("context").unwrap();
    assert!(
        !context.contains("Bananas") && context.contains("Porto"),
        "{context}"
    );
    assert_eq!(memory.text("question").unwrap(), q);
    // The guard releases the block's tokens when it goes.
    let used = memory.used();
    {
        let mut scoped = memory.scoped("answer").unwrap();
        scoped.push_text("answer", "a draft answer").unwrap();
        assert!(scoped.used() > used);
    }
    assert_eq!(memory.used(), used);
    assert!(memory.text("answer").unwrap().is_empty());
    let e = memory.scoped("nope").unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_fills_the_answer_block_with_the_model() {
    let mut memory = blocks();
    let e = memory
        .compile("context, question -> answer")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("with_chat"), "{e}");
    let server = LlamaCppServer::builder().start().await.unwrap_or_else(|e| {
        panic!("could not start llama.cpp with SmolLM2: {e}\n(run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`)")
    });
    let chat: Arc<dyn ChatModel> = Arc::new(server.chat_model().unwrap());
    let mut memory = blocks().with_chat(chat);
    memory
        .push_text(
            "context",
            "Priya's dog is a beagle called Biscuit. He is three years old.",
        )
        .unwrap();
    memory
        .push_text("question", "What is the name of Priya's dog?")
        .unwrap();
    let answer = memory.compile("context, question -> answer").await.unwrap();
    assert!(!answer.text().trim().is_empty());
    assert_eq!(memory.text("answer").unwrap(), answer.text());
    assert!(memory.layout().block("answer").unwrap().used() <= 128);
    for (sig, want) in [
        ("context question", "input, input -> output"),
        ("context, nothing -> answer", "nothing"),
        ("context -> nowhere", "nowhere"),
    ] {
        let e = memory.compile(sig).await.unwrap_err().to_string();
        assert!(e.contains(want), "{sig}: {e}");
    }
}

/// The real MiniLM embedder, counting the texts it is asked to embed.
#[cfg(feature = "onnx")]
#[derive(Debug)]
struct Counting {
    inner: llmem::providers::onnx::OnnxEmbedder,
    texts: std::sync::atomic::AtomicUsize,
}

#[cfg(feature = "onnx")]
#[async_trait::async_trait]
impl llmem::core::Embedder for Counting {
    fn name(&self) -> &str {
        "counting-minilm"
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    async fn embed(&self, texts: &[String]) -> llmem::Result<Vec<Vec<f32>>> {
        self.texts
            .fetch_add(texts.len(), std::sync::atomic::Ordering::Relaxed);
        self.inner.embed(texts).await
    }
}

#[cfg(feature = "onnx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_scores_the_prompt_in_the_hot_tier_on_onnx_runtime_embedding_each_message_once() {
    use llmem::providers::onnx::{OnnxEmbedderBuilder, OnnxScorer};
    use std::sync::atomic::Ordering;

    let embedder = Arc::new(Counting {
        inner: OnnxEmbedderBuilder::from_env()
            .with_threads(2)
            .build()
            .unwrap_or_else(|e| panic!("the ONNX embedder could not load: {e}\nRun `cargo xtask setup`, then `eval \"$(cargo xtask env)\"`.")),
        texts: Default::default(),
    });
    let fill = |m: &mut Memory| {
        for t in [
            "Priya's sister Anjali moved to Porto last spring.",
            "Anjali lives near the river in Porto with her two cats.",
            "Bananas are rich in potassium.",
            "The quarterly tax forms are due at the end of the month.",
        ] {
            m.push_text("context", t).unwrap();
        }
    };
    let q = "Where does Priya's sister Anjali live?";
    let mut on_engine = blocks()
        .with_embedder(embedder.clone())
        .with_scorer(Arc::new(OnnxScorer::new(None).unwrap().threads(2)));
    let mut on_cpu = blocks().with_embedder(embedder.clone());
    fill(&mut on_engine);
    fill(&mut on_cpu);
    let before = embedder.texts.load(Ordering::Relaxed);
    let dropped = on_engine.gc(q, &[]).await.unwrap();
    assert_eq!(
        embedder.texts.load(Ordering::Relaxed) - before,
        5,
        "four messages and the question"
    );
    assert_eq!(dropped, on_cpu.gc(q, &[]).await.unwrap());
    let context = on_engine.text("context").unwrap();
    assert_eq!(context, on_cpu.text("context").unwrap());
    assert!(
        context.contains("Porto") && !context.contains("Bananas"),
        "{context}"
    );
    assert!(dropped >= 1);

    // The next gc embeds only the new message and the question; the old ones are held.
    on_engine
        .push_text("context", "Anjali works as an architect in Porto.")
        .unwrap();
    let before = embedder.texts.load(Ordering::Relaxed);
    on_engine.gc(q, &[]).await.unwrap();
    assert_eq!(embedder.texts.load(Ordering::Relaxed) - before, 2);
    assert!(on_engine.text("context").unwrap().contains("architect"));
}
