//! `rill sse parse` against every conformance vector: the built binary reads the vector's bytes
//! on stdin and must print exactly the expected event lines, with `{"retry":n}` lines placed so
//! that the retry in effect at each event, and at the end, is the vector's.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
struct Vector {
    id: String,
    chunks_hex: Vec<String>,
    expected: Vec<Expected>,
    end_state: EndState,
}

#[derive(Debug, Deserialize)]
struct Expected {
    event: String,
    data: String,
    id: String,
    retry: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct EndState {
    retry: Option<u64>,
}

/// The output line for an event, in the documented key order.
#[derive(Serialize)]
struct EventLine<'a> {
    event: &'a str,
    data: &'a str,
    id: &'a str,
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn run_rill(args: &[&str], input: Vec<u8>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rill");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Written from another thread so a large output cannot block the writer.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("wait for rill");
    writer.join().expect("writer thread").expect("write stdin");
    output
}

/// Checks `stdout` of `rill sse parse` against a vector: event lines exactly as expected, in
/// order; each event preceded by retry lines that make the retry in effect the expected one; the
/// last retry line printed is the final retry.
fn check(vector: &Vector, stdout: &str) {
    let name = &vector.id;
    let mut retry = None;
    let mut events = vector.expected.iter();
    for line in stdout.lines() {
        if line.starts_with("{\"retry\":") {
            let value: serde_json::Value = serde_json::from_str(line).expect("retry line is JSON");
            assert_eq!(
                line,
                format!("{{\"retry\":{}}}", value["retry"]),
                "{name}: retry line format"
            );
            retry = Some(value["retry"].as_u64().expect("retry is an integer"));
            continue;
        }
        let Some(expected) = events.next() else {
            panic!("{name}: unexpected line {line:?}");
        };
        let want = serde_json::to_string(&EventLine {
            event: &expected.event,
            data: &expected.data,
            id: &expected.id,
        })
        .expect("serialize");
        assert_eq!(line, want, "{name}: event line");
        assert_eq!(retry, expected.retry, "{name}: retry in effect at {line}");
    }
    assert!(
        events.next().is_none(),
        "{name}: missing events in {stdout:?}"
    );
    assert_eq!(retry, vector.end_state.retry, "{name}: final retry");
}

#[test]
fn every_conformance_vector() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rill-sse/tests/data/sse-parse.jsonl");
    let text = std::fs::read_to_string(&path).expect("read the conformance vectors");
    let mut count = 0;
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let vector: Vector = serde_json::from_str(line).expect("parse vector");
        let input: Vec<u8> = vector.chunks_hex.iter().flat_map(|c| unhex(c)).collect();
        let output = run_rill(&["sse", "parse"], input);
        assert!(
            output.status.success(),
            "{}: exit status {}",
            vector.id,
            output.status
        );
        let stdout = String::from_utf8(output.stdout).expect("output is UTF-8");
        check(&vector, &stdout);
        count += 1;
    }
    assert!(count > 100, "only {count} vectors");
}

#[test]
fn help_describes_the_output() {
    let output = run_rill(&["sse", "parse", "--help"], Vec::new());
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains(r#"{"event":"<type>","data":"<data>","id":"<last event id>"}"#),
        "{help}"
    );
    assert!(help.contains(r#"{"retry":<milliseconds>}"#), "{help}");
}
