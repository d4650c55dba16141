//! The OpenAI face over real HTTP (docs/openai.md): models, Chat Completions streamed and not
//! (text, reasoning, tool-call fragments, usage, `[DONE]`), a client disconnect closing the
//! upstream request, Responses in the background resumed exactly after any event, polled and
//! cancelled, and OpenAI-shaped errors that store nothing.

mod chat_support;
mod support;

use std::time::Duration;

use rill_test_support::fake_upstream::{FakeUpstream, Reply};
use rill_test_support::upstream_streams;
use serde_json::{Value, json};

use chat_support::ChatServer;
use support::SseStream;

async fn post(server: &ChatServer, path: &str, body: Value) -> reqwest::Response {
    server
        .client()
        .post(server.url(path))
        .header("authorization", "Bearer sk-anything")
        .json(&body)
        .send()
        .await
        .expect("post")
}

/// Every event of a stream: (event name, data).
async fn all_events(response: reqwest::Response) -> Vec<(String, String)> {
    let mut stream = SseStream::new(response);
    let mut out = Vec::new();
    while let Some(e) = stream.next_event().await {
        out.push((e.event.clone(), e.data.clone()));
    }
    out
}

fn chunk_text(events: &[(String, String)], field: &str) -> String {
    events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"][field].as_str().map(str::to_owned))
        .collect()
}

async fn chat_count(server: &ChatServer) -> usize {
    let chats: Value = server
        .client()
        .get(server.url("/api/chats"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    chats["chats"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn models_are_the_bots() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let list: Value = server
        .client()
        .get(server.url("/v1/models"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["demo", "openai", "anthropic", "refused"]);
    assert_eq!(list["data"][0]["object"], "model");
    let one = server
        .client()
        .get(server.url("/v1/models/nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(one.status(), 404);
    let body: Value = one.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn chat_completions_stream_and_whole_agree() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let body = json!({
        "model": "demo",
        "messages": [{"role": "user", "content": "Hello there"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let response = post(&server, "/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let events = all_events(response).await;
    assert_eq!(events.last().map(|(_, d)| d.as_str()), Some("[DONE]"));
    let chunks: Vec<Value> = events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).expect("json chunk"))
        .collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "demo");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().is_some());
    // The harness's demo bot stops at 256 tokens: `length`.
    let finish = &chunks[chunks.len() - 2];
    let reason = finish["choices"][0]["finish_reason"].clone();
    assert!(reason == "stop" || reason == "length", "{reason}");
    let text = chunk_text(&events, "content");
    let reasoning = chunk_text(&events, "reasoning_content");
    assert!(text.contains("Hello there"), "{text}");
    assert!(!reasoning.is_empty(), "the demo reasons first");

    let whole = post(
        &server,
        "/v1/chat/completions",
        json!({"model": "demo", "messages": [{"role": "user", "content": "Hello there"}]}),
    )
    .await;
    assert_eq!(whole.status(), 200);
    let whole: Value = whole.json().await.expect("json");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["content"], text);
    assert_eq!(
        whole["choices"][0]["message"]["reasoning_content"],
        reasoning
    );
    assert_eq!(whole["choices"][0]["finish_reason"], reason);
    // Stateless: nothing stored.
    assert_eq!(chat_count(&server).await, 0);
}

#[tokio::test]
async fn tool_calls_stream_as_openai_fragments_and_options_pass_through() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::recorded(upstream_streams::stream(
        "openai_parallel_tools",
    )));
    let server = ChatServer::start(&fake).await;
    let body = json!({
        "model": "openai",
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather and time in Seoul?"}
        ],
        "stream": true,
        "max_tokens": 77,
        "temperature": 0.25,
        "stop": ["END"],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "auto",
    });
    let events = all_events(post(&server, "/v1/chat/completions", body).await).await;
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    for (_, data) in events.iter().filter(|(_, d)| d != "[DONE]") {
        let chunk: Value = serde_json::from_str(data).expect("json");
        if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
        for fragment in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = usize::try_from(fragment["index"].as_u64().expect("index")).expect("small");
            if let Some(id) = fragment["id"].as_str() {
                assert_eq!(index, calls.len(), "a new call takes the next index");
                assert_eq!(fragment["type"], "function");
                let name = fragment["function"]["name"].as_str().expect("name");
                calls.push((id.to_owned(), name.to_owned(), String::new()));
            }
            if let Some(arguments) = fragment["function"]["arguments"].as_str() {
                calls[index].2.push_str(arguments);
            }
        }
    }
    assert_eq!(
        calls,
        [
            (
                "call_aW3gHiqR".to_owned(),
                "get_weather".to_owned(),
                "{\"city\": \"Seoul\"}".to_owned()
            ),
            (
                "call_Xk9pL2mT".to_owned(),
                "get_time".to_owned(),
                "{\"tz\": \"Asia/Seoul\"}".to_owned()
            ),
        ]
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let sent: Value = fake.requests()[0].body.clone();
    assert_eq!(sent["model"], "test-model");
    assert_eq!(sent["max_tokens"], 77);
    assert_eq!(sent["temperature"], 0.25);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["tools"][1]["function"]["name"], "get_time");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Use tools."})
    );
}

#[tokio::test]
async fn a_client_that_goes_away_closes_the_upstream_request() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::endless("tick ", Duration::from_millis(20)));
    let server = ChatServer::start(&fake).await;
    let body = json!({
        "model": "openai",
        "messages": [{"role": "user", "content": "Go on forever"}],
        "stream": true,
    });
    let response = post(&server, "/v1/chat/completions", body).await;
    let mut stream = SseStream::new(response);
    let first = stream.events(3).await;
    assert!(first.iter().any(|e| e.data.contains("tick")));
    assert_eq!(fake.disconnects(), 0);
    drop(stream);
    assert!(
        fake.wait_for_disconnects(1, Duration::from_secs(5)).await,
        "the upstream request was not closed"
    );
}

