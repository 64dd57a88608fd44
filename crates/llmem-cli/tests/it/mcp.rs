//! `llmem mcp` and `/mcp` of `llmem serve`: the real Python MCP client (PyPI `mcp`, installed
//! by `cargo xtask setup`) remembers, recalls, updates and forgets over stdio, and over
//! streamable HTTP with tenant keys.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// What the Python scripts share: the tool calls, parsed, and a report of what was seen.
const COMMON: &str = r#"
import asyncio, json, sys

out = {}

def attr(o, *names):
    for n in names:
        if hasattr(o, n):
            return getattr(o, n)
    raise AttributeError(f"none of {names} on {o!r}")

async def call(s, name, args):
    r = await s.call_tool(name, args)
    text = "".join(attr(c, "text") for c in r.content if attr(c, "type") == "text")
    if attr(r, "is_error", "isError"):
        return {"error": text}
    return json.loads(text)

def memories(r):
    return [m["memory"] for m in r["results"]]
"#;

const STDIO_CLIENT: &str = r#"
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

async def main():
    exe, data = sys.argv[1], sys.argv[2]
    params = StdioServerParameters(command=exe, args=["mcp", "--dir", data], cwd=data)
    async with stdio_client(params) as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            info = await s.initialize()
            out["server"] = attr(info, "server_info", "serverInfo").name
            out["instructions"] = info.instructions
            tools = await s.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            dog = await call(s, "remember", {"text": "My dog is called Rex"})
            out["remember"] = dog
            dog_id = dog["results"][0]["id"]
            home = await call(s, "remember", {"text": "I live in Lisbon", "metadata": {"topic": "home"}})
            home_id = home["results"][0]["id"]
            await call(s, "remember", {"text": "Bob's cat is called Tom", "user_id": "bob"})
            out["recall_dog"] = memories(await call(s, "recall", {"query": "what is my dog's name"}))
            out["updated"] = await call(s, "update", {"id": dog_id, "text": "My dog is called Max"})
            out["recall_updated"] = memories(await call(s, "recall", {"query": "dog", "limit": 1}))
            out["forget"] = await call(s, "forget", {"id": home_id})
            out["recall_forgotten"] = memories(await call(s, "recall", {"query": "where do I live? Lisbon"}))
            for food in ["I like pizza", "I like sushi"]:
                await call(s, "remember", {"text": food, "metadata": {"topic": "food"}})
            out["forget_filter"] = await call(s, "forget", {"filter": {"topic": "food"}})
            out["recall_food"] = memories(await call(s, "recall", {"query": "what food do I like"}))
            out["forget_everything"] = await call(s, "forget", {"filter": {}})
            out["recall_cat_default"] = memories(await call(s, "recall", {"query": "cat Tom"}))
            out["recall_cat_bob"] = memories(await call(s, "recall", {"query": "cat Tom", "user_id": "bob"}))
            out["bad_update"] = await call(s, "update", {"id": "no-such-memory", "text": "x"})
            out["bad_args"] = await call(s, "recall", {"question": "dog"})
            # The server is still there after the errors.
            out["after_errors"] = memories(await call(s, "recall", {"query": "dog"}))

asyncio.run(asyncio.wait_for(main(), 120))
print(json.dumps(out))
"#;

