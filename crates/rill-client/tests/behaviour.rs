//! The client's reconnect, error and typed-client behaviour over a scripted local server: drops,
//! 401, 500 with backoff, `retry:`, comments, cancel by drop, and the topics client.

// Helpers shared by the tests panic on a broken setup, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use rill_client::reqwest::StatusCode;
use rill_client::{Client, Error, EventStream, RetryPolicy, SseItem, SseRequest};
use support::{End, LIMIT, Reply, TestServer};

fn policy() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(4),
        max_delay: Duration::from_millis(40),
        jitter: 0.5,
        max_retries: Some(20),
    }
}

fn get(server: &TestServer) -> SseRequest {
    SseRequest::get(rill_client::reqwest::Client::new(), server.url("/sse")).retry_policy(policy())
}

async fn next(stream: &mut EventStream) -> Option<Result<SseItem, Error>> {
    tokio::time::timeout(LIMIT, stream.next())
        .await
        .expect("an item in time")
}

async fn next_event(stream: &mut EventStream) -> rill_client::Event {
    for _ in 0..50 {
        match next(stream).await {
            Some(Ok(SseItem::Event(event))) => return event,
            Some(Ok(_)) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
    panic!("no event in 50 items");
}

#[tokio::test]
async fn a_dropped_stream_resumes_with_the_last_event_id() {
    let server = TestServer::start(|n, request| match n {
        0 => Reply::sse("id: 1\ndata: one\n\nid: 2\ndata: two\n\n").ending(End::Drop),
        _ => {
            let after = request.header_str("last-event-id").unwrap_or_default();
            Reply::sse(&format!("id: 3\ndata: after {after}\n\n")).ending(End::Hold)
        }
    })
    .await;
    let mut stream = get(&server).stream();
    let data: Vec<String> = [
        next_event(&mut stream).await,
        next_event(&mut stream).await,
        next_event(&mut stream).await,
    ]
    .into_iter()
    .map(|e| format!("{} {}", e.id, e.data))
    .collect();
    assert_eq!(data, ["1 one", "2 two", "3 after 2"]);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn an_initial_last_event_id_is_sent_from_the_first_attempt() {
    let server = TestServer::start(|_, _| Reply::sse("data: x\n\n").ending(End::Hold)).await;
    let mut stream = get(&server).last_event_id("41").stream();
    let event = next_event(&mut stream).await;
    assert_eq!(
        event.id, "41",
        "events without an id carry the one we resumed from"
    );
    assert_eq!(
        server.requests()[0].header_str("last-event-id").as_deref(),
        Some("41")
    );
}

#[tokio::test]
async fn unauthorized_stops_with_a_typed_error_carrying_the_api_code() {
    let server = TestServer::start(|_, _| {
        Reply::json(
            401,
            r#"{"error":{"code":"unauthorized","message":"a token is required"}}"#,
        )
    })
    .await;
    let mut stream = get(&server).stream();
    let error = next(&mut stream).await.unwrap().unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(error.api_code(), Some("unauthorized"));
    assert_eq!(
        error.api().map(|a| a.message.as_str()),
        Some("a token is required")
    );
    assert!(error.to_string().contains("a token is required"), "{error}");
    assert!(next(&mut stream).await.is_none());
    assert_eq!(server.requests().len(), 1, "a 401 is never retried");
}

#[tokio::test]
async fn server_errors_are_retried_with_growing_delays_until_the_limit() {
    let server = TestServer::start(|_, _| Reply::status(500)).await;
    let max = RetryPolicy {
        max_retries: Some(4),
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ..policy()
    };
    let mut stream = get(&server).retry_policy(max).state_changes(true).stream();
    let mut delays = Vec::new();
    let error = loop {
        match next(&mut stream).await {
            Some(Ok(SseItem::Reconnecting {
                error,
                delay,
                attempt,
            })) => {
                assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
                assert_eq!(attempt as usize, delays.len() + 1);
                delays.push(delay);
            }
            Some(Err(error)) => break error,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        matches!(error, Error::RetriesExhausted { attempts: 5, .. }),
        "{error:?}"
    );
    assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        server.requests().len(),
        5,
        "the first attempt and four retries"
    );
    // 10 ms doubling, capped at 100 ms, each plus up to half of it in jitter.
    let ms = [10.0, 20.0, 40.0, 80.0];
    for (delay, base) in delays.iter().zip(ms) {
        let delay = delay.as_secs_f64() * 1000.0;
        assert!(
            delay >= base && delay <= base * 1.5,
            "{delay} ms for a base of {base} ms"
        );
    }
}

#[tokio::test]
async fn a_server_error_then_a_stream_recovers() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::status(502),
        1 => Reply::json(429, "{}"),
        _ => Reply::sse("data: back\n\n").ending(End::Hold),
    })
    .await;
    let mut stream = get(&server).stream();
    assert_eq!(next_event(&mut stream).await.data, "back");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn the_server_retry_field_is_the_base_of_the_wait() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::sse("retry: 25\ndata: a\n\n"),
        1 => Reply::status(500),
        _ => Reply::status(204),
    })
    .await;
    let mut stream = get(&server).state_changes(true).stream();
    let mut delays = Vec::new();
    while let Some(item) = next(&mut stream).await {
        if let Ok(SseItem::Reconnecting { delay, .. }) = item {
            delays.push(delay.as_millis());
        }
    }
    // 25 ms after the stream ended (the policy's own base is 4 ms), then 50 ms, capped at 40.
    assert_eq!(delays.len(), 2, "{delays:?}");
    assert!((25..=38).contains(&delays[0]), "{delays:?}");
    assert!((40..=60).contains(&delays[1]), "{delays:?}");
}

