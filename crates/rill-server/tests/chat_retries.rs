//! Clients that retry, reconnect and negotiate, over real HTTP (issue 10's chat items): a POST
//! that carries a `Last-Event-ID` resumes its exchange (or gets 204 when it has the end), an
//! `Idempotency-Key` returns the first request's exchange, a stream joined early starts at the
//! current answer, ids that cannot be replayed give `reset` and the state, `Accept` follows
//! RFC 9110, a plain-text answer that does not complete is cut off, limits are checked before
//! anything is stored, and more.

mod chat_support;
mod support;

use std::time::Duration;

use rill_server::Config;
use rill_test_support::fake_upstream::{FakeUpstream, Reply};
use serde_json::{Value, json};

use chat_support::{ChatServer, data, delta_text, until_completed};
use support::SseStream;

/// A POST of `content` with these headers.
async fn post(
    server: &ChatServer,
    chat: &str,
    headers: &[(&str, &str)],
    content: &str,
) -> reqwest::Response {
    let mut request = server
        .client()
        .post(server.url(&format!("/api/chats/{chat}/messages")))
        .json(&json!({ "content": content }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("post")
}

async fn messages(server: &ChatServer, chat: &str) -> Vec<Value> {
    let page: Value = server
        .client()
        .get(server.url(&format!("/api/chats/{chat}/messages?limit=100")))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    page["messages"].as_array().expect("messages").clone()
}

/// Every event until the stream ends (bounded).
async fn drain(stream: &mut SseStream) -> Vec<rill_sse::OwnedEvent> {
    let mut events = Vec::new();
    for _ in 0..10_000 {
        match tokio::time::timeout(Duration::from_secs(10), stream.next_event())
            .await
            .expect("the stream ends in time")
        {
            Some(e) => events.push(e),
            None => return events,
        }
    }
    panic!("endless stream");
}

const SSE: (&str, &str) = ("accept", "text/event-stream");

/// `fetch-event-source` and `requests-sse` re-send the POST after a cut with the last id they
/// got: the rest of the same exchange comes, never a second question or answer; a re-POST
/// holding the exchange's last event gets 204; one that missed the end after the answer
/// finished gets the rest and a normal close.
#[tokio::test]
async fn a_retried_post_resumes_its_exchange() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("openai").await;
    let tokens: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    fake.push(Reply::tokens(tokens.clone()).token_interval(Duration::from_millis(10)));

    // The first POST, cut after a few events.
    let response = post(&server, &chat, &[SSE], "Count for me").await;
    assert_eq!(response.status(), 200);
    let mut stream = SseStream::new(response);
    let first = stream.events(6).await;
    let answer = data(&first[1])["id"].as_str().expect("id").to_owned();
    let last = first.last().expect("events").id.clone();
    drop(stream);

    // The retry: same body, Last-Event-ID. The rest, then the end of the stream.
    let response = post(
        &server,
        &chat,
        &[SSE, ("last-event-id", &last)],
        "Count for me",
    )
    .await;
    assert_eq!(response.status(), 200);
    let rest = drain(&mut SseStream::new(response)).await;
    assert_eq!(
        rest.last().map(|e| e.event.as_str()),
        Some("message.completed")
    );
    let mut all = first.clone();
    all.extend(rest.iter().cloned());
    assert_eq!(delta_text(&all, &answer), tokens.concat());
    let history = messages(&server, &chat).await;
    assert_eq!(history.len(), 2, "one question, one answer: {history:?}");
    assert_eq!(history[1]["content"], tokens.concat());

    // A retry that already holds the exchange's last event: 204, nothing new.
    let done = rest.last().expect("completed").id.clone();
    let response = post(
        &server,
        &chat,
        &[SSE, ("last-event-id", &done)],
        "Count for me",
    )
    .await;
    assert_eq!(response.status(), 204);
    // One that missed the end, after the answer finished: the rest, then a normal close.
    let response = post(
        &server,
        &chat,
        &[SSE, ("last-event-id", &last)],
        "Count for me",
    )
    .await;
    assert_eq!(response.status(), 200);
    let again = drain(&mut SseStream::new(response)).await;
    // Replayed from the log, runs of deltas come merged: the same text, the same last id.
    assert_eq!(delta_text(&again, &answer), delta_text(&rest, &answer));
    assert_eq!(again.last().map(|e| &e.id), rest.last().map(|e| &e.id));
    // The same id as a query parameter (clients that cannot set headers).
    let response = post(&server, &chat, &[SSE], "Count for me").await;
    assert_eq!(response.status(), 200, "a new message without an id is new");
    drain(&mut SseStream::new(response)).await;
    let url = server.url(&format!(
        "/api/chats/{chat}/messages?last_event_id={}",
        urlencode(&done)
    ));
    let response = server
        .client()
        .post(url)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "Count for me"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 204);
    assert_eq!(messages(&server, &chat).await.len(), 4);

    // A Last-Event-ID with another accept style is refused, and changes nothing.
    let response = post(&server, &chat, &[("last-event-id", &last)], "x").await;
    assert_eq!(response.status(), 400);
    assert_eq!(messages(&server, &chat).await.len(), 4);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A repeated POST with the same `Idempotency-Key` returns the first request's exchange (202
/// body, or its events), never a new one; the same key for other content is refused.
#[tokio::test]
async fn an_idempotency_key_returns_the_same_exchange() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("openai").await;
    fake.push(Reply::tokens(["Hel", "lo"]).token_interval(Duration::from_millis(30)));
    let key = ("idempotency-key", "k-123");
    let first = post(&server, &chat, &[key], "Hello").await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("json");
    // While the answer runs: the same exchange, not 409.
    let again = post(&server, &chat, &[key], "Hello").await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["user_message"]["id"], first["user_message"]["id"]);
    assert_eq!(
        again["assistant_message"]["id"],
        first["assistant_message"]["id"]
    );
    let answer = first["assistant_message"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    server.final_message(&chat, &answer).await;

    // After it finished, as an event stream: the whole exchange from the log, then the end.
    let response = post(&server, &chat, &[key, SSE], "Hello").await;
    assert_eq!(response.status(), 200);
    let events = drain(&mut SseStream::new(response)).await;
    assert_eq!(
        events.first().map(|e| e.event.as_str()),
        Some("message.created")
    );
    assert_eq!(delta_text(&events, &answer), "Hello");
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("message.completed")
    );

    // Other content with the same key: 422, nothing stored.
    let response = post(&server, &chat, &[key], "Something else").await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(messages(&server, &chat).await.len(), 2);
    // A key that is not visible ASCII: 400.
    let response = post(&server, &chat, &[("idempotency-key", "a b")], "x").await;
    assert_eq!(response.status(), 400);
    assert_eq!(messages(&server, &chat).await.len(), 2);
    // A resume too checks every header before acting (found by schemathesis: a bad key on a
    // POST with `Last-Event-ID` used to be ignored and the stream resumed).
    let bad_key = ("idempotency-key", "a b");
    let response = post(
        &server,
        &chat,
        &[bad_key, SSE, ("last-event-id", "x.y.1")],
        "x",
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_idempotency_key");
}

