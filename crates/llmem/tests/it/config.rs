//! `Config`: presets, the file, `LLMEM_*` overrides, and errors that name the key.
use llmem::Config;
use llmem::compress::{Preset, Strategy};
use llmem::{FactMode, RetrievalScope};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn err(toml: Option<&str>, vars: &[(&str, &str)]) -> String {
    match Config::from_sources(toml, env(vars)) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_seed_002s_balanced_numbers() {
    let c = Config::from_toml_str("").unwrap();
    assert!(c.memory.enabled);
    assert_eq!(c.memory.compression_threshold, 40_000);
    assert_eq!(c.memory.short_term_size, 20);
    assert_eq!(c.memory.compression_ratio, 0.3);
    assert_eq!(c.memory.compression_strategy, Strategy::SlidingWindow);
    assert!(c.memory.preserve_system_prompts && c.memory.preserve_tool_calls);
    assert_eq!(c, Config::default());
}

#[test]
fn a_preset_is_the_base_that_the_file_and_then_the_environment_refine() {
    let toml = r#"
        preset = "conservative"
        [memory]
        short_term_size = 12
        [retrieval]
        scope = "session"
    "#;
    let c = Config::from_sources(Some(toml), env(&[])).unwrap();
    assert_eq!(c.preset, Some(Preset::Conservative));
    assert_eq!(c.memory.compression_threshold, 60_000);
    assert_eq!(c.memory.compression_ratio, 0.5);
    assert_eq!(c.memory.compression_strategy, Strategy::Selective);
    assert_eq!(
        c.memory.short_term_size, 12,
        "the file wins over the preset"
    );
    assert_eq!(c.retrieval.scope, RetrievalScope::Session);

    let c = Config::from_sources(
        Some(toml),
        env(&[
            ("LLMEM_MEMORY_SHORT_TERM_SIZE", "7"),
            ("LLMEM_MEMORY_ENABLED", "false"),
            ("LLMEM_MEMORY_FACTS", "off"),
            ("LLMEM_MEMORY_MODEL", "claude-3-5-haiku"),
            ("LLMEM_SERVER_TOKEN", "12345"),
            ("LLMEM_CHAT_KIND", "openai-compatible"),
            ("LLMEM_CHAT_BASE_URL", "http://127.0.0.1:9/v1"),
            ("LLMEM_LOG", "debug"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.memory.short_term_size, 7,
        "the environment wins over the file"
    );
    assert!(!c.memory.enabled);
    assert_eq!(c.memory.facts, FactMode::Off);
    assert_eq!(c.memory.model, "claude-3-5-haiku");
    assert_eq!(
        c.server.token.as_deref(),
        Some("12345"),
        "a string key stays a string"
    );
    let chat = c.chat.as_ref().unwrap();
    assert_eq!(chat["kind"].as_str(), Some("openai-compatible"));
    assert_eq!(chat["base_url"].as_str(), Some("http://127.0.0.1:9/v1"));
    // The environment can also choose the preset.
    let c = Config::from_sources(None, env(&[("LLMEM_PRESET", "aggressive")])).unwrap();
    assert_eq!(c.memory.compression_threshold, 30_000);
    assert_eq!(c.memory.short_term_size, 10);
}

/// `[budget]` reads from the file and the environment; bad limits name their key.
#[test]
fn the_budget_section_reads_from_the_file_and_the_environment() {
    let c = Config::default();
    assert_eq!(c.budget.max_cost_usd, None);
    assert_eq!(c.budget.alarm_at, [0.5, 0.8]);
    assert_eq!(c.budget.per, llmem::BudgetScope::Session);
    assert!(c.budget.hard_stop && !c.budget.limited());
    let c = Config::from_sources(
        Some("[budget]\nmax_cost_usd = 5.0\nper = \"user\"\n"),
        env(&[
            ("LLMEM_BUDGET_MAX_TOKENS", "200000"),
            ("LLMEM_BUDGET_ALARM_AT", "[0.25, 0.9]"),
            ("LLMEM_BUDGET_PER", "total"),
            ("LLMEM_BUDGET_HARD_STOP", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(c.budget.max_cost_usd, Some(5.0));
    assert_eq!(c.budget.max_tokens, Some(200_000));
    assert_eq!(c.budget.alarm_at, [0.25, 0.9]);
    assert_eq!(c.budget.per, llmem::BudgetScope::Total);
    assert!(!c.budget.hard_stop && c.budget.limited());
    let e = err(Some("[budget]\nmax_cost_usd = -1.0\n"), &[]);
    assert!(e.contains("budget.max_cost_usd"), "{e}");
    let e = err(None, &[("LLMEM_BUDGET_MAX_TOKENS", "0")]);
    assert!(e.contains("budget.max_tokens"), "{e}");
    let e = err(Some("[budget]\nalarm_at = [0.5, 1.5]\n"), &[]);
    assert!(e.contains("budget.alarm_at") && e.contains("(0, 1]"), "{e}");
    let e = err(Some("[budget]\nper = \"team\"\n"), &[]);
    assert!(e.contains("budget.per"), "{e}");
    let e = err(Some("[budget]\nmax_usd = 1.0\n"), &[]);
    assert!(e.contains("budget.max_usd"), "{e}");
}

#[test]
fn unknown_keys_and_bad_values_are_rejected_with_the_key_named() {
    let e = err(Some("[memory]\ncompresion_threshold = 10\n"), &[]);
    assert!(e.contains("memory.compresion_threshold"), "{e}");
    let e = err(Some("colour = 1\n"), &[]);
    assert!(e.contains("colour"), "{e}");
    let e = err(Some("[memory]\nshort_term_size = \"twenty\"\n"), &[]);
    assert!(e.contains("memory.short_term_size"), "{e}");
    let e = err(Some("[memory]\ncompression_strategy = \"zip\"\n"), &[]);
    assert!(e.contains("memory.compression_strategy"), "{e}");
    let e = err(Some("[memory]\ncompression_ratio = 1.5\n"), &[]);
    assert!(
        e.contains("memory.compression_ratio") && e.contains("(0, 1]"),
        "{e}"
    );
    let e = err(None, &[("LLMEM_RETRIEVAL_QUESTION_WEIGHT", "0")]);
    assert!(
        e.contains("retrieval.question_weight") && e.contains("(0, 1]"),
        "{e}"
    );
    let e = err(Some("[retrieval]\nsession_weight = 1.5\n"), &[]);
    assert!(
        e.contains("retrieval.session_weight") && e.contains("[0, 1]"),
        "{e}"
    );
    let e = err(None, &[("LLMEM_RETRIEVAL_VECTOR_WEIGHT", "-0.1")]);
    assert!(
        e.contains("retrieval.vector_weight")
            && e.contains("[0, 1]")
            && e.contains("by words alone"),
        "{e}"
    );
    let e = err(None, &[("LLMEM_RETRIEVAL_RECALL_GATE", "1.2")]);
    assert!(
        e.contains("retrieval.recall_gate") && e.contains("[0, 1]"),
        "{e}"
    );
    let e = err(Some("[retrieval]\ntaxonomy = \" \"\n"), &[]);
    assert!(e.contains("retrieval.taxonomy") && e.contains("off"), "{e}");
    let e = err(Some("preset = \"extreme\"\n"), &[]);
    assert!(e.contains("preset"), "{e}");
    let e = err(None, &[("LLMEM_MEMORY_SHORT_TERM", "3")]);
    assert!(e.contains("memory.short_term"), "{e}");
    let e = err(None, &[("LLMEM_MEMORY_ENABLED", "perhaps")]);
    assert!(e.contains("memory.enabled"), "{e}");
    let e = err(None, &[("LLMEM_SERVER_LISTEN", "localhost")]);
    assert!(e.contains("server.listen"), "{e}");
    let e = err(Some("[memory]\ncompression_threshold = 200000\n"), &[]);
    assert!(e.contains("memory.compression_threshold"), "{e}");
    let e = err(Some("[memory]\nfacts = \"llm\"\n"), &[]);
    assert!(e.contains("memory.facts") && e.contains("[chat]"), "{e}");
    let e = err(Some("[memory\n"), &[]);
    assert!(e.contains("llmem.toml"), "{e}");
    let e = err(Some("[tiers]\ncold = true\n"), &[]);
    assert!(e.contains("tiers.cold") && e.contains("tiers.dir"), "{e}");
    let e = err(None, &[("LLMEM_TIERS_GLACIER", " ")]);
    assert!(e.contains("tiers.glacier"), "{e}");
    let e = err(
        Some("[tiers]\ndir = \"x\"\ncold = true\ndimensions = 0\n"),
        &[],
    );
    assert!(e.contains("tiers.dimensions") || e.contains("lance"), "{e}");
}

#[test]
fn the_tiers_section_reads_from_the_file_and_the_environment() {
    let c = Config::from_sources(
        Some("[tiers]\ndir = \"data\"\nwarm_max_items = 500\nwarm_to_cold_hours = 0\n"),
        env(&[
            ("LLMEM_TIERS_GLACIER", "s3://bucket/llmem"),
            ("LLMEM_TIERS_PROMOTE_AFTER_READS", "5"),
            ("LLMEM_GLACIER_KEY", "not a setting of this file"),
        ]),
    );
    // The glacier tier needs the `glacier` feature; without it the error says so.
    let c = match c {
        Ok(c) => c,
        Err(e) if !cfg!(feature = "glacier") => {
            assert!(e.to_string().contains("glacier"), "{e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let t = &c.tiers;
    assert_eq!(t.warm_max_items, Some(500));
    assert_eq!(t.glacier.as_deref(), Some("s3://bucket/llmem"));
    assert_eq!(t.promote_after_reads, 5);
    assert!(t.tiered() && !t.cold);
    #[cfg(feature = "internals")]
    {
        let p = llmem::internals::policy(t);
        assert_eq!(p.warm_to_cold, None, "0 turns the threshold off");
        assert_eq!(
            p.cold_to_glacier,
            Some(std::time::Duration::from_secs(30 * 24 * 3600))
        );
        assert_eq!(p.promote_after_accesses, Some(5));
    }
    assert!(!Config::default().tiers.tiered(), "warm alone by default");
}

#[test]
fn debug_output_never_shows_secrets() {
    let c = Config::from_sources(
        Some("[chat]\nkind = \"openai\"\napi_key = \"sk-secret-1\"\n[server]\ntoken = \"tok-secret-2\"\n"),
        env(&[]),
    )
    .unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("sk-secret-1") && !shown.contains("tok-secret-2"),
        "{shown}"
    );
    assert!(shown.contains("openai"));
}

#[test]
fn a_file_is_read_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("llmem.toml");
    std::fs::write(&p, "[retrieval]\nk = 9\n").unwrap();
    assert_eq!(Config::load(Some(&p)).unwrap().retrieval.k, 9);
    let missing = dir.path().join("nope.toml");
    let e = Config::load(Some(&missing)).unwrap_err().to_string();
    assert!(e.contains("nope.toml"), "{e}");
}

/// The ```toml blocks of a Markdown text (or of `//!` doc comments), with their line numbers.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        let line = line
            .strip_prefix("//!")
            .map_or(line, |l| l.strip_prefix(' ').unwrap_or(l));
        match &mut open {
            None if line.trim_end() == "```toml" => open = Some((i + 1, String::new())),
            Some(_) if line.trim_end() == "```" => out.extend(open.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Every `llmem.toml` the documentation shows is one `Config` reads: each key the docs name
/// exists, with a value of its type. A Cargo manifest or a model catalog is not a config file
/// and is skipped.
#[test]
fn every_toml_block_in_the_docs_is_a_config_that_loads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![
        root.join("README.md"),
        root.join("crates/llmem/src/config.rs"),
    ];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, block) in toml_blocks(&text) {
            // A Cargo manifest's or a model catalog's tables.
            let other = block.lines().any(|l| {
                let l = l.trim();
                l == "[package]"
                    || l == "[dependencies]"
                    || l.starts_with("[workspace")
                    || l == "[[model]]"
            });
            if other {
                continue;
            }
            if let Err(e) = Config::from_toml_str(&block) {
                panic!("{}:{line}: {e}\n{block}", file.display());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "only {checked} config blocks found in the docs"
    );
}

#[test]
fn a_section_names_a_provider_table_and_errors_name_what_is_missing() {
    let c = Config::from_toml_str(
        r#"
[providers.local]
kind = "ollama"
model = "llama3.2"

[chat]
provider = "local"
timeout_secs = 30

[embedder]
kind = "onnx-embedder"
"#,
    )
    .unwrap();
    let chat = c.provider_table("chat").unwrap().unwrap();
    assert_eq!(chat["kind"].as_str(), Some("ollama"));
    assert_eq!(chat["model"].as_str(), Some("llama3.2"));
    assert_eq!(chat["timeout_secs"].as_integer(), Some(30));
    assert!(!chat.contains_key("provider"));
    assert_eq!(
        c.provider_table("embedder").unwrap().unwrap()["kind"].as_str(),
        Some("onnx-embedder")
    );
    assert!(c.provider_table("summarizer").unwrap().is_none());
    // The Debug form names kinds, never keys.
    let shown = format!("{c:?}");
    assert!(
        shown.contains("ollama") && !shown.contains("llama3.2"),
        "{shown}"
    );

    let e = err(
        Some("[chat]\nprovider = \"nope\"\n[providers.a]\nkind = \"openai\""),
        &[],
    );
    assert!(
        e.contains("chat.provider") && e.contains("providers.nope") && e.contains("known: a"),
        "{e}"
    );
    let e = err(Some("[providers.a]\nmodel = \"x\""), &[]);
    assert!(e.contains("providers.a.kind"), "{e}");
    let e = err(Some("[chat]\nmodel = \"x\""), &[]);
    assert!(e.contains("chat.kind"), "{e}");
    // The environment reaches the new sections too.
    let c = Config::from_sources(
        None,
        env(&[
            ("LLMEM_TOKENS_CATALOG", "my-models.toml"),
            ("LLMEM_SUMMARIZER_KIND", "onnx-lm"),
            ("LLMEM_SUMMARIZER_THREADS", "2"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.tokens.catalog.as_deref(),
        Some(std::path::Path::new("my-models.toml"))
    );
    let s = c.provider_table("summarizer").unwrap().unwrap();
    assert_eq!(s["kind"].as_str(), Some("onnx-lm"));
    assert_eq!(s["threads"].as_integer(), Some(2));
}

/// `[tokens] catalog` adds a model to the shipped catalog: a manager for it counts with its
/// tokenizer and prices it at its prices.
#[tokio::test]
async fn a_user_catalog_prices_its_own_model() {
    use llmem::{MemoryManager, Message, Providers};
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("models.toml");
    std::fs::write(
        &catalog,
        r#"
[[model]]
id = "acme-1"
provider = "openai"
context_window = 32000
max_output = 4000
input = 1000.0
output = 2000.0
tokenizer = "tiktoken:o200k_base"
chat_format = "openai"
"#,
    )
    .unwrap();
    let toml = format!(
        "[memory]\nmodel = \"acme-1\"\n[tokens]\ncatalog = {:?}\n",
        catalog.display().to_string()
    );
    let config = Config::from_toml_str(&toml).unwrap();
    let mut m = MemoryManager::new(config, Providers::default()).unwrap();
    m.add_message(Message::user("hello there, how are you today?"), None)
        .await
        .unwrap();
    m.context_for_llm().await.unwrap();
    let cost = m.stats().total_cost;
    // At $1,000 per million input tokens, a dozen tokens cost about a cent.
    assert!(cost > 0.005 && cost < 0.05, "{cost}");
    let bad = Config::from_toml_str(
        "[memory]\nmodel = \"x\"\n[tokens]\ncatalog = \"/nonexistent/models.toml\"\n",
    )
    .unwrap();
    let e = MemoryManager::new(bad, Providers::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/models.toml"), "{e}");
}
