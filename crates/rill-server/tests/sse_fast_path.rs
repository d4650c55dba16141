//! The HTTP/1.1 fast path for event streams (`h1_stream`): what a client sees is what hyper
//! would have sent, byte for byte apart from `date`; the connection goes on in hyper after the
//! response (keep-alive, pipelining); a client that leaves frees its stream at once; whatever
//! the fast path does not take (large heads, HTTP/1.0, h2c, other requests) is hyper's as
//! before. Over raw TCP on 127.0.0.1; every wait is bounded by [`WAIT`].
//!
//! By design these pass on either path (the fast path answers as hyper would): they pin the
//! behaviour. `h1_stream`'s own tests drive the fast path directly, and the memory it saves is
//! measured in `rill bench connections` (docs/benchmarks.md).

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; expect() messages would only repeat the line"
)]

mod support;

use std::time::Duration;

use rill_server::{Config, ConnectionConfig};
use serde_json::json;
use support::{TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(fast_path: bool) -> Config {
    Config {
        connections: ConnectionConfig {
            sse_fast_path: fast_path,
            ..ConnectionConfig::default()
        },
        ..Config::default()
    }
}

/// Reads from `stream` into `seen` until `needle` occurs in it; panics after [`WAIT`].
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{:?} did not come; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(seen)
                )
            })
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(seen));
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Everything until the server closes; panics if it stays open past [`WAIT`].
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// The response with its `date` line removed (the only line that may differ between runs).
fn without_date(text: &str) -> String {
    text.split("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

const STREAM_HEAD: &[u8] =
    b"GET /api/events?topic=t HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n";

/// Opens a topic stream over raw TCP and reads up to its opening comment; returns the socket
/// and the bytes read.
async fn open_stream(server: &TestServer) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(STREAM_HEAD).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, b": ok\n").await;
    (stream, seen)
}

/// Opens a stream over raw TCP, publishes one event, and returns the bytes up to that event.
async fn one_event(fast_path: bool) -> String {
    let server = TestServer::with_config(config(fast_path)).await;
    let (mut stream, mut seen) = open_stream(&server).await;
    let id = server.publish("t", None, json!({"n": 1})).await;
    read_until(&mut stream, &mut seen, b"\n\n\r\n").await;
    assert!(String::from_utf8_lossy(&seen).contains(&id));
    server.stop().await;
    without_date(&String::from_utf8(seen).unwrap())
}

/// The head, then each chunk's content with `id:` lines blanked (ids carry the hub's random
/// epoch, so their length, and the chunk sizes, differ between two servers).
fn shape(response: &str) -> (String, Vec<String>) {
    let (head, mut body) = response.split_once("\r\n\r\n").unwrap();
    let mut chunks = Vec::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size, 16).unwrap();
        let (data, rest) = rest.split_at(size);
        let blanked = data
            .split_inclusive('\n')
            .map(|line| {
                if line.starts_with("id: ") {
                    "id: _\n"
                } else {
                    line
                }
            })
            .collect();
        chunks.push(blanked);
        body = rest.strip_prefix("\r\n").unwrap();
    }
    assert_eq!(body, "", "a chunk was cut");
    (head.to_owned(), chunks)
}

#[tokio::test]
async fn a_stream_reads_the_same_as_from_hyper() {
    let fast = one_event(true).await;
    let hyper = one_event(false).await;
    assert_eq!(shape(&fast), shape(&hyper));
    assert!(fast.starts_with("HTTP/1.1 200 OK\r\n"), "{fast}");
    assert!(fast.contains("content-type: text/event-stream"), "{fast}");
    assert!(fast.contains("transfer-encoding: chunked\r\n"), "{fast}");
}

#[tokio::test]
async fn the_date_header_is_sent() {
    let server = TestServer::with_config(config(true)).await;
    let (_, seen) = open_stream(&server).await;
    let head = String::from_utf8_lossy(&seen).to_lowercase();
    assert!(head.contains("\r\ndate: "), "{head}");
    server.stop().await;
}

/// A refused stream request (here: no topic) is answered on the fast path, and the connection
/// then serves its next request in hyper, whether it came after the answer or with it.
#[tokio::test]
async fn the_connection_goes_on_after_the_answer() {
    let server = TestServer::with_config(config(true)).await;
    let refused = b"GET /api/events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n";
    let health = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

    // One after the other.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(refused).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, b"}").await;
    let first = String::from_utf8_lossy(&seen).into_owned();
    assert!(first.starts_with("HTTP/1.1 400 "), "{first}");
    assert!(first.contains("content-length: "), "{first}");
    stream.write_all(health).await.unwrap();
    let rest = read_to_close(&mut stream).await;
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.ends_with("{\"status\":\"ok\"}"), "{rest}");

    // Pipelined: both heads in one write.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(&[&refused[..], &health[..]].concat())
        .await
        .unwrap();
    let both = read_to_close(&mut stream).await;
    assert!(both.starts_with("HTTP/1.1 400 "), "{both}");
    assert_eq!(both.matches("HTTP/1.1 200 OK\r\n").count(), 1, "{both}");
    assert!(both.ends_with("{\"status\":\"ok\"}"), "{both}");
    server.stop().await;
}

/// `Connection: close` closes the connection after the answer.
#[tokio::test]
async fn connection_close_is_honoured() {
    let server = TestServer::with_config(config(true)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /api/events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    server.stop().await;
}

/// A client that closes its socket frees its stream at once: no heartbeat or event has to fail
/// first (the heartbeat here is a minute away).
#[tokio::test]
async fn a_client_that_leaves_frees_its_stream_at_once() {
    let mut config = config(true);
    config.streams.heartbeat = Duration::from_secs(60);
    let server = TestServer::with_config(config).await;
    let open = || server.state.hub.metrics().snapshot().open_streams;
    let (stream, _) = open_stream(&server).await;
    assert_eq!(open(), 1);
    drop(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    while open() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream was not freed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.state.connections.open(), 0);
    server.stop().await;
}

/// On shutdown the stream gets its final event and the chunked body its last chunk.
#[tokio::test]
async fn shutdown_ends_the_body_properly() {
    let server = TestServer::with_config(config(true)).await;
    let (mut stream, _) = open_stream(&server).await;
    let stop = tokio::spawn(server.stop());
    let rest = read_to_close(&mut stream).await;
    assert!(rest.contains("server_shutdown"), "{rest}");
    assert!(rest.ends_with("\r\n0\r\n\r\n"), "{rest:?}");
    stop.await.unwrap();
}

/// What the fast path does not take is hyper's, answered as before.
#[tokio::test]
async fn everything_else_is_hypers() {
    let server = TestServer::with_config(config(true)).await;
    // A head larger than 8 KiB: 431 (hyper's limit, and the fast path's).
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut big =
        b"GET /api/events?topic=t HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n".to_vec();
    big.extend_from_slice(format!("x-pad: {}\r\n\r\n", "a".repeat(9000)).as_bytes());
    stream.write_all(&big).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // HTTP/1.0: hyper, and a stream all the same (no chunking in 1.0: it ends with the close).
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /api/events?topic=t HTTP/1.0\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, b": ok\n").await;
    let head = String::from_utf8_lossy(&seen).into_owned();
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(!head.contains("chunked"), "{head}");
    // A malformed head: hyper's 400.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /api/events HTTP/1.1\r\nbad header\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A head that arrives in pieces is still one request.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for piece in STREAM_HEAD.chunks(7) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, b": ok\n").await;
    server.stop().await;
}
