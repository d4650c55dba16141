//! Chat streaming over real HTTP against a fake LLM upstream: faults, exactly-once resume, two
//! subscribers, the three POST styles, stop, history pages and bad input.

mod chat_support;
mod support;

use std::time::Duration;

use chat_support::held_store::HeldStore;
use chat_support::{ChatServer, data, delta_text, until_completed};
use rand::{Rng, SeedableRng};
use rill_server::Config;
use rill_test_support::fake_upstream::{FakeUpstream, Reply};
use serde_json::{Value, json};
use support::{SseStream, WAIT};

/// Each upstream fault ends as documented: an `error` event, the stored status and partial
/// text, and a chat that accepts the next message.
#[tokio::test]
async fn upstream_faults_end_cleanly_and_the_chat_stays_usable() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;

    struct Case {
        name: &'static str,
        replies: Vec<Reply>,
        status: &'static str,
        text: &'static str,
        error_code: Option<&'static str>,
    }
    let tokens = || Reply::tokens(["Hel", "lo ", "wor", "ld"]);
    let cases = || {
        vec![
            Case {
                name: "normal",
                replies: vec![tokens()],
                status: "complete",
                text: "Hello world",
                error_code: None,
            },
            Case {
                name: "500 before the stream, every attempt",
                replies: vec![Reply::status(500, "boom"), Reply::status(500, "boom")],
                status: "error",
                text: "",
                error_code: Some("upstream_unavailable"),
            },
            Case {
                name: "429 with Retry-After, then success",
                replies: vec![Reply::rate_limited("0"), tokens()],
                status: "complete",
                text: "Hello world",
                error_code: None,
            },
            Case {
                name: "a drop in the middle",
                replies: vec![tokens().then_drop()],
                status: "error",
                text: "Hello world",
                error_code: Some("upstream_protocol"),
            },
            Case {
                name: "a malformed chunk",
                replies: vec![tokens().then_malformed()],
                status: "error",
                text: "Hello world",
                error_code: Some("upstream_protocol"),
            },
            Case {
                name: "an error object in the stream",
                replies: vec![tokens().then_error("overloaded")],
                status: "error",
                text: "Hello world",
                error_code: Some("upstream_error"),
            },
            Case {
                name: "slow tokens: the idle timeout",
                replies: vec![tokens().then_hang()],
                status: "error",
                text: "Hello world",
                error_code: Some("upstream_timeout"),
            },
        ]
    };

    for bot in ["openai", "anthropic"] {
        let chat = server.create_chat(bot).await;
        for case in cases() {
            for reply in case.replies {
                fake.push(reply);
            }
            let mut stream = server.events(&chat, None).await;
            let id = server.send(&chat, case.name).await;
            let events = until_completed(&mut stream, &id).await;
            let completed = data(events.last().expect("completed"));
            assert_eq!(completed["status"], case.status, "{bot}: {}", case.name);
            let errors: Vec<Value> = events
                .iter()
                .filter(|e| e.event == "error")
                .map(data)
                .collect();
            match case.error_code {
                Some(code) => {
                    assert_eq!(errors.len(), 1, "{bot}: {}: one error event", case.name);
                    assert_eq!(errors[0]["code"], code, "{bot}: {}", case.name);
                    assert_eq!(errors[0]["message_id"], id.as_str());
                }
                None => assert!(errors.is_empty(), "{bot}: {}: {errors:?}", case.name),
            }
            assert_eq!(
                delta_text(&events, &id),
                case.text,
                "{bot}: {}: streamed text",
                case.name
            );
            let stored = server.final_message(&chat, &id).await;
            assert_eq!(stored["status"], case.status, "{bot}: {}", case.name);
            assert_eq!(
                stored["content"], case.text,
                "{bot}: {}: stored text",
                case.name
            );
            if case.status == "error" {
                assert!(
                    stored["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{bot}: {}: error message stored",
                    case.name
                );
            }
        }
    }

    // Connection refused: retried, then a clean error; the chat is usable after.
    let chat = server.create_chat("refused").await;
    let mut stream = server.events(&chat, None).await;
    let id = server.send(&chat, "anyone there?").await;
    let events = until_completed(&mut stream, &id).await;
    assert_eq!(data(events.last().expect("completed"))["status"], "error");
    assert!(
        events
            .iter()
            .any(|e| e.event == "error" && data(e)["code"] == "upstream_connect")
    );
    assert_eq!(server.final_message(&chat, &id).await["status"], "error");
    let id = server.send(&chat, "again").await;
    assert_eq!(
        server.final_message(&chat, &id).await["status"],
        "error",
        "the chat accepts a new message"
    );
}

