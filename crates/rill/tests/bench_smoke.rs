//! Smoke test of `rill bench`: every scenario in a tiny configuration against `rill serve` with
//! the unthrottled demo bot, checking from `--json` that everything was held and delivered.
//! No timing is asserted: the figures of a shared CI machine mean nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

const RILL: &str = env!("CARGO_BIN_EXE_rill");

/// `rill serve` in a temporary directory, killed on drop (`kill_on_drop`).
struct Serve {
    _child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local address")
        .port()
}

fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

async fn serve() -> Serve {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let child = Command::new(RILL)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", "sqlite::memory:"])
        .args([
            "--demo-first-token-delay",
            "0ms",
            "--demo-tokens-per-second",
            "0",
        ])
        .args(["--heartbeat", "300ms"])
        .args(["--max-connections-per-user", "1000"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rill serve");
    let serve = Serve {
        _child: child,
        _dir: dir,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !healthy(port) {
        assert!(Instant::now() < deadline, "rill serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve
}

/// Runs `rill bench <args> --json` and parses its one JSON object.
async fn bench(server: &Serve, args: &[&str]) -> Value {
    let output = Command::new(RILL)
        .arg("bench")
        .args(args)
        .args(["--server", &server.url, "--json"])
        .output()
        .await
        .expect("run rill bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "rill bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

#[tokio::test]
async fn every_scenario_runs_and_loses_nothing() {
    let server = serve().await;

    let connections = bench(
        &server,
        &[
            "connections",
            "-n",
            "20",
            "--hold",
            "10s",
            "--open-timeout",
            "10s",
        ],
    )
    .await;
    assert_eq!(connections["opened"], 20, "{connections}");
    assert_eq!(connections["failed"], 0, "{connections}");
    assert_eq!(connections["held_with_heartbeat"], 20, "{connections}");
    assert_eq!(connections["still_open"], 20, "{connections}");
    assert!(
        connections["server_rss_per_connection"].is_number(),
        "the server's memory is found from its port: {connections}"
    );

    let fanout = bench(
        &server,
        &[
            "fanout",
            "-n",
            "10",
            "-r",
            "100",
            "-d",
            "500ms",
            "--open-timeout",
            "10s",
        ],
    )
    .await;
    assert_eq!(fanout["subscribers_connected"], 10, "{fanout}");
    let step = &fanout["steps"][0];
    assert_eq!(step["published"], 50, "{fanout}");
    assert_eq!(step["expected"], 500, "{fanout}");
    assert_eq!(step["delivered"], 500, "{fanout}");
    assert_eq!(step["lost"], 0, "{fanout}");
    assert_eq!(step["duplicates"], 0, "{fanout}");

    let search = bench(
        &server,
        &[
            "fanout",
            "-n",
            "5",
            "-r",
            "50",
            "-d",
            "300ms",
            "--find-max",
            "--max-steps",
            "2",
            "--p99",
            "10s",
        ],
    )
    .await;
    let steps = search["steps"].as_array().expect("steps");
    assert!(!steps.is_empty() && steps.len() <= 2, "{search}");
    for step in steps {
        assert_eq!(step["lost"], 0, "{search}");
    }

    let chat = bench(&server, &["chat", "-c", "2", "-m", "1", "--timeout", "30s"]).await;
    assert_eq!(chat["completed"], 2, "{chat}");
    assert_eq!(chat["failed"], 0, "{chat}");
    assert!(
        chat["rill"]["tokens"].as_u64().is_some_and(|t| t > 0),
        "{chat}"
    );
    assert_eq!(
        chat["rill"]["tokens"], chat["baseline"]["tokens"],
        "the same prompts give the same answers through rill and in-process: {chat}"
    );
    // The OpenAI face, with the same prompts: the same answers, a first token measured.
    assert_eq!(chat["openai_failed"], 0, "{chat}");
    assert_eq!(chat["openai"]["exchanges"], 2, "{chat}");
    assert_eq!(
        chat["openai"]["tokens"], chat["baseline"]["tokens"],
        "{chat}"
    );
    assert!(
        chat["openai"]["first_token_p50_micros"]
            .as_u64()
            .is_some_and(|t| t > 0),
        "{chat}"
    );

    let stalled = bench(
        &server,
        &[
            "stalled",
            "-n",
            "5",
            "-e",
            "20",
            "--padding",
            "100",
            "--rounds",
            "2",
            "--settle",
            "100ms",
        ],
    )
    .await;
    let rounds = stalled["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{stalled}");
    for round in rounds {
        assert_eq!(round["opened"], 5, "{stalled}");
        assert_eq!(round["published"], 20, "{stalled}");
        assert_eq!(round["publish_errors"], 0, "{stalled}");
        assert!(
            round["peak"]["rss"].as_u64().is_some_and(|rss| rss > 0),
            "the server's memory is read: {stalled}"
        );
    }
    assert!(stalled["rss_after_over_before"].is_number(), "{stalled}");
}
