//! Rich answers over real HTTP: every provider's naming of reasoning, tool calls and citations
//! (upstream streams in each API's shape, through the fake upstream) is streamed as parts and
//! stored exactly as streamed; random cuts during reasoning and tool input reassemble exactly;
//! a snapshot carries every part; the demo model shows every kind offline.

mod chat_support;
mod support;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rill_chat::protocol::{ChatEvent, apply};
use rill_core::chat::{Message, MessageStatus, Part};
use rill_test_support::fake_upstream::{FakeUpstream, Reply};
use rill_test_support::upstream_streams;
use serde_json::{Value, json};

use chat_support::ChatServer;

/// The stored message, as the API returns it.
async fn stored(server: &ChatServer, chat: &str, id: &str) -> Message {
    serde_json::from_value(server.final_message(chat, id).await).expect("a message")
}

/// The assistant's placeholder, as its `message.created` carries it.
fn placeholder(events: &[rill_sse::OwnedEvent], id: &str) -> Message {
    events
        .iter()
        .filter(|e| e.event == "message.created")
        .filter_map(|e| serde_json::from_str::<Message>(&e.data).ok())
        .find(|m| m.id == id)
        .expect("the answer's message.created")
}

/// Applies every event of `events` about `answer` to it, as a client does.
fn assemble(mut answer: Message, events: &[rill_sse::OwnedEvent]) -> Message {
    for e in events {
        if let Some(event) = ChatEvent::decode(&e.event, e.data.as_bytes()).expect("decodable") {
            apply(&mut answer, &event).expect("every event fits the answer");
        }
    }
    answer
}

fn reasoning(text: &str, signature: Option<&str>) -> Part {
    Part::Reasoning {
        text: text.to_owned(),
        signature: signature.map(str::to_owned),
        redacted: None,
    }
}

fn tool(id: &str, name: &str, input_text: &str) -> Part {
    Part::ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        input_text: input_text.to_owned(),
        input: serde_json::from_str(input_text).ok(),
        output: None,
        error: None,
    }
}

