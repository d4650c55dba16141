//! The incremental event-stream parser: WHATWG "Server-sent events" interpretation rules, fed
//! chunk by chunk, allocation-free per event once its buffers have grown.
//!
//! How it stays fast without `unsafe`: each chunk is cut at its last line end, the complete
//! lines before it are validated as UTF-8 in one pass (`std::str::from_utf8`), and lines are then
//! sliced out of that `&str` at the positions `memchr` finds (line ends are ASCII, so every cut is
//! a char boundary). Only a line that spans chunks is copied (into `line`), and only a line with
//! invalid bytes goes through lossy decoding. A line end is never inside a multi-byte sequence and
//! lossy decoding never swallows an ASCII byte, so decoding line by line gives exactly what the
//! spec's decode-the-whole-stream gives.

use std::borrow::Cow;

use memchr::{memchr, memchr2, memchr2_iter, memrchr2};

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// One thing the parser read: a dispatched event, a valid `retry` field, or a comment line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A dispatched event (a blank line ended a block with at least one `data` field).
    Event(Event<'a>),
    /// A valid `retry` field (all ASCII digits), at the point it was read, in milliseconds.
    Retry(u64),
    /// A comment line's text: what follows the `:`, with one leading space removed.
    Comment(&'a str),
}

/// A dispatched event, borrowing the parser's buffers: copy what you keep (see [`OwnedEvent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event type: the last `event` field of the block, or `message` when none or empty.
    pub event: &'a str,
    /// The `data` fields of the block joined with LF.
    pub data: &'a str,
    /// The last event ID at dispatch (`""` when none was set): it persists across events.
    pub id: &'a str,
}

/// An [`Event`] that owns its strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedEvent {
    /// The event type (`message` by default).
    pub event: String,
    /// The data, lines joined with LF.
    pub data: String,
    /// The last event ID at dispatch (`""` when none).
    pub id: String,
}

impl From<Event<'_>> for OwnedEvent {
    fn from(event: Event<'_>) -> Self {
        Self {
            event: event.event.to_owned(),
            data: event.data.to_owned(),
            id: event.id.to_owned(),
        }
    }
}

impl Event<'_> {
    /// Copies the event into owned strings.
    pub fn to_owned_event(&self) -> OwnedEvent {
        OwnedEvent::from(*self)
    }
}

/// An incremental parser for one event stream (one connection at a time).
///
/// Feed it chunks as they arrive with [`Parser::feed`]; it never fails: every byte sequence is
/// a valid stream, unknown fields are ignored, invalid UTF-8 becomes U+FFFD. An event still
/// unterminated when the stream ends is never dispatched (the spec discards it); call
/// [`Parser::reset`] before feeding a new connection.
#[derive(Debug, Clone, Default)]
pub struct Parser {
    /// Bytes of a line that began in an earlier chunk and has not ended yet (and, at the start of
    /// the stream, the BOM bytes seen so far). Cleared, never shrunk, so steady state does not
    /// allocate.
    line: Vec<u8>,
    /// The spec's data buffer: every `data` value followed by LF. Empty means no `data` field yet.
    data: String,
    /// The spec's event type buffer.
    event: String,
    /// The spec's last event ID buffer: set by `id` fields, kept across events.
    id: String,
    /// The last event ID string: `id` as of the last dispatch (blank line). It differs from `id`
    /// only when an `id` field was read in a block that has not ended yet.
    last_event_id: String,
    /// The reconnection time from the last valid `retry` field.
    retry: Option<u64>,
    /// The BOM question is settled: either a leading BOM was stripped or the stream did not start
    /// with one. Until then, `line` holds the BOM bytes matched so far.
    past_start: bool,
    /// The previous chunk ended in CR: an LF starting the next chunk is part of that line end.
    after_cr: bool,
}

impl Parser {
    /// A parser at the start of a stream, with no last event ID and no retry time.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser for a new connection that resumes after `last_event_id` (the value a client
    /// sends as `Last-Event-ID`): events without an `id` field carry it.
    pub fn with_last_event_id(last_event_id: &str) -> Self {
        let mut parser = Self::new();
        parser.id.push_str(last_event_id);
        parser.last_event_id.push_str(last_event_id);
        parser
    }

    /// The last event ID as of the last dispatch: what a client sends back as `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time in milliseconds from the last valid `retry` field, if any.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Prepares for a new connection: drops any partial line and undispatched event, expects a
    /// new leading BOM, and keeps the last event ID and the retry time (a reconnecting
    /// `EventSource` keeps both).
    pub fn reset(&mut self) {
        self.line.clear();
        self.data.clear();
        self.event.clear();
        self.id.clone_from(&self.last_event_id);
        self.past_start = false;
        self.after_cr = false;
    }

    /// Feeds one chunk of the stream; calls `on` for each dispatched event, each valid `retry`
    /// field (when it is read) and each comment line, in stream order.
    pub fn feed(&mut self, chunk: &[u8], mut on: impl FnMut(Item<'_>)) {
        let mut rest = chunk;
        if !self.past_start {
            rest = self.skip_bom(rest);
        }
        if rest.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }

        // Finish the line carried over from earlier chunks.
        if !self.line.is_empty() {
            let Some(end) = memchr2(b'\n', b'\r', rest) else {
                self.line.extend_from_slice(rest);
                return;
            };
            self.line.extend_from_slice(&rest[..end]);
            // Taken out (and put back) so the line can be read while `self` is changed.
            let line = std::mem::take(&mut self.line);
            self.byte_line(&line, &mut on);
            self.line = line;
            self.line.clear();
            rest = self.past_line_end(rest, end);
        }

        // Complete lines straight from the chunk; the unterminated tail is carried over.
        let Some(last_end) = memrchr2(b'\n', b'\r', rest) else {
            self.line.extend_from_slice(rest);
            return;
        };
        let (complete, tail) = rest.split_at(last_end + 1);
        // The last line end found is never the CR of a CRLF (the LF would be later), so a CR
        // here either ends the chunk or is a line end on its own.
        self.after_cr = tail.is_empty() && complete[last_end] == b'\r';
        self.lines(complete, &mut on);
        self.line.extend_from_slice(tail);
    }

