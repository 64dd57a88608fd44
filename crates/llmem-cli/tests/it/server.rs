//! `llmem serve` as a multi-tenant memory server: API keys at the edge, the memory REST API,
//! errors mapped by kind, bounded costs for bad input, and no secret in its logs. Everything
//! runs the real binary against a loopback upstream that speaks OpenAI's wire format.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};

use crate::serve::make_key;

/// A running `llmem serve` whose stderr goes to a file; killed when dropped.
struct Server {
    child: Child,
    root: String,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], env: &[(&str, &str)], log: std::path::PathBuf) -> Server {
    use std::io::{BufRead, BufReader};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmem"));
    cmd.arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().expect("start llmem serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| {
            panic!(
                "no address in {line:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    Server {
        child,
        root: base.trim_end_matches("/v1").to_owned(),
        log,
    }
}

/// An OpenAI-wire upstream that records the `Authorization` header it gets and answers by the
/// model asked: `echo` echoes the access codes (`code-…`) in the prompt, `refuse` fails with
/// 401, `busy` with 429 and `retry-after: 7`, `slow` answers after 5 s.
async fn upstream(seen_auth: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let seen = seen_auth.clone();
            async move {
                if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    seen.lock().push(a.to_owned());
                }
                let model = body["model"].as_str().unwrap_or("echo").to_owned();
                let error = |status: StatusCode, msg: &str| -> Response {
                    (status, Json(json!({"error": {"message": msg, "type": "x"}}))).into_response()
                };
                match model.as_str() {
                    "refuse" => return error(StatusCode::UNAUTHORIZED, "upstream says: bad key"),
                    "busy" => {
                        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "slow down");
                        r.headers_mut().insert("retry-after", "7".parse().unwrap());
                        return r;
                    }
                    "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
                    _ => {}
                }
                let prompt = body["messages"].to_string();
                let codes: Vec<&str> = prompt
                    .split(|c: char| !c.is_alphanumeric() && c != '-')
                    .filter(|w| w.starts_with("code-"))
                    .collect();
                Json(json!({
                    "id": "x", "object": "chat.completion", "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": format!("ECHO {}", codes.join(" "))}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
                }))
                .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

