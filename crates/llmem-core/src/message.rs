//! Chat messages, serde-compatible with the OpenAI chat-completions shape.
//!
//! A [`Message`] serialises to exactly what `/v1/chat/completions` takes (`role`, `content` as a
//! string or an array of parts, `name`, `tool_calls`, `tool_call_id`), plus two optional llmem
//! fields (`created_at`, `metadata`) that are omitted when empty. [`crate::wire`] converts to and
//! from the Anthropic messages shape and strips the llmem fields for requests.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions; never evicted from a window.
    #[serde(alias = "developer")]
    System,
    User,
    Assistant,
    /// The result of a tool call, answering an assistant's `tool_calls` entry.
    Tool,
}

impl Role {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

/// An image reference (URL or `data:` URI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A function call the assistant asked for. `arguments` is the JSON text the model produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ToolCallRepr", into = "ToolCallRepr")]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Serialize, Deserialize)]
struct ToolCallRepr {
    id: String,
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: FunctionRepr,
}

#[derive(Serialize, Deserialize)]
struct FunctionRepr {
    name: String,
    #[serde(default)]
    arguments: String,
}

fn function_type() -> String {
    "function".to_owned()
}

impl From<ToolCallRepr> for ToolCall {
    fn from(r: ToolCallRepr) -> Self {
        ToolCall {
            id: r.id,
            name: r.function.name,
            arguments: r.function.arguments,
        }
    }
}

impl From<ToolCall> for ToolCallRepr {
    fn from(t: ToolCall) -> Self {
        ToolCallRepr {
            id: t.id,
            kind: function_type(),
            function: FunctionRepr {
                name: t.name,
                arguments: t.arguments,
            },
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// Text and image parts. One text part serialises as a plain string, none as `null`.
    #[serde(
        default,
        serialize_with = "ser_content",
        deserialize_with = "de_content"
    )]
    pub content: Vec<ContentPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Calls the assistant made; each must be answered by a `Tool` message with its id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Tool` messages: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// llmem extension: when the message was said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// llmem extension: free-form metadata (`important: true`, `pinned: true`, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

fn ser_content<S: Serializer>(parts: &[ContentPart], s: S) -> Result<S::Ok, S::Error> {
    match parts {
        [] => s.serialize_none(),
        [ContentPart::Text { text }] => s.serialize_str(text),
        _ => parts.serialize(s),
    }
}

fn de_content<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ContentPart>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Parts(Vec<ContentPart>),
    }
    Ok(match Option::<Repr>::deserialize(d)? {
        None => Vec::new(),
        Some(Repr::Text(text)) => vec![ContentPart::Text { text }],
        Some(Repr::Parts(p)) => p,
    })
}

impl Message {
    /// A message of `role` with one text part.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: vec![ContentPart::Text { text: text.into() }],
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            created_at: None,
            metadata: Map::new(),
        }
    }

    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }

    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }

    /// An assistant message that calls tools (content may be empty).
    pub fn assistant_tool_calls(text: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        let text = text.into();
        let mut m = Self::new(Role::Assistant, text.clone());
        if text.is_empty() {
            m.content.clear();
        }
        m.tool_calls = calls;
        m
    }

    /// The result of the tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, text: impl Into<String>) -> Self {
        let mut m = Self::new(Role::Tool, text);
        m.tool_call_id = Some(call_id.into());
        m
    }

    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    #[must_use]
    pub fn with_created_at(mut self, at: Timestamp) -> Self {
        self.created_at = Some(at);
        self
    }

    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// All text parts joined with newlines (images contribute nothing).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let ContentPart::Text { text } = part {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(text);
            }
        }
        out
    }

    /// Whether `metadata[key]` is `true`.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.metadata.get(key), Some(Value::Bool(true)))
    }

    /// Whether the message is pinned (never evicted): system prompts and `pinned: true`.
    pub fn is_pinned(&self) -> bool {
        self.role == Role::System || self.flag("pinned")
    }

    /// Total bytes of text, a cheap size measure.
    pub fn text_len(&self) -> usize {
        self.content
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => text.len(),
                ContentPart::ImageUrl { .. } => 0,
            })
            .sum::<usize>()
            + self
                .tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments.len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_text_serialises_as_a_string_and_back() {
        let m = Message::user("hi");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v, json!({"role": "user", "content": "hi"}));
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn null_content_and_tool_calls_parse() {
        let v = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]});
        let m: Message = serde_json::from_value(v.clone()).unwrap();
        assert!(m.content.is_empty());
        assert_eq!(m.tool_calls[0].name, "get_weather");
        assert_eq!(serde_json::to_value(&m).unwrap(), v);
    }

    #[test]
    fn developer_role_is_read_as_system() {
        let m: Message =
            serde_json::from_value(json!({"role": "developer", "content": "x"})).unwrap();
        assert_eq!(m.role, Role::System);
    }

    #[test]
    fn unknown_role_is_an_error_naming_the_variants() {
        let err = serde_json::from_value::<Message>(json!({"role": "robot", "content": "x"}))
            .unwrap_err();
        assert!(err.to_string().contains("robot"), "{err}");
    }
}
