//! Conversions between [`Message`] and the providers' JSON shapes.
//!
//! - OpenAI chat completions: [`Message`]'s own serde shape; [`openai_messages`] strips the llmem
//!   extension fields (`created_at`, `metadata`) that the API would reject.
//! - Anthropic messages: `system` is a top-level string, tool calls are `tool_use` blocks in the
//!   assistant's content and tool results are `tool_result` blocks in a *user* message.
//!   [`to_anthropic`] and [`from_anthropic`] convert both ways.

use serde_json::{Map, Value, json};

use crate::message::{ContentPart, ImageUrl, Message, Role, ToolCall};
use crate::{Error, Result};

/// Messages as an OpenAI `messages` array, without llmem's extension fields.
pub fn openai_messages(messages: &[Message]) -> Result<Value> {
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let mut v = serde_json::to_value(m)?;
        if let Value::Object(o) = &mut v {
            o.remove("created_at");
            o.remove("metadata");
        }
        out.push(v);
    }
    Ok(Value::Array(out))
}

/// Parses an OpenAI `messages` array.
pub fn from_openai(messages: &Value) -> Result<Vec<Message>> {
    serde_json::from_value(messages.clone()).map_err(|e| Error::serde("OpenAI messages array", e))
}

/// The Anthropic request parts: the top-level `system` text (if any) and the `messages` array.
/// Consecutive tool results are merged into one user message, as the API requires.
pub fn to_anthropic(messages: &[Message]) -> Result<(Option<String>, Value)> {
    let mut system: Vec<String> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for m in messages {
        match m.role {
            Role::System => system.push(m.text()),
            Role::User | Role::Assistant => {
                let mut blocks = content_blocks(&m.content);
                for call in &m.tool_calls {
                    let input: Value = if call.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.arguments).map_err(|e| {
                            Error::invalid(format!(
                                "tool call `{}` has arguments that are not JSON ({e}); Anthropic needs a JSON object",
                                call.id
                            ))
                        })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
                }
                out.push(json!({"role": m.role.as_str(), "content": blocks}));
            }
            Role::Tool => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    Error::invalid("a tool message has no `tool_call_id`; set it to the id of the call it answers")
                })?;
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": m.text()});
                // Tool results travel in a user message; merge consecutive ones.
                let merged = match out.last_mut() {
                    Some(Value::Object(last))
                        if last.get("role") == Some(&json!("user"))
                            && last
                                .get("content")
                                .and_then(Value::as_array)
                                .is_some_and(|c| c.iter().all(|b| b["type"] == "tool_result")) =>
                    {
                        if let Some(Value::Array(c)) = last.get_mut("content") {
                            c.push(block.clone());
                        }
                        true
                    }
                    _ => false,
                };
                if !merged {
                    out.push(json!({"role": "user", "content": [block]}));
                }
            }
        }
    }
    let system = if system.is_empty() {
        None
    } else {
        Some(system.join("\n\n"))
    };
    Ok((system, Value::Array(out)))
}

fn content_blocks(parts: &[ContentPart]) -> Vec<Value> {
    parts
        .iter()
        .map(|p| match p {
            ContentPart::Text { text } => json!({"type": "text", "text": text}),
            ContentPart::ImageUrl { image_url } => match image_url.url.strip_prefix("data:") {
                Some(rest) => {
                    let (media, data) = rest.split_once(";base64,").unwrap_or(("image/png", rest));
                    json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
                }
                None => json!({"type": "image", "source": {"type": "url", "url": image_url.url}}),
            },
        })
        .collect()
}

/// Parses an Anthropic request's `system` and `messages` (or a response's `content` wrapped as an
/// assistant message) back into [`Message`]s. `tool_result` blocks become `Tool` messages.
pub fn from_anthropic(system: Option<&Value>, messages: &Value) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    if let Some(s) = system {
        let text = match s {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n\n"),
            other => {
                return Err(Error::invalid(format!(
                    "Anthropic `system` must be text or blocks, got {other}"
                )));
            }
        };
        out.push(Message::system(text));
    }
    let arr = messages
        .as_array()
        .ok_or_else(|| Error::invalid("Anthropic `messages` must be an array"))?;
    for (i, m) in arr.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => {
                return Err(Error::invalid(format!(
                    "Anthropic message {i} has role {other:?}; only `user` and `assistant` are allowed"
                )));
            }
        };
        let blocks: Vec<Value> = match m.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(b)) => b.clone(),
            _ => {
                return Err(Error::invalid(format!(
                    "Anthropic message {i} has no `content`"
                )));
            }
        };
        let mut msg = Message::new(role, "");
        msg.content.clear();
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => msg.content.push(ContentPart::Text {
                    text: b
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                }),
                Some("image") => {
                    let src = &b["source"];
                    let url = match src.get("type").and_then(Value::as_str) {
                        Some("base64") => format!(
                            "data:{};base64,{}",
                            src["media_type"].as_str().unwrap_or("image/png"),
                            src["data"].as_str().unwrap_or_default()
                        ),
                        _ => src["url"].as_str().unwrap_or_default().to_owned(),
                    };
                    msg.content.push(ContentPart::ImageUrl {
                        image_url: ImageUrl { url, detail: None },
                    });
                }
                Some("tool_use") => msg.tool_calls.push(ToolCall {
                    id: b["id"].as_str().unwrap_or_default().to_owned(),
                    name: b["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: serde_json::to_string(&b["input"])?,
                }),
                Some("tool_result") => {
                    let text = match &b["content"] {
                        Value::String(s) => s.clone(),
                        Value::Array(parts) => parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        _ => String::new(),
                    };
                    let id = b["tool_use_id"].as_str().unwrap_or_default();
                    out.push(Message::tool_result(id, text));
                }
                // thinking and other blocks carry nothing a memory keeps.
                _ => {}
            }
        }
        if !msg.content.is_empty() || !msg.tool_calls.is_empty() {
            out.push(msg);
        }
    }
    Ok(out)
}

/// Strips everything but the wire fields from a metadata map (helper for plugins).
pub fn without_extensions(mut v: Map<String, Value>) -> Map<String, Value> {
    v.remove("created_at");
    v.remove("metadata");
    v
}
