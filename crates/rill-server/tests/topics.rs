//! The topics API over real HTTP on 127.0.0.1: publish, subscribe, exact resume under random
//! cuts, resets, stream hygiene (headers, retry, heartbeat, shutdown, maximum duration), slow
//! consumers, limits, metrics, and bad input that changes nothing.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rill_core::Topic;
use rill_server::Config;
use serde_json::{Value, json};
use support::{SseItem, SseStream, TestServer, unwrap_envelope};
use tokio::io::AsyncWriteExt;

/// A small xorshift generator: the cut points only need to vary, and the seed is printed so a
/// failure can be replayed.
struct Rng(u64);

impl Rng {
    fn from_time() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("random seed: {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn config(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    f(&mut c);
    c
}

#[tokio::test]
async fn publish_then_subscribe_live() {
    let server = TestServer::start().await;
    let mut sub = server.subscribe(&["orders", "orders/42"], None).await;
    let headers = sub.response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache, no-transform");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(
        sub.next_item().await,
        Some(SseItem::Retry(3000)),
        "the retry hint comes first"
    );

    let id = server
        .publish(
            "orders/42",
            Some("order.created"),
            json!({"id": 42, "items": [1, 2]}),
        )
        .await;
    // Pretty-printed JSON is published on one line, keys and numbers as sent.
    let response = server
        .client
        .post(server.url("/api/topics/orders/events"))
        .header("content-type", "application/json; charset=utf-8")
        .body("{\"data\": {\n  \"b\": 1.50,\n  \"a\": \"x y\"\n}}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let got = sub.events(2).await;
    assert_eq!(got[0].event, "order.created");
    assert_eq!(
        got[0].data,
        r#"{"topic":"orders/42","data":{"id":42,"items":[1,2]}}"#
    );
    assert_eq!(got[1].event, "message");
    assert_eq!(
        got[1].data,
        r#"{"topic":"orders","data":{"b":1.50,"a":"x y"}}"#
    );
    assert!(
        got[1].id.ends_with(".1.1"),
        "the id carries both positions: {}",
        got[1].id
    );
    // The publish answer is the id of that event on a stream over its topic alone.
    let mut alone = server.subscribe(&["orders/42"], Some(&id)).await;
    server.publish("orders/42", None, json!(3)).await;
    assert_eq!(
        unwrap_envelope(&alone.next_event().await.unwrap()).1,
        json!(3)
    );

    // A percent-encoded slash names the same topic.
    let response = server
        .client
        .post(server.url("/api/topics/orders%2F42/events"))
        .json(&json!({ "data": 4 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        unwrap_envelope(&alone.next_event().await.unwrap()),
        ("orders/42".to_owned(), json!(4))
    );

    // Duplicate topics are merged: the id has one position.
    let mut dup = server.subscribe(&["d", "d"], None).await;
    let id = server.publish("d", None, json!(null)).await;
    assert_eq!(dup.next_event().await.unwrap().id, id);

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("rill_events_published_total 5\n"),
        "{metrics}"
    );
    assert!(metrics.contains("rill_open_streams 3\n"), "{metrics}");
    assert!(
        metrics.contains("# TYPE rill_slow_consumers_dropped_total counter"),
        "{metrics}"
    );
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

/// Reads the subscription with random cuts until every published event arrived; returns what
/// arrived per topic, in order.
async fn read_with_cuts(
    server: &TestServer,
    topics: &[&str],
    total: usize,
    rng: &mut Rng,
    mut sub: SseStream,
) -> (BTreeMap<String, Vec<Value>>, usize) {
    let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut received = 0;
    let mut cuts = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "resume took too long"
        );
        let take = 1 + rng.below(40) as usize;
        for _ in 0..take.min(total - received) {
            let event = sub.next_event().await.expect("stream ended");
            assert_eq!(
                event.event, "message",
                "no reset may happen here: {event:?}"
            );
            let (topic, data) = unwrap_envelope(&event);
            got.entry(topic).or_default().push(data);
            received += 1;
        }
        if received < total {
            // Cut: drop the connection (and whatever it had buffered beyond what we read) and
            // resume from the last event we really processed.
            let last = sub.last_id.clone().expect("an id");
            drop(sub);
            cuts += 1;
            sub = server.subscribe(topics, Some(&last)).await;
        }
    }
    (got, cuts)
}

#[tokio::test]
async fn resume_is_exact_under_random_cuts() {
    let server = TestServer::start().await;
    let mut rng = Rng::from_time();
    const N: usize = 500;
    let sub = server.subscribe(&["r"], None).await;
    let publisher = {
        let (client, url) = (server.client.clone(), server.url("/api/topics/r/events"));
        tokio::spawn(async move {
            for i in 0..N {
                let r = client
                    .post(&url)
                    .json(&json!({ "data": i }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let (got, cuts) = read_with_cuts(&server, &["r"], N, &mut rng, sub).await;
    publisher.await.unwrap();
    assert!(cuts >= 10, "only {cuts} cuts");
    let want: Vec<Value> = (0..N).map(|i| json!(i)).collect();
    assert_eq!(got["r"], want);
}

#[tokio::test]
async fn resume_is_exact_across_three_topics() {
    let server = TestServer::start().await;
    let mut rng = Rng::from_time();
    const N: usize = 450;
    let topics = ["x", "y/1", "z:2"];
    let sub = server.subscribe(&topics, None).await;
    let plan: Vec<usize> = (0..N).map(|_| rng.below(3) as usize).collect();
    let publisher = {
        let (client, base, plan) = (
            server.client.clone(),
            server.url("/api/topics/"),
            plan.clone(),
        );
        tokio::spawn(async move {
            for (i, t) in plan.iter().enumerate() {
                let url = format!("{base}{}/events", topics[*t]);
                let r = client
                    .post(&url)
                    .json(&json!({ "data": i }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let (got, cuts) = read_with_cuts(&server, &topics, N, &mut rng, sub).await;
    publisher.await.unwrap();
    assert!(cuts >= 8, "only {cuts} cuts");
    for (t, name) in topics.iter().enumerate() {
        let want: Vec<Value> = plan
            .iter()
            .enumerate()
            .filter(|(_, p)| **p == t)
            .map(|(i, _)| json!(i))
            .collect();
        assert_eq!(
            got.get(*name).cloned().unwrap_or_default(),
            want,
            "topic {name}"
        );
    }
}

#[tokio::test]
async fn expired_and_foreign_ids_reset_then_continue_live() {
    let server = TestServer::with_config(config(|c| c.streams.retention.max_events = 5)).await;
    let mut sub = server.subscribe(&["t"], None).await;
    server.publish("t", None, json!(1)).await;
    let first = sub.next_event().await.unwrap().id;
    drop(sub);
    for i in 2..=20 {
        server.publish("t", None, json!(i)).await;
    }
    for (id, reason) in [
        (first.as_str(), "expired"),
        ("not-one-of-ours", "unknown_id"),
        ("zz.1.1", "unknown_id"),
    ] {
        // The query parameter works as well as the header.
        let url = server.url(&format!("/api/events?topic=t&last_event_id={id}"));
        let response = server.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut sub = SseStream::new(response);
        let reset = sub.next_event().await.unwrap();
        assert_eq!(reset.event, "reset", "{id}");
        assert_eq!(
            serde_json::from_str::<Value>(&reset.data).unwrap(),
            json!({"topic": "t", "reason": reason})
        );
        server.publish("t", None, json!("live")).await;
        let live = sub.next_event().await.unwrap();
        assert_eq!(unwrap_envelope(&live).1, json!("live"));
        // Resuming from the reset's id is exact again.
        let mut again = server.subscribe(&["t"], Some(&reset.id)).await;
        assert_eq!(again.next_event().await.unwrap().id, live.id);
    }
    // The header wins over the query parameter (EventSource keeps its first URL).
    let url = server.url(&format!("/api/events?topic=t&last_event_id={first}"));
    let response = server
        .client
        .get(url)
        .header("last-event-id", &first)
        .send()
        .await
        .unwrap();
    let mut sub = SseStream::new(response);
    assert_eq!(sub.next_event().await.unwrap().event, "reset");
}

/// A `Last-Event-ID` whose bytes are not ASCII (or not UTF-8) is an id we cannot use like any
/// other: `reset` (`unknown_id`), never silently a live start.
#[tokio::test]
async fn a_non_ascii_last_event_id_resets() {
    let server = TestServer::start().await;
    server.publish("t", None, json!(1)).await;
    for bytes in [&b"caf\xc3\xa9.1.1"[..], &b"\xff\xfe"[..]] {
        let response = server
            .client
            .get(server.url("/api/events?topic=t&_=123"))
            .header(
                "last-event-id",
                reqwest::header::HeaderValue::from_bytes(bytes).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut sub = SseStream::new(response);
        let reset = sub.next_event().await.unwrap();
        assert_eq!(reset.event, "reset", "{bytes:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&reset.data).unwrap(),
            json!({"topic": "t", "reason": "unknown_id"})
        );
    }
}

#[tokio::test]
async fn heartbeat_and_graceful_shutdown_final_event() {
    let server =
        TestServer::with_config(config(|c| c.streams.heartbeat = Duration::from_millis(100))).await;
    let mut sub = server.subscribe(&["h"], None).await;
    assert_eq!(sub.next_item().await, Some(SseItem::Retry(3000)));
    assert_eq!(sub.next_item().await, Some(SseItem::Comment("ok".into())));
    assert_eq!(
        sub.next_item().await,
        Some(SseItem::Comment("keep-alive".into()))
    );
    server.publish("h", None, json!(1)).await;
    assert_eq!(sub.next_event().await.unwrap().event, "message");

    server.state.shutdown.cancel();
    let last = loop {
        match sub.next_item().await.expect("a final event before the end") {
            SseItem::Event(e) => break e,
            SseItem::Comment(_) | SseItem::Retry(_) => {}
        }
    };
    assert_eq!(last.event, "error");
    let data: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(
        (data["code"].as_str(), data["reconnect"].as_bool()),
        (Some("server_shutdown"), Some(true))
    );
    assert_eq!(
        sub.next_item().await,
        None,
        "the stream ends after the final event"
    );
    server.stop().await;
}

#[tokio::test]
async fn max_stream_duration_ends_streams_with_a_reconnect_hint() {
    let server = TestServer::with_config(config(|c| {
        c.streams.max_stream_duration = Some(Duration::from_millis(200))
    }))
    .await;
    let mut sub = server.subscribe(&["m"], None).await;
    let last = sub.next_event().await.unwrap();
    let data: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(
        (last.event.as_str(), data["code"].as_str()),
        ("error", Some("stream_duration"))
    );
    assert!(
        last.id.is_empty(),
        "the final event keeps the client's last id"
    );
    assert_eq!(sub.next_item().await, None);
}

/// Opens a subscription on a raw socket with a tiny receive buffer, and never reads it.
async fn stalled_subscriber(server: &TestServer, topic: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(server.addr).await.expect("connect");
    let request = format!(
        "GET /api/events?topic={topic} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n",
        server.addr
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    stream
}

#[tokio::test]
async fn a_stalled_subscriber_is_dropped_while_others_keep_up() {
    const QUEUE: usize = 32;
    let server = TestServer::with_config(config(|c| {
        c.streams.hub.queue_capacity = QUEUE;
        c.streams.write_stall_timeout = Duration::from_secs(1);
    }))
    .await;
    let hub = server.state.hub.clone();
    let mut good = server.subscribe(&["s"], None).await;
    let stalled = stalled_subscriber(&server, "s").await;
    // Wait (bounded) until both are attached.
    for _ in 0..200 {
        if hub.metrics().snapshot().open_streams == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hub.metrics().snapshot().open_streams, 2);

    let blob = "x".repeat(16 * 1024);
    // The good reader reports its progress, and the publisher never runs more than half a queue
    // ahead of it: "keeps up" then holds however slow the machine is, while the stalled one
    // falls behind by the whole backlog.
    let (progress, mut read_so_far) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 600 {
            let e = good
                .next_event()
                .await
                .expect("the good subscriber's stream ended");
            assert_eq!(e.event, "message", "{e:?}");
            seen.push(unwrap_envelope(&e).1["n"].as_u64().unwrap());
            progress.send_replace(seen.len() as u64);
        }
        seen
    });
    let mut max_queued = 0;
    for n in 0..600u64 {
        let lead = (QUEUE / 2) as u64;
        tokio::time::timeout(
            Duration::from_secs(30),
            read_so_far.wait_for(|read| read.saturating_add(lead) >= n),
        )
        .await
        .expect("the good subscriber stopped reading")
        .expect("the good subscriber's reader ended");
        server
            .publish("s", None, json!({ "n": n, "blob": blob }))
            .await;
        let m = hub.metrics().snapshot();
        max_queued = max_queued.max(m.queued_events);
        // Memory stays bounded: never more than the two queues' bounds, whatever the backlog.
        assert!(m.queued_events <= 2 * QUEUE as u64, "{m:?}");
    }
    let seen = reader.await.unwrap();
    assert_eq!(
        seen,
        (0..600).collect::<Vec<u64>>(),
        "the good subscriber got everything, in order"
    );
    let m = hub.metrics().snapshot();
    assert_eq!(m.slow_consumers_dropped, 1, "{m:?}");
    assert!(
        m.queued_bytes <= (QUEUE * (blob.len() + 64)) as u64,
        "{m:?}"
    );
    eprintln!("most events queued at once: {max_queued}; 600 x 16 KiB published");
    assert!(
        server
            .metrics()
            .await
            .contains("rill_slow_consumers_dropped_total 1\n")
    );
    // The stalled socket itself is closed once its writes made no progress for
    // `write_stall_timeout`, freeing its stream slot (the good one has hung up by now too).
    let mut slots = usize::MAX;
    for _ in 0..500 {
        slots = server.state.streams.open_streams();
        if slots == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slots, 0, "the stalled connection was closed");
    drop(stalled);
}

#[tokio::test]
async fn stream_limits_give_clear_errors() {
    let server = TestServer::with_config(config(|c| {
        c.streams.max_connections_per_user = 1;
        c.streams.max_connections = 1;
        c.streams.max_topics = 2;
    }))
    .await;
    let first = server.subscribe(&["a"], None).await;
    let second = server
        .client
        .get(server.url("/api/events?topic=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(
        second.json::<Value>().await.unwrap()["error"]["code"],
        "too_many_streams"
    );
    drop(first);
    // The slot is freed when the stream closes (bounded wait).
    let mut opened = None;
    for _ in 0..200 {
        let r = server
            .client
            .get(server.url("/api/events?topic=a"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            opened = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(opened.is_some(), "the slot of a closed stream is freed");

    let server = TestServer::with_config(config(|c| c.streams.max_connections_per_user = 1)).await;
    let _first = server.subscribe(&["a"], None).await;
    let second = server
        .client
        .get(server.url("/api/events?topic=b"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 429);
    assert_eq!(
        second.json::<Value>().await.unwrap()["error"]["code"],
        "too_many_user_streams"
    );
}

/// One bad request: its status and error code.
struct Case {
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    code: &'static str,
}

fn case(method: &'static str, path: &str, body: &str, status: u16, code: &'static str) -> Case {
    Case {
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.to_owned(),
        status,
        code,
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let server = TestServer::with_config(config(|c| {
        c.streams.max_event_size = 1000;
        c.streams.max_topics = 3;
    }))
    .await;
    let ok = r#"{"data": 1}"#;
    let long = "a".repeat(201);
    let too_many = "/api/events?topic=a&topic=b&topic=c&topic=d";
    let cases = vec![
        case(
            "POST",
            "/api/topics/bad%20name/events",
            ok,
            400,
            "bad_topic",
        ),
        case("POST", "/api/topics/a//b/events", ok, 400, "bad_topic"),
        case("POST", "/api/topics/a*/events", ok, 400, "bad_topic"),
        case(
            "POST",
            &format!("/api/topics/{long}/events"),
            ok,
            400,
            "bad_topic",
        ),
        case("POST", "/api/topics/%FF/events", ok, 400, "bad_topic"),
        case(
            "POST",
            "/api/topics/_chat/1/events",
            ok,
            400,
            "reserved_topic",
        ),
        Case {
            content_type: Some("text/plain"),
            ..case(
                "POST",
                "/api/topics/t/events",
                ok,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: None,
            ..case(
                "POST",
                "/api/topics/t/events",
                ok,
                415,
                "unsupported_media_type",
            )
        },
        case(
            "POST",
            "/api/topics/t/events",
            r#"{"data": 1"#,
            400,
            "invalid_json",
        ),
        case("POST", "/api/topics/t/events", "", 400, "invalid_json"),
        case("POST", "/api/topics/t/events", "[1]", 400, "invalid_body"),
        case(
            "POST",
            "/api/topics/t/events",
            r#"{"event": "x"}"#,
            400,
            "invalid_body",
        ),
        case(
            "POST",
            "/api/topics/t/events",
            r#"{"data": 1, "extra": 2}"#,
            400,
            "invalid_body",
        ),
        case(
            "POST",
            "/api/topics/t/events",
            r#"{"event": 7, "data": 1}"#,
            400,
            "invalid_body",
        ),
        case(
            "POST",
            "/api/topics/t/events",
            r#"{"event": "a b", "data": 1}"#,
            400,
            "bad_event_name",
        ),
        case(
            "POST",
            "/api/topics/t/events",
            r#"{"event": "", "data": 1}"#,
            400,
            "bad_event_name",
        ),
        case(
            "POST",
            "/api/topics/t/events",
            &format!(r#"{{"event": "{}", "data": 1}}"#, "e".repeat(65)),
            400,
            "bad_event_name",
        ),
        case(
            "POST",
            "/api/topics/t/events",
            r#"{"event": "reset", "data": 1}"#,
            400,
            "reserved_event_name",
        ),
        case(
            "POST",
            "/api/topics/t/events",
            &format!(r#"{{"data": "{}"}}"#, "x".repeat(1000)),
            413,
            "event_too_large",
        ),
        case(
            "POST",
            "/api/topics/t/events",
            &format!(r#"{{"data": 1, "pad": "{}"}}"#, "x".repeat(6000)),
            413,
            "body_too_large",
        ),
        case("POST", "/api/topics/t/other", ok, 404, "not_found"),
        case("POST", "/api/topics/t", ok, 404, "not_found"),
        case("GET", "/api/topics/t/events", "", 405, "method_not_allowed"),
        case("PUT", "/api/topics/t/events", ok, 405, "method_not_allowed"),
        case("POST", "/api/events?topic=t", ok, 405, "method_not_allowed"),
        case("DELETE", "/metrics", "", 405, "method_not_allowed"),
        case("GET", "/api/events", "", 400, "missing_topic"),
        case("GET", "/api/events?topics=t", "", 400, "missing_topic"),
        case("GET", "/api/events?topic=", "", 400, "bad_topic"),
        case("GET", "/api/events?topic=a%20b", "", 400, "bad_topic"),
        case(
            "GET",
            "/api/events?topic=ok&topic=/bad",
            "",
            400,
            "bad_topic",
        ),
        case(
            "GET",
            "/api/events?topic=_chat/1",
            "",
            400,
            "reserved_topic",
        ),
        case("GET", too_many, "", 400, "too_many_topics"),
        case("GET", "/nope", "", 404, "not_found"),
    ];
    assert!(cases.len() >= 15);
    for c in &cases {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
        let mut request = server
            .client
            .request(method, server.url(&c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let is_json = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/json");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (c.status, Some(c.code)),
            "{} {}: {body}",
            c.method,
            c.path
        );
        assert!(is_json, "{} {}: JSON error", c.method, c.path);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Nothing was published, nothing is attached, no topic has an event.
    let m = server.state.hub.metrics().snapshot();
    assert_eq!((m.events_published, m.open_streams), (0, 0), "{m:?}");
    for t in ["t", "a", "b", "ok", "bad name"] {
        if let Ok(topic) = Topic::new(t) {
            assert_eq!(
                server
                    .state
                    .hub
                    .broker()
                    .read(&topic, u64::MAX, 0)
                    .await
                    .unwrap()
                    .head,
                0,
                "{t}"
            );
        }
    }
    // A bad Last-Event-ID is not an error: it resets.
    let mut sub = server.subscribe(&["t"], Some("%%%")).await;
    assert_eq!(sub.next_event().await.unwrap().event, "reset");
}

/// A broker whose backend is down (as Redis can be). The trait is `async_trait`-shaped; it is
/// implemented by hand here so the tests need no macro crate.
struct DownBroker;

type Answer<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<T, rill_core::BrokerError>> + Send + 'a>,
>;

fn down<'a, T: 'a>() -> Answer<'a, T> {
    Box::pin(async {
        Err(rill_core::BrokerError::Unavailable(
            "connection refused".into(),
        ))
    })
}

impl rill_core::Broker for DownBroker {
    fn epoch<'a, 'c>(&'a self) -> Answer<'c, rill_core::Epoch>
    where
        'a: 'c,
    {
        down()
    }
    fn publish<'a, 'b, 'c>(
        &'a self,
        _: &'b Topic,
        _: rill_core::NewEvent,
    ) -> Answer<'c, rill_core::Published>
    where
        'a: 'c,
        'b: 'c,
    {
        down()
    }
    fn read<'a, 'b, 'c>(&'a self, _: &'b Topic, _: u64, _: usize) -> Answer<'c, rill_core::LogRead>
    where
        'a: 'c,
        'b: 'c,
    {
        down()
    }
    fn attach<'a, 'b, 'c>(
        &'a self,
        _: &'b Topic,
        _: std::sync::Arc<dyn rill_core::Sink>,
    ) -> Answer<'c, rill_core::Attachment>
    where
        'a: 'c,
        'b: 'c,
    {
        down()
    }
}

/// A broker that refuses at a limit, with a detail that must stay in the log.
struct LimitedBroker;

fn limited<'a, T: 'a>() -> Answer<'a, T> {
    Box::pin(async {
        Err(rill_core::BrokerError::Limit(
            "redis://10.1.2.3:6379 OOM command not allowed".into(),
        ))
    })
}

impl rill_core::Broker for LimitedBroker {
    fn epoch<'a, 'c>(&'a self) -> Answer<'c, rill_core::Epoch>
    where
        'a: 'c,
    {
        limited()
    }
    fn publish<'a, 'b, 'c>(
        &'a self,
        _: &'b Topic,
        _: rill_core::NewEvent,
    ) -> Answer<'c, rill_core::Published>
    where
        'a: 'c,
        'b: 'c,
    {
        limited()
    }
    fn read<'a, 'b, 'c>(&'a self, _: &'b Topic, _: u64, _: usize) -> Answer<'c, rill_core::LogRead>
    where
        'a: 'c,
        'b: 'c,
    {
        limited()
    }
    fn attach<'a, 'b, 'c>(
        &'a self,
        _: &'b Topic,
        _: std::sync::Arc<dyn rill_core::Sink>,
    ) -> Answer<'c, rill_core::Attachment>
    where
        'a: 'c,
        'b: 'c,
    {
        limited()
    }
}

#[tokio::test]
async fn a_broker_limit_is_a_503_without_its_detail() {
    let server = TestServer::with_state(Config::default(), |config, shutdown| {
        let hub = rill_hub::Hub::new(std::sync::Arc::new(LimitedBroker), config.streams.hub);
        rill_server::AppState::with_hub(config, shutdown, std::sync::Arc::new(hub))
    })
    .await;
    let publish = server
        .client
        .post(server.url("/api/topics/t/events"))
        .json(&json!({ "data": 1 }))
        .send()
        .await
        .unwrap();
    let subscribe = server
        .client
        .get(server.url("/api/events?topic=t"))
        .send()
        .await
        .unwrap();
    for response in [publish, subscribe] {
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "broker_limit");
        let text = body.to_string();
        assert!(
            !text.contains("redis") && !text.contains("OOM"),
            "internal details stay in the log: {text}"
        );
    }
}

#[tokio::test]
async fn a_broker_outage_is_a_clear_503_and_not_ready() {
    let server = TestServer::with_state(Config::default(), |config, shutdown| {
        let hub = rill_hub::Hub::new(std::sync::Arc::new(DownBroker), config.streams.hub);
        rill_server::AppState::with_hub(config, shutdown, std::sync::Arc::new(hub))
    })
    .await;
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let publish = server
        .client
        .post(server.url("/api/topics/t/events"))
        .json(&json!({ "data": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(publish.status(), 503);
    let body: Value = publish.json().await.unwrap();
    assert_eq!(body["error"]["code"], "broker_unavailable");
    assert!(
        !body.to_string().contains("refused"),
        "internal details stay in the log: {body}"
    );
    let subscribe = server
        .client
        .get(server.url("/api/events?topic=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(subscribe.status(), 503);
    // The refused stream gave its slot back.
    assert_eq!(server.state.streams.open_streams(), 0);
}
