//! Building providers by `kind` from TOML, with layer keys.

use llmem_core::test_kit::{chat_conformance, embedder_conformance};
use llmem_core::{ChatRequest, Error, Message};
use llmem_providers::{chat_registry, embedder_registry};

#[tokio::test]
async fn builds_every_http_kind_from_toml_and_applies_layers() {
    let (oa, _) = crate::openai::server().await;
    let (an, _) = crate::anthropic::server().await;
    let cfg = format!(
        r#"
[fast]
kind = "openai"
base_url = "{oa}/v1"
api_key = "{}"
model = "gpt-test"
embedding_model = "text-embedding-3-small"
dimensions = 64
timeout_secs = 30
max_attempts = 3
requests_per_second = 50

[local]
kind = "openai-compatible"
base_url = "{oa}/v1"
api_key = "{}"

[claude]
kind = "anthropic"
base_url = "{an}"
api_key = "{}"
"#,
        crate::openai::KEY,
        crate::openai::KEY,
        crate::anthropic::KEY
    );
    let section: toml::Table = toml::from_str(&cfg).unwrap();
    let chats = chat_registry().build_all(&section).unwrap();
    for (name, m) in &chats {
        chat_conformance(m.as_ref()).await;
        assert!(
            !format!("{m:?}").contains("sk-"),
            "{name}: keys never appear in Debug output"
        );
    }
    let fast = &chats["fast"];
    assert!(
        format!("{fast:?}").contains("Retry") && format!("{fast:?}").contains("Timeout"),
        "{fast:?}"
    );
    let emb = embedder_registry()
        .build(section["fast"].as_table().unwrap())
        .unwrap();
    embedder_conformance(emb.as_ref()).await;
    let r = fast
        .chat(ChatRequest::new(vec![Message::user("x")]))
        .await
        .unwrap();
    assert!(r.usage.is_some());
}

#[test]
fn unknown_keys_and_kinds_are_named() {
    let t: toml::Table =
        toml::from_str("kind = \"openai\"\napi_key = \"k\"\nmodle = \"x\"").unwrap();
    let err = chat_registry().build(&t).unwrap_err();
    assert!(err.to_string().contains("modle"), "{err}");
    let t: toml::Table = toml::from_str("kind = \"cohere\"").unwrap();
    let err = chat_registry().build(&t).unwrap_err();
    assert!(
        matches!(err, Error::UnknownPlugin { .. }) && err.to_string().contains("anthropic"),
        "{err}"
    );
    let t: toml::Table = toml::from_str("kind = \"openai-compatible\"").unwrap();
    let err = chat_registry().build(&t).unwrap_err();
    assert!(err.to_string().contains("base_url"), "{err}");
    #[cfg(not(feature = "onnx"))]
    {
        let t: toml::Table = toml::from_str("kind = \"onnx-embedder\"").unwrap();
        assert!(matches!(
            embedder_registry().build(&t).unwrap_err(),
            Error::FeatureDisabled { .. }
        ));
    }
}
