//! `llmem serve`: the real Python `openai` client through the proxy to the local llama.cpp, and
//! a 64-session soak through the proxy to an OpenAI-wire upstream on loopback that echoes the
//! access codes it is sent (so a leak between sessions shows in the answers).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// A running `llmem serve`; killed when dropped.
pub struct Proxy {
    pub child: Child,
    pub base: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(args: &[&str], env: &[(&str, &str)]) -> Proxy {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmem"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start llmem serve");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("read the address");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Proxy { child, base }
}

const CLIENT: &str = r#"
import sys, openai
base, token = sys.argv[1], sys.argv[2]
c = openai.OpenAI(base_url=base, api_key=token)
print("MODEL", c.models.list().data[0].id)
history = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "My dog is a beagle called Biscuit. Say hello to him."},
]
r = c.chat.completions.create(model="smollm2", messages=history, user="alice", max_tokens=24)
answer = r.choices[0].message.content
print("ANSWER", answer.replace("\n", " "))
print("USAGE", r.usage.prompt_tokens, r.usage.completion_tokens)
history += [{"role": "assistant", "content": answer}, {"role": "user", "content": "What kind of dog is Biscuit?"}]
parts, usage = [], None
for ch in c.chat.completions.create(model="smollm2", messages=history, user="alice", max_tokens=24,
                                     stream=True, stream_options={"include_usage": True}):
    if ch.choices and ch.choices[0].delta.content:
        parts.append(ch.choices[0].delta.content)
    if ch.usage:
        usage = ch.usage
print("STREAM", len(parts), "".join(parts).replace("\n", " "))
print("STREAM_USAGE", usage.prompt_tokens if usage else None)
try:
    openai.OpenAI(base_url=base, api_key="wrong").models.list()
    print("AUTH accepted")
except openai.AuthenticationError:
    print("AUTH rejected")
try:
    c.chat.completions.create(model="smollm2", messages=[], user="alice")
    print("EMPTY accepted")