/// The provider is sent the system prompt and the history.
#[tokio::test]
async fn the_provider_gets_the_system_prompt_and_history() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("openai").await;
    fake.push(Reply::tokens(["first answer"]));
    let id = server.send(&chat, "first question").await;
    server.final_message(&chat, &id).await;
    fake.push(Reply::tokens(["second answer"]));
    let id = server.send(&chat, "second question").await;
    server.final_message(&chat, &id).await;
    assert_eq!(
        last_request_contents(&fake),
        [
            "Be brief.",
            "first question",
            "first answer",
            "second question"
        ]
    );
}

/// A client that disconnects and resumes at random points sees every delta exactly once: the
/// concatenation of what it saw (after its snapshot, if any) equals the stored text.
#[tokio::test]
async fn resume_at_random_points_sees_the_answer_exactly_once() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    for round in 0..3 {
        let chat = server.create_chat("openai").await;
        let tokens: Vec<String> = (0..150).map(|i| format!("t{i}·한🙂 ")).collect();
        fake.push(Reply::tokens(tokens.clone()).token_interval(Duration::from_millis(2)));
        let id = server.send(&chat, "count").await;

        let mut text = String::new();
        let mut last_id: Option<String> = None;
        let mut done = false;
        for cut in 0..400 {
            // Half the reconnections resume by id, the others come back without one (a
            // reload without history): they must get a snapshot instead.
            let use_id = rng.random_bool(0.5);
            let mut stream = server
                .events(&chat, if use_id { last_id.as_deref() } else { None })
                .await;
            if !use_id {
                // Like a page after a reload: open the stream, then read the history. An answer
                // that finished while we were away is final there (and no snapshot comes); one
                // still running comes as a snapshot on the stream, which opened first.
                let stored = server.message(&chat, &id).await;
                if stored["status"] != "streaming" {
                    text = stored["content"].as_str().expect("content").to_owned();
                    done = true;
                    break;
                }
            }
            let read = rng.random_range(1..12);
            for _ in 0..read {
                let event = stream.next_event().await.expect("stream open");
                last_id = Some(event.id.clone());
                let d = data(&event);
                match event.event.as_str() {
                    "snapshot" if d["id"] == id.as_str() => {
                        text = d["content"].as_str().expect("content").to_owned()
                    }
                    "message.delta" if d["message_id"] == id.as_str() => {
                        text.push_str(d["text"].as_str().expect("text"))
                    }
                    "message.completed" if d["message_id"] == id.as_str() => {
                        done = true;
                        break;
                    }
                    "reset" => panic!("round {round} cut {cut}: unexpected reset {d}"),
                    _ => {}
                }
            }
            if done {
                break;
            }
        }
        assert!(done, "round {round}: the answer completed");
        let stored = server.final_message(&chat, &id).await;
        assert_eq!(stored["status"], "complete");
        assert_eq!(
            text,
            stored["content"].as_str().expect("content"),
            "round {round}"
        );
        assert_eq!(text, tokens.concat());
    }
}

