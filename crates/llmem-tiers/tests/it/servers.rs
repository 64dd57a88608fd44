//! Local servers for tests, shared by the test binaries that include this file: a process on
//! a free port of 127.0.0.1, killed on drop; moto (S3) from the venv of `cargo xtask setup`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A local server for one test (moto, Azurite, the GCS emulator) on a free port of
/// 127.0.0.1; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Starts `command(port)` on a free port and waits until it listens.
pub fn serve(what: &str, command: impl FnOnce(u16) -> Command) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = command(port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}; run `cargo xtask setup`"));
    let mut server = Server { child, port };
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("{what} exited with {status}: is it installed? run `cargo xtask setup`");
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what} did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// The venv python that has `moto[server]` (`LLMEM_PYTHON`, set by `cargo xtask env`).
pub fn python() -> PathBuf {
    match std::env::var_os("LLMEM_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "LLMEM_PYTHON is not set: the glacier tests start a moto S3 server with it; run \
             `cargo xtask setup` once, then `eval \"$(cargo xtask env)\"` (CI sets it)"
        ),
    }
}

pub fn start_moto() -> Server {
    serve("moto.server", |port| {
        let mut c = Command::new(python());
        c.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        c
    })
}

/// Creates a bucket with a plain S3 `PUT /bucket` (moto accepts unsigned requests).
pub fn create_bucket(moto: &Server, bucket: &str) {
    use std::io::{Read, Write};
    let endpoint = moto.endpoint();
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {resp}"
    );
}
