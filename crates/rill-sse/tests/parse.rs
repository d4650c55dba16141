//! Data-driven parser tests through one `check(input, expected)` helper: every input is also fed
//! split at every byte position and one byte at a time, which must not change the items.

use rill_sse::{Item, Parser};

/// Renders items compactly, one per line: `event <type> <data:?> id=<id:?>`, `retry <ms>`,
/// `comment <text:?>`.
fn render(item: Item<'_>) -> String {
    match item {
        Item::Event(e) => format!("event {} {:?} id={:?}", e.event, e.data, e.id),
        Item::Retry(ms) => format!("retry {ms}"),
        Item::Comment(text) => format!("comment {text:?}"),
    }
}

fn feed_all(parser: &mut Parser, chunks: &[&[u8]]) -> String {
    let mut out = String::new();
    for chunk in chunks {
        parser.feed(chunk, |item| {
            out.push_str(&render(item));
            out.push('\n');
        });
    }
    out
}

/// Parses `input` (one chunk, every two-chunk split, 1-byte chunks) and compares the rendered
/// items and the final last event ID with `expected` (`last_event_id=<id:?>` as its last line).
#[track_caller]
fn check(input: &[u8], expected: &str) {
    let expected = expected
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect::<String>();
    let run = |chunks: &[&[u8]], how: &str| {
        let mut parser = Parser::new();
        let mut got = feed_all(&mut parser, chunks);
        got.push_str(&format!("last_event_id={:?}\n", parser.last_event_id()));
        assert_eq!(
            got,
            expected,
            "input {:?} fed as {how}",
            String::from_utf8_lossy(input)
        );
    };
    run(&[input], "one chunk");
    for split in 0..=input.len() {
        let (a, b) = input.split_at(split);
        run(&[a, b], &format!("two chunks split at {split}"));
    }
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    run(&bytewise, "1-byte chunks");
}

