//! The shared SSE conformance vectors (tests/data/sse-parse.jsonl, a copy of
//! ../shared/conformance/sse-parse.jsonl), fed in their original chunks and re-chunked at random.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rill_sse::{Item, Parser};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Vector {
    id: String,
    chunks_hex: Vec<String>,
    expected: Vec<Expected>,
    end_state: EndState,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone)]
struct Expected {
    event: String,
    data: String,
    id: String,
    /// The reconnection time in effect at dispatch.
    retry: Option<u64>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
struct EndState {
    last_event_id: String,
    retry: Option<u64>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(data_dir().join("sse-parse.jsonl")).expect("read vectors");
    // The first line describes the fields.
    let vectors: Vec<Vector> = text
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("parse vector"))
        .collect();
    assert!(
        vectors.len() > 100,
        "expected the full vector set, got {}",
        vectors.len()
    );
    vectors
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Feeds `chunks` to a fresh parser; returns the events (with the retry in effect at dispatch)
/// and the end state.
fn run<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Expected>, EndState) {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let mut retry = None;
    for chunk in chunks {
        parser.feed(chunk, |item| match item {
            Item::Event(event) => events.push(Expected {
                event: event.event.to_owned(),
                data: event.data.to_owned(),
                id: event.id.to_owned(),
                retry,
            }),
            Item::Retry(ms) => retry = Some(ms),
            Item::Comment(_) => {}
        });
        assert_eq!(parser.retry(), retry, "retry() agrees with the Retry items");
    }
    let end = EndState {
        last_event_id: parser.last_event_id().to_owned(),
        retry: parser.retry(),
    };
    (events, end)
}

fn check_vector(vector: &Vector, chunks: &[&[u8]], how: &str) {
    let (events, end) = run(chunks.iter().copied());
    assert_eq!(events, vector.expected, "{} ({how}): events", vector.id);
    assert_eq!(end, vector.end_state, "{} ({how}): end state", vector.id);
}

#[test]
fn vectors_in_their_original_chunks() {
    for vector in vectors() {
        let chunks: Vec<Vec<u8>> = vector.chunks_hex.iter().map(|c| unhex(c)).collect();
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        check_vector(&vector, &chunks, "original chunks");
    }
}

#[test]
fn vectors_in_one_byte_chunks_and_whole() {
    for vector in vectors() {
        let bytes: Vec<u8> = vector.chunks_hex.iter().flat_map(|c| unhex(c)).collect();
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        check_vector(&vector, &bytewise, "1-byte chunks");
        check_vector(&vector, &[&bytes], "one chunk");
        // Empty chunks between the bytes change nothing either.
        let with_empty: Vec<&[u8]> = bytes.chunks(1).flat_map(|c| [c, &[][..]]).collect();
        check_vector(&vector, &with_empty, "1-byte and empty chunks");
    }
}

#[test]
fn vectors_rechunked_at_random() {
    let mut rng = StdRng::seed_from_u64(0x05EE_D55E);
    for vector in vectors() {
        let bytes: Vec<u8> = vector.chunks_hex.iter().flat_map(|c| unhex(c)).collect();
        for round in 0..200 {
            // Chunk sizes from 1 up to a limit that varies per round, so both many tiny chunks
            // and a few large ones are tried.
            let max = 1 + round % 17;
            let mut chunks = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let size = rng.random_range(0..=max).min(rest.len());
                let (chunk, after) = rest.split_at(size);
                chunks.push(chunk);
                rest = after;
            }
            check_vector(&vector, &chunks, &format!("random chunking, round {round}"));
        }
    }
}

/// The vectors are copied into the repo so it is self-contained; when the shared originals are
/// next to the repo, the copy must not have drifted from them.
#[test]
fn vector_copy_matches_the_shared_original() {
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/sse-parse.jsonl");
    let Ok(original) = std::fs::read(&shared) else {
        eprintln!(
            "no shared conformance vectors at {}: nothing to compare",
            shared.display()
        );
        return;
    };
    let copy = std::fs::read(data_dir().join("sse-parse.jsonl")).expect("read the copy");
    assert!(
        original == copy,
        "crates/rill-sse/tests/data/sse-parse.jsonl differs from {}: copy it again",
        shared.display()
    );
}
