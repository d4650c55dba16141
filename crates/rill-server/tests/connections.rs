//! Connections that send nothing, or too slowly, are closed; idle keep-alive connections are
//! closed, open streams are not; open sockets are capped. Over raw TCP on 127.0.0.1, with short
//! limits so nothing waits long (every wait is bounded by [`WAIT`]).

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; expect() messages would only repeat the line"
)]

mod support;

use std::time::Duration;

use rill_server::{Config, ConnectionConfig};
use serde_json::json;
use support::{SseStream, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn short_limits() -> Config {
    Config {
        connections: ConnectionConfig {
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            ..ConnectionConfig::default()
        },
        ..Config::default()
    }
}

/// Everything the server sends until it closes the connection; panics if it is still open
/// after [`WAIT`].
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("the server closed the connection in time")
        {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed() {
    let server = TestServer::with_config(short_limits()).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "");
    // Half a request head is no better.
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    read_until_closed(&mut partial).await;
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_gets_408_and_the_connection_closes() {
    let server = TestServer::with_config(short_limits()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(
            b"POST /api/topics/t/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    // One byte every 50 ms: never the 100 announced within the body timeout (bounded: 80 bytes).
    let trickle = tokio::spawn(async move {
        for _ in 0..80 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let answer = read_until_closed(&mut read).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    trickle.abort();
    // Nothing was published.
    assert_eq!(server.state.hub.metrics().snapshot().events_published, 0);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = TestServer::with_config(short_limits()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("{\"status\":\"ok\"}"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn an_open_stream_is_not_idle() {
    let mut config = short_limits();
    config.streams.heartbeat = Duration::from_secs(60);
    let server = TestServer::with_config(config).await;
    let mut sub = server.subscribe(&["t"], None).await;
    // Several idle timeouts without a byte on the wire: the stream is a request in flight.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.publish("t", None, json!(1)).await;
    assert_eq!(sub.next_event().await.unwrap().event, "message");
    server.stop().await;
}

#[tokio::test]
async fn open_sockets_are_capped_and_the_rest_wait() {
    let mut config = short_limits();
    config.connections.max_open_connections = 3;
    let server = TestServer::with_config(config).await;
    let mut silent = Vec::new();
    for _ in 0..6 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let stats = server.state.connections.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.open() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "three were accepted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(stats.open() <= 3, "{} open", stats.open());
    assert_eq!(stats.limit(), 3);
    // The silent ones time out, and a real request gets its turn.
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = server.metrics().await;
    assert!(metrics.contains("\nrill_connection_limit 3\n"), "{metrics}");
    drop(silent);
    server.stop().await;
}

/// A stream that a client keeps reading stays open across idle timeouts and heartbeats alike
/// (the reader here uses reqwest, whose pool would otherwise hide a closed connection).
#[tokio::test]
async fn heartbeats_keep_flowing_past_the_idle_timeout() {
    let mut config = short_limits();
    config.streams.heartbeat = Duration::from_millis(100);
    let server = TestServer::with_config(config).await;
    let response = server
        .client
        .get(server.url("/api/events?topic=t"))
        .send()
        .await
        .unwrap();
    let mut sub = SseStream::new(response);
    let mut beats = 0;
    while beats < 8 {
        if let Some(support::SseItem::Comment(_)) = sub.next_item().await {
            beats += 1;
        }
    }
    server.stop().await;
}