#[test]
fn fields_and_dispatch() {
    check(
        b"data: hello\n\n",
        r#"event message "hello" id=""
        last_event_id="""#,
    );
    check(
        b"event: add\nid: 7\ndata: a\ndata:  b\ndata\n\n",
        r#"event add "a\n b\n" id="7"
        last_event_id="7""#,
    );
    // Exactly one space after the colon is removed; tabs are kept.
    check(
        b"data:\t x\n\n",
        r#"event message "\t x" id=""
        last_event_id="""#,
    );
    // Unknown fields, field names with other case, and lines without colon are ignored.
    check(
        b"Data: no\nfoo: bar\njustsometext\ndata:yes\n\n",
        r#"event message "yes" id=""
        last_event_id="""#,
    );
    // An empty `event` field means the default type.
    check(
        b"event: x\nevent:\ndata: d\n\n",
        r#"event message "d" id=""
        last_event_id="""#,
    );
    // The event type does not carry over to the next event.
    check(
        b"event: x\ndata: 1\n\ndata: 2\n\n",
        r#"event x "1" id=""
        event message "2" id=""
        last_event_id="""#,
    );
}

#[test]
fn no_dispatch_without_data_or_terminator() {
    // No `data` field: nothing dispatched, but the event type is dropped.
    check(
        b"event: x\n\ndata: d\n\n",
        r#"event message "d" id=""
        last_event_id="""#,
    );
    // `data:` with an empty value is data: dispatched with "".
    check(
        b"data:\n\n",
        r#"event message "" id=""
        last_event_id="""#,
    );
    // Unterminated at the end: not dispatched, and its id is not yet the last event ID.
    check(b"id: 9\ndata: x\n", r#"last_event_id="""#);
    check(b"data: x", r#"last_event_id="""#);
}

#[test]
fn line_ends() {
    check(
        b"data: a\r\ndata: b\rdata: c\n\r\n",
        r#"event message "a\nb\nc" id=""
        last_event_id="""#,
    );
    // CR CR is two line ends (an empty line), not one.
    check(
        b"data: a\r\rdata: b\r\r",
        r#"event message "a" id=""
        event message "b" id=""
        last_event_id="""#,
    );
    // LF CR is two line ends too.
    check(
        b"data: a\n\rdata: b\n\n",
        r#"event message "a" id=""
        event message "b" id=""
        last_event_id="""#,
    );
    // CR LF CR LF is one blank line after the line.
    check(
        b"data: a\r\n\r\n",
        r#"event message "a" id=""
        last_event_id="""#,
    );
}

#[test]
fn ids() {
    check(
        b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
        r#"event message "a" id="1"
        event message "b" id="1"
        event message "c" id=""
        last_event_id="""#,
    );
    // An id with U+0000 is ignored; the previous one stays.
    check(
        b"id: 1\n\nid: 2\x003\ndata: a\n\n",
        r#"event message "a" id="1"
        last_event_id="1""#,
    );
    // A block with only an id sets the last event ID without an event.
    check(b"id: 42\r\r", r#"last_event_id="42""#);
}

#[test]
fn retry_and_comments() {
    check(
        b"retry: 1500\nretry: 15x\nretry:\nretry: -1\nretry: 0\n",
        "retry 1500\nretry 0\nlast_event_id=\"\"",
    );
    // Too large for u64: ignored.
    check(b"retry: 99999999999999999999999\n", r#"last_event_id="""#);
    check(
        b": keep-alive\n:\n:  two\n",
        r#"comment "keep-alive"
        comment ""
        comment " two"
        last_event_id="""#,
    );
}

#[test]
fn utf8_and_bom() {
    // Multi-byte characters survive any split.
    check(
        "data: 안녕 €😀\n\n".as_bytes(),
        r#"event message "안녕 €😀" id=""
        last_event_id="""#,
    );
    // Invalid bytes become U+FFFD, one per maximal invalid subsequence; the line end still ends
    // the line.
    check(
        b"data: a\xFFb\xE2\x82\n\n",
        r#"event message "a�b�" id=""
        last_event_id="""#,
    );
    check(
        b"data: \xE2\x82\rdata: ok\n\n",
        r#"event message "�\nok" id=""
        last_event_id="""#,
    );
    // One leading BOM is stripped; a second is part of the field name (unknown field).
    check(
        b"\xEF\xBB\xBFdata: 1\n\n",
        r#"event message "1" id=""
        last_event_id="""#,
    );
    check(
        b"\xEF\xBB\xBF\xEF\xBB\xBFdata: 1\n\ndata: 2\n\n",
        r#"event message "2" id=""
        last_event_id="""#,
    );
    // A BOM later in the stream is not stripped.
    check(
        b"data: 1\n\n\xEF\xBB\xBFdata: 2\n\n",
        r#"event message "1" id=""
        last_event_id="""#,
    );
    // A partial BOM is invalid UTF-8 that starts the first line.
    check(b"\xEF\xBBdata: 1\n\n\xEF\xBB\n\n", r#"last_event_id="""#);
    check(
        b"\xEF\xBB\ndata: 1\n\n",
        r#"event message "1" id=""
        last_event_id="""#,
    );
}

#[test]
fn reset_keeps_last_event_id_and_retry() {
    let mut parser = Parser::new();
    let got = feed_all(
        &mut parser,
        &[b"retry: 5\nid: 3\ndata: a\n\nid: 4\ndata: part"],
    );
    assert_eq!(got, "retry 5\nevent message \"a\" id=\"3\"\n");
    parser.reset();
    assert_eq!(parser.last_event_id(), "3");
    assert_eq!(parser.retry(), Some(5));
    // The partial event and line are gone; a new BOM is stripped; the id carries on.
    let got = feed_all(&mut parser, &[b"\xEF\xBB\xBFdata: b\n\n"]);
    assert_eq!(got, "event message \"b\" id=\"3\"\n");

    let mut resumed = Parser::with_last_event_id("10");
    let got = feed_all(&mut resumed, &[b"data: c\n\n"]);
    assert_eq!(got, "event message \"c\" id=\"10\"\n");
}

/// Long streams cut at random into chunks of up to a few KiB, so chunks larger than the parser's
/// join limit follow a carried-over line; the items must be those of the whole stream in one
/// chunk, and those of one-byte feeding.
#[test]
fn long_streams_in_random_large_chunks() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let mut rng = StdRng::seed_from_u64(7);
    let pieces: &[&[u8]] = &[
        b"data: token\n",
        b"id: 12.ab.3\r\n",
        b"event: message.delta\r",
        b"\n",
        b"\r\n",
        b"\r",
        b": keep-alive\n",
        b"retry: 250\n",
        b"data: \xE2\x82\xAC \xF0\x9F\x98\x80 \xFF\xC3\n",
        b"data:",
        b"\xEF\xBB\xBF",
        b"id\n",
    ];
    for round in 0..40 {
        let mut stream = Vec::new();
        while stream.len() < 20_000 {
            if rng.random_range(0..100) == 0 {
                // A long line, longer than the join limit.
                stream.extend_from_slice(b"data: ");
                let len = rng.random_range(500..3000);
                stream.extend((0..len).map(|i| b"ab\xC3\xA9 "[i % 5]));
                stream.push(b'\n');
            } else {
                stream.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
            }
        }
        let mut whole = Parser::new();
        let expected = feed_all(&mut whole, &[&stream]);
        assert!(
            expected.matches("event ").count() > 20,
            "round {round}: too few events"
        );
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let size = rng.random_range(1..6000).min(rest.len());
            let (chunk, after) = rest.split_at(size);
            chunks.push(chunk);
            rest = after;
        }
        let mut chunked = Parser::new();
        let got = feed_all(&mut chunked, &chunks);
        assert_eq!(got, expected, "round {round}");
        assert_eq!(
            chunked.last_event_id(),
            whole.last_event_id(),
            "round {round}"
        );
        assert_eq!(chunked.retry(), whole.retry(), "round {round}");
        if round < 4 {
            let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
            let mut bytewise_parser = Parser::new();
            assert_eq!(
                feed_all(&mut bytewise_parser, &bytewise),
                expected,
                "round {round}, 1-byte chunks"
            );
        }
    }
}
