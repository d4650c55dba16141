//! The exact bytes of a stream, read by three parsers: our spec-exact `rill_sse::Parser`, and
//! models of the two popular client libraries that dispatch on blank lines more eagerly than the
//! spec, `@microsoft/fetch-event-source` and Python's `httpx-sse` (whose decoder the `openai`
//! Python SDK copies). No client may be handed an empty message: its application would
//! `JSON.parse("")` and throw, and fetch-event-source would then retry the POST.
//!
//! The layout (`retry: 3000` and `: ok` first, `: keep-alive` lines between events, a blank
//! line only after an event's `data:`) is the one the client research checked against every
//! library by running it; these models pin it in CI without Node, Python or a browser.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; expect() messages would only repeat the line"
)]

mod support;

use std::time::Duration;

use rill_server::Config;
use serde_json::json;
use support::{TestServer, WAIT};

/// One message a client library hands to its application.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Message {
    event: String,
    data: String,
    id: String,
    retry: Option<u64>,
}

/// The lines of an SSE body (`\r\n`, `\r` or `\n` end a line); a last unterminated line is
/// dropped, as every parser does at the end of a stream.
fn lines(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    lines.pop();
    lines
}

fn field(line: &str) -> (&str, &str) {
    let (name, value) = line.split_once(':').unwrap_or((line, ""));
    (name, value.strip_prefix(' ').unwrap_or(value))
}

/// `@microsoft/fetch-event-source` (src/parse.ts, `getMessages`): comment lines are skipped,
/// `retry` and `id` also take effect at once, and **every** blank line dispatches the message
/// built so far, whatever it holds, then starts a new one.
fn fetch_event_source(bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut message = Message::default();
    for line in lines(bytes) {
        if line.is_empty() {
            out.push(std::mem::take(&mut message));
            continue;
        }
        let (name, value) = field(&line);
        match name {
            "data" => {
                if !message.data.is_empty() {
                    message.data.push('\n');
                }
                message.data.push_str(value);
            }
            "event" => message.event = value.to_owned(),
            "id" => message.id = value.to_owned(),
            "retry" => message.retry = value.parse().ok(),
            _ => {}
        }
    }
    out
}

/// `httpx-sse` 0.4 (`_decoders.SSEDecoder.decode`): a blank line dispatches unless event, data,
/// the last event id *and* retry are all unset; the last event id is never reset, so once an
/// event had an id every later blank line dispatches.
fn httpx_sse(bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let (mut event, mut data, mut last_id, mut retry) =
        (String::new(), Vec::<String>::new(), String::new(), None);
    for line in lines(bytes) {
        if line.is_empty() {
            if event.is_empty() && data.is_empty() && last_id.is_empty() && retry.is_none() {
                continue;
            }
            out.push(Message {
                event: std::mem::take(&mut event),
                data: std::mem::take(&mut data).join("\n"),
                id: last_id.clone(),
                retry: retry.take(),
            });
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = field(&line);
        match name {
            "event" => event = value.to_owned(),
            "data" => data.push(value.to_owned()),
            "id" if !value.contains('\0') => last_id = value.to_owned(),
            "retry" => retry = value.parse().ok().or(retry),
            _ => {}
        }
    }
    out
}

/// What the spec parser (ours) sees.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Event { event: String, id: String },
    Retry(u64),
    Comment(String),
}

fn spec(bytes: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    rill_sse::Parser::new().feed(bytes, |item| {
        items.push(match item {
            rill_sse::Item::Event(e) => Item::Event {
                event: e.event.to_owned(),
                id: e.id.to_owned(),
            },
            rill_sse::Item::Retry(ms) => Item::Retry(ms),
            rill_sse::Item::Comment(c) => Item::Comment(c.to_owned()),
        })
    });
    items
}

async fn next_chunk(response: &mut reqwest::Response) -> Option<bytes::Bytes> {
    tokio::time::timeout(WAIT, response.chunk())
        .await
        .expect("a chunk in time")
        .unwrap()
}

