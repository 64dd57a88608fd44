//! Shared HTTP plumbing for the remote providers: redacted API keys, JSON calls with status and
//! error-body mapping, and a server-sent-events reader.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use llmem_core::{ChatChunk, ChatStream, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key from `var`, if set and not empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(ApiKey)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A default client: rustls, no overall timeout (that is the `Timeout` layer's job).
pub(crate) fn default_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// Maps a transport error (no HTTP answer) to an [`Error`].
pub(crate) fn transport_error(provider: &str, what: &str, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        return Error::Timeout {
            what: format!("{provider} {what}"),
            after: Duration::from_secs(0),
        };
    }
    let mut message = format!("{what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::Provider {
        provider: provider.to_owned(),
        status: None,
        message,
        retry_after: None,
    }
}

/// The `retry-after` (seconds, or `retry-after-ms`) a server sent.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// The human message in an error body: `error.message` (OpenAI, Anthropic, Gemini), `error` as a
/// string (Ollama), `message`, else the body itself (shortened).
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let typ = v["error"]["type"]
            .as_str()
            .or_else(|| v["error"]["status"].as_str());
        if let Some(m) = v["error"]["message"].as_str() {
            return match typ {
                Some(t) => format!("{t}: {m}"),
                None => m.to_owned(),
            };
        }
        if let Some(m) = v["error"].as_str().or_else(|| v["message"].as_str()) {
            return m.to_owned();
        }
    }
    let body = body.trim();
    if body.is_empty() {
        return "empty error body".to_owned();
    }
    let mut short: String = body.chars().take(300).collect();
    if short.len() < body.len() {
        short.push('…');
    }
    short
}