/// Two subscribers see identical sequences; the POST-SSE, plain-text and 202 styles store the
/// same message, and stream exactly it.
#[tokio::test]
async fn subscribers_agree_and_the_three_styles_store_the_same_message() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let tokens = ["안녕", "하세요, ", "world ", "🌍", "!"];
    let expected = tokens.concat();

    // 202 style, two subscribers.
    let chat = server.create_chat("openai").await;
    let mut a = server.events(&chat, None).await;
    let mut b = server.events(&chat, None).await;
    fake.push(Reply::tokens(tokens).split_every(3));
    let id = server.send(&chat, "hello").await;
    let seen_a = until_completed(&mut a, &id).await;
    let seen_b = until_completed(&mut b, &id).await;
    assert_eq!(
        seen_a, seen_b,
        "both subscribers see the same events with the same ids"
    );
    assert_eq!(delta_text(&seen_a, &id), expected);
    assert_eq!(
        server.final_message(&chat, &id).await["content"],
        expected.as_str()
    );

    // POST with Accept: text/event-stream: the exchange's events, ending at message.completed.
    let chat = server.create_chat("openai").await;
    fake.push(Reply::tokens(tokens).split_every(3));
    let response = server
        .post_accepting(&chat, "text/event-stream", "hello")
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let mut stream = SseStream::new(response);
    let mut events = Vec::new();
    while let Some(e) = stream.next_event().await {
        events.push(e);
    }
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"message.created"));
    assert_eq!(
        names.last(),
        Some(&"message.completed"),
        "the stream ends after completion"
    );
    let assistant = data(&events[1]);
    assert_eq!(assistant["role"], "assistant");
    let id = assistant["id"].as_str().expect("id").to_owned();
    assert_eq!(delta_text(&events, &id), expected);
    assert_eq!(
        server.final_message(&chat, &id).await["content"],
        expected.as_str()
    );

    // POST with Accept: text/plain: only the text.
    let chat = server.create_chat("openai").await;
    fake.push(Reply::tokens(tokens).split_every(3));
    let response = server.post_accepting(&chat, "text/plain", "hello").await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-rill-message-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = response.text().await.expect("body");
    assert_eq!(body, expected);
    assert_eq!(
        server.final_message(&chat, &id).await["content"],
        expected.as_str()
    );
}

/// Stop closes the upstream connection and stores `stopped` with the text so far.
#[tokio::test]
async fn stop_closes_the_upstream_and_stores_stopped() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("anthropic").await;
    fake.push(Reply::endless("tick ", Duration::from_millis(5)));
    let mut stream = server.events(&chat, None).await;
    let id = server.send(&chat, "go on forever").await;
    let mut deltas = 0;
    while deltas < 5 {
        let e = stream.next_event().await.expect("open");
        if e.event == "message.delta" {
            deltas += 1;
        }
    }
    let response = server
        .client()
        .post(server.url(&format!("/api/chats/{chat}/stop")))
        .send()
        .await
        .expect("stop");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["message"]["status"], "stopped");
    assert!(
        fake.wait_for_disconnects(1, WAIT).await,
        "the upstream saw its connection closed"
    );
    let events = until_completed(&mut stream, &id).await;
    let completed = data(events.last().expect("completed"));
    assert_eq!(completed["status"], "stopped");
    let stored = server.final_message(&chat, &id).await;
    assert_eq!(stored["status"], "stopped");
    let text = stored["content"].as_str().expect("content");
    assert!(
        text.starts_with("tick tick tick tick tick "),
        "the text so far is kept: {text:?}"
    );
    assert_eq!(text, body["message"]["content"].as_str().expect("content"));

    // Nothing runs now: stop is a 409, and the chat accepts a new message.
    let response = server
        .client()
        .post(server.url(&format!("/api/chats/{chat}/stop")))
        .send()
        .await
        .expect("stop");
    assert_eq!(response.status(), 409);
    fake.push(Reply::tokens(["ok"]));
    let id = server.send(&chat, "short now").await;
    assert_eq!(server.final_message(&chat, &id).await["content"], "ok");
}

