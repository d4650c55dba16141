//! Tokens and tickets never reach a log line: requests carrying them (query, header, cookie,
//! ticket) are traced at TRACE level into a buffer, which must hold no credential while it does
//! hold the redacted request lines.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; expect() messages would only repeat the line"
)]

mod edge_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

use edge_support::{SECRET, client, jwt_hs256, start, token};

/// Every log line, in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_ticket_in_the_logs() {
    let capture = Capture::default();
    // Global: the server's tasks run on other threads. nextest runs each test in its own process.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .init();

    let server = start(jwt_hs256()).await;
    let http = client();
    let alice = token(SECRET, "alice", &["*"], &["*"]);
    let expired = {
        let mut claims = rill_server::Claims::new("alice", std::time::Duration::ZERO);
        claims.exp -= 100;
        rill_server::mint_hs256(SECRET.as_bytes(), &claims).unwrap()
    };
    let wrong = token("another-secret-another-secret-another", "alice", &[], &[]);

    for credential in [&alice, &expired, &wrong] {
        http.get(server.url(&format!("/probe/sub?topic=a&access_token={credential}")))
            .send()
            .await
            .unwrap();
        http.get(server.url("/probe/sub?topic=a"))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        http.get(server.url("/probe/sub?topic=a"))
            .header("cookie", format!("rill_token={credential}"))
            .send()
            .await
            .unwrap();
    }
    let body: Value = http
        .post(server.url("/api/stream-tickets"))
        .bearer_auth(&alice)
        .json(&json!({ "topics": ["a"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        http.get(server.url(&format!("/probe/sub?topic=a&ticket={ticket}")))
            .send()
            .await
            .unwrap();
    }
    // A real stream opened with a query token, closed by the client.
    let response = http
        .get(server.url(&format!("/api/events?topic=a&access_token={alice}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    server.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("access_token=REDACTED"),
        "the request trace ran:\n{logs}"
    );
    assert!(
        logs.contains("ticket=REDACTED"),
        "the ticket request was traced:\n{logs}"
    );
    for (name, secret) in [
        ("token", &alice),
        ("expired token", &expired),
        ("wrong token", &wrong),
        ("ticket", &ticket),
    ] {
        // Any of the three JWT parts would be a leak; the signature is the secret one.
        for part in secret.split('.') {
            assert!(
                !logs.contains(part),
                "the {name} (part {part}) is in the logs:\n{logs}"
            );
        }
    }
    assert!(!logs.contains(SECRET));
}
