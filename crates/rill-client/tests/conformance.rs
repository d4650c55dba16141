//! The client against every scenario of `tests/data/sse-client-http.jsonl` (WHATWG web-platform
//! tests and LaunchDarkly's SSE contract tests, HTTP level), each over a real local server.

// Helpers shared by the tests panic on a broken setup, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use rill_client::reqwest::Method;
use rill_client::{Error, EventStream, RetryPolicy, SseItem, SseRequest};
use support::{End, LIMIT, Recorded, Reply, TestServer};

/// The scenario ids this file has a test for; `every_scenario_has_a_test` keeps it in step with
/// the data file.
const COVERED: &[&str] = &[
    "wpt/request-status-error",
    "wpt/format-mime-bogus",
    "wpt/format-mime-valid-bogus",
    "wpt/format-mime-trailing-semicolon",
    "wpt/format-utf-8-charset",
    "wpt/request-redirect",
    "wpt/request-accept",
    "wpt/request-cache-control",
    "wpt/eventsource-reconnect-200",
    "wpt/reconnect-fail",
    "wpt/last-event-id-reconnect",
    "wpt/format-data-before-final-empty-line-reconnect",
    "ld/http-default-headers",
    "ld/204-halts",
    "ld/redirects",
    "ld/reconnect-last-event-id",
];

#[test]
fn every_scenario_has_a_test() {
    let text = include_str!("data/sse-client-http.jsonl");
    let mut ids = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(id) = value.get("id").and_then(|id| id.as_str()) {
            ids.insert(id.to_owned());
        }
    }
    let covered: BTreeSet<String> = COVERED.iter().map(|s| s.to_string()).collect();
    assert_eq!(ids, covered);
}

/// Fast reconnects: the scripted `retry:` values are a few ms too.
fn policy() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        jitter: 0.5,
        max_retries: Some(20),
    }
}

fn get(server: &TestServer, path: &str) -> SseRequest {
    SseRequest::get(reqwest_client(), server.url(path))
        .retry_policy(policy())
        .state_changes(true)
}

fn reqwest_client() -> rill_client::reqwest::Client {
    rill_client::reqwest::Client::new()
}

/// Reads the stream to its end (bounded in items and time), describing each item.
async fn collect(mut stream: EventStream) -> Vec<String> {
    let mut seen = Vec::new();
    let read = async {
        while let Some(item) = stream.next().await {
            seen.push(describe(&item));
            assert!(seen.len() < 100, "runaway stream: {seen:?}");
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("the stream ends in time");
    seen
}

/// Reads `count` items (bounded in time) and keeps the stream open.
async fn take(stream: &mut EventStream, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let item = tokio::time::timeout(LIMIT, stream.next())
            .await
            .expect("an item in time")
            .expect("the stream goes on");
        seen.push(describe(&item));
    }
    seen
}

fn describe(item: &Result<SseItem, Error>) -> String {
    match item {
        Ok(SseItem::Event(e)) => format!("event {} {:?} id={:?}", e.event, e.data, e.id),
        Ok(SseItem::Comment(text)) => format!("comment {text:?}"),
        Ok(SseItem::Open { .. }) => "open".into(),
        Ok(SseItem::Reconnecting { error, .. }) => format!("reconnecting {}", error.kind()),
        Ok(other) => format!("{other:?}"),
        Err(error) => match error.status() {
            Some(status) => format!("error {} {}", error.kind(), status.as_u16()),
            None => format!("error {}", error.kind()),
        },
    }
}

#[tokio::test]
async fn request_status_error() {
    for status in [204, 205, 210, 299, 404, 410, 503] {
        let server = TestServer::start(move |_, _| {
            Reply::status(status).with_header("Content-Type", "text/event-stream")
        })
        .await;
        let seen = collect(get(&server, "/").stream()).await;
        assert_eq!(seen, [format!("error status {status}")], "status {status}");
        assert_eq!(server.requests().len(), 1, "no reconnect after {status}");
    }
}

async fn wrong_content_type(content_type: &str) {
    let server = TestServer::start({
        let content_type = content_type.to_owned();
        move |_, _| Reply::stream(&content_type, b"data: never\n\n")
    })
    .await;
    let mut stream = get(&server, "/").stream();
    let first = tokio::time::timeout(LIMIT, stream.next())
        .await
        .unwrap()
        .unwrap();
    match first {
        Err(Error::ContentType {
            content_type: Some(got),
        }) => assert_eq!(got, content_type),
        other => panic!("expected a content type error, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "the stream ends");
    assert_eq!(server.requests().len(), 1, "no reconnect");
}

#[tokio::test]
async fn format_mime_bogus() {
    wrong_content_type("x bogus").await;
}

#[tokio::test]
async fn format_mime_valid_bogus() {
    wrong_content_type("text/x-bogus").await;
}

#[tokio::test]
async fn format_mime_trailing_semicolon() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::stream("text/event-stream;", b"data: ok\n\n"),
        _ => Reply::status(204),
    })
    .await;
    let seen = collect(get(&server, "/").stream()).await;
    assert_eq!(
        seen,
        [
            "open",
            "event message \"ok\" id=\"\"",
            "reconnecting disconnected",
            "error status 204"
        ]
    );
}

