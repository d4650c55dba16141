//! Property: whatever is encoded parses back to the same items, under any chunking.

use proptest::prelude::*;
use rill_sse::{Item, OwnedEvent, Parser, encode_comment, encode_event, encode_retry};

#[derive(Debug, Clone)]
enum Frame {
    Event {
        id: Option<String>,
        event: Option<String>,
        data: String,
    },
    Comment(String),
    Retry(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Parsed {
    Event(OwnedEvent),
    Retry(u64),
    Comment(String),
}

/// Text with plenty of line ends, spaces and multi-byte characters mixed into arbitrary unicode.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>().prop_map(String::from),
            1 => Just("\r\n".to_owned()),
            1 => Just("\r".to_owned()),
            1 => Just("\n".to_owned()),
            1 => Just(" ".to_owned()),
            1 => Just(":".to_owned()),
            1 => Just("data: x".to_owned()),
            1 => Just("\u{FEFF}".to_owned()),
            1 => Just("é안😀".to_owned()),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// A valid id or event name: anything but CR and LF (and NUL for ids).
fn single_line(no_nul: bool) -> impl Strategy<Value = String> {
    text().prop_map(move |s| {
        s.chars()
            .filter(|&c| c != '\r' && c != '\n' && !(no_nul && c == '\0'))
            .collect()
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        6 => (
            prop::option::of(single_line(true)),
            prop::option::of(single_line(false).prop_filter("non-empty", |s| !s.is_empty())),
            text(),
        )
            .prop_map(|(id, event, data)| Frame::Event { id, event, data }),
        1 => text().prop_map(Frame::Comment),
        1 => any::<u64>().prop_map(Frame::Retry),
    ]
}

fn normalize_line_ends(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// What a parser must report for `frames`, and their encoding.
fn encode_and_expect(frames: &[Frame]) -> (Vec<u8>, Vec<Parsed>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut last_id = String::new();
    for frame in frames {
        match frame {
            Frame::Event { id, event, data } => {
                encode_event(&mut wire, id.as_deref(), event.as_deref(), data)
                    .expect("valid ids and names encode");
                if let Some(id) = id {
                    last_id.clone_from(id);
                }
                expected.push(Parsed::Event(OwnedEvent {
                    event: event.clone().unwrap_or_else(|| "message".to_owned()),
                    data: normalize_line_ends(data),
                    id: last_id.clone(),
                }));
            }
            Frame::Comment(text) => {
                encode_comment(&mut wire, text);
                for line in normalize_line_ends(text).split('\n') {
                    expected.push(Parsed::Comment(line.to_owned()));
                }
            }
            Frame::Retry(ms) => {
                encode_retry(&mut wire, *ms);
                expected.push(Parsed::Retry(*ms));
            }
        }
    }
    (wire, expected)
}

fn parse_chunked(wire: &[u8], cuts: &[usize]) -> (Vec<Parsed>, Parser) {
    let mut parser = Parser::new();
    let mut got = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    let mut start = 0;
    for end in cuts.into_iter().chain([wire.len()]) {
        parser.feed(&wire[start..end], |item| {
            got.push(match item {
                Item::Event(event) => Parsed::Event(event.into()),
                Item::Retry(ms) => Parsed::Retry(ms),
                Item::Comment(text) => Parsed::Comment(text.to_owned()),
            });
        });
        start = end;
    }
    (got, parser)
}

/// The spec's algorithm written as literally as possible, for whole inputs only: decode the
/// whole stream (U+FFFD for invalid bytes, one leading BOM dropped), split it into lines, and
/// interpret each. The oracle the fast parser is compared with.
fn reference_parse(bytes: &[u8]) -> (Vec<Parsed>, String, Option<u64>) {
    let decoded = String::from_utf8_lossy(bytes);
    let text = decoded.strip_prefix('\u{FEFF}').unwrap_or(&decoded);
    let mut lines: Vec<&str> = Vec::new();
    let mut rest = text;
    // Only terminated lines count: an unterminated last line is discarded at end of stream.
    while let Some(end) = rest.find(['\r', '\n']) {
        lines.push(&rest[..end]);
        rest = if rest[end..].starts_with("\r\n") {
            &rest[end + 2..]
        } else {
            &rest[end + 1..]
        };
    }
    let (mut data, mut event_type, mut id_buffer, mut last_event_id) =
        (String::new(), String::new(), String::new(), String::new());
    let mut retry = None;
    let mut out = Vec::new();
    for line in lines {
        if line.is_empty() {
            last_event_id = id_buffer.clone();
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            out.push(Parsed::Event(OwnedEvent {
                event: if event_type.is_empty() {
                    "message".to_owned()
                } else {
                    event_type.clone()
                },
                data: std::mem::take(&mut data),
                id: id_buffer.clone(),
            }));
            event_type.clear();
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.push(Parsed::Comment(
                comment.strip_prefix(' ').unwrap_or(comment).to_owned(),
            ));
            continue;
        }
        let (name, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match name {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    retry = Some(ms);
                    out.push(Parsed::Retry(ms));
                }
            }
            _ => {}
        }
    }
    (out, last_event_id, retry)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_parse_is_identity(
        frames in prop::collection::vec(frame(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let (wire, expected) = encode_and_expect(&frames);
        let (got, parser) = parse_chunked(&wire, &cuts);
        prop_assert_eq!(&got, &expected);
        let last_id = frames.iter().rev().find_map(|f| match f {
            Frame::Event { id: Some(id), .. } => Some(id.as_str()),
            _ => None,
        });
        prop_assert_eq!(parser.last_event_id(), last_id.unwrap_or(""));
        // One byte at a time as well.
        let all_cuts: Vec<usize> = (0..wire.len()).collect();
        let (bytewise, _) = parse_chunked(&wire, &all_cuts);
        prop_assert_eq!(&bytewise, &expected);
    }

    #[test]
    fn arbitrary_bytes_parse_as_the_spec_says_in_any_chunking(
        bytes in prop::collection::vec(
            prop_oneof![
                3 => any::<u8>().prop_map(|b| vec![b]),
                4 => prop::sample::select(vec![
                    &b"data"[..], b"id", b"event", b"retry", b":", b" ", b"\r", b"\n", b"\r\n",
                    b"12", b"x", b"\0", b"\xEF\xBB\xBF", b"\xE2\x82\xAC", b"\xE2\x82",
                    b"\xF0\x9F\x98\x80", b"\xF0\x9F", b"\xC3", b"\x80", b"\xFF",
                ]).prop_map(<[u8]>::to_vec),
            ],
            0..80,
        ).prop_map(|pieces| pieces.concat()),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let (reference, last_event_id, retry) = reference_parse(&bytes);
        let (whole, whole_parser) = parse_chunked(&bytes, &[]);
        prop_assert_eq!(&whole, &reference);
        prop_assert_eq!(whole_parser.last_event_id(), last_event_id.as_str());
        prop_assert_eq!(whole_parser.retry(), retry);
        let (chunked, chunked_parser) = parse_chunked(&bytes, &cuts);
        prop_assert_eq!(&chunked, &reference);
        prop_assert_eq!(chunked_parser.last_event_id(), last_event_id.as_str());
        prop_assert_eq!(chunked_parser.retry(), retry);
    }
}
