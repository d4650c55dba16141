//! The chats client over a scripted local server: the event stream is opened before the
//! message is posted, drops resume with `Last-Event-ID`, a drop before any id is settled from a
//! `snapshot` or from the history, refusals come back typed, and the server's own end-of-stream
//! notice is not taken for a generation error. (Against the real server: crates/rill/tests/cli_chat.rs.)

// Helpers shared by the tests panic on a broken setup, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rill_client::reqwest::StatusCode;
use rill_client::{
    ChatEvent, ChatStream, ChatUpdate, ChatsClient, Client, MessageStatus, Part, RetryPolicy,
};
use serde_json::json;
use support::{End, LIMIT, Recorded, Reply, TestServer};

const EVENTS: &str = "/api/chats/c1/events";
const MESSAGES: &str = "/api/chats/c1/messages";

fn message(id: &str, role: &str, content: &str, status: &str) -> serde_json::Value {
    json!({
        "id": id, "chat_id": "c1", "role": role, "content": content, "status": status,
        "finish_reason": if status == "streaming" { None } else { Some("stop") },
        "usage": null, "error": null, "bot_id": "demo", "model": "demo",
        "created_at_ms": 1, "updated_at_ms": 2
    })
}

fn accepted() -> Reply {
    let body = json!({
        "user_message": message("u1", "user", "Hello", "complete"),
        "assistant_message": message("a1", "assistant", "", "streaming"),
        "events_url": EVENTS,
    });
    Reply::json(202, &body.to_string())
}

/// One SSE event with an id.
fn frame(id: u32, event: &str, data: &serde_json::Value) -> String {
    format!("id: e.{id}\nevent: {event}\ndata: {data}\n\n")
}

fn created_user() -> String {
    frame(
        1,
        "message.created",
        &message("u1", "user", "Hello", "complete"),
    )
}

fn created_answer() -> String {
    frame(
        2,
        "message.created",
        &message("a1", "assistant", "", "streaming"),
    )
}

fn delta(id: u32, text: &str) -> String {
    frame(
        id,
        "message.delta",
        &json!({"message_id": "a1", "text": text}),
    )
}

fn completed(id: u32) -> String {
    frame(
        id,
        "message.completed",
        &json!({"message_id": "a1", "status": "complete", "finish_reason": "stop",
                "usage": {"input_tokens": 3, "output_tokens": 4}}),
    )
}

/// A server whose event stream answers its n-th connection with `events(n, request)`, posts
/// with 202 and history reads with `history`.
async fn chat_server(
    events: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static,
    history: serde_json::Value,
) -> TestServer {
    let streams = Arc::new(AtomicUsize::new(0));
    TestServer::start(
        move |_, request| match (request.method.as_str(), request.path.as_str()) {
            ("GET", EVENTS) => events(streams.fetch_add(1, Ordering::SeqCst), request),
            ("POST", MESSAGES) => accepted(),
            ("GET", path) if path.starts_with(MESSAGES) => Reply::json(200, &history.to_string()),
            _ => Reply::json(
                404,
                r#"{"error":{"code":"not_found","message":"no such chat"}}"#,
            ),
        },
    )
    .await
}

fn chats(server: &TestServer) -> ChatsClient {
    Client::new(&format!("http://{}", server.addr))
        .unwrap()
        .chats()
        .retry_policy(RetryPolicy {
            initial_delay: Duration::from_millis(4),
            max_delay: Duration::from_millis(40),
            jitter: 0.5,
            max_retries: Some(20),
        })
}

/// The whole answer stream, bounded in items and time, and the answer it assembled.
async fn collect_all(mut stream: ChatStream) -> (Vec<ChatUpdate>, rill_client::Message) {
    let mut updates = Vec::new();
    for _ in 0..100 {
        match tokio::time::timeout(LIMIT, stream.next())
            .await
            .expect("an item in time")
        {
            Some(item) => updates.push(item.unwrap()),
            None => return (updates, stream.message().clone()),
        }
    }
    panic!("the stream did not end: {updates:?}");
}

async fn collect(stream: ChatStream) -> Vec<ChatUpdate> {
    collect_all(stream).await.0
}

/// The answer's text as a screen shows it: deltas appended, a snapshot replaces.
fn text(updates: &[ChatUpdate]) -> String {
    let mut text = String::new();
    for update in updates {
        match update {
            ChatUpdate::Event(ChatEvent::Delta { text: t, .. }) => text.push_str(t),
            ChatUpdate::Event(ChatEvent::Snapshot(m)) => text.clone_from(&m.content),
            _ => {}
        }
    }
    text
}

