//! With a low open-files limit, a crowd of silent sockets must not starve the server of file
//! descriptors: it keeps headroom below `RLIMIT_NOFILE`, closes the silent ones after the
//! header-read timeout, and `/healthz` still answers.
//!
//! The server runs in a child process (this same test binary, re-run in child mode) under
//! `ulimit -n 256`, so the limit is its own and the silent sockets are this process's.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; expect() messages would only repeat the line"
)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use rill_server::{Config, ConnectionConfig};
use support::{TestServer, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

/// Set in the child's environment: serve, print the port, wait for stdin to close.
const CHILD: &str = "RILL_TEST_OPEN_FILES_CHILD";
const TEST: &str = "healthz_answers_past_the_open_files_limit";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_past_the_open_files_limit() {
    if std::env::var_os(CHILD).is_some() {
        return serve_as_child().await;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(exe)
        .args(["--exact", TEST, "--nocapture"])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port: u16 = loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the child serves in time")
            .unwrap()
            .expect("the child printed its port");
        if let Some(port) = line.strip_prefix("RILL_PORT=") {
            break port.trim().parse().unwrap();
        }
    };

    // More silent sockets than the child has descriptors.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let client = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let health = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(health.status(), 200);
    let metrics = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // 256 minus the reserve of 64.
    assert!(
        metrics.contains("\nrill_connection_limit 192\n"),
        "{metrics}"
    );

    drop(silent);
    drop(child.stdin.take());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the child ends when its stdin closes")
        .unwrap();
    assert!(status.success(), "{status}");
}

async fn serve_as_child() {
    let config = Config {
        connections: ConnectionConfig {
            header_read_timeout: Duration::from_millis(500),
            ..ConnectionConfig::default()
        },
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    println!("RILL_PORT={}", server.addr.port());
    // Serves until the parent closes stdin (bounded, in case it never does).
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), stdin.read_to_end(&mut sink)).await;
    server.stop().await;
}