    /// Matches the start of the stream against the BOM; returns the bytes after it, or all of
    /// them (with the partial match kept in `line` as the start of the first line) when the
    /// stream does not start with a BOM.
    fn skip_bom<'c>(&mut self, mut rest: &'c [u8]) -> &'c [u8] {
        while self.line.len() < BOM.len() {
            let Some((&byte, after)) = rest.split_first() else {
                return rest;
            };
            if byte != BOM[self.line.len()] {
                self.past_start = true;
                return rest;
            }
            self.line.push(byte);
            rest = after;
        }
        self.line.clear();
        self.past_start = true;
        rest
    }

    /// Skips the line end at `rest[end]` (CR, LF or CRLF) and returns what follows.
    fn past_line_end<'c>(&mut self, rest: &'c [u8], end: usize) -> &'c [u8] {
        if rest[end] == b'\r' {
            match rest.get(end + 1) {
                Some(b'\n') => return &rest[end + 2..],
                None => self.after_cr = true,
                Some(_) => {}
            }
        }
        &rest[end + 1..]
    }

    /// Interprets complete lines: `bytes` ends with a line end (a final CR is taken as a line
    /// end of its own; the caller handles an LF that may follow in the next chunk).
    fn lines(&mut self, mut bytes: &[u8], on: &mut impl FnMut(Item<'_>)) {
        loop {
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    self.valid_lines(text, on);
                    return;
                }
                Err(error) => {
                    // The lines before the bad one go the fast way; the bad line is decoded
                    // lossily; then validation resumes after it. Each byte is scanned at most
                    // twice, whatever the input.
                    let bad = error.valid_up_to();
                    let line_start = memrchr2(b'\n', b'\r', &bytes[..bad]).map_or(0, |p| p + 1);
                    if let Ok(text) = std::str::from_utf8(&bytes[..line_start]) {
                        self.valid_lines(text, on);
                    }
                    let after = &bytes[line_start..];
                    let Some(end) = memchr2(b'\n', b'\r', after) else {
                        // Not reached: `bytes` ends with a line end. Treated as a line anyway.
                        self.byte_line(after, on);
                        return;
                    };
                    self.byte_line(&after[..end], on);
                    bytes = match (after[end], after.get(end + 1)) {
                        (b'\r', Some(b'\n')) => &after[end + 2..],
                        _ => &after[end + 1..],
                    };
                    if bytes.is_empty() {
                        return;
                    }
                }
            }
        }
    }

    /// Interprets the complete lines of valid UTF-8 `text`, which ends with a line end.
    fn valid_lines(&mut self, text: &str, on: &mut impl FnMut(Item<'_>)) {
        let bytes = text.as_bytes();
        let mut start = 0;
        // Position of an LF that completes a CRLF, to be skipped rather than read as a line end.
        let mut crlf_lf = usize::MAX;
        for end in memchr2_iter(b'\n', b'\r', bytes) {
            if end == crlf_lf && bytes[end] == b'\n' {
                start = end + 1;
                continue;
            }
            self.line_str(&text[start..end], on);
            if bytes[end] == b'\r' {
                crlf_lf = end + 1;
            }
            start = end + 1;
        }
    }

    /// Interprets one line given as bytes that may not be valid UTF-8.
    fn byte_line(&mut self, line: &[u8], on: &mut impl FnMut(Item<'_>)) {
        let text = match std::str::from_utf8(line) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(line),
        };
        self.line_str(&text, on);
    }

    /// Interprets one line (without its line end).
    fn line_str(&mut self, line: &str, on: &mut impl FnMut(Item<'_>)) {
        if line.is_empty() {
            self.dispatch(on);
            return;
        }
        match memchr(b':', line.as_bytes()) {
            Some(0) => on(Item::Comment(strip_space(&line[1..]))),
            Some(colon) => self.field(&line[..colon], strip_space(&line[colon + 1..]), on),
            None => self.field(line, "", on),
        }
    }

    fn field(&mut self, name: &str, value: &str, on: &mut impl FnMut(Item<'_>)) {
        match name {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            // An id containing U+0000 is ignored (the spec's rule; such an id could not be
            // sent back in a header).
            "id" if memchr(0, value.as_bytes()).is_none() => {
                self.id.clear();
                self.id.push_str(value);
            }
            "retry" => {
                if let Some(ms) = parse_retry(value) {
                    self.retry = Some(ms);
                    on(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }

    /// A blank line: the spec's "dispatch the event".
    fn dispatch(&mut self, on: &mut impl FnMut(Item<'_>)) {
        if self.last_event_id != self.id {
            self.last_event_id.clone_from(&self.id);
        }
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        // Every data value was pushed with an LF after it; the last one is not part of the data.
        self.data.pop();
        let event = if self.event.is_empty() {
            "message"
        } else {
            &self.event
        };
        on(Item::Event(Event {
            event,
            data: &self.data,
            id: &self.id,
        }));
        self.data.clear();
        self.event.clear();
    }
}

/// Removes exactly one leading space, as the spec does for field values.
fn strip_space(value: &str) -> &str {
    value.strip_prefix(' ').unwrap_or(value)
}

/// A `retry` value: one or more ASCII digits, base ten. A value too large for `u64` is ignored
/// like any other unusable value (as Chromium does).
fn parse_retry(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}
