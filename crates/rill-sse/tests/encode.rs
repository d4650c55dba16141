//! Encoder tests: exact bytes for each frame kind, and refusals (errors, never panics, nothing
//! written) for ids and event names that would break framing.

use bytes::BytesMut;
use rill_sse::{
    EncodeError, encode_comment, encode_event, encode_event_buf, encode_retry, encode_retry_buf,
};

#[track_caller]
fn check_event(id: Option<&str>, event: Option<&str>, data: &str, expected: &str) {
    let mut out = b"previous".to_vec();
    encode_event(&mut out, id, event, data).expect("encodable");
    assert_eq!(String::from_utf8_lossy(&out[8..]), expected);
    let mut bytes = BytesMut::new();
    encode_event_buf(&mut bytes, id, event, data).expect("encodable");
    assert_eq!(&bytes[..], &out[8..]);
}

#[test]
fn events() {
    check_event(None, None, "hi", "data: hi\n\n");
    check_event(
        Some("7"),
        Some("message.delta"),
        "{}",
        // The id last (see `encode_event`).
        "event: message.delta\ndata: {}\nid: 7\n\n",
    );
    check_event(None, None, "", "data:\n\n");
    check_event(Some(""), None, "x", "data: x\nid:\n\n");
    // Every CR, LF and CRLF in data starts a new data line; leading spaces are kept by the one
    // space written after the colon.
    check_event(
        None,
        None,
        "a\nb\r\nc\rd\n",
        "data: a\ndata: b\ndata: c\ndata: d\ndata:\n\n",
    );
    check_event(None, None, " x\n\n", "data:  x\ndata:\ndata:\n\n");
    check_event(
        Some(" id"),
        Some(" ev"),
        "x",
        "event:  ev\ndata: x\nid:  id\n\n",
    );
}

#[test]
fn comments_and_retry() {
    let mut out = Vec::new();
    encode_comment(&mut out, "keep-alive");
    encode_comment(&mut out, "");
    encode_comment(&mut out, "two\r\nlines");
    assert_eq!(out, b": keep-alive\n:\n: two\n: lines\n");

    let mut out = Vec::new();
    encode_retry(&mut out, 0);
    encode_retry(&mut out, 3000);
    encode_retry(&mut out, u64::MAX);
    assert_eq!(out, b"retry: 0\nretry: 3000\nretry: 18446744073709551615\n");
    let mut bytes = BytesMut::new();
    encode_retry_buf(&mut bytes, 42);
    assert_eq!(&bytes[..], b"retry: 42\n");
}

#[test]
fn refuses_what_would_break_framing() {
    let cases: &[(Option<&str>, Option<&str>, EncodeError)] = &[
        (Some("a\nb"), None, EncodeError::IdLineBreak),
        (Some("a\rb"), None, EncodeError::IdLineBreak),
        (Some("\r\n"), None, EncodeError::IdLineBreak),
        (Some("a\0b"), None, EncodeError::IdNul),
        (None, Some("a\nb"), EncodeError::EventLineBreak),
        (None, Some("a\r"), EncodeError::EventLineBreak),
        (None, Some(""), EncodeError::EventEmpty),
        (Some("ok"), Some("\n"), EncodeError::EventLineBreak),
    ];
    for &(id, event, expected) in cases {
        let mut out = b"kept".to_vec();
        let result = encode_event(&mut out, id, event, "data");
        assert_eq!(result, Err(expected), "id {id:?} event {event:?}");
        assert_eq!(
            out, b"kept",
            "nothing written on error (id {id:?} event {event:?})"
        );
        assert!(!expected.to_string().is_empty());
    }
}