/// `GET .../events` opened right after a 202 (as the docs suggest) starts at the current
/// answer: a snapshot of it, then its events; never the chat's earlier messages.
#[tokio::test]
async fn a_stream_joined_early_starts_at_the_current_answer() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("openai").await;
    let mut earlier = Vec::new();
    for i in 0..3 {
        fake.push(Reply::tokens([format!("answer {i}")]));
        let id = server.send(&chat, &format!("question {i}")).await;
        server.final_message(&chat, &id).await;
        earlier.push(id);
    }
    fake.push(Reply::tokens(["slow ", "answer"]).first_token_delay(Duration::from_millis(300)));
    let id = server.send(&chat, "question 3").await;
    let mut stream = server.events(&chat, None).await;
    let events = until_completed(&mut stream, &id).await;
    assert_eq!(events[0].event, "snapshot");
    assert_eq!(data(&events[0])["id"], id.as_str());
    for e in &events {
        let d = data(e);
        let about = d["message_id"].as_str().or(d["id"].as_str()).unwrap_or("");
        assert_eq!(about, id, "only the current answer: {} {}", e.event, e.data);
    }
    assert_eq!(delta_text(&events, &id), "slow answer");
}

/// Ids that cannot be replayed give `reset` with a reason, then the state: the latest answer
/// and its completion (it is over), or the running answer's snapshot.
#[tokio::test]
async fn ids_that_cannot_be_replayed_give_reset_then_the_state() {
    let fake = FakeUpstream::start().await;
    let mut config = Config::default();
    config.streams.retention.max_events = 8;
    let server = ChatServer::with_config(&fake, config).await;
    let chat = server.create_chat("openai").await;
    let other = server.create_chat("openai").await;
    let tokens: Vec<String> = (0..30).map(|i| format!("t{i} ")).collect();
    fake.push(Reply::tokens(tokens.clone()));
    let mut stream = server.events(&chat, None).await;
    let id = server.send(&chat, "go").await;
    let events = until_completed(&mut stream, &id).await;
    let early = events[2].id.clone();
    fake.push(Reply::tokens(["x"]));
    let mut other_stream = server.events(&other, None).await;
    let other_id = server.send(&other, "go").await;
    let foreign = until_completed(&mut other_stream, &other_id).await[0]
        .id
        .clone();
    let (epoch, rest) = early.split_once('.').expect("an id");
    let old_epoch = format!("{}{}.{rest}", epoch, "x");
    let overflow = format!(
        "{}.18446744073709551615",
        early.rsplit_once('.').expect("id").0
    );

    for (last_id, reason) in [
        ("garbage", "unknown_id"),
        (foreign.as_str(), "unknown_id"),
        (old_epoch.as_str(), "epoch_changed"),
        (early.as_str(), "expired"),
        (overflow.as_str(), "unknown_id"),
        ("캐시-ümlaut", "unknown_id"),
    ] {
        let mut request = server
            .client()
            .get(server.url(&format!("/api/chats/{chat}/events")));
        request = match reqwest::header::HeaderValue::from_bytes(last_id.as_bytes()) {
            Ok(value) => request.header("last-event-id", value),
            Err(_) => request,
        };
        let response = request.send().await.expect("events");
        assert_eq!(response.status(), 200, "{last_id}");
        let mut stream = SseStream::new(response);
        let got = stream.events(3).await;
        assert_eq!(got[0].event, "reset", "{last_id}");
        assert_eq!(data(&got[0])["reason"], reason, "{last_id}");
        assert_eq!(got[1].event, "snapshot", "{last_id}");
        assert_eq!(data(&got[1])["content"], tokens.concat());
        assert_eq!(got[2].event, "message.completed", "{last_id}");
        assert_eq!(data(&got[2])["status"], "complete");
    }
}