/// One JSON-over-HTTP endpoint call.
#[derive(Debug, Clone)]
pub(crate) struct Call<'a> {
    pub provider: &'a str,
    pub client: &'a reqwest::Client,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Call<'_> {
    fn request(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut rb = self.client.post(&self.url).json(body);
        for (k, v) in &self.headers {
            rb = rb.header(*k, v);
        }
        rb
    }

    fn what(&self) -> String {
        // The path only: query strings may carry keys.
        let path = self.url.split('?').next().unwrap_or_default();
        format!("POST {path}")
    }

    async fn send(&self, body: &Value) -> Result<reqwest::Response> {
        let what = self.what();
        let resp = self
            .request(body)
            .send()
            .await
            .map_err(|e| transport_error(self.provider, &what, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        Err(Error::Provider {
            provider: self.provider.to_owned(),
            status: Some(status.as_u16()),
            message: format!("{what}: {}", error_message(&text)),
            retry_after: retry,
        })
    }

    /// POSTs `body` and parses the JSON answer.
    pub async fn json(&self, body: &Value) -> Result<Value> {
        let what = self.what();
        let resp = self.send(body).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport_error(self.provider, &what, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Provider {
            provider: self.provider.to_owned(),
            status: None,
            message: format!(
                "{what}: the response body ({} bytes) is not valid JSON, it may have been truncated: {e}",
                bytes.len()
            ),
            retry_after: None,
        })
    }

    /// POSTs `body` and reads the answer as server-sent events.
    pub async fn sse(&self, body: &Value) -> Result<SseStream> {
        let resp = self.send(body).await?;
        Ok(sse_events(resp, self.provider.to_owned()))
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

pub(crate) type SseStream = Pin<Box<dyn Stream<Item = Result<SseEvent>> + Send>>;

/// Splits complete events off the front of `buf` (CRs already removed).
pub(crate) fn drain_events(buf: &mut Vec<u8>, out: &mut VecDeque<SseEvent>, flush: bool) {
    loop {
        let end = buf.windows(2).position(|w| w == b"\n\n");
        let block: Vec<u8> = match end {
            Some(i) => {
                let b = buf[..i].to_vec();
                buf.drain(..i + 2);
                b
            }
            None if flush && !buf.is_empty() => std::mem::take(buf),
            None => return,
        };
        let text = String::from_utf8_lossy(&block);
        let mut ev = SseEvent::default();
        let mut data: Vec<&str> = Vec::new();
        for line in text.split('\n') {
            if line.starts_with(':') || line.is_empty() {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => ev.event = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {}
            }
        }
        if !data.is_empty() || ev.event.is_some() {
            ev.data = data.join("\n");
            out.push_back(ev);
        }
    }
}

fn sse_events(resp: reqwest::Response, provider: String) -> SseStream {
    struct St {
        body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
        buf: Vec<u8>,
        ready: VecDeque<SseEvent>,
        ended: bool,
        provider: String,
    }
    let st = St {
        body: Box::pin(resp.bytes_stream()),
        buf: Vec::new(),
        ready: VecDeque::new(),
        ended: false,
        provider,
    };
    Box::pin(futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.ready.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.ended {
                return None;
            }
            match st.body.next().await {
                Some(Ok(bytes)) => {
                    st.buf.extend(bytes.iter().copied().filter(|b| *b != b'\r'));
                    drain_events(&mut st.buf, &mut st.ready, false);
                }
                Some(Err(e)) => {
                    st.ended = true;
                    let err = transport_error(&st.provider, "reading the event stream", &e);
                    return Some((Err(err), st));
                }
                None => {
                    st.ended = true;
                    drain_events(&mut st.buf, &mut st.ready, true);
                }
            }
        }
    }))
}

/// Turns provider events into a [`ChatStream`]. `step` maps one event to chunks and says whether
/// it was the provider's end marker. A stream that ends before any chunk carried a finish reason
/// was cut off, and says so.
pub(crate) fn chunk_stream<S, F>(provider: &str, events: SseStream, state: S, step: F) -> ChatStream
where
    S: Send + 'static,
    F: FnMut(&mut S, SseEvent) -> Result<(Vec<ChatChunk>, bool)> + Send + 'static,
{
    struct D<S, F> {
        events: SseStream,
        state: S,
        step: F,
        pending: VecDeque<Result<ChatChunk>>,
        finished: bool,
        done: bool,
        provider: String,
    }
    let d = D {
        events,
        state,
        step,
        pending: VecDeque::new(),
        finished: false,
        done: false,
        provider: provider.to_owned(),
    };
    Box::pin(futures::stream::unfold(d, |mut d| async move {
        loop {
            if let Some(c) = d.pending.pop_front() {
                return Some((c, d));
            }
            if d.done {
                return None;
            }
            match d.events.next().await {
                Some(Ok(ev)) => match (d.step)(&mut d.state, ev) {
                    Ok((chunks, stop)) => {
                        for c in chunks {
                            d.finished |= c.finish_reason.is_some();
                            d.pending.push_back(Ok(c));
                        }
                        d.done = stop;
                    }
                    Err(e) => {
                        d.done = true;
                        d.pending.push_back(Err(e));
                    }
                },
                Some(Err(e)) => {
                    d.done = true;
                    d.pending.push_back(Err(e));
                }
                None => {
                    d.done = true;
                    if !d.finished {
                        d.pending.push_back(Err(Error::Provider {
                            provider: d.provider.clone(),
                            status: None,
                            message: "the event stream ended before the answer finished (truncated stream)".into(),
                            retry_after: None,
                        }));
                    }
                }
            }
        }
    }))
}

/// Parses one event's JSON data.
pub(crate) fn event_json(provider: &str, ev: &SseEvent) -> Result<Value> {
    serde_json::from_str(&ev.data).map_err(|e| Error::Provider {
        provider: provider.to_owned(),
        status: None,
        message: format!(
            "a streamed event is not valid JSON ({e}): {}",
            ev.data.chars().take(200).collect::<String>()
        ),
        retry_after: None,
    })
}

/// Reads a non-negative integer field, 0 when absent.
pub(crate) fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The config keys the registry reads for the layers; providers ignore them.
pub(crate) fn strip_kind(table: &toml::Table) -> toml::Table {
    let mut t = table.clone();
    t.remove("kind");
    t
}

/// Deserialises a provider config from its TOML table (without `kind`).
pub(crate) fn config_from_table<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T> {
    strip_kind(table).try_into().map_err(|e: toml::de::Error| {
        let msg = e.message().to_owned();
        Error::config(msg.split('`').nth(1).unwrap_or("config").to_owned(), msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_split_across_chunks() {
        let mut buf = Vec::new();
        let mut out = VecDeque::new();
        buf.extend_from_slice(b"event: a\ndata: {\"x\"");
        drain_events(&mut buf, &mut out, false);
        assert!(out.is_empty());
        buf.extend_from_slice(b":1}\n\n: comment\n\ndata: [DONE]");
        drain_events(&mut buf, &mut out, false);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0],
            SseEvent {
                event: Some("a".into()),
                data: "{\"x\":1}".into()
            }
        );
        drain_events(&mut buf, &mut out, true);
        assert_eq!(out[1].data, "[DONE]");
    }

    #[test]
    fn error_messages_come_from_each_providers_body() {
        let cases = [
            (
                r#"{"error":{"message":"Invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
                "invalid_request_error: Invalid API key",
            ),
            (
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                "overloaded_error: Overloaded",
            ),
            (
                r#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}"#,
                "INVALID_ARGUMENT: API key not valid.",
            ),
            (r#"{"error":"model 'x' not found"}"#, "model 'x' not found"),
            ("<html>bad gateway</html>", "<html>bad gateway</html>"),
        ];
        for (body, want) in cases {
            assert_eq!(error_message(body), want);
        }
    }

    #[test]
    fn keys_are_redacted() {
        let k = ApiKey::new("sk-secret");
        assert!(!format!("{k:?} {k}").contains("secret"));
    }
}