except openai.BadRequestError as e:
    print("EMPTY rejected", e.status_code)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_openai_client_talks_to_llamacpp_through_the_proxy() {
    let python = std::env::var("LLMEM_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &["--llamacpp", "--dir", dir.path().to_str().unwrap()],
        &[("LLMEM_SERVER_TOKEN", "s3cret-token")],
    );
    let out = tokio::task::spawn_blocking({
        let base = proxy.base.clone();
        move || {
            Command::new(python)
                .args(["-c", CLIENT, &base, "s3cret-token"])
                .output()
                .expect("run python")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n(run `cargo xtask setup` for the openai package)"
    );
    let line = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag} in {stdout}"))
            .trim()
            .to_owned()
    };
    assert!(!line("MODEL ").is_empty());
    assert!(!line("ANSWER ").is_empty());
    let usage: Vec<u64> = line("USAGE ")
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(usage[0] > 10 && usage[1] > 0, "{usage:?}");
    let streamed: usize = line("STREAM ").split(' ').next().unwrap().parse().unwrap();
    assert!(streamed >= 2, "{stdout}");
    assert_ne!(line("STREAM_USAGE "), "None");
    assert_eq!(line("AUTH "), "rejected");
    assert_eq!(line("EMPTY "), "rejected 400");

    // The session holds the whole conversation, and it is on disk.
    let http = reqwest::Client::new();
    let stats = get_json(
        &http,
        &format!("{}/sessions/alice/alice", proxy.base),
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(stats["stats"]["messages"], 5, "{stats}");
    assert_eq!(stats["stats"]["requests"], 2, "{stats}");
    // Written behind, every flush interval (200 ms), once no request holds the session: allow
    // 25 intervals on a loaded machine.
    let saved = dir.path().join("sessions/alice/alice.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !saved.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(saved.exists(), "the session reached the disk within 5 s");
    let metrics = http
        .get(format!("{}/../metrics", proxy.base))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("llmem_streamed_total 1"), "{metrics}");
    assert!(metrics.contains("llmem_unauthorized_total 1"), "{metrics}");
    let health = http
        .get(format!("{}/../health", proxy.base))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
}

/// The access codes (`code-…`) in a prompt.
fn codes(messages: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for m in messages.as_array().into_iter().flatten() {
        let text = m["content"].as_str().unwrap_or_default();
        for w in text.split(|c: char| c.is_whitespace() || c == '.' || c == ',') {
            if w.starts_with("code-") && !found.contains(&w.to_owned()) {
                found.push(w.to_owned());
            }
        }
    }
    found
}

/// An OpenAI-wire upstream that answers `ECHO <codes in the prompt>`, streamed or not; the
/// summaries llmem asks it for (its summarizer prompt) are counted apart.
pub async fn echo_upstream(calls: Arc<AtomicU64>, summaries: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |Json(body): Json<Value>| {
            let (calls, summaries) = (calls.clone(), summaries.clone());
            async move {
                let summary = body["messages"][0]["content"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("You compress conversations"));
                let text = if summary {
                    summaries.fetch_add(1, Ordering::Relaxed);
                    format!("The user talked about plans. Codes mentioned: {}.", codes(&body["messages"]).join(" "))
                } else {
                    calls.fetch_add(1, Ordering::Relaxed);
                    format!("ECHO {}", codes(&body["messages"]).join(" "))
                };
                let usage = json!({"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105});
                let wants_tool = body["tools"].is_array() && body["messages"].as_array().and_then(|m| m.last()).is_some_and(|m| m["role"] == "user");
                if body["stream"].as_bool() == Some(true) && wants_tool {
                    // The call as OpenAI streams it: id and name first, the arguments in pieces.
                    let name = body["tools"][0]["function"]["name"].clone();
                    let events = vec![
                        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}]}}]}),
                        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}}]}),
                        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Lisbon\"}"}}]}}]}),
                        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": usage}),
                    ];
                    sse(events)
                } else if body["stream"].as_bool() == Some(true) {
                    let mut events: Vec<Value> = text
                        .split_inclusive(' ')
                        .map(|w| json!({"choices": [{"index": 0, "delta": {"content": w}}]}))
                        .collect();
                    events.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}));
                    sse(events)
                } else if wants_tool {
                    // Asked with tools: call the first one.
                    let name = body["tools"][0]["function"]["name"].clone();
                    Json(json!({
                        "id": "t", "object": "chat.completion", "model": "echo",
                        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                            "role": "assistant", "content": null,
                            "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": name, "arguments": "{\"city\":\"Lisbon\"}"}}]}}],
                        "usage": usage,
                    }))
                    .into_response()
                } else {
                    let r: Response = Json(json!({
                        "id": "x", "object": "chat.completion", "model": "echo",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": usage,
                    }))
                    .into_response();
                    r
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

/// An OpenAI stream of `events`, then `[DONE]`.
fn sse(events: Vec<Value>) -> Response {
    let stream = futures::stream::iter(
        events
            .into_iter()
            .map(|e| Event::default().data(e.to_string()))
            .chain([Event::default().data("[DONE]")])
            .map(Ok::<_, std::convert::Infallible>),
    );
    Sse::new(stream).into_response()
}

/// Reads an SSE response's content deltas.
async fn read_stream(r: reqwest::Response) -> String {
    let body = r.text().await.unwrap();
    let mut text = String::new();
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(d) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(d);
        }
    }
    text
}

/// GET `url` (with the bearer `token`, if any): the body as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> Value {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// POST `body` to `url`: the answer as JSON.
async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    http.post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const SESSIONS: usize = 64;
const FILLER_TURNS: usize = 18;

/// Makes an API key for `tenant` in `dir` with `llmem keys add`.
pub fn make_key(dir: &std::path::Path, tenant: &str, admin: bool) -> String {
    let mut args = vec![
        "keys",
        "add",
        "--tenant",
        tenant,
        "--dir",
        dir.to_str().unwrap(),
    ];
    if admin {
        args.push("--admin");
    }
    let (code, out, err) = crate::llmem(&args);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_owned();
    assert!(key.starts_with("llmem-sk-"), "{out}");
    key
}

/// Sends SIGTERM to the server and waits for it to exit; its exit status.
fn terminate(proxy: &mut Proxy) -> std::process::ExitStatus {
    let pid = proxy.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    proxy.child.wait().unwrap()
}