/// Regenerate answers the last user message again, as a new message.
#[tokio::test]
async fn regenerate_answers_the_last_question_again() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("openai").await;
    fake.push(Reply::status(400, "bad"));
    let failed = server.send(&chat, "question").await;
    assert_eq!(
        server.final_message(&chat, &failed).await["status"],
        "error"
    );
    fake.push(Reply::tokens(["answer"]));
    let response = server
        .client()
        .post(server.url(&format!("/api/chats/{chat}/regenerate")))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    let id = body["assistant_message"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_ne!(id, failed);
    assert_eq!(server.final_message(&chat, &id).await["content"], "answer");
    let last = fake.requests().last().expect("request").body.clone();
    let roles: Vec<&str> = last["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(
        roles,
        ["system", "user"],
        "the failed answer is not sent as history"
    );
}

/// Asks three questions in one chat, each on the server given for it, each read to its end
/// (after `message.completed`), and checks the provider's last request carried all of them.
async fn ask_three_questions(fake: &FakeUpstream, servers: [&ChatServer; 3]) {
    let chat = servers[0].create_chat("openai").await;
    for (n, server) in (1..).zip(servers) {
        fake.push(Reply::tokens([format!("answer {n}")]));
        let response = server
            .post_accepting(&chat, "text/event-stream", &format!("question {n}"))
            .await;
        assert_eq!(response.status(), 200);
        let body = response.text().await.expect("the answer");
        assert!(body.contains("message.completed"), "{body}");
    }
    assert_eq!(
        last_request_contents(fake),
        [
            "Be brief.",
            "question 1",
            "answer 1",
            "question 2",
            "answer 2",
            "question 3"
        ]
    );
}

/// The contents of the messages of the provider's last request.
fn last_request_contents(fake: &FakeUpstream) -> Vec<String> {
    let requests = fake.requests();
    let last = &requests.last().expect("a request").body;
    last["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect()
}

/// The history cache's counters, from `/metrics`: (hits, misses).
async fn history_cache_counts(server: &ChatServer) -> (u64, u64) {
    let metrics = server.server.metrics().await;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    (
        value("rill_chat_history_cache_hits_total "),
        value("rill_chat_history_cache_misses_total "),
    )
}

/// A chat's next question takes its history from memory (no read before the first token) and
/// sends the provider exactly what a read would have.
#[tokio::test]
async fn the_next_question_takes_the_history_kept_in_memory() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    ask_three_questions(&fake, [&server, &server, &server]).await;
    assert_eq!(
        history_cache_counts(&server).await,
        (2, 1),
        "read once, for the chat's first question"
    );
}

/// What another instance adds to a chat reaches the model of the next question asked here,
/// although this instance kept the chat's history in memory.
#[tokio::test]
async fn another_instances_answer_is_in_the_next_history_here() {
    let fake = FakeUpstream::start().await;
    let here = ChatServer::start(&fake).await;
    let there = here.another_instance(&fake).await;
    ask_three_questions(&fake, [&here, &there, &here]).await;
    assert_eq!(
        history_cache_counts(&here).await,
        (0, 2),
        "the kept history was not current"
    );
}

/// Another instance's answer, still being written when this instance read the history for its
/// next question and written in full before this one's question was stored, reaches the model
/// in full: the history is read again.
#[tokio::test]
async fn an_answer_finished_elsewhere_during_the_exchange_is_sent_in_full() {
    let fake = FakeUpstream::start().await;
    let there = ChatServer::start(&fake).await;
    let mut held = None;
    let here = there
        .another_instance_with(&fake, |store| {
            let store = HeldStore::new(store);
            held = Some(store.clone());
            store
        })
        .await;
    let held = held.expect("the held store");
    let chat = there.create_chat("openai").await;

    // There: an answer that takes a while.
    fake.push(
        Reply::tokens(["slow ", "answer ", "there"]).token_interval(Duration::from_millis(150)),
    );
    let answering = there
        .post_accepting(&chat, "text/event-stream", "question there")
        .await;
    assert_eq!(answering.status(), 200);

    // Here: the question's insert waits until that answer is written; its history read does not.
    let release = held.hold_next_insert();
    fake.push(Reply::tokens(["answer here"]));
    let race = async {
        held.listed_while_holding().await;
        let body = answering.text().await.expect("the answer there");
        assert!(body.contains("message.completed"), "{body}");
        let _ = release.send(());
    };
    let (id, ()) = tokio::join!(here.send(&chat, "question here"), race);
    here.final_message(&chat, &id).await;
    assert_eq!(
        last_request_contents(&fake),
        [
            "Be brief.",
            "question there",
            "slow answer there",
            "question here"
        ]
    );
}

