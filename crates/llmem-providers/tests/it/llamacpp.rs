//! The real SmolLM2-135M-Instruct served by llama.cpp (xllamacpp) as a child process, used
//! through the OpenAI-compatible provider and `ChatSummarizer`.

use llmem_core::test_kit::{chat_conformance, summarizer_conformance};
use llmem_providers::llamacpp::LlamaCppServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_on_llamacpp_passes_chat_and_summarizer_conformance() {
    let server = LlamaCppServer::builder()
        .start()
        .await
        .unwrap_or_else(|e| panic!("could not start llama.cpp with SmolLM2: {e}\n(run `cargo xtask setup` and `eval \"$(cargo xtask env)\"`)"));
    let model = server.chat_model().unwrap();
    chat_conformance(&model).await;
    let summarizer = server.summarizer(2048).unwrap();
    summarizer_conformance(&summarizer).await;
    let url = server.base_url().to_owned();
    drop(server);
    // Stopped on drop.
    let gone = reqwest_free_probe(&url).await;
    assert!(gone, "the server still answers after drop");
}

async fn reqwest_free_probe(url: &str) -> bool {
    let addr = url.trim_start_matches("http://").to_owned();
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}
