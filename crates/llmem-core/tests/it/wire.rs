//! Round trips through the OpenAI and Anthropic message shapes, on samples shaped like the
//! providers' documented requests.

use llmem_core::wire::{from_anthropic, from_openai, openai_messages, to_anthropic};
use llmem_core::{Message, Role, Timestamp};
use serde_json::json;

fn openai_sample() -> serde_json::Value {
    json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What's the weather like in Boston today?", "name": "kha"},
        {"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_abc123", "type": "function",
            "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Boston, MA\"}"}}]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"},
        {"role": "assistant", "content": "It is 22 °C in Boston."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}]}
    ])
}

#[test]
fn openai_shape_round_trips_exactly() {
    let sample = openai_sample();
    let msgs = from_openai(&sample).unwrap();
    assert_eq!(msgs.len(), 6);
    assert_eq!(msgs[2].tool_calls[0].id, "call_abc123");
    assert_eq!(msgs[3].role, Role::Tool);
    assert_eq!(msgs[5].content.len(), 2);
    assert_eq!(openai_messages(&msgs).unwrap(), sample);
}

#[test]
fn llmem_extensions_survive_serde_but_not_requests() {
    let m = Message::user("hi")
        .with_created_at(Timestamp(0))
        .with_metadata("pinned", true);
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v["created_at"], "1970-01-01T00:00:00Z");
    assert_eq!(serde_json::from_value::<Message>(v).unwrap(), m);
    let req = openai_messages(&[m]).unwrap();
    assert_eq!(req, json!([{"role": "user", "content": "hi"}]));
}

#[test]
fn anthropic_shape_round_trips() {
    let msgs = from_openai(&openai_sample()).unwrap();
    let (system, arr) = to_anthropic(&msgs).unwrap();
    assert_eq!(system.as_deref(), Some("You are a helpful assistant."));
    assert_eq!(
        arr[1],
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": "call_abc123",
            "name": "get_current_weather", "input": {"location": "Boston, MA"}}]})
    );
    assert_eq!(
        arr[2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_abc123",
            "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"}]})
    );
    assert_eq!(
        arr[4]["content"][1]["source"],
        json!({"type": "url", "url": "https://example.com/cat.png"})
    );
    let back = from_anthropic(system.as_ref().map(|s| json!(s)).as_ref(), &arr).unwrap();
    // Names and image detail are OpenAI-only; everything else survives.
    let strip = |ms: &[Message]| {
        ms.iter()
            .map(|m| {
                let mut m = m.clone();
                m.name = None;
                for p in &mut m.content {
                    if let llmem_core::ContentPart::ImageUrl { image_url } = p {
                        image_url.detail = None;
                    }
                }
                m
            })
            .collect::<Vec<_>>()
    };
    let mut expected = strip(&msgs);
    // The tool call's arguments are re-serialised compactly.
    expected[2].tool_calls[0].arguments = "{\"location\":\"Boston, MA\"}".into();
    assert_eq!(strip(&back), expected);
}

#[test]
fn anthropic_parallel_tool_results_share_one_user_message() {
    let msgs = vec![
        Message::user("weather in Paris and Rome?"),
        Message::assistant_tool_calls(
            "",
            vec![
                llmem_core::ToolCall {
                    id: "t1".into(),
                    name: "w".into(),
                    arguments: "{\"c\":\"Paris\"}".into(),
                },
                llmem_core::ToolCall {
                    id: "t2".into(),
                    name: "w".into(),
                    arguments: "{\"c\":\"Rome\"}".into(),
                },
            ],
        ),
        Message::tool_result("t1", "18"),
        Message::tool_result("t2", "24"),
    ];
    let (_, arr) = to_anthropic(&msgs).unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 3);
    assert_eq!(arr[2]["content"].as_array().unwrap().len(), 2);
    // A response body parses too.
    let resp = json!([{"role": "assistant", "content": [
        {"type": "thinking", "thinking": "..."}, {"type": "text", "text": "Paris 18, Rome 24."}]}]);
    let parsed = from_anthropic(None, &resp).unwrap();
    assert_eq!(parsed[0].text(), "Paris 18, Rome 24.");
}

#[test]
fn bad_shapes_give_clear_errors() {
    let err = to_anthropic(&[Message::new(Role::Tool, "x")]).unwrap_err();
    assert!(err.to_string().contains("tool_call_id"), "{err}");
    let bad = Message::assistant_tool_calls(
        "",
        vec![llmem_core::ToolCall {
            id: "t".into(),
            name: "f".into(),
            arguments: "{oops".into(),
        }],
    );
    assert!(
        to_anthropic(&[bad])
            .unwrap_err()
            .to_string()
            .contains("not JSON")
    );
    let err = from_anthropic(None, &json!([{"role": "system", "content": "x"}])).unwrap_err();
    assert!(
        err.to_string().contains("only `user` and `assistant`"),
        "{err}"
    );
    let err = from_openai(&json!([{"role": "user", "content": 5}])).unwrap_err();
    assert!(err.to_string().contains("OpenAI messages"), "{err}");
}