#[tokio::test]
async fn comments_come_when_asked_for() {
    let server =
        TestServer::start(|_, _| Reply::sse(": keep-alive\ndata: x\n\n").ending(End::Hold)).await;
    let mut stream = get(&server).comments(true).stream();
    assert!(
        matches!(next(&mut stream).await, Some(Ok(SseItem::Comment(text))) if text == "keep-alive")
    );
    assert_eq!(next_event(&mut stream).await.data, "x");

    let mut quiet = get(&server).stream();
    assert_eq!(
        next_event(&mut quiet).await.data,
        "x",
        "no comment item by default"
    );
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let server = TestServer::start(|_, _| Reply::sse("data: x\n\n").ending(End::Hold)).await;
    let mut stream = get(&server).stream();
    next_event(&mut stream).await;
    drop(stream);
    let closed = async {
        for _ in 0..1000 {
            if server.closed_by_client() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(LIMIT, closed).await.unwrap();
    assert_eq!(server.closed_by_client(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_and_is_retried() {
    // Bind, then free a port: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/sse?access_token=s3cret")
        .parse()
        .unwrap();
    let limited = RetryPolicy {
        max_retries: Some(1),
        ..policy()
    };
    let mut stream = SseRequest::get(rill_client::reqwest::Client::new(), url)
        .retry_policy(limited)
        .stream();
    match next(&mut stream).await {
        Some(Err(error)) => {
            assert!(
                matches!(&error, Error::RetriesExhausted { attempts: 2, last } if last.kind() == "transport"),
                "{error:?}"
            );
            let shown = format!("{error} {error:?}");
            assert!(
                shown.contains("/sse") && !shown.contains("s3cret"),
                "query tokens stay out of errors: {shown}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn topics_publish_sends_json_with_the_token_and_returns_the_id() {
    let server = TestServer::start(|_, request| match request.path.as_str() {
        "/api/topics/orders%2F7/events" => Reply::json(201, r#"{"id":"e1.abc.3"}"#),
        _ => Reply::json(
            400,
            r#"{"error":{"code":"invalid_topic","message":"bad topic"}}"#,
        ),
    })
    .await;
    let client = Client::new(&format!("http://{}", server.addr))
        .unwrap()
        .with_token("t0k")
        .unwrap();
    let topics = client.topics();
    let published = topics
        .publish(
            "orders/7",
            Some("status"),
            &serde_json::json!({"state": "shipped"}),
        )
        .await
        .unwrap();
    assert_eq!(published.id, "e1.abc.3");
    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.header_str("authorization").as_deref(),
        Some("Bearer t0k")
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"event": "status", "data": {"state": "shipped"}})
    );

    let error = topics.publish("bad", None, &1).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(error.api_code(), Some("invalid_topic"));
    let body: serde_json::Value = serde_json::from_slice(&server.requests()[1].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"data": 1}),
        "no event name: the server's default"
    );
}

#[tokio::test]
async fn topics_subscribe_decodes_the_envelope() {
    let server = TestServer::start(|_, _| {
        Reply::sse("id: c.1\nevent: status\ndata: {\"topic\":\"a\",\"data\":{\"n\":1}}\n\nid: c.2\ndata: not json\n\nid: c.3\ndata: {\"topic\":\"b\",\"data\":\"s\"}\n\n")
            .ending(End::Hold)
    })
    .await;
    let client = Client::new(&format!("http://{}", server.addr)).unwrap();
    let mut events = client.topics().subscribe(&["a", "b c"]).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(LIMIT, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Ok(SseItem::Event(e)) => {
                seen.push(format!("{} {} {} {}", e.id, e.topic, e.event, e.data))
            }
            Err(error) => seen.push(error.kind().to_owned()),
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        ["c.1 a status {\"n\":1}", "decode", "c.3 b message \"s\""]
    );
    assert_eq!(server.requests()[0].path, "/api/events?topic=a&topic=b+c");
}