/// Reads until `body` holds `count` heartbeats after byte `from`.
async fn until_heartbeats(
    response: &mut reqwest::Response,
    body: &mut Vec<u8>,
    from: usize,
    count: usize,
) {
    let beats = |body: &[u8]| {
        body[from..]
            .windows(b": keep-alive\n".len())
            .filter(|w| *w == b": keep-alive\n")
            .count()
    };
    while beats(body) < count {
        body.extend_from_slice(&next_chunk(response).await.expect("the stream stays open"));
    }
}

#[tokio::test]
async fn no_client_sees_an_empty_message() {
    let mut config = Config::default();
    config.streams.heartbeat = Duration::from_millis(30);
    let server = TestServer::with_config(config).await;
    let mut response = server
        .client
        .get(server.url("/api/events?topic=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The first bytes come at once (they flush the headers): the retry hint and a comment, no
    // blank line.
    let first = next_chunk(&mut response).await.expect("a first chunk");
    assert_eq!(&first[..], b"retry: 3000\n: ok\n");
    let mut body = first.to_vec();

    // Heartbeats before any event, then an event, then heartbeats after an event with an id
    // (which is what makes httpx-sse dispatch on every blank line), then the final event.
    until_heartbeats(&mut response, &mut body, 0, 2).await;
    server.publish("t", Some("tick"), json!({"n": 1})).await;
    while !body.windows(10).any(|w| w == b"event: tic") {
        body.extend_from_slice(&next_chunk(&mut response).await.unwrap());
    }
    let after_event = body.len();
    until_heartbeats(&mut response, &mut body, after_event, 2).await;
    server.state.shutdown.cancel();
    while let Some(chunk) = next_chunk(&mut response).await {
        body.extend_from_slice(&chunk);
    }

    // Our parser: the retry hint, heartbeats as comments, both events intact.
    let items = spec(&body);
    assert_eq!(items.first(), Some(&Item::Retry(3000)));
    let events: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Item::Event { event, id } => Some((event.as_str(), id.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "tick");
    assert!(!events[0].1.is_empty(), "the event has an id");
    // The final event has no `id:` of its own: the last event id stays the tick's.
    assert_eq!(events[1], ("error", events[0].1));
    assert!(
        items
            .iter()
            .filter(|i| **i == Item::Comment("keep-alive".into()))
            .count()
            >= 4
    );

    // The eager libraries: exactly the two real events, none empty; the retry hint reaches
    // them with the first one.
    for (name, messages) in [
        ("fetch-event-source", fetch_event_source(&body)),
        ("httpx-sse", httpx_sse(&body)),
    ] {
        let names: Vec<&str> = messages.iter().map(|m| m.event.as_str()).collect();
        assert_eq!(names, ["tick", "error"], "{name}: {messages:#?}");
        for message in &messages {
            serde_json::from_str::<serde_json::Value>(&message.data)
                .unwrap_or_else(|e| panic!("{name}: {message:?} is not JSON: {e}"));
        }
        assert_eq!(messages[0].retry, Some(3000), "{name}");
    }
    server.stop().await;
}

/// The models above against known inputs, so a wrong model cannot make the test pass.
#[test]
fn the_models_dispatch_like_their_libraries() {
    // The old layout: a retry block and heartbeat blocks of their own.
    let old = b"retry: 3000\n\n: keep-alive\n\nid: 1\ndata: {}\n\n: keep-alive\n\n";
    assert_eq!(
        fetch_event_source(old)
            .iter()
            .map(|m| m.data.as_str())
            .collect::<Vec<_>>(),
        ["", "", "{}", ""],
        "fetch-event-source dispatches on every blank line"
    );
    let httpx = httpx_sse(old);
    assert_eq!(
        httpx
            .iter()
            .map(|m| (m.data.as_str(), m.id.as_str()))
            .collect::<Vec<_>>(),
        [("", ""), ("{}", "1"), ("", "1")],
        "httpx-sse: the retry block, then every blank line once an id was seen"
    );
}