/// A chat deleted on another instance and created there again with the same id (as `useChat`
/// does) and as many changes is another chat: nothing of the first reaches the model here.
#[tokio::test]
async fn a_chat_created_again_with_its_id_elsewhere_does_not_inherit_its_history() {
    let fake = FakeUpstream::start().await;
    let here = ChatServer::start(&fake).await;
    let there = here.another_instance(&fake).await;
    let ask = async |server: &ChatServer, text: &str| {
        let response = server
            .client()
            .post(server.url("/api/ai-sdk/chat"))
            .json(&json!({
                "id": "same-id",
                "bot": "openai",
                "messages": [{
                    "id": text.replace(' ', "-"),
                    "role": "user",
                    "parts": [{"type": "text", "text": text}],
                }],
            }))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200);
        let body = response.text().await.expect("the answer");
        assert!(body.contains("[DONE]"), "{body}");
    };
    fake.push(Reply::tokens(["old answer"]));
    ask(&here, "old question").await;
    let deleted = there
        .client()
        .delete(there.url("/api/chats/same-id"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    fake.push(Reply::tokens(["new answer"]));
    ask(&there, "new question").await;
    fake.push(Reply::tokens(["next answer"]));
    ask(&here, "next question").await;
    assert_eq!(
        last_request_contents(&fake),
        ["Be brief.", "new question", "new answer", "next question"]
    );
}

/// History pages walk a 250-message chat with no gap or duplicate while messages are added.
#[tokio::test]
async fn history_pages_walk_250_messages_while_new_ones_arrive() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("demo").await;
    let store = server
        .server
        .state
        .chat
        .as_ref()
        .expect("engine")
        .store()
        .clone();
    let insert = |i: usize| {
        let store = store.clone();
        let chat = chat.clone();
        async move {
            store
                .insert_message(rill_core::chat::NewMessage {
                    chat_id: chat,
                    role: if i.is_multiple_of(2) {
                        rill_core::chat::Role::User
                    } else {
                        rill_core::chat::Role::Assistant
                    },
                    content: format!("message {i}"),
                    status: rill_core::chat::MessageStatus::Complete,
                    bot_id: None,
                    model: None,
                    client_key: None,
                    lease: None,
                })
                .await
                .expect("insert")
        }
    };
    let mut existing = Vec::new();
    for i in 0..250 {
        existing.push(insert(i).await.id);
    }

    for limit in [20, 7] {
        let mut seen: Vec<String> = Vec::new();
        let mut before: Option<String> = None;
        let mut added = 0;
        for page_no in 0..100 {
            let mut url = format!("/api/chats/{chat}/messages?limit={limit}");
            if let Some(b) = &before {
                url.push_str(&format!("&before={b}"));
            }
            let page: Value = server
                .client()
                .get(server.url(&url))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            let items = page["messages"].as_array().expect("messages");
            assert!(items.len() <= limit);
            let ids: Vec<String> = items
                .iter()
                .map(|m| m["id"].as_str().expect("id").to_owned())
                .collect();
            // Oldest to newest within the page, and older than everything seen so far.
            let mut page_seen = ids.clone();
            page_seen.extend(seen);
            seen = page_seen;
            // New messages arrive while the client scrolls back.
            if page_no % 3 == 0 {
                insert(1000 + added).await;
                added += 1;
            }
            match page["next_before"].as_str() {
                Some(b) => before = Some(b.to_owned()),
                None => break,
            }
        }
        // The first page was the newest `limit` at that time; every older message exactly once.
        let start = existing.len() - seen.len();
        assert_eq!(
            seen,
            existing[start..].to_vec(),
            "limit {limit}: no gap, no duplicate, in order"
        );
        assert_eq!(start, 0, "limit {limit}: reached the oldest message");
        existing = server
            .messages(&chat)
            .await
            .into_iter()
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect();
    }
}

