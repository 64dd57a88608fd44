//! Registers the Ollama plugin by name next to nothing else and builds it from TOML config.
//! Run with a local Ollama: `cargo run -p llmem-provider-ollama --example registry`.

use llmem_core::{ChatModel, ChatRequest, Message, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config: toml::Table = toml::from_str(
        r#"
[providers.local]
kind = "ollama"
base_url = "http://127.0.0.1:11434"
model = "llama3.2"
"#,
    )?;
    let mut registry: Registry<dyn ChatModel> = Registry::new("provider");
    llmem_provider_ollama::register(&mut registry);
    let section = config["providers"].as_table().ok_or("no [providers]")?;
    let providers = registry.build_all(section)?;
    let local = &providers["local"];
    println!("built `{}` with model `{}`", local.name(), local.model());
    match local
        .chat(ChatRequest::new(vec![Message::user("Say hello.")]))
        .await
    {
        Ok(r) => println!("{}", r.message.text()),
        Err(e) => println!("(is Ollama running?) {e}"),
    }
    Ok(())
}