#[tokio::test]
async fn format_utf_8_charset() {
    let server = TestServer::start(|n, _| match n {
        // UTF-8 bytes whatever the charset parameter says.
        0 => Reply::stream(
            "text/event-stream;charset=windows-1252",
            "data: h\u{e9}llo \u{2026}\n\n".as_bytes(),
        ),
        _ => Reply::status(204),
    })
    .await;
    let seen = collect(get(&server, "/").stream()).await;
    assert_eq!(
        seen[..2],
        ["open", "event message \"h\u{e9}llo \u{2026}\" id=\"\""]
    );
}

#[tokio::test]
async fn request_redirect() {
    for status in [301, 302, 303, 307] {
        let server = TestServer::start(move |_, request| match request.path.as_str() {
            "/from" => Reply::redirect(status, Some("/to")),
            "/to" => Reply::sse("data: arrived\n\n"),
            _ => Reply::status(404),
        })
        .await;
        let mut stream = get(&server, "/from").stream();
        let seen = take(&mut stream, 2).await;
        assert_eq!(
            seen,
            ["open", "event message \"arrived\" id=\"\""],
            "redirect {status}"
        );
        let paths: Vec<_> = server.requests().iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths[..2], ["/from", "/to"]);
    }
}

#[tokio::test]
async fn request_accept() {
    let server = TestServer::start(|_, request| {
        let accept = request.header_str("accept").unwrap_or_default();
        Reply::sse(&format!("data: {accept}\n\n")).ending(End::Hold)
    })
    .await;
    let mut stream = get(&server, "/").stream();
    assert_eq!(
        take(&mut stream, 2).await[1],
        "event message \"text/event-stream\" id=\"\""
    );
}

#[tokio::test]
async fn request_cache_control() {
    // The server echoes the request's Cache-Control, twice (two connections).
    let server = TestServer::start(|n, request| match n {
        0 | 1 => Reply::sse(&format!(
            "data: {}\n\n",
            request.header_str("cache-control").unwrap_or_default()
        )),
        _ => Reply::status(204),
    })
    .await;
    let seen = collect(get(&server, "/").stream()).await;
    let data: Vec<_> = seen.iter().filter(|s| s.starts_with("event")).collect();
    assert_eq!(
        data,
        [
            "event message \"no-cache\" id=\"\"",
            "event message \"no-cache\" id=\"\""
        ]
    );
}

#[tokio::test]
async fn eventsource_reconnect_200() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::sse("retry: 2\ndata: ok\n\n"),
        1 => Reply::sse("data: data\n\n"),
        _ => Reply::status(204),
    })
    .await;
    let seen = collect(get(&server, "/").stream()).await;
    assert_eq!(
        seen,
        [
            "open",
            "event message \"ok\" id=\"\"",
            "reconnecting disconnected",
            "open",
            "event message \"data\" id=\"\"",
            "reconnecting disconnected",
            "error status 204",
        ]
    );
}

