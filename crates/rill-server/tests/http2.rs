//! HTTP/2: twenty concurrent SSE streams over ONE connection, over TLS (h2 by ALPN, a test
//! certificate made at test time) and over plain TCP (h2c with prior knowledge), each receiving
//! its published events; graceful shutdown ends every stream and the server returns.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; expect() messages would only repeat the line"
)]

mod edge_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;

use edge_support::{Server, client, start};
use rill_server::{Config, TlsConfig};
use rill_sse::{Item, Parser};

const STREAMS: usize = 20;
const EVENTS: usize = 3;
const WAIT: Duration = Duration::from_secs(15);

/// A self-signed certificate for 127.0.0.1 and localhost, and its key.
fn test_cert() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    (certified.cert.der().clone(), key)
}

fn client_tls(cert: &CertificateDer<'static>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// One HTTP/2 connection; every request of the test goes through the returned handle.
async fn h2_connection<IO>(io: IO) -> SendRequest<Empty<Bytes>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Opens `STREAMS` SSE streams on one connection, publishes `EVENTS` events to each topic,
/// checks every stream got exactly its events in order, then shuts the server down and checks
/// every stream ends.
async fn twenty_streams(
    server: Server,
    send: SendRequest<Empty<Bytes>>,
    http: reqwest::Client,
    base: &str,
) {
    let authority = server.addr.to_string();
    let mut opened = Vec::new();
    for i in 0..STREAMS {
        let mut send = send.clone();
        let request = hyper::Request::get(format!("https://{authority}/api/events?topic=h2/{i}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        opened.push(tokio::spawn(async move {
            send.ready().await.expect("connection ready");
            send.send_request(request).await.expect("response")
        }));
    }
    let mut responses = Vec::new();
    for handle in opened {
        let response = tokio::time::timeout(WAIT, handle)
            .await
            .expect("stream opened in time")
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        responses.push(response);
    }

    // Readers: each collects its events' data until it has EVENTS of them, then waits for the end.
    let mut readers = Vec::new();
    for (i, response) in responses.into_iter().enumerate() {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Vec<Value>>();
        readers.push((
            ready_rx,
            tokio::spawn(async move {
                let mut body = response.into_body();
                let mut parser = Parser::new();
                let mut got: Vec<Value> = Vec::new();
                let mut ready_tx = Some(ready_tx);
                let mut event_names = Vec::new();
                while let Some(frame) = tokio::time::timeout(WAIT, body.frame())
                    .await
                    .expect("frame in time")
                {
                    let Ok(frame) = frame else { break };
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    parser.feed(&data, |item| {
                        if let Item::Event(event) = item {
                            event_names.push(event.event.to_string());
                            if event.event == "message" {
                                let envelope: Value = serde_json::from_str(event.data).unwrap();
                                assert_eq!(envelope["topic"], format!("h2/{i}"));
                                got.push(envelope["data"].clone());
                            }
                        }
                    });
                    if got.len() == EVENTS
                        && let Some(tx) = ready_tx.take()
                    {
                        let _ = tx.send(got.clone());
                    }
                }
                event_names
            }),
        ));
    }

    for n in 0..EVENTS {
        for i in 0..STREAMS {
            let response = http
                .post(format!("{base}/api/topics/h2/{i}/events"))
                .json(&json!({ "data": { "stream": i, "n": n } }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
        }
    }
    let mut ends = Vec::new();
    for (i, (ready, reader)) in readers.into_iter().enumerate() {
        let got = tokio::time::timeout(WAIT, ready)
            .await
            .expect("events in time")
            .expect("reader alive");
        let expected: Vec<Value> = (0..EVENTS)
            .map(|n| json!({ "stream": i, "n": n }))
            .collect();
        assert_eq!(got, expected, "stream {i}");
        ends.push(reader);
    }
    // Graceful shutdown: every stream ends on its own and serve returns (bounded in `stop`).
    server.stop().await;
    for reader in ends {
        let names = tokio::time::timeout(WAIT, reader)
            .await
            .expect("stream ended")
            .expect("reader");
        assert_eq!(names.iter().filter(|n| *n == "message").count(), EVENTS);
    }
}

#[tokio::test]
async fn twenty_streams_over_one_tls_h2_connection() {
    let (cert, key) = test_cert();
    let tls = TlsConfig::from_der(vec![cert.clone()], key).unwrap();
    let server = start(Config {
        tls: Some(tls),
        ..Config::default()
    })
    .await;
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_tls(&cert, &[b"h2", b"http/1.1"])));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN chose h2"
    );
    let send = h2_connection(stream).await;
    // Publishing goes over TLS too (another connection: only the streams must share one).
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(cert.as_ref()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", server.addr.port());
    twenty_streams(server, send, http, &base).await;
}

#[tokio::test]
async fn twenty_streams_over_one_h2c_connection() {
    let server = start(Config::default()).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let send = h2_connection(tcp).await;
    let base = server.url("");
    twenty_streams(server, send, client(), &base).await;
}

#[tokio::test]
async fn alpn_offers_h2_and_http11_and_plain_tcp_serves_both() {
    let (cert, key) = test_cert();
    let tls = TlsConfig::from_der(vec![cert.clone()], key).unwrap();
    let server = start(Config {
        tls: Some(tls),
        ..Config::default()
    })
    .await;
    let url = format!("https://localhost:{}/healthz", server.addr.port());
    let reqwest_cert = reqwest::Certificate::from_der(cert.as_ref()).unwrap();
    let h2 = reqwest::Client::builder()
        .add_root_certificate(reqwest_cert.clone())
        .build()
        .unwrap();
    let response = h2.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest_cert)
        .http1_only()
        .build()
        .unwrap();
    let response = h1.get(&url).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    // Plain HTTP on a TLS port is refused (no downgrade).
    assert!(client().get(server.url("/healthz")).send().await.is_err());
    server.stop().await;

    let server = start(Config::default()).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2c.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (response.status().as_u16(), response.version()),
        (200, reqwest::Version::HTTP_2)
    );
    let response = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (response.status().as_u16(), response.version()),
        (200, reqwest::Version::HTTP_11)
    );
    server.stop().await;
}

/// An HTTP/2 connection with no stream open for `idle_timeout` is closed (GOAWAY), while one
/// with an event stream open is not.
#[tokio::test]
async fn an_idle_h2c_connection_is_closed_but_not_while_a_stream_is_open() {
    let config = Config {
        connections: rill_server::ConnectionConfig {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            ..rill_server::ConnectionConfig::default()
        },
        ..Config::default()
    };
    let server = start(config).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = |path: &str| {
        hyper::Request::get(format!("http://{}{path}", server.addr))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let health = send.send_request(request("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    health.into_body().collect().await.unwrap();

    // A stream keeps it open past several idle timeouts.
    let stream = send
        .send_request(request("/api/events?topic=idle"))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !connection.is_finished(),
        "a connection with a stream is not idle"
    );
    drop(stream);

    // With no stream left, the server closes it.
    let ended = tokio::time::timeout(WAIT, connection)
        .await
        .expect("the idle connection is closed in time");
    assert!(ended.unwrap().is_ok(), "a graceful close");
    server.stop().await;
}
