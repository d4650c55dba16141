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