/// Bad input gets the documented status and JSON error, and changes nothing.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("demo").await;
    let id = server.send(&chat, "a first message").await;
    server.final_message(&chat, &id).await;
    let snapshot = |server: &ChatServer| {
        let chat = chat.clone();
        let client = server.client().clone();
        let url = server.url("/api/chats?limit=100");
        let messages_url = server.url(&format!("/api/chats/{chat}/messages?limit=100"));
        async move {
            let chats: Value = client
                .get(url)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            let messages: Value = client
                .get(messages_url)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            (chats, messages)
        }
    };
    let before = snapshot(&server).await;

    let foreign_token = "Bearer not-used-in-mode-none";
    let long = "x".repeat(40_000);
    // (method, path under the chat, content type, body, status, code)
    type Case<'a> = (&'a str, &'a str, String, Option<String>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "messages",
            "application/json".into(),
            Some(json!({ "content": "" }).to_string()),
            400,
            "empty_content",
        ),
        (
            "POST",
            "messages",
            "application/json".into(),
            Some(json!({ "content": "  \n " }).to_string()),
            400,
            "empty_content",
        ),
        (
            "POST",
            "messages",
            "application/json".into(),
            Some(json!({ "content": long }).to_string()),
            413,
            "content_too_long",
        ),
        (
            "POST",
            "messages",
            "application/json".into(),
            Some("{\"content\": ".into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "messages",
            "application/json".into(),
            Some(json!({ "text": "hi" }).to_string()),
            400,
            "invalid_body",
        ),
        (
            "POST",
            "messages",
            "text/plain".into(),
            Some("hi".into()),
            415,
            "unsupported_media_type",
        ),
        (
            "GET",
            "messages?before=nope",
            String::new(),
            None,
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            "messages?before=c-1",
            String::new(),
            None,
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            "messages?limit=0",
            String::new(),
            None,
            400,
            "invalid_limit",
        ),
        (
            "GET",
            "messages?limit=101",
            String::new(),
            None,
            400,
            "invalid_limit",
        ),
        (
            "GET",
            "messages?limit=ten",
            String::new(),
            None,
            400,
            "invalid_limit",
        ),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let url = server.url(&format!("/api/chats/{chat}/{path}"));
        let mut request = server
            .client()
            .request(method.parse().expect("method"), url)
            .header("authorization", foreign_token);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let error: Value = response.json().await.expect("JSON error body");
        assert_eq!(error["error"]["code"], code, "{method} {path}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    // Unknown bot, unknown chat.
    let other: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            server
                .client()
                .post(server.url("/api/chats"))
                .json(&json!({ "bot": "nope" })),
            404,
            "unknown_bot",
        ),
        (
            server
                .client()
                .post(server.url("/api/chats"))
                .json(&json!({})),
            400,
            "invalid_body",
        ),
        (
            server.client().get(server.url("/api/chats/nope")),
            404,
            "not_found",
        ),
        (
            server
                .client()
                .post(server.url("/api/chats/nope/messages"))
                .json(&json!({ "content": "hi" })),
            404,
            "not_found",
        ),
        (
            server.client().get(server.url("/api/chats/nope/events")),
            404,
            "not_found",
        ),
        (
            server.client().post(server.url("/api/chats/nope/stop")),
            404,
            "not_found",
        ),
        (
            server.client().delete(server.url("/api/chats/nope")),
            404,
            "not_found",
        ),
        (
            server.client().get(server.url("/api/chats?limit=-1")),
            400,
            "invalid_limit",
        ),
    ];
    for (request, status, code) in other {
        let response = request.send().await.expect("send");
        assert_eq!(response.status().as_u16(), status, "{code}");
        let error: Value = response.json().await.expect("JSON error body");
        assert_eq!(error["error"]["code"], code);
    }

    assert_eq!(snapshot(&server).await, before, "no state changed");
}