/// A request with an optional bearer key; the status and the body as JSON (Null if not JSON).
async fn call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, HeaderMap) {
    let mut r = http.request(method, url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

fn texts(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["memory"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_gate_every_route_and_no_tenant_reaches_another() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = upstream(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acme = make_key(&data, "acme", false);
    let globex = make_key(&data, "globex", false);
    let admin = make_key(&data, "ops", true);
    let config = dir.path().join("llmem.toml");
    std::fs::write(
        &config,
        format!(
            "[chat]\nkind = \"openai-compatible\"\nbase_url = {up:?}\nmodel = \"echo\"\n\
             api_key = \"upstream-secret-key\"\nmax_attempts = 1\n\n[server]\n\
             upstream_timeout_secs = 1\nmax_body_bytes = 1048576\n"
        ),
    )
    .unwrap();
    let server = start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("LLMEM_LOG", "debug")],
        dir.path().join("serve.log"),
    );
    let http = reqwest::Client::new();
    let root = &server.root;
    let url = |p: &str| format!("{root}{p}");

    // Every route but /health and /openapi.json needs a valid key.
    let routes: Vec<(Method, &str)> = vec![
        (Method::GET, "/v1/models"),
        (Method::POST, "/v1/chat/completions"),
        (Method::GET, "/v1/sessions/bob/bob"),
        (Method::GET, "/metrics"),
        (Method::POST, "/v1/memories"),
        (Method::GET, "/v1/memories"),
        (Method::DELETE, "/v1/memories?all=true"),
        (Method::POST, "/v1/memories/search"),
        (Method::GET, "/v1/memories/some-id"),
        (Method::PUT, "/v1/memories/some-id"),
        (Method::DELETE, "/v1/memories/some-id"),
        (Method::POST, "/v1/admin/keys"),
        (Method::GET, "/v1/admin/keys"),
        (Method::DELETE, "/v1/admin/keys/some-id"),
        (Method::POST, "/mcp"),
    ];
    for (m, p) in &routes {
        for key in [None, Some("llmem-sk-0000"), Some("not even a key")] {
            let (status, body, _) = call(&http, m.clone(), &url(p), key, Some(json!({}))).await;
            assert_eq!(status, 401, "{m} {p} with {key:?}: {body}");
            assert_eq!(body["error"]["type"], "authentication_error", "{m} {p}");
        }
    }
    assert_eq!(
        call(&http, Method::GET, &url("/health"), None, None)
            .await
            .0,
        200
    );
    let (status, doc, _) = call(&http, Method::GET, &url("/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/memories/search"].is_object(), "{doc}");

    // acme remembers, for its user bob and for itself.
    let (status, added, _) = call(
        &http,
        Method::POST,
        &url("/v1/memories"),
        Some(&acme),
        Some(
            json!({"text": "The vault code is code-1234.", "user_id": "bob",
                    "metadata": {"topic": "vault"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["results"][0]["event"], "ADD");
    assert_eq!(added["results"][0]["user_id"], "bob");
    let bob_id = added["results"][0]["id"].as_str().unwrap().to_owned();
    let (_, own, _) = call(
        &http,
        Method::POST,
        &url("/v1/memories"),
        Some(&acme),
        Some(json!({"messages": [{"role": "user", "content": "Our launch is on Friday, code-5678."}]})),
    )
    .await;
    let own_id = own["results"][0]["id"].as_str().unwrap().to_owned();
    let (status, got, _) = call(
        &http,
        Method::GET,
        &url(&format!("/v1/memories/{bob_id}?user_id=bob")),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(
        (status, got["memory"].as_str()),
        (200, Some("The vault code is code-1234."))
    );

    // globex tries every route with acme's ids and users: refused or empty, never acme's text.
    for id in [&bob_id, &own_id] {
        for user in ["", "?user_id=bob"] {
            let p = format!("/v1/memories/{id}{user}");
            for (m, body) in [
                (Method::GET, None),
                (
                    Method::PUT,
                    Some(json!({"text": "hijacked", "user_id": "bob"})),
                ),
                (Method::DELETE, None),
            ] {
                let (status, v, _) = call(&http, m.clone(), &url(&p), Some(&globex), body).await;
                assert_eq!(status, 404, "{m} {p}: {v}");
                assert!(!v.to_string().contains("code-"), "{v}");
            }
        }
    }
    for user in [None, Some("bob")] {
        let q = user.map_or(String::new(), |u| format!("?user_id={u}"));
        let (status, v, _) = call(
            &http,
            Method::GET,
            &url(&format!("/v1/memories{q}")),
            Some(&globex),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert!(texts(&v).is_empty(), "{v}");
        let (status, v, _) = call(
            &http,
            Method::POST,
            &url("/v1/memories/search"),
            Some(&globex),
            Some(json!({"query": "vault code launch", "user_id": user, "limit": 50})),
        )
        .await;
        assert_eq!(status, 200);
        assert!(texts(&v).is_empty(), "{v}");
        let (_, v, _) = call(
            &http,
            Method::DELETE,
            &url(&format!("/v1/memories?all=true{}", q.replace('?', "&"))),
            Some(&globex),
            None,
        )
        .await;
        assert_eq!(v["deleted"], 0, "{v}");
    }
    for user in ["../acme", "acme/bob", "a\u{7}b"] {
        let (status, v, _) = call(
            &http,
            Method::POST,
            &url("/v1/memories/search"),
            Some(&globex),
            Some(json!({"query": "vault", "user_id": user})),
        )
        .await;
        assert_eq!(status, 400, "{user}: {v}");
    }
    // globex's chat for "bob" recalls nothing of acme's bob; acme's session of bob is not
    // globex's either.
    let (status, v, _) = call(
        &http,
        Method::POST,
        &url("/v1/chat/completions"),
        Some(&globex),
        Some(json!({"model": "echo", "user": "bob",
                    "messages": [{"role": "user", "content": "What is the vault code?"}]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(!v.to_string().contains("code-1234"), "{v}");
    let (_, s, _) = call(
        &http,
        Method::GET,
        &url("/v1/sessions/bob/bob"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(s["stats"]["messages"], 0, "acme's bob never chatted: {s}");
    // acme still has both memories, unchanged.
    let (_, v, _) = call(
        &http,
        Method::POST,
        &url("/v1/memories/search"),
        Some(&acme),
        Some(json!({"query": "vault code", "user_id": "bob", "k": 5})),
    )
    .await;
    assert_eq!(
        texts(&v),
        vec!["The vault code is code-1234.".to_owned()],
        "{v}"
    );
    assert!(v["results"][0]["score"].as_f64().is_some());
    // What the API stored, acme's chat for bob recalls: one store behind both.
    let (status, v, _) = call(
        &http,
        Method::POST,
        &url("/v1/chat/completions"),
        Some(&acme),
        Some(json!({"model": "echo", "user": "bob",
                    "messages": [{"role": "user", "content": "What is the vault code?"}]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v.to_string().contains("code-1234"), "{v}");

    // The memory API itself: list with a filter, update, delete by filter.
    let (_, v, _) = call(
        &http,
        Method::GET,
        &url("/v1/memories?user_id=bob&filter=%7B%22topic%22%3A%22vault%22%7D"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(texts(&v).len(), 1, "{v}");
    let (status, v, _) = call(
        &http,
        Method::PUT,
        &url(&format!("/v1/memories/{bob_id}")),
        Some(&acme),
        Some(json!({"text": "The vault code is code-9999.", "user_id": "bob"})),
    )
    .await;
    assert_eq!((status, v["event"].as_str()), (200, Some("UPDATE")), "{v}");
    assert!(v["updated_at"].is_string());
    let (_, v, _) = call(
        &http,
        Method::POST,
        &url("/v1/memories/search"),
        Some(&acme),
        Some(json!({"query": "vault code", "user_id": "bob"})),
    )
    .await;
    assert_eq!(texts(&v), vec!["The vault code is code-9999.".to_owned()]);
    let (status, v, _) = call(
        &http,
        Method::DELETE,
        &url("/v1/memories?user_id=bob"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(status, 400, "a delete without filter or all=true: {v}");
    let (_, v, _) = call(
        &http,
        Method::DELETE,
        &url("/v1/memories?user_id=bob&filter=%7B%22topic%22%3A%22vault%22%7D"),
        Some(&acme),
        None,
    )
    .await;
    // A forget takes the memory that passes the filter with its earlier version (the update
    // above kept it): two records, bob's only.
    assert_eq!(v["deleted"], 2, "{v}");
    let (status, _, _) = call(
        &http,
        Method::DELETE,
        &url(&format!("/v1/memories/{own_id}")),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = call(
        &http,
        Method::GET,
        &url(&format!("/v1/memories/{own_id}")),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Bad input: a clear 4xx, in the error shape.
    let r = http
        .post(url("/v1/memories"))
        .bearer_auth(&acme)
        .header("content-type", "application/json")
        .body("{\"text\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{v}"
    );
    let big = "x".repeat(50 * 1024 * 1024);
    let r = http
        .post(url("/v1/memories"))
        .bearer_auth(&acme)
        .header("content-type", "application/json")
        .body(format!("{{\"text\": \"{big}\"}}"))
        .send()
        .await;
    // The server answers 413 once the limit is read; it may close the connection before the
    // client has finished sending 50 MB.
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    let (status, v, _) = call(
        &http,
        Method::POST,
        &url("/v1/memories/search"),
        Some(&acme),
        Some(json!({"query": "x", "filter": {"topic": {"$regex": "va.*"}}})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("$regex"),
        "{v}"
    );
    let (status, v, _) = call(&http, Method::GET, &url("/v1/nowhere"), Some(&acme), None).await;
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (404, Some("not_found_error"))
    );

    // Upstream failures by kind; the upstream only ever sees llmem's own key.
    let ask = |model: &str| json!({"model": model, "user": "bob", "messages": [{"role": "user", "content": "hi"}]});
    let (status, v, _) = call(
        &http,
        Method::POST,
        &url("/v1/chat/completions"),
        Some(&acme),
        Some(ask("refuse")),
    )
    .await;
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream says: bad key"),
        "{v}"
    );
    let (status, v, h) = call(
        &http,
        Method::POST,
        &url("/v1/chat/completions"),
        Some(&acme),
        Some(ask("busy")),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(
        h.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7"),
        "{v}"
    );
    let (status, v, h) = call(
        &http,
        Method::POST,
        &url("/v1/chat/completions"),
        Some(&acme),
        Some(ask("slow")),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    assert!(h.get("retry-after").is_some());
    let auths = seen.lock().clone();
    assert!(!auths.is_empty());
    for a in &auths {
        assert_eq!(a, "Bearer upstream-secret-key");
    }

    // Keys: only an admin manages them; a revoked key is refused at once (by the API) or
    // within a second or so (by `llmem keys revoke` beside the running server).
    let (status, v, _) = call(
        &http,
        Method::POST,
        &url("/v1/admin/keys"),
        Some(&acme),
        Some(json!({"tenant": "x"})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (403, Some("permission_error"))
    );
    let (status, made, _) = call(
        &http,
        Method::POST,
        &url("/v1/admin/keys"),
        Some(&admin),
        Some(json!({"tenant": "initech"})),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let initech = made["key"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            &http,
            Method::GET,
            &url("/v1/memories"),
            Some(&initech),
            None
        )
        .await
        .0,
        200
    );
    let (_, listed, _) = call(
        &http,
        Method::GET,
        &url("/v1/admin/keys"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 4, "{listed}");
    assert!(!listed.to_string().contains("llmem-sk-") && !listed.to_string().contains("sha256"));
    let id = made["id"].as_str().unwrap();
    assert_eq!(
        call(
            &http,
            Method::DELETE,
            &url(&format!("/v1/admin/keys/{id}")),
            Some(&admin),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &http,
            Method::GET,
            &url("/v1/memories"),
            Some(&initech),
            None
        )
        .await
        .0,
        401
    );
    let (code, out, _) = crate::llmem(&["keys", "list", "--dir", data.to_str().unwrap()]);
    assert_eq!(code, 0);
    let globex_id = out
        .lines()
        .find(|l| l.contains("\tglobex\t"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_owned();
    let (code, _, err) = crate::llmem(&[
        "keys",
        "revoke",
        &globex_id,
        "--dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        call(
            &http,
            Method::GET,
            &url("/v1/memories"),
            Some(&globex),
            None
        )
        .await
        .0,
        401
    );

    // No key, ours or the upstream's, is ever in the log (written at debug level).
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.len() > 100, "the log was written: {log}");
    for secret in [
        &acme,
        &globex,
        &admin,
        &initech,
        &"upstream-secret-key".to_owned(),
    ] {
        assert!(!log.contains(secret.as_str()), "a key leaked into the log");
    }
    let stored = std::fs::read_to_string(data.join("keys.json")).unwrap();
    for secret in [&acme, &globex, &admin, &initech] {
        assert!(
            !stored.contains(secret.as_str()),
            "keys.json holds a key itself"
        );
    }
}

#[test]
fn serve_refuses_a_public_address_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (code, _, err) = crate::llmem(&["serve", "--listen", "0.0.0.0:0", "--dir", d]);
    assert_ne!(code, 0);
    assert!(
        err.contains("refusing") && err.contains("llmem keys add"),
        "{err}"
    );
    // Opting out is loud.
    let server = start(
        &["--listen", "0.0.0.0:0", "--dir", d, "--allow-no-keys"],
        &[],
        dir.path().join("open.log"),
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("WITHOUT API KEYS"), "{log}");
    drop(server);
    // With a key, a public address is fine.
    make_key(&data, "acme", false);
    let server = start(
        &["--listen", "0.0.0.0:0", "--dir", d],
        &[],
        dir.path().join("keyed.log"),
    );
    assert!(
        server.root.starts_with("http://0.0.0.0:"),
        "{}",
        server.root
    );
}

/// docs/openapi.json is the document the code generates (`llmem serve --print-openapi`;
/// `LLMEM_BLESS=1` rewrites it).
#[test]
fn the_committed_openapi_document_is_the_generated_one() {
    let (code, out, err) = crate::llmem(&["serve", "--print-openapi"]);
    assert_eq!(code, 0, "{err}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    if std::env::var_os("LLMEM_BLESS").is_some() {
        std::fs::write(path, &out).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    // A short message rather than two 20 kB documents side by side.
    assert!(
        committed.trim() == out.trim(),
        "docs/openapi.json is stale: run this test with LLMEM_BLESS=1 (or `llmem serve \
         --print-openapi > docs/openapi.json`) and commit the result"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    for p in [
        "/v1/memories",
        "/v1/memories/{id}",
        "/v1/memories/search",
        "/v1/admin/keys",
    ] {
        assert!(v["paths"][p].is_object(), "{p} missing");
    }
}

/// The text of the best memory a search by `key` for `query` finds on the server at `root`.
#[cfg(feature = "onnx")]
async fn best(http: &reqwest::Client, root: &str, key: &str, query: &str) -> String {
    let (_, v, _) = call(
        http,
        Method::POST,
        &format!("{root}/v1/memories/search"),
        Some(key),
        Some(json!({"query": query, "limit": 1})),
    )
    .await;
    texts(&v).first().cloned().unwrap_or_default()
}

/// Whether `ok` holds within 30 s, asked every 250 ms.
#[cfg(feature = "onnx")]
async fn within_30s(mut ok: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..120 {
        if ok().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// `retrieval.deferred_embedding` in a server: memories are acknowledged before their vectors
/// exist (found by their words at once, by meaning once embedded), and what a SIGKILLed server
/// left waiting is in the journal and embedded by the next start.
#[cfg(feature = "onnx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_embedding_acknowledges_first_and_a_killed_server_embeds_the_rest_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acme = make_key(&data, "acme", false);
    let config = dir.path().join("llmem.toml");
    std::fs::write(
        &config,
        "[embedder]\nkind = \"onnx-embedder\"\n\n[retrieval]\ndeferred_embedding = true\n\
         taxonomy = \"off\"\n",
    )
    .unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let http = reqwest::Client::new();
    let remember = |texts: Vec<String>| json!({"messages": texts.into_iter().map(|t| json!({"role": "user", "content": t})).collect::<Vec<_>>()});
    let journal = data.join("embedding-queue.log");
    let waiting = || {
        let mut open = std::collections::HashSet::new();
        for l in std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
        {
            let e: Value = serde_json::from_str(l).unwrap();
            let id = e["id"].as_str().unwrap().to_owned();
            if e["op"] == "queued" {
                open.insert(id);
            } else {
                open.remove(&id);
            }
        }
        open.len()
    };

    let mut server = start(&args, &[], dir.path().join("serve-1.log"));
    let url = |root: &str, p: &str| format!("{root}{p}");
    let first: Vec<String> = (0..40)
        .map(|i| match i {
            7 => "Priya practised the clarinet before the school concert.".to_owned(),
            _ => format!("Note {i}: the delivery for order {i} came on a weekday."),
        })
        .collect();
    let (status, added, _) = call(
        &http,
        Method::POST,
        &url(&server.root, "/v1/memories"),
        Some(&acme),
        Some(remember(first)),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["results"].as_array().unwrap().len(), 40);
    // At once, by its words.
    let found = best(&http, &server.root, &acme, "clarinet concert").await;
    assert!(found.contains("clarinet"), "{found}");
    // By meaning (no word in common) once its batch is embedded.
    let by_meaning = within_30s(async || {
        best(
            &http,
            &server.root,
            &acme,
            "Which musical instrument does she play?",
        )
        .await
        .contains("clarinet")
    })
    .await;
    assert!(by_meaning, "found by meaning once embedded");

    // 60 more, and the server is SIGKILLed as soon as it acknowledges them.
    let second: Vec<String> = (0..60)
        .map(|i| match i {
            33 => "Tom repaired the mast of his old sailboat.".to_owned(),
            _ => format!("Entry {i}: the library returned book number {i}."),
        })
        .collect();
    let (status, _, _) = call(
        &http,
        Method::POST,
        &url(&server.root, "/v1/memories"),
        Some(&acme),
        Some(remember(second)),
    )
    .await;
    assert_eq!(status, 200);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let left = waiting();
    assert!(left > 0, "the journal holds what was waiting at the kill");

    let server = start(&args, &[], dir.path().join("serve-2.log"));
    let (_, v, _) = call(
        &http,
        Method::GET,
        &url(&server.root, "/v1/memories?limit=1000"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(texts(&v).len(), 100, "every acknowledged memory is stored");
    let found = within_30s(async || {
        best(&http, &server.root, &acme, "Who fixed a boat?")
            .await
            .contains("sailboat")
            && waiting() == 0
    })
    .await;
    assert!(
        found,
        "the {left} records the kill left are embedded after the restart: {}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
}