/// Runs a Python script (`COMMON` + `script`) with `args`; returns its report, the JSON on the
/// last line of its stdout.
fn python(script: &str, args: &[&str]) -> Value {
    let python = std::env::var("LLMEM_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg("-c")
        .arg(format!("{COMMON}\n{script}"))
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n(run `cargo xtask setup` for the mcp package)"
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not a tool error: {v}"))
}

#[test]
fn the_python_mcp_client_remembers_and_recalls_over_stdio() {
    let data = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_llmem");
    let out = python(STDIO_CLIENT, &[exe, data.path().to_str().unwrap()]);

    assert_eq!(out["server"], "llmem");
    assert!(out["instructions"].as_str().unwrap().contains("recall"));
    assert_eq!(
        strings(&out["tools"]),
        ["forget", "recall", "remember", "update"]
    );
    let added = &out["remember"]["results"][0];
    assert_eq!(added["memory"], "My dog is called Rex");
    assert_eq!(added["event"], "ADD");
    assert_eq!(added["user_id"], "default", "--user's default: {added}");

    let dog = strings(&out["recall_dog"]);
    assert!(dog[0].contains("Rex"), "{dog:?}");

    assert_eq!(out["updated"]["memory"], "My dog is called Max");
    assert_eq!(out["updated"]["event"], "UPDATE");
    assert_eq!(strings(&out["recall_updated"]), ["My dog is called Max"]);

    assert_eq!(out["forget"]["deleted"], 1);
    let home = strings(&out["recall_forgotten"]);
    assert!(home.iter().all(|m| !m.contains("Lisbon")), "{home:?}");

    assert_eq!(out["forget_filter"]["deleted"], 2);
    let food = strings(&out["recall_food"]);
    assert!(food.iter().all(|m| !m.contains("like")), "{food:?}");
    assert!(
        error_of(&out["forget_everything"]).contains("every memory"),
        "{}",
        out["forget_everything"]
    );

    // Users are kept apart.
    let cat = strings(&out["recall_cat_default"]);
    assert!(cat.iter().all(|m| !m.contains("Tom")), "{cat:?}");
    assert_eq!(strings(&out["recall_cat_bob"]), ["Bob's cat is called Tom"]);

    // Errors are tool errors the model can read, and the server lives on.
    assert!(
        error_of(&out["bad_update"]).contains("no memory `no-such-memory`"),
        "{}",
        out["bad_update"]
    );
    assert!(
        error_of(&out["bad_args"]).contains("question"),
        "{}",
        out["bad_args"]
    );
    assert!(strings(&out["after_errors"])[0].contains("Max"));
}

const HTTP_CLIENT: &str = r#"
import urllib.request, urllib.error
from mcp import ClientSession
try:
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    def connect(url, headers):
        return streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
except ImportError:  # mcp 1.x
    from mcp.client.streamable_http import streamablehttp_client

    def connect(url, headers):
        return streamablehttp_client(url, headers=headers)

async def session_do(url, key, work):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with connect(url, headers) as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            await s.initialize()
            return await work(s)

async def main():
    url, acme, globex = sys.argv[1], sys.argv[2], sys.argv[3]

    async def as_acme(s):
        out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
        out["remember"] = await call(s, "remember", {"text": "My dog is called Rex"})
        await call(s, "remember", {"text": "I live in Lisbon", "user_id": "alice"})
        out["recall"] = memories(await call(s, "recall", {"query": "what is my dog's name"}))
        out["recall_alice"] = memories(await call(s, "recall", {"query": "where do I live", "user_id": "alice"}))
        out["bad_update"] = await call(s, "update", {"id": "no-such-memory", "text": "x"})
    await session_do(url, acme, as_acme)

    async def as_globex(s):
        out["globex_recall"] = memories(await call(s, "recall", {"query": "dog Rex"}))
        out["globex_forget"] = await call(s, "forget", {"id": out["remember"]["results"][0]["id"]})
    await session_do(url, globex, as_globex)

    async def recall_again(s):
        out["acme_after_globex"] = memories(await call(s, "recall", {"query": "dog Rex"}))
    await session_do(url, acme, recall_again)

    # No key: the HTTP layer refuses the request itself, and the MCP client fails.
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}}).encode()
    for name, key in [("nokey", None), ("wrongkey", "llmem-sk-" + "0" * 48)]:
        req = urllib.request.Request(url, data=init, method="POST", headers={
            "content-type": "application/json", "accept": "application/json, text/event-stream",
            **({"authorization": f"Bearer {key}"} if key else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                out[name + "_status"] = r.status
        except urllib.error.HTTPError as e:
            out[name + "_status"] = e.code
    async def nothing(s):
        return await call(s, "recall", {"query": "dog"})
    try:
        out["nokey_client"] = await asyncio.wait_for(session_do(url, None, nothing), 30)
    except BaseException as e:  # an MCP error, an ExceptionGroup from the transport, a timeout
        out["nokey_client"] = "refused: " + type(e).__name__

asyncio.run(asyncio.wait_for(main(), 120))
print(json.dumps(out))
"#;

/// A running `llmem serve`; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `llmem serve --dir DATA --listen 127.0.0.1:0`, without an upstream model.
fn serve(data: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(data)
        .current_dir(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start llmem serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    Server { child, base }
}

/// `llmem keys add --tenant T --dir DATA`: the new key.
fn add_key(data: &Path, tenant: &str) -> String {
    let (code, stdout, stderr) = crate::llmem_in(
        &[
            "keys",
            "add",
            "--tenant",
            tenant,
            "--dir",
            data.to_str().unwrap(),
        ],
        Some(data),
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let key = stdout.trim().to_owned();
    assert!(
        key.starts_with("llmem-sk-") && !key.contains('\n'),
        "{stdout}"
    );
    key
}

#[test]
fn the_python_mcp_client_works_over_streamable_http_with_a_tenant_key() {
    let data = tempfile::tempdir().unwrap();
    let acme = add_key(data.path(), "acme");
    let globex = add_key(data.path(), "globex");
    let server = serve(data.path());
    let root = server.base.strip_suffix("/v1").unwrap_or(&server.base);
    let url = format!("{root}/mcp");
    let out = python(HTTP_CLIENT, &[&url, &acme, &globex]);

    assert_eq!(
        strings(&out["tools"]),
        ["forget", "recall", "remember", "update"]
    );
    let added = &out["remember"]["results"][0];
    assert_eq!(added["memory"], "My dog is called Rex");
    assert!(
        added.get("user_id").is_none(),
        "the tenant's own memory: {added}"
    );
    assert!(
        strings(&out["recall"])[0].contains("Rex"),
        "{}",
        out["recall"]
    );
    assert_eq!(strings(&out["recall_alice"]), ["I live in Lisbon"]);
    assert!(error_of(&out["bad_update"]).contains("no memory"));

    // Another tenant's key reaches nothing of acme's, not even by id.
    assert_eq!(strings(&out["globex_recall"]), Vec::<String>::new());
    assert!(
        error_of(&out["globex_forget"]).contains("no memory"),
        "{}",
        out["globex_forget"]
    );
    assert!(strings(&out["acme_after_globex"])[0].contains("Rex"));

    // Without a key (or with a wrong one) nothing is served.
    assert_eq!(out["nokey_status"], 401, "{out}");
    assert_eq!(out["wrongkey_status"], 401, "{out}");
    let refused = out["nokey_client"].as_str().unwrap_or_default();
    assert!(refused.starts_with("refused"), "{}", out["nokey_client"]);
}