/// Chats belong to their creator: another user gets 404 for everything (auth mode jwt).
#[tokio::test]
async fn another_users_chat_is_not_found() {
    let secret = b"0123456789abcdef0123456789abcdef-chat-test";
    let key = rill_server::JwtKey::hs256(secret).expect("key");
    let config = Config {
        auth: rill_server::Auth::jwt(key, None, Duration::from_secs(30)),
        ..Config::default()
    };
    let fake = FakeUpstream::start().await;
    let server = ChatServer::with_config(&fake, config).await;
    let token = |user: &str| {
        let claims = rill_server::Claims::new(user, Duration::from_secs(600));
        format!(
            "Bearer {}",
            rill_server::mint_hs256(secret, &claims).expect("token")
        )
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let response = server
        .client()
        .post(server.url("/api/chats"))
        .header("authorization", &alice)
        .json(&json!({ "bot": "demo" }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 201);
    let chat = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let no_token = server
        .client()
        .get(server.url("/api/chats"))
        .send()
        .await
        .expect("get");
    assert_eq!(no_token.status(), 401);
    let requests = [
        server
            .client()
            .get(server.url(&format!("/api/chats/{chat}"))),
        server
            .client()
            .get(server.url(&format!("/api/chats/{chat}/messages"))),
        server
            .client()
            .post(server.url(&format!("/api/chats/{chat}/messages")))
            .json(&json!({ "content": "hi" })),
        server
            .client()
            .get(server.url(&format!("/api/chats/{chat}/events"))),
        server
            .client()
            .post(server.url(&format!("/api/chats/{chat}/stop"))),
        server
            .client()
            .post(server.url(&format!("/api/chats/{chat}/ticket"))),
        server
            .client()
            .delete(server.url(&format!("/api/chats/{chat}"))),
    ];
    for request in requests {
        let response = request
            .header("authorization", &bob)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 404);
    }
    let listed: Value = server
        .client()
        .get(server.url("/api/chats"))
        .header("authorization", &bob)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["chats"], json!([]));

    // Alice follows her chat with a ticket; the ticket opens that chat's stream once.
    let ticket: Value = server
        .client()
        .post(server.url(&format!("/api/chats/{chat}/ticket")))
        .header("authorization", &alice)
        .send()
        .await
        .expect("ticket")
        .json()
        .await
        .expect("json");
    let ticket = ticket["ticket"].as_str().expect("ticket").to_owned();
    let url = server.url(&format!("/api/chats/{chat}/events?ticket={ticket}"));
    let first = server.client().get(&url).send().await.expect("get");
    assert_eq!(first.status(), 200);
    let again = server.client().get(&url).send().await.expect("get");
    assert_eq!(again.status(), 401, "a ticket opens one stream");
}

/// A random chunking of the text answer, independent of where deltas fall, still gives the
/// same stored text: a sanity check that the fake's splitting reaches the server.
#[tokio::test]
async fn multibyte_text_split_anywhere_is_stored_intact() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("anthropic").await;
    let text = "가나다라마바사 🦀🦀 ünïcödé";
    for split in [1, 2, 5] {
        fake.push(
            Reply::tokens(
                text.split_inclusive(' ')
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            )
            .split_every(split),
        );
        let id = server.send(&chat, "split").await;
        assert_eq!(
            server.final_message(&chat, &id).await["content"],
            text,
            "split every {split} bytes"
        );
    }
}