/// What each stream must become: parts, status, finish reason.
fn expected(name: &str) -> (Vec<Part>, MessageStatus, &'static str) {
    match name {
        "deepseek_reasoning_content" => (
            vec![
                reasoning("The user greets me; 인사로 답하자.", None),
                Part::text("Hello! 안녕하세요 👋"),
            ],
            MessageStatus::Complete,
            "stop",
        ),
        "vllm_reasoning" => (
            vec![
                reasoning("Okay, the user wants a haiku.", None),
                Part::text("\n\nRivers find the sea 🌊"),
            ],
            MessageStatus::Complete,
            "stop",
        ),
        "openrouter_reasoning_details" => (
            vec![
                reasoning("I should check the date.", Some("ErUBCkYIBBgCIkA+sig==")),
                Part::Reasoning {
                    text: String::new(),
                    signature: None,
                    redacted: Some("EmwKAhgBEgy3va3pzix/LafPsn4aDFIT".to_owned()),
                },
                Part::text("Today is Friday."),
            ],
            MessageStatus::Complete,
            "stop",
        ),
        "openai_parallel_tools" => (
            vec![
                tool("call_aW3gHiqR", "get_weather", r#"{"city": "Seoul"}"#),
                tool("call_Xk9pL2mT", "get_time", r#"{"tz": "Asia/Seoul"}"#),
            ],
            MessageStatus::Complete,
            "tool_calls",
        ),
        "ollama_reused_index" => (
            vec![
                reasoning("Two cities, two calls.", None),
                tool("call_k2b4x9", "get_weather", r#"{"city":"Seoul"}"#),
                tool("call_p7m1q3", "get_weather", r#"{"city":"Busan"}"#),
            ],
            MessageStatus::Complete,
            "tool_calls",
        ),
        "anthropic_thinking_tools" => (
            vec![
                reasoning(
                    "The user asks about Seoul's weather. I'll search, then call the tool.",
                    Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"),
                ),
                Part::text("According to the forecast, "),
                Part::Source {
                    url: "https://weather.example.com/seoul".to_owned(),
                    title: Some("Seoul weather".to_owned()),
                },
                Part::text("서울은 맑아요 ☀️."),
                tool(
                    "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "get_weather",
                    r#"{"location": "Seoul", "unit": "celsius"}"#,
                ),
            ],
            MessageStatus::Complete,
            "tool_use",
        ),
        "anthropic_midstream_error" => (
            vec![
                reasoning("Let me think.", Some("EqQBsig2")),
                Part::text("Partial answ"),
            ],
            MessageStatus::Error,
            "error",
        ),
        other => panic!("no expectation for {other}"),
    }
}

/// Every upstream shape, cut into 7-byte pieces on the wire: the parts streamed equal the
/// parts stored, and both equal what the stream carried.
#[tokio::test]
async fn every_providers_shape_is_streamed_and_stored_part_for_part() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    for (name, anthropic, body) in upstream_streams::STREAMS {
        let chat = server
            .create_chat(if *anthropic { "anthropic" } else { "openai" })
            .await;
        fake.push(Reply::recorded(body).split_every(7));
        let mut stream = server.events(&chat, None).await;
        let id = server.send(&chat, "go").await;
        let events = chat_support::until_completed(&mut stream, &id).await;
        let streamed = assemble(placeholder(&events, &id), &events);
        let stored = stored(&server, &chat, &id).await;
        let (parts, status, reason) = expected(name);
        assert_eq!(stored.parts, parts, "{name}: stored parts");
        assert_eq!(streamed.parts, stored.parts, "{name}: streamed = stored");
        assert_eq!(streamed.content, stored.content, "{name}: content");
        assert_eq!(
            stored.content,
            rill_core::chat::text_of(&parts),
            "{name}: content is the text parts"
        );
        assert_eq!(stored.status, status, "{name}");
        assert_eq!(streamed.status, status, "{name}");
        assert_eq!(stored.finish_reason.as_deref(), Some(reason), "{name}");
        // Every part is started once and ended once (sources are whole when they start).
        let started = events.iter().filter(|e| e.event == "message.part").count();
        let done = events
            .iter()
            .filter(|e| e.event == "message.part.done")
            .count();
        let sources = parts
            .iter()
            .filter(|p| matches!(p, Part::Source { .. }))
            .count();
        assert_eq!(started, parts.len(), "{name}");
        assert_eq!(done + sources, parts.len(), "{name}");
    }
    // Usage, reasoning tokens included, as each provider reports it.
    let chat = server.create_chat("openai").await;
    fake.push(Reply::recorded(upstream_streams::stream(
        "deepseek_reasoning_content",
    )));
    let id = server.send(&chat, "go").await;
    let usage = stored(&server, &chat, &id).await.usage.expect("usage");
    assert_eq!(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.reasoning_tokens
        ),
        (11, 24, Some(14))
    );
}

/// A reader that drops at random points (during reasoning, during tool input) and comes back
/// with its last id, or without one (a reload: a snapshot with every part, then the rest),
/// ends with exactly the stored parts.
#[tokio::test]
async fn random_cuts_during_reasoning_and_tool_input_reassemble_exactly() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (round, name) in [
        "anthropic_thinking_tools",
        "ollama_reused_index",
        "openrouter_reasoning_details",
        "openai_parallel_tools",
    ]
    .iter()
    .cycle()
    .take(8)
    .enumerate()
    {
        let anthropic = name.starts_with("anthropic");
        let chat = server
            .create_chat(if anthropic { "anthropic" } else { "openai" })
            .await;
        fake.push(
            Reply::recorded(upstream_streams::stream(name))
                .token_interval(Duration::from_millis(15))
                .split_every(rng.random_range(3..20)),
        );
        let mut first = server.events(&chat, None).await;
        let id = server.send(&chat, "go").await;
        // The exchange's first events, to know the placeholder.
        let opening = first.events(2).await;
        let mut answer = placeholder(&opening, &id);
        let mut last_id = opening.last().map(|e| e.id.clone());
        drop(first);
        let mut done = false;
        for _ in 0..200 {
            let use_id = rng.random_bool(0.6);
            let mut stream = server
                .events(&chat, if use_id { last_id.as_deref() } else { None })
                .await;
            if !use_id {
                let now: Message =
                    serde_json::from_value(server.message(&chat, &id).await).expect("message");
                if now.status.is_final() {
                    answer = now;
                    done = true;
                    break;
                }
            }
            for _ in 0..rng.random_range(1..6) {
                let e = stream.next_event().await.expect("stream open");
                last_id = Some(e.id.clone());
                assert_ne!(e.event, "reset", "round {round}: no reset expected");
                if let Some(event) = ChatEvent::decode(&e.event, e.data.as_bytes()).expect("ok") {
                    apply(&mut answer, &event).expect("fits");
                }
                if e.event == "message.completed" && answer.status.is_final() {
                    done = true;
                    break;
                }
            }
            if done {
                break;
            }
        }
        assert!(done, "round {round} ({name}): the answer completed");
        let stored = stored(&server, &chat, &id).await;
        assert_eq!(answer.parts, stored.parts, "round {round} ({name})");
        assert_eq!(answer.content, stored.content, "round {round} ({name})");
        assert_eq!(stored.parts, expected(name).0, "round {round} ({name})");
    }
}

/// The demo model offline: reasoning first, then for a weather question a tool call with
/// streamed arguments, its result and a source, then the text; a snapshot taken mid-answer
/// carries the parts so far, and the parts after it complete the answer exactly.
#[tokio::test]
async fn the_demo_shows_every_part_and_a_snapshot_carries_them() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("demo").await;
    let mut stream = server.events(&chat, None).await;
    let id = server.send(&chat, "What is the weather in Seoul?").await;
    let events = chat_support::until_completed(&mut stream, &id).await;
    let answer = assemble(placeholder(&events, &id), &events);
    let stored = stored(&server, &chat, &id).await;
    assert_eq!(answer.parts, stored.parts);
    let kinds: Vec<&str> = stored.parts.iter().map(Part::kind).collect();
    assert_eq!(kinds, ["reasoning", "tool_call", "source", "text"]);
    match &stored.parts[1] {
        Part::ToolCall {
            name,
            input,
            output,
            ..
        } => {
            assert_eq!(name, "get_weather");
            assert_eq!(
                input.as_ref(),
                Some(&json!({"city": "Seoul", "unit": "celsius"}))
            );
            assert_eq!(
                output.as_ref().and_then(|o| o.get("city")),
                Some(&json!("Seoul"))
            );
        }
        other => panic!("{other:?}"),
    }
    let usage = stored.usage.expect("usage");
    assert!(usage.reasoning_tokens.is_some_and(|r| r > 0));

    // The history page returns the parts too.
    let page: Value = server
        .client()
        .get(server.url(&format!("/api/chats/{chat}/messages")))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    let last = &page["messages"][1];
    assert_eq!(last["parts"].as_array().map(Vec::len), Some(4));
    assert_eq!(last["parts"][2]["type"], "source");
}

