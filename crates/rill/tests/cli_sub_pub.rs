//! `rill sub` and `rill pub` as a user runs them: the real binary against `rill serve`, and
//! `rill sub --json URL` against a scripted SSE server of this test's own (not rill): a POST is
//! re-sent with `Last-Event-ID` after a cut but not after a normal end (unless `--resend`, or
//! rill's last `error` event asks to come back), a GET reconnects, a 204 ends it all.

// Helpers panic on a broken setup, like the tests themselves.
#![allow(clippy::unwrap_used)]

// The scripted HTTP server of the client crate's tests: raw sockets, so it can drop streams.
#[path = "../../rill-client/tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::{End, LIMIT, Reply, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const RILL: &str = env!("CARGO_BIN_EXE_rill");

/// `rill` with a clean environment of ours (no RILL_* from the caller's shell).
fn rill() -> Command {
    let mut command = Command::new(RILL);
    for (name, _) in std::env::vars() {
        if name.starts_with("RILL_") {
            command.env_remove(name);
        }
    }
    command.kill_on_drop(true);
    command
}

/// A running `rill sub` whose stdout is read line by line.
struct Sub {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Sub {
    fn spawn(command: &mut Command) -> Sub {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Sub { child, lines }
    }

    /// The next stdout line as JSON (bounded in time).
    async fn next_json(&mut self) -> Value {
        let line = tokio::time::timeout(LIMIT, self.lines.next_line())
            .await
            .expect("a line in time")
            .unwrap();
        let line = line.expect("rill sub is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

#[tokio::test]
async fn sub_json_url_with_resend_prints_events_comments_reconnects_and_fails_on_401() {
    let server = TestServer::start(|n, request| match n {
        0 => Reply::sse(": hello\nretry: 5\nid: 1\nevent: tick\ndata: one\n\n").ending(End::Drop),
        1 => {
            let after = request.header_str("last-event-id").unwrap_or_default();
            Reply::sse(&format!("id: 2\ndata: after {after}\n\n"))
        }
        _ => Reply::json(
            401,
            r#"{"error":{"code":"unauthorized","message":"token expired"}}"#,
        ),
    })
    .await;
    let mut sub = Sub::spawn(rill().args([
        "sub",
        "--json",
        server.url("/stream").as_str(),
        "-H",
        "X-Trace: abc",
        "-d",
        r#"{"q":"x"}"#,
        "--last-event-id",
        "0",
        // A POST is re-sent after its normal end only when asked.
        "--resend",
    ]));
    let mut lines = Vec::new();
    for _ in 0..7 {
        lines.push(sub.next_json().await);
    }
    let url = server.url("/stream").to_string();
    assert_eq!(lines[0], json!({"open": {"url": url}}));
    assert_eq!(lines[1], json!({"comment": "hello"}));
    assert_eq!(lines[2], json!({"event": "tick", "data": "one", "id": "1"}));
    assert_eq!(lines[3]["error"]["kind"], "transport", "{}", lines[3]);
    assert_eq!(lines[3]["error"]["attempt"], 1);
    assert_eq!(lines[4], json!({"open": {"url": url}}));
    assert_eq!(
        lines[5],
        json!({"event": "message", "data": "after 1", "id": "2"})
    );
    assert_eq!(lines[6]["error"]["kind"], "disconnected", "{}", lines[6]);
    let fatal = sub.next_json().await;
    assert_eq!(fatal["error"]["kind"], "status");
    assert_eq!(fatal["error"]["status"], 401);
    assert_eq!(fatal["error"]["code"], "unauthorized");
    assert_eq!(fatal["error"]["fatal"], true);

    let output = tokio::time::timeout(LIMIT, sub.child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success(), "a 401 is fatal");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("token expired"),
        "{stderr}"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.header_str("last-event-id"))
        .collect();
    assert_eq!(
        ids,
        [
            Some("0".to_owned()),
            Some("1".to_owned()),
            Some("2".to_owned())
        ]
    );
    for request in &requests {
        assert_eq!(request.method, "POST", "-d implies POST");
        assert_eq!(request.body, br#"{"q":"x"}"#);
        assert_eq!(request.header_str("x-trace").as_deref(), Some("abc"));
        assert_eq!(
            request.header_str("accept").as_deref(),
            Some("text/event-stream")
        );
    }
}

#[tokio::test]
async fn sub_url_rejects_a_wrong_content_type_and_keeps_the_token_home() {
    let server = TestServer::start(|_, _| Reply::stream("text/x-bogus", b"data: x\n\n")).await;
    let output = rill()
        .args(["sub", server.url("/").as_str(), "--token", "secret-token"])
        .output();
    let output = tokio::time::timeout(LIMIT, output).await.unwrap().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("text/x-bogus"), "{stderr}");
    assert_eq!(output.stdout, b"", "nothing printed in human mode");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "no reconnect");
    assert_eq!(
        requests[0].header("authorization"),
        None,
        "the token is for the rill server only"
    );
}

/// Runs `rill sub --json ARGS` to its end; its output lines as JSON, and whether it succeeded.
async fn sub_to_the_end(args: &[&str]) -> (Vec<Value>, bool, String) {
    let output = rill().args(["sub", "--json"]).args(args).output();
    let output = tokio::time::timeout(LIMIT, output)
        .await
        .expect("rill sub ends by itself")
        .unwrap();
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (lines, output.status.success(), stderr)
}

/// The events of `lines` without the id: `[event, data]`.
fn event_pairs(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|l| l.get("event").is_some())
        .map(|l| {
            let text = |v: &Value| v.as_str().unwrap().to_owned();
            (text(&l["event"]), text(&l["data"]))
        })
        .collect()
}

#[tokio::test]
async fn a_post_stream_is_resent_after_a_cut_but_not_after_it_ends() {
    let server = TestServer::start(|n, request| match n {
        0 => Reply::sse("retry: 5\nid: 1\nevent: tick\ndata: one\n\n").ending(End::Drop),
        1 => {
            let after = request.header_str("last-event-id").unwrap_or_default();
            Reply::sse(&format!("id: 2\ndata: after {after}\n\n"))
        }
        // Re-sending the POST again would repeat it (a second chat message).
        _ => Reply::sse("id: 3\ndata: sent twice\n\n"),
    })
    .await;
    let url = server.url("/chat").to_string();
    let (lines, ok, stderr) = sub_to_the_end(&[&url, "-d", r#"{"content":"hi"}"#]).await;
    assert!(ok, "a normal end is a success: {stderr}");
    assert_eq!(
        event_pairs(&lines),
        [
            ("tick".to_owned(), "one".to_owned()),
            ("message".to_owned(), "after 1".to_owned())
        ]
    );
    assert_eq!(lines.last().unwrap(), &json!({"end": {"reason": "ended"}}));
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "re-sent once, after the cut");
    assert_eq!(requests[1].method, "POST");
    assert_eq!(requests[1].body, br#"{"content":"hi"}"#);
    assert_eq!(
        requests[1].header_str("last-event-id").as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_post_stream_comes_back_when_rill_asks_and_a_204_ends_it() {
    let server = TestServer::start(|n, _| match n {
        // rill's last event when it ends a stream it wants resumed (a maximum duration).
        0 => Reply::sse(concat!(
            "retry: 5\nid: 1\ndata: one\n\n",
            "event: error\ndata: {\"code\":\"stream_duration\",\"message\":\"m\",\"reconnect\":true}\n\n",
        )),
        // The exchange is over and the client has its last event: nothing more.
        1 => Reply::status(204),
        _ => Reply::sse("id: 3\ndata: sent twice\n\n"),
    })
    .await;
    let url = server.url("/chat").to_string();
    let (lines, ok, stderr) = sub_to_the_end(&[&url, "-d", "{}"]).await;
    assert!(ok, "a 204 is the end, not a failure: {stderr}");
    assert_eq!(
        lines.last().unwrap(),
        &json!({"end": {"reason": "no_content"}})
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].header_str("last-event-id").as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_get_stream_reconnects_after_it_ends_until_a_204() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::sse("retry: 5\nid: 1\ndata: one\n\n"),
        1 => Reply::sse("id: 2\ndata: two\n\n"),
        _ => Reply::status(204),
    })
    .await;
    let url = server.url("/events").to_string();
    let (lines, ok, stderr) = sub_to_the_end(&[&url]).await;
    assert!(ok, "{stderr}");
    assert_eq!(event_pairs(&lines).len(), 2);
    assert_eq!(
        lines.last().unwrap(),
        &json!({"end": {"reason": "no_content"}})
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.method == "GET"));
    assert_eq!(
        requests[2].header_str("last-event-id").as_deref(),
        Some("2")
    );

    // --resend is about re-sending a POST: refused for topics.
    let (_, ok, stderr) = sub_to_the_end(&["news", "--resend"]).await;
    assert!(!ok && stderr.contains("--resend"), "{stderr}");
}

/// A port nobody listens on right now, for `rill serve --listen`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `rill serve` in a temporary directory, killed on drop.
struct Serve {
    _child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

async fn serve() -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = rill()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = rill_client::reqwest::Client::new();
    let ready = async {
        for _ in 0..200 {
            if http
                .get(format!("{url}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("rill serve did not come up");
    };
    tokio::time::timeout(LIMIT, ready).await.unwrap();
    Serve {
        _child: child,
        _dir: dir,
        url,
    }
}

async fn publish(server: &str, args: &[&str]) -> String {
    let output = rill().args(["pub", "--server", server]).args(args).output();
    let output = tokio::time::timeout(LIMIT, output).await.unwrap().unwrap();
    assert!(
        output.status.success(),
        "rill pub failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Starts `rill sub --json` with `args` and waits until its connection is open (events are
/// delivered to attached subscribers; published before that, they would only come by replay).
async fn subscribe(server: &Serve, args: &[&str]) -> Sub {
    let mut sub = Sub::spawn(
        rill()
            .args(["sub", "--json", "--server", &server.url])
            .args(args),
    );
    loop {
        let line = sub.next_json().await;
        if line.get("open").is_some() {
            return sub;
        }
        assert!(
            line.get("comment").is_some(),
            "unexpected before open: {line}"
        );
    }
}

/// The next `n` event lines of `sub`, skipping comments.
async fn events(sub: &mut Sub, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    while events.len() < n {
        let line = sub.next_json().await;
        if line.get("event").is_some() {
            events.push(line);
        } else {
            assert!(line.get("comment").is_some(), "unexpected: {line}");
        }
    }
    events
}

#[tokio::test]
async fn sub_and_pub_against_rill_serve() {
    let server = serve().await;
    let mut both = subscribe(&server, &["orders", "prices"]).await;
    let mut prices = subscribe(&server, &["prices"]).await;

    let first = publish(
        &server.url,
        &[
            "orders",
            r#"{"id":7,"state":"shipped"}"#,
            "--event",
            "status",
        ],
    )
    .await;
    let second = publish(&server.url, &["prices", "not json, so a string"]).await;
    let third = publish(&server.url, &["prices", "42", "--string"]).await;
    assert!(!first.is_empty() && first != second && second != third);

    let seen = events(&mut both, 3).await;
    let without_ids: Vec<Value> = seen
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().unwrap().remove("id");
            e
        })
        .collect();
    assert_eq!(
        without_ids,
        [
            json!({"topic": "orders", "event": "status", "data": {"id": 7, "state": "shipped"}}),
            json!({"topic": "prices", "event": "message", "data": "not json, so a string"}),
            json!({"topic": "prices", "event": "message", "data": "42"}),
        ]
    );
    let ids: Vec<&str> = seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(
        ids.iter().all(|id| !id.is_empty()) && ids[0] != ids[1] && ids[1] != ids[2],
        "{ids:?}"
    );

    // On a stream over one topic, the ids are the ones publish printed.
    let seen = events(&mut prices, 2).await;
    assert_eq!(
        seen[0],
        json!({"topic": "prices", "event": "message", "data": "not json, so a string", "id": second})
    );
    assert_eq!(seen[1]["id"], json!(third));

    // --last-event-id resumes after that event: the next one is replayed from the log.
    let mut resumed = subscribe(&server, &["prices", "--last-event-id", &second]).await;
    let seen = events(&mut resumed, 1).await;
    assert_eq!(
        seen[0],
        json!({"topic": "prices", "event": "message", "data": "42", "id": third})
    );
}

#[tokio::test]
async fn pub_reports_a_server_error_with_its_code() {
    let server = TestServer::start(|_, _| {
        Reply::json(
            400,
            r#"{"error":{"code":"invalid_topic","message":"topic names are 1-128 characters"}}"#,
        )
    })
    .await;
    let base = format!("http://{}", server.addr);
    let output = rill().args(["pub", "--server", &base, "t", "1"]).output();
    let output = tokio::time::timeout(LIMIT, output).await.unwrap().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid_topic") && stderr.contains("400"),
        "{stderr}"
    );
}