/// A Responses event stream's events as JSON.
async fn response_events(response: reqwest::Response, stop_after: Option<usize>) -> Vec<Value> {
    assert_eq!(response.status(), 200);
    let mut stream = SseStream::new(response);
    let mut out = Vec::new();
    while let Some(e) = stream.next_event().await {
        let value: Value = serde_json::from_str(&e.data).expect("json event");
        assert_eq!(value["type"], e.event.as_str());
        out.push(value);
        if stop_after.is_some_and(|n| out.len() >= n) {
            break;
        }
    }
    out
}

#[tokio::test]
async fn a_background_response_resumes_exactly_after_any_event() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let response = post(
        &server,
        "/v1/responses",
        json!({"model": "demo", "input": "Tell me about rivers", "background": true, "stream": true}),
    )
    .await;
    let head = response_events(response, Some(5)).await;
    assert_eq!(head[0]["type"], "response.created");
    let id = head[0]["response"]["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("resp_"));
    let last = head[4]["sequence_number"].as_u64().expect("number");

    // The rest, after the last event seen: nothing twice, nothing missing.
    let rest = server
        .client()
        .get(server.url(&format!(
            "/v1/responses/{id}?stream=true&starting_after={last}"
        )))
        .send()
        .await
        .expect("get");
    let rest = response_events(rest, None).await;
    let all: Vec<Value> = head.iter().chain(rest.iter()).cloned().collect();
    let numbers: Vec<u64> = all
        .iter()
        .map(|e| e["sequence_number"].as_u64().expect("number"))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let done = all.last().expect("last");
    // The harness's demo bot stops at 256 tokens: incomplete, for `max_output_tokens`.
    assert_eq!(done["type"], "response.incomplete");
    assert_eq!(done["response"]["status"], "incomplete");
    let text: String = all
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().expect("delta"))
        .collect();
    let output_text: String = done["response"]["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter(|i| i["type"] == "message")
        .map(|i| i["content"][0]["text"].as_str().expect("text"))
        .collect();
    assert_eq!(text, output_text);
    assert!(text.contains("Tell me about rivers"));

    // The whole stream again from the start equals what the two pieces gave.
    let again = server
        .client()
        .get(server.url(&format!("/v1/responses/{id}?stream=true")))
        .send()
        .await
        .expect("get");
    // (The `response` objects of a retrieved stream know less of the request: no
    // `background`, no `instructions`.)
    let strip = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["response"] = e["response"]["output"].clone();
                e
            })
            .collect()
    };
    let again = response_events(again, None).await;
    assert!(
        strip(&again) == strip(&all),
        "a replay from the start differs"
    );

    // The poll agrees, and the answer is a chat message.
    let polled: Value = server
        .client()
        .get(server.url(&format!("/v1/responses/{id}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(polled["status"], "incomplete");
    assert_eq!(polled["output"], done["response"]["output"]);
    assert_eq!(chat_count(&server).await, 1);

    // previous_response_id continues the same chat.
    let next = post(
        &server,
        "/v1/responses",
        json!({"model": "demo", "input": "And lakes?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(next.status(), 200);
    let next: Value = next.json().await.expect("json");
    assert_eq!(next["status"], "incomplete");
    assert_eq!(next["previous_response_id"], json!(id));
    assert_eq!(chat_count(&server).await, 1);
}

#[tokio::test]
async fn cancel_stops_a_background_response_and_keeps_its_text() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::endless("word ", Duration::from_millis(20)));
    let server = ChatServer::start(&fake).await;
    let created = post(
        &server,
        "/v1/responses",
        json!({"model": "openai", "input": "Go on", "background": true}),
    )
    .await;
    assert_eq!(created.status(), 200);
    let created: Value = created.json().await.expect("json");
    assert_eq!(created["status"], "queued");
    let id = created["id"].as_str().expect("id").to_owned();
    // Some text first.
    let stream = server
        .client()
        .get(server.url(&format!("/v1/responses/{id}?stream=true")))
        .send()
        .await
        .expect("get");
    let mut stream = SseStream::new(stream);
    loop {
        let e = stream.next_event().await.expect("event");
        if e.event == "response.output_text.delta" {
            break;
        }
    }
    let polled: Value = server
        .client()
        .get(server.url(&format!("/v1/responses/{id}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(polled["status"], "in_progress");
    let cancelled = post(&server, &format!("/v1/responses/{id}/cancel"), json!({})).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.expect("json");
    assert_eq!(cancelled["status"], "cancelled");
    let text = cancelled["output"][0]["content"][0]["text"]
        .as_str()
        .expect("text kept");
    assert!(text.starts_with("word "), "{text}");
    assert!(fake.wait_for_disconnects(1, Duration::from_secs(5)).await);
    // The open stream ends with the response, cancelled.
    let mut last = None;
    while let Some(e) = stream.next_event().await {
        last = Some(e);
    }
    let last = last.expect("an end");
    assert_eq!(last.event, "response.incomplete");
    let last: Value = serde_json::from_str(&last.data).expect("json");
    assert_eq!(last["response"]["status"], "cancelled");
    // Idempotent.
    let again = post(&server, &format!("/v1/responses/{id}/cancel"), json!({})).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["status"], "cancelled");
    assert_eq!(again["output"], cancelled["output"]);
}

/// Polls `GET /v1/responses/{id}` until its status is final (bounded).
async fn final_status(server: &ChatServer, id: &str) -> Value {
    for _ in 0..200 {
        let polled: Value = server
            .client()
            .get(server.url(&format!("/v1/responses/{id}")))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if !matches!(polled["status"].as_str(), Some("queued" | "in_progress")) {
            return polled;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("response {id} never ended");
}

#[tokio::test]
async fn a_foreground_stream_whose_client_leaves_cancels_the_response_a_background_one_does_not() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::endless("word ", Duration::from_millis(20)));
    let server = ChatServer::start(&fake).await;
    let mut ids = Vec::new();
    for background in [false, true] {
        let response = post(
            &server,
            "/v1/responses",
            json!({"model": "openai", "input": "Go on", "stream": true, "background": background}),
        )
        .await;
        let head = response_events(response, Some(6)).await;
        assert!(
            head.iter()
                .any(|e| e["type"] == "response.output_text.delta")
        );
        ids.push(head[0]["response"]["id"].as_str().expect("id").to_owned());
        // `response_events` dropped the stream: the client is gone.
    }
    // The foreground response is cancelled, with the text it had, and its upstream closed.
    let foreground = final_status(&server, &ids[0]).await;
    assert_eq!(foreground["status"], "cancelled", "{foreground}");
    let text = foreground["output"][0]["content"][0]["text"]
        .as_str()
        .expect("text kept");
    assert!(text.starts_with("word "), "{text}");
    assert!(fake.wait_for_disconnects(1, Duration::from_secs(5)).await);
    // The background one runs on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let polled: Value = server
        .client()
        .get(server.url(&format!("/v1/responses/{}", ids[1])))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(polled["status"], "in_progress", "{polled}");
    let cancelled = post(
        &server,
        &format!("/v1/responses/{}/cancel", ids[1]),
        json!({}),
    )
    .await;
    assert_eq!(cancelled.status(), 200);
}

#[tokio::test]
async fn bad_input_is_an_openai_error_and_stores_nothing() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]}),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "demo", "messages": "x"}),
            400,
            Some("messages"),
            Some("invalid_type"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}]}),
            400,
            Some("model"),
            Some("missing_required_parameter"),
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-nope", "input": "x"}),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            "/v1/responses",
            json!({"model": "demo", "input": 42}),
            400,
            Some("input"),
            Some("invalid_type"),
        ),
        (
            "/v1/responses",
            json!({"model": "demo"}),
            400,
            Some("input"),
            Some("missing_required_parameter"),
        ),
        (
            "/v1/responses",
            json!({"model": "demo", "input": "x", "previous_response_id": "resp_nope"}),
            404,
            Some("previous_response_id"),
            None,
        ),
        (
            "/v1/responses",
            json!({"model": "demo", "input": "x\u{0}y"}),
            400,
            Some("input"),
            None,
        ),
    ];
    for (path, body, status, param, code) in cases {
        let response = post(&server, path, body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.expect("json");
        let error = &error["error"];
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(error["param"].as_str(), param, "{body}");
        assert_eq!(error["code"].as_str(), code, "{body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let garbage = server
        .client()
        .post(server.url("/v1/responses"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("post");
    assert_eq!(garbage.status(), 400);
    let missing = server
        .client()
        .get(server.url("/v1/responses/resp_0000"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.expect("json");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(
        chat_count(&server).await,
        0,
        "a refused request stores nothing"
    );
}

/// Auth as elsewhere in rill: a missing or bad key is a 401 in OpenAI's shape (the SDKs'
/// `AuthenticationError`), and a response belongs to its creator.
#[tokio::test]
async fn bearer_auth_and_ownership() {
    let secret = b"0123456789abcdef0123456789abcdef-openai-test";
    let key = rill_server::JwtKey::hs256(secret).expect("key");
    let config = rill_server::Config {
        auth: rill_server::Auth::jwt(key, None, Duration::from_secs(30)),
        ..rill_server::Config::default()
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
    for key in [None, Some("Bearer sk-not-a-rill-token")] {
        let mut request = server.client().get(server.url("/v1/models"));
        if let Some(key) = key {
            request = request.header("authorization", key);
        }
        let response = request.send().await.expect("get");
        assert_eq!(response.status(), 401);
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["type"], "authentication_error");
        assert!(error["error"]["message"].as_str().is_some());
        assert!(error["error"].get("param").is_some());
    }
    let created = server
        .client()
        .post(server.url("/v1/responses"))
        .header("authorization", token("alice"))
        .json(&json!({"model": "demo", "input": "Hi", "background": true}))
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), 200);
    let id = created.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mine = server
        .client()
        .get(server.url(&format!("/v1/responses/{id}")))
        .header("authorization", token("alice"))
        .send()
        .await
        .expect("get");
    assert_eq!(mine.status(), 200);
    for request in [
        server
            .client()
            .get(server.url(&format!("/v1/responses/{id}"))),
        server
            .client()
            .post(server.url(&format!("/v1/responses/{id}/cancel"))),
        server
            .client()
            .post(server.url("/v1/responses"))
            .json(&json!({"model": "demo", "input": "x", "previous_response_id": id})),
    ] {
        let response = request
            .header("authorization", token("bob"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 404);
    }
}

/// A response's function calls, then `function_call_output` items with `previous_response_id`;
/// returns the body of the second upstream request.
async fn function_call_round(server: &ChatServer, fake: &FakeUpstream) -> Value {
    let tools = json!([
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
        {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
    ]);
    let response = post(
        server,
        "/v1/responses",
        json!({"model": "openai", "input": "Weather and time in Seoul?", "tools": tools, "stream": true}),
    )
    .await;
    let events = response_events(response, None).await;
    let arguments: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.done")
        .map(|e| e["arguments"].as_str().expect("arguments"))
        .collect();
    assert_eq!(
        arguments,
        ["{\"city\": \"Seoul\"}", "{\"tz\": \"Asia/Seoul\"}"]
    );
    let done = events.last().expect("last");
    assert_eq!(done["type"], "response.completed");
    let calls: Vec<(&str, &str)> = done["response"]["output"]
        .as_array()
        .expect("output")
        .iter()
        .map(|i| {
            assert_eq!(i["type"], "function_call");
            (
                i["call_id"].as_str().expect("call_id"),
                i["name"].as_str().expect("name"),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("call_aW3gHiqR", "get_weather"),
            ("call_Xk9pL2mT", "get_time")
        ]
    );
    let id = done["response"]["id"].as_str().expect("id");
    let next = post(
        server,
        "/v1/responses",
        json!({
            "model": "openai",
            "previous_response_id": id,
            "input": [
                {"type": "function_call_output", "call_id": "call_aW3gHiqR", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_Xk9pL2mT", "output": "15:00"}
            ],
            "tools": tools,
        }),
    )
    .await;
    assert_eq!(next.status(), 200);
    let next: Value = next.json().await.expect("json");
    assert_eq!(next["status"], "completed");
    assert_eq!(next["previous_response_id"], json!(id));
    assert_eq!(next["output"][0]["content"][0]["text"], "Sunny, and 3 pm.");
    assert_eq!(chat_count(server).await, 1, "one conversation, one chat");
    fake.requests()[1].body.clone()
}

/// The outputs are recorded on the calls of the stored answer, and the conversation goes on.
#[tokio::test]
async fn function_call_outputs_continue_the_conversation() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::recorded(upstream_streams::stream(
        "openai_parallel_tools",
    )));
    fake.push(Reply::tokens(["Sunny, ", "and 3 pm."]));
    let server = ChatServer::start(&fake).await;
    function_call_round(&server, &fake).await;
    let chats: Value = server
        .client()
        .get(server.url("/api/chats"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let chat = chats["chats"][0]["id"].as_str().expect("chat id");
    let messages = server.messages(chat).await;
    let outputs: Vec<Value> = messages
        .iter()
        .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["type"] == "tool_call")
        .map(|p| p["output"].clone())
        .collect();
    assert_eq!(outputs, [json!("sunny"), json!("15:00")]);
}

/// The calls and their outputs reach the upstream with the next question.
#[tokio::test]
async fn function_call_outputs_reach_the_upstream() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::recorded(upstream_streams::stream(
        "openai_parallel_tools",
    )));
    fake.push(Reply::tokens(["Sunny, ", "and 3 pm."]));
    let server = ChatServer::start(&fake).await;
    let sent = function_call_round(&server, &fake).await;
    let messages = sent["messages"].as_array().expect("messages");
    let tool_results: Vec<(&str, &str)> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().expect("id"),
                m["content"].as_str().expect("content"),
            )
        })
        .collect();
    assert_eq!(
        tool_results,
        [("call_aW3gHiqR", "sunny"), ("call_Xk9pL2mT", "15:00")]
    );
}

/// A long answer whose start has left the log (a retention of 60 events here) still resumes
/// exactly after any event the log keeps: the response as it stood then is rebuilt from the
/// stored answer. After an event the log dropped, the answer is `409 replay_unavailable`.
#[tokio::test]
async fn a_response_whose_start_left_the_log_still_resumes_exactly() {
    let mut config = rill_server::Config::default();
    config.streams.retention = rill_hub::Retention {
        max_events: 60,
        max_age: Duration::from_secs(3600),
    };
    let fake = FakeUpstream::start().await;
    let server = ChatServer::with_config(&fake, config).await;
    let response = post(
        &server,
        "/v1/responses",
        json!({"model": "demo", "input": "Tell me about rivers", "background": true, "stream": true}),
    )
    .await;
    // Live, the whole answer (the reader keeps up).
    let all = response_events(response, None).await;
    assert_eq!(all[0]["type"], "response.created");
    let id = all[0]["response"]["id"].as_str().expect("id").to_owned();
    assert!(all.len() > 200, "the answer is longer than the log");
    let strip = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["response"] = e["response"]["output"].clone();
                e
            })
            .collect()
    };
    // The answer is over: its start is long gone from the log.
    let from_start = server
        .client()
        .get(server.url(&format!("/v1/responses/{id}?stream=true")))
        .send()
        .await
        .expect("get");
    assert_eq!(from_start.status(), 409);
    let error: Value = from_start.json().await.expect("json");
    assert_eq!(error["error"]["code"], "replay_unavailable");
    for back in [1, 2, 5, 12, 30] {
        let i = all.len() - 1 - back;
        let after = all[i]["sequence_number"].as_u64().expect("number");
        let rest = server
            .client()
            .get(server.url(&format!(
                "/v1/responses/{id}?stream=true&starting_after={after}"
            )))
            .send()
            .await
            .expect("get");
        let rest = response_events(rest, None).await;
        assert!(
            strip(&rest) == strip(&all[i + 1..]),
            "the rest after event {i} of {} differs",
            all.len()
        );
    }
    let early = all[20]["sequence_number"].as_u64().expect("number");
    let gone = server
        .client()
        .get(server.url(&format!(
            "/v1/responses/{id}?stream=true&starting_after={early}"
        )))
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), 409);
}
