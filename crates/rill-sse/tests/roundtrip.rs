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
    fn arbitrary_bytes_parse_the_same_in_any_chunking(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                1 => Just(b'\r'),
                1 => Just(b'\n'),
                1 => Just(b':'),
                1 => Just(0xEF),
            ],
            0..200,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let (whole, whole_parser) = parse_chunked(&bytes, &[]);
        let (chunked, chunked_parser) = parse_chunked(&bytes, &cuts);
        prop_assert_eq!(whole, chunked);
        prop_assert_eq!(whole_parser.last_event_id(), chunked_parser.last_event_id());
        prop_assert_eq!(whole_parser.retry(), chunked_parser.retry());
    }
}