/// `Accept` by RFC 9110: axios's default gets the 202 JSON; a low q for event streams loses.
#[tokio::test]
async fn accept_follows_q_values_then_specificity() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    for (accept, want) in [
        ("application/json, text/plain, */*", "application/json"),
        (
            "text/event-stream;q=0.5, application/json",
            "application/json",
        ),
        ("text/plain;q=0.9, text/event-stream", "text/event-stream"),
        ("*/*", "application/json"),
        ("text/*", "text/event-stream"),
    ] {
        let chat = server.create_chat("openai").await;
        fake.push(Reply::tokens(["ok"]));
        let response = post(&server, &chat, &[("accept", accept)], "hi").await;
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(content_type.starts_with(want), "{accept}: {content_type}");
        let _ = response.bytes().await;
    }
}

/// A plain-text answer that completes ends cleanly; one that is stopped is cut off (the
/// reader sees an unfinished body).
#[tokio::test]
async fn plain_text_answers_that_do_not_complete_end_visibly() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("openai").await;
    fake.push(Reply::tokens(["all ", "of ", "it"]));
    let body = post(&server, &chat, &[("accept", "text/plain")], "hi")
        .await
        .text()
        .await
        .expect("a whole body");
    assert_eq!(body, "all of it");

    fake.push(Reply::endless("more ", Duration::from_millis(5)));
    let response = post(&server, &chat, &[("accept", "text/plain")], "again").await;
    let id = response.headers()["x-rill-message-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let stopper = {
        let client = server.client().clone();
        let url = server.url(&format!("/api/chats/{chat}/stop"));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.post(url).send().await.expect("stop")
        })
    };
    let result = response.text().await;
    assert!(
        result.is_err(),
        "a stopped answer's body is cut off: {result:?}"
    );
    assert_eq!(stopper.await.expect("stop").status(), 200);
    assert_eq!(server.final_message(&chat, &id).await["status"], "stopped");
}

/// A POST that would open a stream past the user's limit is refused before anything is
/// stored or started.
#[tokio::test]
async fn limits_are_checked_before_anything_is_stored() {
    let fake = FakeUpstream::start().await;
    let mut config = Config::default();
    config.streams.max_connections_per_user = 1;
    let server = ChatServer::with_config(&fake, config).await;
    let chat = server.create_chat("openai").await;
    let _held = server.events(&chat, None).await;
    for accept in ["text/event-stream", "text/plain"] {
        let response = post(&server, &chat, &[("accept", accept)], "hi").await;
        assert_eq!(response.status(), 429, "{accept}");
    }
    let response = server
        .client()
        .post(server.url(&format!("/api/chats/{chat}/regenerate")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("regenerate");
    assert_eq!(response.status(), 429);
    assert!(messages(&server, &chat).await.is_empty(), "nothing stored");
    assert_eq!(fake.request_count(), 0, "nothing started");
}

/// Smaller items: `max_content_chars` counts characters (25,000 Korean ones fit), a NUL is
/// refused the same on every store, unknown query parameters and `access_token` are ignored,
/// and deleting a chat ends its open streams.
#[tokio::test]
async fn content_limits_query_parameters_and_deletion() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("openai").await;
    fake.push(Reply::tokens(["ok"]));
    let korean = "가".repeat(25_000);
    let response = post(&server, &chat, &[], &korean).await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let too_long = "가".repeat(32_001);
    let response = post(&server, &chat, &[], &too_long).await;
    assert_eq!(response.status(), 413);
    let response = post(&server, &chat, &[], "nul \u{0} inside").await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_content");

    for path in [
        "/api/chats?_=1".to_owned(),
        format!("/api/chats/{chat}/messages?_=1&access_token=x&limit=5"),
        format!("/api/chats/{chat}?_=123"),
    ] {
        let response = server
            .client()
            .get(server.url(&path))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{path}");
    }

    let mut stream = server.events(&chat, None).await;
    let response = server
        .client()
        .delete(server.url(&format!("/api/chats/{chat}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    let rest = drain(&mut stream).await;
    assert_eq!(
        rest.last().map(|e| e.event.as_str()),
        Some("chat.deleted"),
        "the open stream ends: {rest:?}"
    );
}