/// A snapshot mid-reasoning (the answer runs on the fake upstream, slowly) carries the parts
/// so far; the events after it complete the answer exactly.
#[tokio::test]
async fn a_join_mid_reasoning_gets_a_snapshot_with_the_parts_so_far() {
    let fake = FakeUpstream::start().await;
    let server = ChatServer::start(&fake).await;
    let chat = server.create_chat("anthropic").await;
    fake.push(
        Reply::recorded(upstream_streams::stream("anthropic_thinking_tools"))
            .token_interval(Duration::from_millis(60)),
    );
    let id = server.send(&chat, "go").await;
    // Wait until the reasoning started.
    let mut early = server.events(&chat, None).await;
    loop {
        let e = early.next_event().await.expect("open");
        if e.event == "message.reasoning.delta" {
            break;
        }
    }
    drop(early);
    let mut joined = server.events(&chat, None).await;
    let first = joined.next_event().await.expect("snapshot");
    assert_eq!(first.event, "snapshot");
    let mut answer: Message = serde_json::from_str(&first.data).expect("message");
    assert!(
        matches!(answer.parts.first(), Some(Part::Reasoning { text, .. }) if !text.is_empty()),
        "the snapshot has the reasoning so far: {:?}",
        answer.parts
    );
    let rest = chat_support::until_completed(&mut joined, &id).await;
    answer = assemble(answer, &rest);
    let stored = stored(&server, &chat, &id).await;
    assert_eq!(answer.parts, stored.parts);
    assert_eq!(stored.parts, expected("anthropic_thinking_tools").0);
}
