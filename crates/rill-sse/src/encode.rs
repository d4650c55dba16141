//! The event-stream encoder: events, comments and retry hints written into a caller's buffer,
//! so a server can encode an event once and batch frames; it refuses input that would break
//! framing instead of panicking.

use bytes::BufMut;
use memchr::{memchr, memchr2};

/// Why an event could not be encoded. Nothing is written when encoding fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A CR or LF in the id would end the `id` line early and inject fields.
    #[error("event id contains a line break (CR or LF)")]
    IdLineBreak,
    /// A parser ignores an `id` field containing U+0000, so the id would silently not be set.
    #[error("event id contains U+0000 (NUL), which parsers ignore")]
    IdNul,
    /// A CR or LF in the event name would end the `event` line early and inject fields.
    #[error("event name contains a line break (CR or LF)")]
    EventLineBreak,
    /// An empty `event` field means the default type `message`: pass `None` for that.
    #[error("event name is empty (pass no name for the default type `message`)")]
    EventEmpty,
}

/// Appends one event: `id:` (when given), `event:` (when given), one `data:` line per line of
/// `data` (CR, LF and CRLF all split lines), then the blank line that dispatches it.
///
/// `Some("")` as id is allowed: it resets the client's last event ID. On error nothing is
/// written.
pub fn encode_event(
    out: &mut Vec<u8>,
    id: Option<&str>,
    event: Option<&str>,
    data: &str,
) -> Result<(), EncodeError> {
    encode_event_buf(out, id, event, data)
}

/// [`encode_event`] into any [`BufMut`] (for example a `bytes::BytesMut`).
pub fn encode_event_buf(
    out: &mut impl BufMut,
    id: Option<&str>,
    event: Option<&str>,
    data: &str,
) -> Result<(), EncodeError> {
    if let Some(id) = id {
        if memchr2(b'\r', b'\n', id.as_bytes()).is_some() {
            return Err(EncodeError::IdLineBreak);
        }
        if memchr(0, id.as_bytes()).is_some() {
            return Err(EncodeError::IdNul);
        }
    }
    if let Some(event) = event {
        if event.is_empty() {
            return Err(EncodeError::EventEmpty);
        }
        if memchr2(b'\r', b'\n', event.as_bytes()).is_some() {
            return Err(EncodeError::EventLineBreak);
        }
    }
    // `id:` goes last, right before the blank line that dispatches the event. Parsers accept
    // the fields in any order, but `@microsoft/fetch-event-source` takes an id as the one to
    // resume from as soon as it reads the line, not when the event is delivered: with `id:`
    // first, a connection cut inside the event would make it resume after an event it never
    // delivered (found by the client matrix in tests/clients). Last, only the final newline
    // stands between reading the id and delivering the event.
    if let Some(event) = event {
        field(out, b"event", event);
    }
    for_each_line(data, |line| field(out, b"data", line));
    if let Some(id) = id {
        field(out, b"id", id);
    }
    out.put_u8(b'\n');
    Ok(())
}

/// Appends comment lines (`: text`), one per line of `text`. Parsers ignore them; servers send
/// them as heartbeats to keep proxies from closing idle connections.
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    encode_comment_buf(out, text);
}

/// [`encode_comment`] into any [`BufMut`].
pub fn encode_comment_buf(out: &mut impl BufMut, text: &str) {
    for_each_line(text, |line| field(out, b"", line));
}

/// Appends a `retry:` line: the client's reconnection time in milliseconds.
pub fn encode_retry(out: &mut Vec<u8>, ms: u64) {
    encode_retry_buf(out, ms);
}

/// [`encode_retry`] into any [`BufMut`].
pub fn encode_retry_buf(out: &mut impl BufMut, ms: u64) {
    // u64::MAX has 20 digits. Formatted by hand: `write!` would need an io/fmt adapter and
    // `to_string` would allocate.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = ms;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.put_slice(b"retry: ");
    out.put_slice(&digits[at..]);
    out.put_u8(b'\n');
}

/// Writes `name: value\n` (`name:\n` when the value is empty). The one space after the colon is
/// always written before a non-empty value, because parsers strip exactly one: a value that starts
/// with a space keeps it.
fn field(out: &mut impl BufMut, name: &[u8], value: &str) {
    out.put_slice(name);
    if value.is_empty() {
        out.put_slice(b":\n");
    } else {
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_u8(b'\n');
    }
}

/// Calls `each` for every line of `text`, split at CRLF, CR or LF (as a parser splits them).
/// An empty text is one empty line; a trailing line end gives a final empty line.
fn for_each_line(text: &str, mut each: impl FnMut(&str)) {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(offset) = memchr2(b'\r', b'\n', &bytes[start..]) {
        let end = start + offset;
        each(&text[start..end]);
        start = if bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n') {
            end + 2
        } else {
            end + 1
        };
    }
    each(&text[start..]);
}