/// The value at the `q` quantile of `xs` (sorted in place).
fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() as f64 - 1.0) * q).round() as usize]
}

/// 64 clients × 20 turns through the proxy with a tenant key, with fewer sessions allowed open
/// than there are clients (the least recently used are saved and closed under load) and
/// sessions written behind the requests; then SIGTERM, and a restart: every acknowledged turn
/// is on disk and in its session, and no session holds another's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_lose_no_turn_across_sigterm_and_restart() {
    let calls = Arc::new(AtomicU64::new(0));
    let summaries = Arc::new(AtomicU64::new(0));
    let upstream = echo_upstream(calls.clone(), summaries.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), "acme", false);
    let env = [
        ("LLMEM_MEMORY_MAX_CONTEXT_TOKENS", "4000"),
        ("LLMEM_MEMORY_COMPRESSION_THRESHOLD", "300"),
        ("LLMEM_MEMORY_SHORT_TERM_SIZE", "4"),
        ("LLMEM_MEMORY_ANSWER_RESERVE", "256"),
        ("LLMEM_SERVER_MAX_OPEN_SESSIONS", "16"),
    ];
    let args = [
        "--upstream",
        &upstream,
        "--dir",
        dir.path().to_str().unwrap(),
    ];
    let mut proxy = serve(&args, &env);
    let filler: Vec<String> = include_str!("../../../../examples/data/conversation.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["role"] == "user")
        .filter_map(|v| v["content"].as_str().map(str::to_owned))
        .cycle()
        .take(FILLER_TURNS)
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // The upstream alone, for the latency the proxy adds.
    let mut direct = Vec::new();
    for _ in 0..50 {
        let t = std::time::Instant::now();
        let r = http
            .post(format!("{upstream}/chat/completions"))
            .json(&json!({"model": "echo", "messages": [{"role": "user", "content": filler[0]}]}))
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    calls.store(0, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let (http, base, filler, key) = (
            http.clone(),
            proxy.base.clone(),
            filler.clone(),
            key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let user = format!("user-{i}");
            let code = format!("code-{i}x{}", i * 7919 % 1000);
            let mut history = vec![json!({"role": "system", "content": "You are a terse assistant."})];
            let mut turns: Vec<String> = vec![format!("Remember this: my access code is {code}.")];
            turns.extend(filler);
            turns.push("What is my access code?".into());
            let mut last = String::new();
            let mut latencies = Vec::new();
            for (t, said) in turns.iter().enumerate() {
                history.push(json!({"role": "user", "content": said}));
                let stream = (i + t) % 2 == 0;
                let sent = std::time::Instant::now();
                let r = http
                    .post(format!("{base}/chat/completions"))
                    .bearer_auth(&key)
                    .json(&json!({"model": "echo", "messages": history, "user": user, "stream": stream}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{user} turn {t}: {}", r.status());
                last = if stream {
                    read_stream(r).await
                } else {
                    let v: Value = r.json().await.unwrap();
                    v["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
                };
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                history.push(json!({"role": "assistant", "content": last}));
            }
            (user, code, last, turns.len(), latencies)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let all_codes: Vec<String> = results.iter().map(|r| r.1.clone()).collect();
    for (user, code, last, _, _) in &results {
        // The final question's prompt carried this session's code, and no other's.
        assert!(
            last.split(' ').any(|w| w == code),
            "{user} lost its code: {last}"
        );
        for other in all_codes.iter().filter(|c| *c != code) {
            assert!(
                !last.split(' ').any(|w| w == other),
                "{user} sees {other}: {last}"
            );
        }
    }
    let metrics_forbidden = http
        .get(format!("{}/../metrics", proxy.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics_forbidden.status(), 403, "metrics span tenants");
    let status = terminate(&mut proxy);
    assert!(
        status.success(),
        "llmem serve exited with {status} on SIGTERM"
    );

    // Every session file holds one client's turns only.
    let mut files = 0;
    let mut stack = vec![dir.path().join("sessions")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                files += 1;
                let text = std::fs::read_to_string(&p).unwrap();
                let held: Vec<&String> = all_codes
                    .iter()
                    .filter(|c| {
                        text.split(|ch: char| !ch.is_alphanumeric() && ch != '-')
                            .any(|w| w == c.as_str())
                    })
                    .collect();
                assert!(held.len() <= 1, "{} holds {held:?}", p.display());
            }
        }
    }
    assert_eq!(files, SESSIONS);

    // After the restart, every acknowledged message is in its session.
    let proxy = serve(&args, &env);
    for (user, _, _, turns, _) in &results {
        let v = get_json(
            &http,
            &format!("{}/sessions/{user}/{user}", proxy.base),
            Some(&key),
        )
        .await;
        // One system prompt, a user message and an answer per turn.
        assert_eq!(v["stats"]["messages"], 1 + 2 * turns, "{user}: {v}");
        assert_eq!(v["stats"]["requests"], *turns, "{user}: {v}");
        assert!(
            v["stats"]["compression_count"].as_u64().unwrap() >= 1,
            "{user}: {v}"
        );
    }
    // The turns compressed out of a session are long-term memories the REST API finds.
    let found: Value = http
        .post(format!("{}/memories/search", proxy.base))
        .bearer_auth(&key)
        .json(&json!({"query": "my access code", "user_id": "user-0", "limit": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(found.to_string().contains("code-0x0"), "{found}");
    let requests = (SESSIONS * (FILLER_TURNS + 2)) as u64;
    assert_eq!(calls.load(Ordering::Relaxed), requests);
    // The upstream also wrote the rolling summaries (memory.summarizer = auto).
    let summaries = summaries.load(Ordering::Relaxed);
    assert!(summaries >= SESSIONS as u64, "{summaries} summaries");
    let mut through: Vec<f64> = results.iter().flat_map(|r| r.4.clone()).collect();
    let p50 = quantile(&mut through, 0.5);
    let p95 = quantile(&mut through, 0.95);
    let up95 = quantile(&mut direct, 0.95);
    eprintln!(
        "soak: {SESSIONS} clients x {} turns = {requests} requests (+{summaries} summaries) in \
         {:.1} s: {:.0} requests/s; latency through the proxy p50 {p50:.1} ms, p95 {p95:.1} ms; \
         upstream alone p95 {up95:.1} ms; added p95 {:.1} ms; turns lost 0",
        FILLER_TURNS + 2,
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        p95 - up95,
    );
}

#[test]
fn llmem_chat_remembers_across_a_restart() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let run = |input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_llmem"))
            .args([
                "chat",
                "--llamacpp",
                "--user",
                "kha",
                "--dir",
                dir.path().to_str().unwrap(),
            ])
            .args(["--system", "You are a helpful assistant. Answer briefly."])
            .env("LLMEM_MEMORY_ANSWER_RESERVE", "24")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start llmem chat");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let (_, err) = run("My API key is 123-kha.\n/quit\n");
    assert!(err.contains("--- Memory Statistics ---"), "{err}");
    // A new process resumes the session: the context and the stored fact are there.
    let (out, err) = run("/context\n/search API key\n/stats\n");
    assert!(err.contains("3 messages in this session"), "{err}");
    assert!(out.contains("[user] My API key is 123-kha."), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("My API key is 123-kha.") && !l.starts_with('[')),
        "{out}"
    );
    assert!(out.contains("\"messages\": 3"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_pass_through_the_proxy_and_stay_paired() {
    let upstream = echo_upstream(Arc::default(), Arc::default()).await;
    let proxy = serve(&["--upstream", &upstream], &[]);
    for stream in [false, true] {
        tool_exchange(&proxy, stream).await;
    }
}

/// A question the model answers with a tool call, the tool's result, the answer; streamed or
/// not, the client gets the whole call and the session keeps all four messages.
async fn tool_exchange(proxy: &Proxy, stream: bool) {
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", proxy.base);
    let user = format!("tooluser-{stream}");
    let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
    let mut messages =
        vec![json!({"role": "user", "content": "Weather in Lisbon? My code is code-77."})];
    let ask = json!({"messages": messages, "tools": tools, "user": user, "stream": stream});
    let (message, finish) = if stream {
        let r = http.post(&url).json(&ask).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        read_tool_stream(r).await
    } else {
        let r = post_json(&http, &url, &ask).await;
        (
            r["choices"][0]["message"].clone(),
            r["choices"][0]["finish_reason"].clone(),
        )
    };
    let call = &message["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather", "{message}");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Lisbon"}),
        "{message}"
    );
    assert_eq!(finish, "tool_calls", "stream {stream}");
    messages.push(message.clone());
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"}));
    let r = post_json(
        &http,
        &url,
        &json!({"messages": messages, "tools": tools, "user": user}),
    )
    .await;
    assert_eq!(r["choices"][0]["message"]["content"], "ECHO code-77", "{r}");
    let v = get_json(
        &http,
        &format!("{}/sessions/{user}/{user}", proxy.base),
        None,
    )
    .await;
    // user, assistant tool call, tool result, assistant answer.
    assert_eq!(v["stats"]["messages"], 4, "stream {stream}: {v}");
}

/// Reads a streamed answer that calls tools: the assistant message its deltas make (the
/// calls' pieces joined by index) and the finish reason.
async fn read_tool_stream(r: reqwest::Response) -> (Value, Value) {
    let body = r.text().await.unwrap();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        let choice = &v["choices"][0];
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        for d in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = d["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.push(json!({"id": d["id"], "type": "function", "function": {"name": d["function"]["name"], "arguments": ""}}));
            }
            let args = calls[i]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_owned()
                + d["function"]["arguments"].as_str().unwrap_or_default();
            calls[i]["function"]["arguments"] = json!(args);
        }
    }
    (
        json!({"role": "assistant", "content": null, "tool_calls": calls}),
        finish,
    )
}

/// An upstream speaking Ollama's native `/api/chat` (not OpenAI's wire), answering
/// `OLLAMA <codes in the prompt>`.
async fn ollama_upstream(calls: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/api/chat",
        post(move |Json(body): Json<Value>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::Relaxed);
                let text = format!("OLLAMA {}", codes(&body["messages"]).join(" "));
                Json(json!({
                    "model": body["model"], "created_at": "2024-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": text},
                    "done": true, "done_reason": "stop",
                    "prompt_eval_count": 40, "eval_count": 3
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A plugin's provider chosen by name in `llmem.toml`: `[providers.local] kind = "ollama"` and
/// `[chat] provider = "local"` make `llmem serve` relay to an Ollama-wire upstream, with
/// memory; an unknown kind is refused at start-up with the known kinds listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_relays_to_a_plugin_provider_named_in_llmem_toml() {
    let calls = Arc::new(AtomicU64::new(0));
    let upstream = ollama_upstream(calls.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("llmem.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.local]\nkind = \"ollama\"\nbase_url = {upstream:?}\nmodel = \"llama3.2\"\n\n[chat]\nprovider = \"local\"\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let proxy = serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let ask = |content: &str| {
        http.post(format!("{}/chat/completions", proxy.base))
            .json(&json!({"model": "llama3.2", "user": "olga",
                "messages": [{"role": "user", "content": content}]}))
            .send()
    };
    let r = ask("Remember the locker code code-4711 please.")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        answer.starts_with("OLLAMA") && answer.contains("code-4711"),
        "{v}"
    );
    assert!(calls.load(Ordering::Relaxed) >= 1);
    drop(proxy);

    std::fs::write(
        &config,
        "[providers.local]\nkind = \"olama\"\n\n[chat]\nprovider = \"local\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_llmem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("olama") && err.contains("ollama"), "{err}");
}

/// A `[budget]` per user through a real `llmem serve` on the local llama.cpp (SmolLM2), which
/// answers and writes the summaries: what the summaries spend (priced by a user catalog) is in
/// the session's compression cost and counts against the budget; each alarm fires once; past
/// the budget the user's next turn is a 429 `budget_exceeded` that names the budget and the key
/// that raises it, and is not kept; another user goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_budget_is_a_429_and_the_summaries_count_against_it() {
    let dir = tempfile::tempdir().unwrap();
    // llama.cpp names its model by its file (`…/model.gguf`): $10 per million tokens.
    let catalog = dir.path().join("models.toml");
    std::fs::write(
        &catalog,
        "[[model]]\nid = \"smollm2-served\"\naliases = [\"model.gguf\"]\nprovider = \"open\"\n\
         context_window = 8192\nmax_output = 2048\ninput = 10.0\noutput = 10.0\n\
         tokenizer = \"estimate:generic\"\nchat_format = \"chatml\"\n",
    )
    .unwrap();
    let proxy = serve(
        &["--llamacpp", "--dir", dir.path().to_str().unwrap()],
        &[
            ("LLMEM_TOKENS_CATALOG", catalog.to_str().unwrap()),
            ("LLMEM_MEMORY_MAX_CONTEXT_TOKENS", "600"),
            ("LLMEM_MEMORY_COMPRESSION_THRESHOLD", "180"),
            ("LLMEM_MEMORY_SHORT_TERM_SIZE", "2"),
            ("LLMEM_MEMORY_ANSWER_RESERVE", "16"),
            ("LLMEM_BUDGET_MAX_COST_USD", "0.008"),
            ("LLMEM_BUDGET_ALARM_AT", "[0.5]"),
            ("LLMEM_BUDGET_PER", "user"),
        ],
    );
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", proxy.base);
    let ask = |user: &'static str, text: String| {
        http.post(&url)
            .header("x-llmem-session", "s1")
            .json(&json!({
                "model": "smollm2",
                "user": user,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 16,
            }))
            .send()
    };
    let facts = [
        "My sister Ana lives in Porto and teaches chemistry at the university there.",
        "Our dog Biscuit is a beagle; he needs his rabies booster in March at the Alvalade vet.",
        "I am renovating the kitchen: the new oven arrives on the 14th, the tiles a week later.",
        "My running club meets on Saturdays at 8 by the river; I do the 10 km loop.",
        "The locker code for room 12 at work is 4471, and the parking pass expires in June.",
        "I started learning the violin in January with a teacher called Marta.",
    ];
    let mut answered = 0;
    let mut refused = None;
    for i in 0..24 {
        let text = format!("Note {i}: {} Please just say OK.", facts[i % facts.len()]);
        let r = ask("alice", text).await.unwrap();
        if r.status() == 429 {
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
        assert!(r.status().is_success(), "{}", r.status());
        answered += 1;
    }
    let refused = refused.expect("the budget ran out within 24 turns");
    assert!(answered >= 2, "{answered} turns answered");
    assert_eq!(refused["error"]["type"], "budget_exceeded", "{refused}");
    let msg = refused["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("user `alice`")
            && msg.contains("budget.per = \"user\"")
            && msg.contains("raise budget.max_cost_usd"),
        "{msg}"
    );
    let stats = get_json(&http, &format!("{}/sessions/alice/s1", proxy.base), None).await;
    let s = &stats["stats"];
    assert!(s["summary_calls"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["summary_tokens"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["estimated_calls"], 0, "llama.cpp reports its usage: {s}");
    let compression_cost = s["compression_cost"].as_f64().unwrap();
    let t = s["summary_tokens"].as_f64().unwrap();
    assert!(
        (compression_cost - t * 10.0 / 1e6).abs() < 1e-9,
        "the summaries priced at the catalog's $10/M: {s}"
    );
    assert!(s["total_cost"].as_f64().unwrap() >= 0.008, "{s}");
    assert_eq!(s["budget_alarms"], 2, "50 % and 100 %, once each: {s}");
    assert_eq!(s["budget_refusals"], 1, "{s}");
    // The refused turn is not kept (a compression its own message set off may keep that).
    assert!(s["messages"].as_u64().unwrap() <= 2 * answered + 1, "{s}");

    // Still refused, with no new alarm; another user has a budget of their own.
    assert_eq!(ask("alice", "Hello?".into()).await.unwrap().status(), 429);
    assert!(
        ask("bob", "Hello, I am Bob.".into())
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let metrics = http
        .get(format!("{}/../metrics", proxy.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("llmem_budget_alarms_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llmem_budget_refusals_total 2\n"),
        "{metrics}"
    );
    eprintln!(
        "budget: {answered} turns answered, then 429: {msg}; summaries {} calls, {} tokens, ${compression_cost:.5}",
        s["summary_calls"], s["summary_tokens"]
    );
}