/// A short name per event, to compare sequences.
fn names(updates: &[ChatUpdate]) -> Vec<String> {
    updates
        .iter()
        .map(|update| match update {
            ChatUpdate::Event(ChatEvent::Created(m)) => format!("created {}", m.id),
            ChatUpdate::Event(ChatEvent::Delta { text, .. }) => format!("delta {text}"),
            ChatUpdate::Event(ChatEvent::Snapshot(m)) => format!("snapshot {}", m.content),
            ChatUpdate::Event(ChatEvent::Completed { status, .. }) => {
                format!("completed {status}")
            }
            ChatUpdate::Event(ChatEvent::Error { code, .. }) => format!("error {code}"),
            ChatUpdate::Event(ChatEvent::Reset { .. }) => "reset".into(),
            ChatUpdate::Reconnecting { .. } => "reconnecting".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn send_opens_the_stream_first_posts_as_json_and_ends_at_the_answers_completion() {
    let server = chat_server(
        |_, _| {
            let body = [
                "retry: 5\n\n".to_owned(),
                created_user(),
                created_answer(),
                delta(3, "Hel"),
                delta(4, "lo!"),
                completed(5),
                // Past the end of the exchange: not read.
                delta(6, "never"),
            ]
            .concat();
            Reply::sse(&body).ending(End::Hold)
        },
        json!({}),
    )
    .await;
    let stream = chats(&server).send("c1", "Hello").await.unwrap();
    assert_eq!(stream.accepted().assistant_message.id, "a1");
    let events = collect(stream).await;
    assert_eq!(
        names(&events),
        [
            "created u1",
            "created a1",
            "delta Hel",
            "delta lo!",
            "completed complete"
        ]
    );
    match &events[4] {
        ChatUpdate::Event(ChatEvent::Completed { usage, .. }) => {
            assert_eq!(usage.map(|u| u.output_tokens), Some(4));
        }
        other => panic!("{other:?}"),
    }

    let requests = server.requests();
    let order: Vec<_> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(order, [format!("GET {EVENTS}"), format!("POST {MESSAGES}")]);
    assert_eq!(
        requests[1].header_str("accept").as_deref(),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(body, json!({"content": "Hello"}));
}

#[tokio::test]
async fn a_dropped_stream_resumes_with_the_last_event_id_and_the_text_comes_once() {
    let server = chat_server(
        |n, request| match n {
            0 => Reply::sse(
                &[
                    "retry: 5\n\n".to_owned(),
                    created_user(),
                    created_answer(),
                    delta(3, "one "),
                ]
                .concat(),
            )
            .ending(End::Drop),
            _ => {
                // The server replays what followed the id the client sends.
                let after = request.header_str("last-event-id").unwrap_or_default();
                assert_eq!(after, "e.3", "resume after the last event received");
                Reply::sse(&[delta(4, "two"), completed(5)].concat()).ending(End::Hold)
            }
        },
        json!({}),
    )
    .await;
    let events = collect(chats(&server).send("c1", "Hello").await.unwrap()).await;
    assert_eq!(text(&events), "one two");
    assert_eq!(
        names(&events),
        [
            "created u1",
            "created a1",
            "delta one ",
            "reconnecting",
            "delta two",
            "completed complete"
        ]
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.path != MESSAGES || r.method == "POST"),
        "an exact resume needs no history read"
    );
}

#[tokio::test]
async fn a_drop_before_any_event_id_settles_a_finished_answer_from_the_history() {
    let history = json!({
        "messages": [
            message("u1", "user", "Hello", "complete"),
            message("a1", "assistant", "The whole answer.", "complete"),
        ],
        "next_before": null,
    });
    let server = chat_server(
        |n, request| match n {
            // Dropped before the exchange's first event.
            0 => Reply::sse("retry: 5\n\n").ending(End::Drop),
            _ => {
                assert_eq!(request.header("last-event-id"), None);
                // At the head, the answer already finished: nothing more will come.
                Reply::sse(": keep-alive\n\n").ending(End::Hold)
            }
        },
        history,
    )
    .await;
    let events = collect(chats(&server).send("c1", "Hello").await.unwrap()).await;
    assert_eq!(
        names(&events),
        [
            "reconnecting",
            "snapshot The whole answer.",
            "completed complete"
        ]
    );
    assert_eq!(text(&events), "The whole answer.");
}

#[tokio::test]
async fn a_drop_before_any_event_id_continues_from_the_servers_snapshot() {
    let history = json!({
        "messages": [
            message("u1", "user", "Hello", "complete"),
            message("a1", "assistant", "The who", "streaming"),
        ],
        "next_before": null,
    });
    let server = chat_server(
        |n, _| match n {
            0 => Reply::sse("retry: 5\n\n").ending(End::Drop),
            _ => Reply::sse(
                &[
                    format!(
                        "event: snapshot\ndata: {}\n\n",
                        message("a1", "assistant", "The whole", "streaming")
                    ),
                    delta(9, " answer."),
                    completed(10),
                ]
                .concat(),
            )
            .ending(End::Hold),
        },
        history,
    )
    .await;
    let events = collect(chats(&server).send("c1", "Hello").await.unwrap()).await;
    assert_eq!(
        names(&events),
        [
            "reconnecting",
            "snapshot The whole",
            "delta  answer.",
            "completed complete"
        ]
    );
    assert_eq!(text(&events), "The whole answer.");
}

#[tokio::test]
async fn the_servers_end_of_stream_notice_is_not_a_generation_error_but_a_failure_is() {
    let server = chat_server(
        |n, _| match n {
            0 => Reply::sse(
                &[
                    "retry: 5\n\n".to_owned(),
                    created_user(),
                    created_answer(),
                    delta(3, "par"),
                    "event: error\ndata: {\"code\":\"stream_duration\",\"message\":\"max\",\"reconnect\":true}\n\n".to_owned(),
                ]
                .concat(),
            ),
            _ => Reply::sse(
                &[
                    frame(4, "error", &json!({"code": "upstream_timeout", "message": "too slow", "message_id": "a1"})),
                    frame(5, "message.completed", &json!({"message_id": "a1", "status": "error", "finish_reason": "error", "usage": null, "error": "too slow"})),
                ]
                .concat(),
            )
            .ending(End::Hold),
        },
        json!({}),
    )
    .await;
    let events = collect(chats(&server).send("c1", "Hello").await.unwrap()).await;
    assert_eq!(
        names(&events),
        [
            "created u1",
            "created a1",
            "delta par",
            "reconnecting",
            "error upstream_timeout",
            "completed error"
        ]
    );
    match events.last() {
        Some(ChatUpdate::Event(ChatEvent::Completed { status, error, .. })) => {
            assert_eq!(*status, MessageStatus::Error);
            assert_eq!(error.as_deref(), Some("too slow"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_stream_assembles_every_part_of_the_answer() {
    let part = |id: u32, part: u32, value: serde_json::Value| {
        let mut data = json!({"message_id": "a1", "part": part});
        for (k, v) in value.as_object().unwrap() {
            data[k] = v.clone();
        }
        frame(id, "message.part", &data)
    };
    let piece = |id: u32, event: &str, part: u32, text: &str| {
        frame(
            id,
            event,
            &json!({"message_id": "a1", "part": part, "text": text}),
        )
    };
    let server = chat_server(
        move |_, _| {
            let body = [
                "retry: 5\n\n".to_owned(),
                created_user(),
                created_answer(),
                part(3, 0, json!({"type": "reasoning", "text": ""})),
                piece(4, "message.reasoning.delta", 0, "Let me think."),
                frame(5, "message.part.done", &json!({"message_id": "a1", "part": 0, "signature": "sig"})),
                part(6, 1, json!({"type": "tool_call", "id": "call_1", "name": "get_weather", "input_text": ""})),
                piece(7, "message.tool_input.delta", 1, "{\"city\":\"Seoul\"}"),
                frame(8, "message.part.done", &json!({"message_id": "a1", "part": 1, "input": {"city": "Seoul"}})),
                frame(9, "message.tool_result", &json!({"message_id": "a1", "part": 1, "output": {"temperature": 21}})),
                part(10, 2, json!({"type": "source", "url": "https://example.com/w", "title": "W"})),
                part(11, 3, json!({"type": "text", "text": ""})),
                piece(12, "message.delta", 3, "It is 21."),
                frame(13, "message.part.done", &json!({"message_id": "a1", "part": 3})),
                completed(14),
            ]
            .concat();
            Reply::sse(&body).ending(End::Hold)
        },
        json!({}),
    )
    .await;
    let (_, answer) = collect_all(chats(&server).send("c1", "Hello").await.unwrap()).await;
    assert_eq!(answer.content, "It is 21.");
    assert_eq!(answer.status, MessageStatus::Complete);
    assert_eq!(
        answer.parts,
        [
            Part::Reasoning {
                text: "Let me think.".into(),
                signature: Some("sig".into()),
                redacted: None
            },
            Part::ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                input_text: "{\"city\":\"Seoul\"}".into(),
                input: Some(json!({"city": "Seoul"})),
                output: Some(json!({"temperature": 21})),
                error: None,
            },
            Part::Source {
                url: "https://example.com/w".into(),
                title: Some("W".into())
            },
            Part::text("It is 21."),
        ]
    );
}

#[tokio::test]
async fn refusals_come_back_typed_with_the_api_code() {
    let server = TestServer::start(|_, request| match request.path.as_str() {
        "/api/chats/busy/events" => Reply::sse("retry: 5\n\n").ending(End::Hold),
        "/api/chats/busy/messages" => Reply::json(
            409,
            r#"{"error":{"code":"generation_running","message":"a generation is running"}}"#,
        ),
        _ => Reply::json(
            404,
            r#"{"error":{"code":"not_found","message":"no such chat"}}"#,
        ),
    })
    .await;
    let chats = chats(&server);
    let error = chats.send("busy", "Hello").await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::CONFLICT));
    assert_eq!(error.api_code(), Some("generation_running"));

    let error = chats.send("gone", "Hello").await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(error.api_code(), Some("not_found"));
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.path != "/api/chats/gone/messages"),
        "nothing is posted to a chat whose stream cannot be opened"
    );
    let error = chats.stop("gone").await.unwrap_err();
    assert_eq!(error.api_code(), Some("not_found"));
}