#[tokio::test]
async fn reconnect_fail() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::sse("retry: 2\ndata: opened\n\n"),
        1 => Reply::sse("data: reconnected\n\n"),
        _ => Reply::status(204),
    })
    .await;
    let seen = collect(get(&server, "/").stream()).await;
    let events: Vec<_> = seen
        .iter()
        .filter(|s| s.starts_with("event") || s.starts_with("error"))
        .collect();
    assert_eq!(
        events,
        [
            "event message \"opened\" id=\"\"",
            "event message \"reconnected\" id=\"\"",
            "error status 204"
        ]
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn last_event_id_reconnect() {
    // The second connection echoes the Last-Event-ID header it got, as the id and the data.
    let server = TestServer::start(|n, request| match n {
        0 => Reply::sse("id: \u{2026}\nretry: 5\ndata: hello\n\n"),
        1 => {
            let id = request.header_str("last-event-id").unwrap_or_default();
            Reply::sse(&format!("id: {id}\ndata: {id}\n\n")).ending(End::Hold)
        }
        _ => Reply::status(204),
    })
    .await;
    let mut stream = get(&server, "/").stream();
    let seen = take(&mut stream, 5).await;
    assert_eq!(
        seen,
        [
            "open",
            "event message \"hello\" id=\"\u{2026}\"",
            "reconnecting disconnected",
            "open",
            "event message \"\u{2026}\" id=\"\u{2026}\""
        ]
    );
    assert_eq!(
        server.requests()[1].header("last-event-id"),
        Some(&b"\xe2\x80\xa6"[..])
    );
}

#[tokio::test]
async fn format_data_before_final_empty_line_reconnect() {
    let body = "retry:5\ndata:test1\n\nid:test\ndata:test2\n";
    let server = TestServer::start(move |n, _| match n {
        0 | 1 => Reply::sse(body),
        _ => Reply::status(204),
    })
    .await;
    let seen = collect(get(&server, "/").stream()).await;
    let events: Vec<_> = seen.iter().filter(|s| s.starts_with("event")).collect();
    // test2 is never dispatched (no blank line), so its id never becomes the last event id.
    assert_eq!(
        events,
        [
            "event message \"test1\" id=\"\"",
            "event message \"test1\" id=\"\""
        ]
    );
    let requests = server.requests();
    assert!(requests.len() >= 2);
    assert!(
        requests.iter().all(|r| r.header("last-event-id").is_none()),
        "Last-Event-ID: test must not be sent"
    );
}

#[tokio::test]
async fn http_default_headers() {
    let server = TestServer::start(|_, _| Reply::sse("data: x\n\n").ending(End::Hold)).await;
    let mut stream = get(&server, "/").stream();
    take(&mut stream, 2).await;
    let first: Recorded = server.requests()[0].clone();
    assert_eq!(first.method, "GET");
    assert_eq!(
        first.header_str("accept").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(
        first.header_str("cache-control").as_deref(),
        Some("no-cache")
    );
    assert_eq!(first.header("last-event-id"), None);
}

#[tokio::test]
async fn http_204_halts() {
    let server = TestServer::start(|_, _| Reply::status(204)).await;
    let seen = collect(get(&server, "/").stream()).await;
    assert_eq!(seen, ["error status 204"]);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn redirects() {
    for status in [301, 307] {
        let server = TestServer::start(move |_, request| match request.path.as_str() {
            "/ok" => Reply::redirect(status, Some("/stream")),
            "/stream" => Reply::sse("data: hello\n\n").ending(End::Hold),
            "/empty" => Reply::redirect(status, Some("")),
            "/missing" => Reply::redirect(status, None),
            _ => Reply::status(404),
        })
        .await;
        let mut stream = get(&server, "/ok").stream();
        assert_eq!(
            take(&mut stream, 2).await[1],
            "event message \"hello\" id=\"\"",
            "{status}"
        );
        drop(stream);

        // An empty Location points back at the same URL: reqwest stops the loop, and so do we.
        let seen = collect(get(&server, "/empty").stream()).await;
        assert_eq!(seen, ["error transport"], "{status} with an empty Location");
        let seen = collect(get(&server, "/missing").stream()).await;
        assert_eq!(
            seen,
            [format!("error status {status}")],
            "{status} without Location"
        );
        let looped = server
            .requests()
            .iter()
            .filter(|r| r.path == "/empty")
            .count();
        assert!(looped <= 11, "bounded redirects: {looped}");
        assert_eq!(
            server
                .requests()
                .iter()
                .filter(|r| r.path == "/missing")
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn reconnect_last_event_id() {
    // Every connection is a POST with the same body and header; the server breaks each one.
    let server = TestServer::start(|n, _| match n {
        0 => Reply::sse("id: abc\ndata: Hello\n\n").ending(End::Drop),
        1 => Reply::sse("data: no id\n\n").ending(End::Drop),
        2 => Reply::sse("id: \ndata: reset\n\n").ending(End::Drop),
        3 => Reply::sse("id: ghi\ndata: z\n\nid: def\ndata: Goodbye").ending(End::Drop),
        // Nothing at all: the read timeout must force a reconnect.
        4 => Reply::sse("").ending(End::Hold),
        _ => Reply::status(204),
    })
    .await;
    let request = SseRequest::post(reqwest_client(), server.url("/post"), "{\"q\":1}")
        .try_header("X-Custom", "yes")
        .unwrap()
        .retry_policy(RetryPolicy {
            initial_delay: Duration::ZERO,
            ..policy()
        })
        .read_timeout(Duration::from_millis(300))
        .state_changes(true);
    let seen = collect(request.stream()).await;
    let events: Vec<_> = seen
        .iter()
        .filter(|s| s.starts_with("event") || s.starts_with("error"))
        .collect();
    assert_eq!(
        events,
        [
            "event message \"Hello\" id=\"abc\"",
            "event message \"no id\" id=\"abc\"",
            "event message \"reset\" id=\"\"",
            "event message \"z\" id=\"ghi\"",
            "error status 204",
        ]
    );
    assert!(
        seen.contains(&"reconnecting read_timeout".to_owned()),
        "{seen:?}"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 6);
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.header_str("last-event-id"))
        .collect();
    let expected = [
        None,
        Some("abc"),
        Some("abc"),
        None,
        Some("ghi"),
        Some("ghi"),
    ];
    assert_eq!(ids, expected.map(|id| id.map(str::to_owned)));
    for request in &requests {
        assert_eq!(request.method, Method::POST.as_str());
        assert_eq!(request.body, b"{\"q\":1}");
        assert_eq!(request.header_str("x-custom").as_deref(), Some("yes"));
    }
}
