//! `Config`: presets, the file, `LLMEM_*` overrides, and errors that name the key.
use llmem::Config;
use llmem::compress::{Preset, Strategy};
use llmem::config::{FactMode, RetrievalScope};

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
    let p = llmem::tiered::policy(t);
    assert_eq!(p.warm_to_cold, None, "0 turns the threshold off");
    assert_eq!(
        p.cold_to_glacier,
        Some(std::time::Duration::from_secs(30 * 24 * 3600))
    );
    assert_eq!(p.promote_after_accesses, Some(5));
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
