//! `rill chat` and the chats client against the real `rill serve` with the offline `demo` bot:
//! one-shot prints exactly the stored answer, `--chat` continues a chat, a piped message is
//! sent, unknown bots and chats fail clearly, the client resumes exactly while the server ends
//! its streams every 300 ms, and stop / regenerate end as `stopped`.

use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::Duration;

use rill_client::{
    ChatEvent, ChatStream, ChatUpdate, ChatsClient, Client, DeltaKind, MessageStatus, RetryPolicy,
    Role,
};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

const RILL: &str = env!("CARGO_BIN_EXE_rill");

/// Every wait is bounded by this, so a bug hangs nothing for long.
const LIMIT: Duration = Duration::from_secs(30);

/// A `rill serve` on a free port with its own SQLite file; killed on drop.
struct Server {
    base: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

/// A free port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `rill serve` with the demo bot at `tokens_per_second` and `extra` flags.
async fn serve(tokens_per_second: u32, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.db");
    let port = free_port();
    let child = Command::new(RILL)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--database")
        .arg(format!("sqlite://{}?mode=rwc", db.display()))
        .args([
            "--demo-first-token-delay",
            "0ms",
            "--demo-tokens-per-second",
        ])
        .arg(tokens_per_second.to_string())
        .args(extra)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("RILL_SERVER")
        .env_remove("RILL_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rill serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            return Server {
                base,
                _child: child,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rill serve did not come up on port {port}");
}

impl Server {
    fn chats(&self) -> ChatsClient {
        Client::new(&self.base).expect("client").chats()
    }

    /// Runs `rill chat --server <this> ARGS` with `stdin` piped in (empty: closed at once).
    async fn chat(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(RILL)
            .args(["chat", "--server", &self.base])
            .args(args)
            .env_remove("RILL_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn rill chat");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("write stdin");
        drop(input);
        tokio::time::timeout(LIMIT, child.wait_with_output())
            .await
            .expect("rill chat ends in time")
            .expect("rill chat output")
    }
}

/// The chat id `rill chat` reports on stderr in one-shot mode.
fn chat_id(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .split_whitespace()
        .skip_while(|word| *word != "--chat")
        .nth(1)
        .map(|id| id.trim_end_matches(')').to_owned())
        .unwrap_or_else(|| panic!("no chat id on stderr: {stderr}"))
}

fn stdout(output: &Output) -> &str {
    std::str::from_utf8(&output.stdout).expect("UTF-8 answer")
}

/// The whole answer stream, bounded in items and time.
async fn collect(mut stream: ChatStream) -> Vec<ChatUpdate> {
    let mut events = Vec::new();
    for _ in 0..100_000 {
        match tokio::time::timeout(LIMIT, stream.next())
            .await
            .expect("an event in time")
        {
            Some(item) => events.push(item.expect("no stream error")),
            None => return events,
        }
    }
    panic!("the answer stream did not end");
}

/// The answer's text as a screen shows it: deltas appended, a snapshot replaces.
fn text(events: &[ChatUpdate], answer: &str) -> String {
    let mut text = String::new();
    for event in events {
        match event {
            ChatUpdate::Event(ChatEvent::Delta {
                message_id,
                kind: DeltaKind::Text,
                text: t,
                ..
            }) if message_id == answer => text.push_str(t),
            ChatUpdate::Event(ChatEvent::Snapshot(m)) if m.id == answer => {
                text.clone_from(&m.content)
            }
            _ => {}
        }
    }
    text
}

fn final_status(events: &[ChatUpdate]) -> MessageStatus {
    match events.last() {
        Some(ChatUpdate::Event(ChatEvent::Completed { status, .. })) => *status,
        other => panic!("the stream ends with the answer's completion, not {other:?}"),
    }
}

#[tokio::test]
async fn one_shot_prints_exactly_the_stored_answer_and_chat_continues_it() {
    let server = serve(2000, &[]).await;
    let chats = server.chats();

    let first = server.chat(&["Hello"], "").await;
    assert!(first.status.success(), "{first:?}");
    let chat = chat_id(&first);
    let history = chats.messages(&chat, None, None).await.expect("history");
    assert_eq!(history.messages.len(), 2);
    assert_eq!(history.messages[0].content, "Hello");
    let answer = &history.messages[1];
    assert_eq!(answer.status, MessageStatus::Complete);
    assert!(!answer.content.is_empty());
    // Not a terminal: no newline added, the answer byte for byte.
    assert_eq!(stdout(&first), answer.content);

    // --chat continues it, here with the message piped on stdin (its line end dropped).
    let second = server
        .chat(&["--chat", &chat, "--bot", "demo"], "And again?\n")
        .await;
    assert!(second.status.success(), "{second:?}");
    assert_eq!(chat_id(&second), chat);
    let history = chats.messages(&chat, None, None).await.expect("history");
    let contents: Vec<_> = history
        .messages
        .iter()
        .map(|m| (m.role, m.status))
        .collect();
    assert_eq!(
        contents,
        [
            (Role::User, MessageStatus::Complete),
            (Role::Assistant, MessageStatus::Complete),
            (Role::User, MessageStatus::Complete),
            (Role::Assistant, MessageStatus::Complete),
        ]
    );
    assert_eq!(history.messages[2].content, "And again?");
    assert_eq!(stdout(&second), history.messages[3].content);

    // `-` reads the message from stdin too.
    let third = server.chat(&["--chat", &chat, "-"], "third").await;
    assert!(third.status.success(), "{third:?}");
    let history = chats.messages(&chat, None, Some(2)).await.expect("history");
    assert_eq!(history.messages[0].content, "third");
    assert_eq!(stdout(&third), history.messages[1].content);
}

#[tokio::test]
async fn unknown_bots_and_chats_fail_with_a_clear_message_and_status_1() {
    let server = serve(2000, &[]).await;
    let cases = [
        (vec!["--bot", "nope", "Hello"], "unknown bot \"nope\""),
        (vec!["--chat", "nope", "Hello"], "no chat \"nope\""),
        (vec![], "the message is empty"),
    ];
    for (args, expected) in cases {
        let output = server.chat(&args, "").await;
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: {output:?}");
    }
    // Nothing was created by the failed attempts.
    let page = server.chats().list(None, None, None).await.expect("list");
    assert!(page.chats.is_empty(), "{page:?}");
}

#[tokio::test]
async fn answers_resume_exactly_while_the_server_ends_streams_every_300ms() {
    // Streams end after 300 ms, and come back after a 50 ms `retry:`: a 2 s answer spans
    // several connections, each resumed with Last-Event-ID.
    let server = serve(200, &["--max-stream-duration", "300ms", "--retry", "50ms"]).await;
    let chats = server.chats().retry_policy(RetryPolicy {
        max_retries: Some(20),
        ..RetryPolicy::default()
    });
    let chat = chats.create("demo").await.expect("chat");
    let stream = chats.send(&chat.id, "Hello").await.expect("sent");
    let answer = stream.accepted().assistant_message.id.clone();
    let events = collect(stream).await;
    let reconnects = events
        .iter()
        .filter(|e| matches!(e, ChatUpdate::Reconnecting { .. }))
        .count();
    assert_eq!(final_status(&events), MessageStatus::Complete);
    let history = chats.messages(&chat.id, None, None).await.expect("history");
    let stored = history.messages.last().expect("answer");
    assert_eq!(stored.id, answer);
    assert!(
        reconnects >= 1,
        "the answer outlived a stream: {reconnects} reconnects ({} chars)",
        stored.content.len()
    );
    assert_eq!(text(&events, &answer), stored.content);

    // The CLI, on the same server: the same exactness through the drops.
    let output = server.chat(&["--chat", &chat.id, "Once more"], "").await;
    assert!(output.status.success(), "{output:?}");
    let history = chats.messages(&chat.id, None, None).await.expect("history");
    assert_eq!(history.messages.len(), 4);
    assert_eq!(stdout(&output), history.messages[3].content);
}

#[tokio::test]
async fn stop_and_regenerate_through_the_client_end_as_stopped() {
    // Slow enough that the answer is still running when stopped (tens of seconds in full).
    let server = serve(10, &[]).await;
    let chats = server.chats();
    let bots = chats.bots().await.expect("bots");
    assert!(bots.iter().any(|b| b.id == "demo"), "{bots:?}");
    let chat = chats.create("demo").await.expect("chat");
    assert_eq!(chat.bot, "demo");

    for round in 0..2 {
        let mut stream = if round == 0 {
            chats.send(&chat.id, "Hello").await.expect("sent")
        } else {
            chats.regenerate(&chat.id).await.expect("regenerated")
        };
        let answer = stream.accepted().assistant_message.id.clone();
        let mut events = Vec::new();
        // Stop once the first text arrived.
        for _ in 0..1000 {
            let event = tokio::time::timeout(LIMIT, stream.next())
                .await
                .expect("an event in time")
                .expect("not ended")
                .expect("no error");
            let first_text = matches!(
                &event,
                ChatUpdate::Event(ChatEvent::Delta {
                    kind: DeltaKind::Text,
                    ..
                })
            );
            events.push(event);
            if first_text {
                break;
            }
        }
        assert_eq!(
            chats
                .get(&chat.id)
                .await
                .expect("chat")
                .generating
                .as_deref(),
            Some(answer.as_str())
        );
        let stopped = chats.stop(&chat.id).await.expect("stopped");
        assert_eq!(stopped.id, answer);
        assert_eq!(stopped.status, MessageStatus::Stopped);
        events.extend(collect(stream).await);
        assert_eq!(final_status(&events), MessageStatus::Stopped);
        assert_eq!(text(&events, &answer), stopped.content);

        let error = chats.stop(&chat.id).await.expect_err("nothing runs");
        assert_eq!(error.api_code(), Some("not_generating"));
    }
    // Two exchanges' worth of messages: the question, its stopped answer, the regenerated one.
    let history = chats.messages(&chat.id, None, Some(1)).await.expect("page");
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].status, MessageStatus::Stopped);
    let before = history.next_before.expect("older messages");
    let older = chats
        .messages(&chat.id, Some(&before), Some(10))
        .await
        .expect("older page");
    assert_eq!(older.messages.len(), 2);
    assert_eq!(older.messages[0].role, Role::User);

    let listed = chats.list(Some("demo"), None, None).await.expect("list");
    assert_eq!(listed.chats.len(), 1);
    chats.delete(&chat.id).await.expect("deleted");
    let error = chats.get(&chat.id).await.expect_err("gone");
    assert_eq!(error.api_code(), Some("not_found"));
}
