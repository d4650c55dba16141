//! Crash recovery with the real binary: `rill serve` is killed with SIGKILL mid-generation and
//! restarted on the same database; the message is `interrupted` with its checkpointed text, the
//! history is intact, and the chat accepts a new message.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

const RILL: &str = env!("CARGO_BIN_EXE_rill");

/// A free port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start(db: &Path, port: u16) -> Child {
    let child = Command::new(RILL)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--database")
        .arg(format!("sqlite://{}?mode=rwc", db.display()))
        // Slow enough to be killed mid-answer, checkpointing often.
        .args([
            "--demo-first-token-delay",
            "0ms",
            "--demo-tokens-per-second",
            "100",
            "--checkpoint-interval",
            "50ms",
        ])
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rill serve");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rill serve did not come up on port {port}");
}

async fn messages(client: &reqwest::Client, base: &str, chat: &str) -> Vec<Value> {
    let page: Value = client
        .get(format!("{base}/api/chats/{chat}/messages?limit=100"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    page["messages"].as_array().expect("messages").clone()
}

/// A new chat with the demo bot and `content` sent to it (202): the chat's id and the answer's.
async fn ask_demo(client: &reqwest::Client, base: &str, content: &str) -> (String, String) {
    let chat: Value = client
        .post(format!("{base}/api/chats"))
        .json(&json!({ "bot": "demo" }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let chat = chat["id"].as_str().expect("id").to_owned();
    let sent: Value = client
        .post(format!("{base}/api/chats/{chat}/messages"))
        .json(&json!({ "content": content }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let answer = sent["assistant_message"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    (chat, answer)
}

#[tokio::test]
async fn sigkill_mid_generation_leaves_an_interrupted_message_and_a_usable_chat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut server = start(&db, port).await;
    let (chat, answer) = ask_demo(&client, &base, "tell me everything").await;

    // Wait until some text has been checkpointed, then kill the process without warning.
    let mut checkpointed = String::new();
    for _ in 0..200 {
        let stored = messages(&client, &base, &chat).await;
        let m = stored
            .iter()
            .find(|m| m["id"] == answer.as_str())
            .expect("answer stored");
        assert_eq!(
            m["status"], "streaming",
            "the answer must still be running when killed"
        );
        checkpointed = m["content"].as_str().expect("content").to_owned();
        if checkpointed.chars().count() > 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!checkpointed.is_empty(), "a checkpoint was written");
    server.start_kill().expect("SIGKILL");
    server.wait().await.expect("reaped");

    let mut server = start(&db, port).await;
    let stored = messages(&client, &base, &chat).await;
    assert_eq!(stored.len(), 2, "history intact: {stored:?}");
    assert_eq!(stored[0]["role"], "user");
    assert_eq!(stored[0]["content"], "tell me everything");
    let interrupted = &stored[1];
    assert_eq!(interrupted["id"], answer.as_str());
    assert_eq!(interrupted["status"], "interrupted");
    let kept = interrupted["content"].as_str().expect("content");
    assert!(
        kept.starts_with(&checkpointed),
        "the checkpointed text is kept: {kept:?} vs {checkpointed:?}"
    );

    // The chat accepts a new message, which completes.
    let response = client
        .post(format!("{base}/api/chats/{chat}/messages"))
        .header("accept", "text/plain")
        .json(&json!({ "content": "again" }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(60), response.text())
        .await
        .expect("answer in time")
        .expect("body");
    let stored = messages(&client, &base, &chat).await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[3]["status"], "complete");
    assert_eq!(stored[3]["content"], text.as_str());
    server.start_kill().expect("kill");
    let _ = server.wait().await;
}

/// Killed while the model is still reasoning: the stored message keeps the reasoning part it
/// had (at least what was checkpointed), with status `interrupted` and no text.
#[tokio::test]
async fn sigkill_mid_reasoning_keeps_the_reasoning_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut server = start(&db, port).await;
    let (chat, answer) = ask_demo(&client, &base, "think first").await;

    // The demo reasons for about 80 tokens (0.8 s at this pace) before any text.
    let mut reasoning = String::new();
    for _ in 0..200 {
        let stored = messages(&client, &base, &chat).await;
        let m = stored
            .iter()
            .find(|m| m["id"] == answer.as_str())
            .expect("answer stored");
        assert_eq!(m["content"], "", "still reasoning when killed");
        if let Some(text) = m["parts"][0]["text"].as_str() {
            assert_eq!(m["parts"][0]["type"], "reasoning");
            reasoning = text.to_owned();
            if reasoning.chars().count() > 10 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!reasoning.is_empty(), "reasoning was checkpointed");
    server.start_kill().expect("SIGKILL");
    server.wait().await.expect("reaped");

    let mut server = start(&db, port).await;
    let stored = messages(&client, &base, &chat).await;
    let interrupted = &stored[1];
    assert_eq!(interrupted["status"], "interrupted");
    assert_eq!(interrupted["content"], "");
    let parts = interrupted["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!(parts[0]["type"], "reasoning");
    let kept = parts[0]["text"].as_str().expect("text");
    assert!(
        kept.starts_with(&reasoning),
        "the checkpointed reasoning is kept: {kept:?} vs {reasoning:?}"
    );
    server.start_kill().expect("kill");
    let _ = server.wait().await;
}
