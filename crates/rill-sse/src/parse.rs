//! The incremental event-stream parser: WHATWG "Server-sent events" interpretation rules, fed
//! chunk by chunk, allocation-free per event once its buffers have grown.
//!
//! How it stays fast without `unsafe`:
//! - Each chunk is validated as UTF-8 once, in bulk (`simdutf8`), and lines are sliced out of
//!   the resulting `&str` (line ends are ASCII, so every cut is a char boundary).
//! - A line that spans chunks is carried in a `String` that only ever receives validated text,
//!   so it is never validated again; a multi-byte character split between chunks waits in a
//!   4-byte buffer until its last byte arrives.
//! - Field values of an event wholly inside one chunk are borrowed from the chunk, not copied
//!   (see `Borrowed`); the common fields are recognised by comparing one 8-byte word.
//! - Invalid bytes take a slow path: `<[u8]>::utf8_chunks` gives the valid runs and one U+FFFD
//!   per invalid sequence, exactly as decoding the whole stream at once would (a line end is
//!   never part of an invalid sequence, and a split character is completed before deciding).

use crate::scan::{find_line_end, find_name_end, has_nul, rfind_line_end};

/// Chunks shorter than this are validated as one padded block (see [`Parser::feed`]).
const SMALL_CHUNK: usize = 64;

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
    /// The text of a line that began in an earlier chunk and has not ended yet. Cleared, never
    /// shrunk, so steady state does not allocate.
    line: String,
    /// A UTF-8 sequence cut by the end of the last chunk (a valid prefix of one character).
    partial: [u8; 4],
    /// How many bytes of `partial` are in use (0 when none).
    partial_len: u8,
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
    /// The first character of the stream has been decoded (and a BOM there dropped).
    past_start: bool,
    /// The last text ended in CR: an LF right after it belongs to that line end.
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
        self.partial_len = 0;
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
        if self.partial_len > 0 {
            rest = self.finish_partial(rest, &mut on);
            if self.partial_len > 0 {
                return;
            }
        }
        // A character cut by the end of this chunk waits for the next one.
        let cut = incomplete_tail(rest);
        let (body, tail) = rest.split_at(rest.len() - cut);
        // simdutf8 leaves inputs under 64 bytes to std's byte-at-a-time check; a small chunk
        // (a token or a piece of one) is cheaper to copy into a 64-byte block padded with ASCII,
        // which is valid exactly when the chunk is, and validate in one vector step.
        let mut block = [b' '; SMALL_CHUNK];
        let valid = if body.len() < SMALL_CHUNK {
            block[..body.len()].copy_from_slice(body);
            simdutf8::basic::from_utf8(&block)
                .ok()
                .map(|text| &text[..body.len()])
        } else {
            simdutf8::basic::from_utf8(body).ok()
        };
        match valid {
            Some(text) => self.text(text, &mut on),
            None => {
                for piece in body.utf8_chunks() {
                    self.text(piece.valid(), &mut on);
                    if !piece.invalid().is_empty() {
                        self.text("\u{FFFD}", &mut on);
                    }
                }
            }
        }
        self.partial[..cut].copy_from_slice(tail);
        self.partial_len = cut as u8;
    }

    /// Completes the character cut by the end of the last chunk with the first bytes of this
    /// one, reads it, and returns the rest of the chunk. `partial_len` stays non-zero when the
    /// chunk is too short to complete it.
    fn finish_partial<'c>(&mut self, chunk: &'c [u8], on: &mut impl FnMut(Item<'_>)) -> &'c [u8] {
        let have = usize::from(self.partial_len);
        let mut buf = [0u8; 8];
        buf[..have].copy_from_slice(&self.partial[..have]);
        let take = chunk.len().min(4 - have);
        buf[have..have + take].copy_from_slice(&chunk[..take]);
        let buf = &buf[..have + take];
        let need = utf8_width(buf[0]);
        if buf.len() >= need {
            if let Ok(text) = std::str::from_utf8(&buf[..need]) {
                self.partial_len = 0;
                self.text(text, on);
                return &chunk[need - have..];
            }
        }
        match std::str::from_utf8(buf) {
            // Still a valid prefix: the chunk was too short to complete the character.
            Err(error) if error.error_len().is_none() => {
                self.partial[have..have + take].copy_from_slice(&chunk[..take]);
                self.partial_len = (have + take) as u8;
                &chunk[take..]
            }
            // Invalid: one U+FFFD for the maximal invalid sequence, which holds all of `partial`
            // (it was a valid prefix) and maybe some bytes of this chunk.
            result => {
                let invalid = match result {
                    Err(error) => error.error_len().unwrap_or(have),
                    Ok(_) => have,
                };
                self.partial_len = 0;
                self.text("\u{FFFD}", on);
                &chunk[invalid.saturating_sub(have).min(chunk.len())..]
            }
        }
    }

    /// Reads decoded text: completes the carried line, reads whole lines in place, carries the
    /// unterminated rest.
    fn text(&mut self, mut text: &str, on: &mut impl FnMut(Item<'_>)) {
        if text.is_empty() {
            return;
        }
        if !self.past_start {
            self.past_start = true;
            text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        }
        if self.after_cr {
            self.after_cr = false;
            text = text.strip_prefix('\n').unwrap_or(text);
        }
        let bytes = text.as_bytes();
        if self.line.is_empty() {
            let mut borrowed = Borrowed::default();
            let tail = self.lines_and_tail(&mut borrowed, text, on);
            self.keep(borrowed);
            self.line.push_str(&text[tail..]);
            return;
        }
        let Some(end) = find_line_end(bytes) else {
            self.line.push_str(text);
            return;
        };
        // Finish the carried line and read it together with the rest of the text, so values
        // of both stay borrowed until the end (the line is taken out, and put back, so it can
        // be read while `self` changes).
        let mut line = std::mem::take(&mut self.line);
        line.push_str(&text[..end]);
        let mut next = end + 1;
        if bytes[end] == b'\r' {
            match bytes.get(next) {
                Some(b'\n') => next += 1,
                None => self.after_cr = true,
                Some(_) => {}
            }
        }
        let mut borrowed = Borrowed::default();
        self.line_str(&mut borrowed, &line, on);
        let rest = &text[next..];
        let tail = self.lines_and_tail(&mut borrowed, rest, on);
        self.keep(borrowed);
        line.clear();
        line.push_str(&rest[tail..]);
        self.line = line;
    }

    /// Reads the complete lines of `text` (which starts at a line start) and returns where its
    /// unterminated tail starts, setting `after_cr` when it ends in CR.
    fn lines_and_tail<'t>(
        &mut self,
        borrowed: &mut Borrowed<'t>,
        text: &'t str,
        on: &mut impl FnMut(Item<'_>),
    ) -> usize {
        let bytes = text.as_bytes();
        let Some(last_end) = rfind_line_end(bytes) else {
            return 0;
        };
        self.lines(borrowed, &text[..=last_end], on);
        // The last line end found is never the CR of a CRLF (the LF would be later), so a CR
        // here either ends the text or is a line end on its own.
        if last_end + 1 == bytes.len() {
            self.after_cr = bytes[last_end] == b'\r';
        }
        last_end + 1
    }

    /// Interprets the complete lines of `text`, which ends with a line end.
    ///
    /// The hot loop. Values read here are borrowed from `text` (see [`Borrowed`]) and copied
    /// into the parser's buffers only if the text ends before their event is dispatched, so an
    /// event wholly inside one chunk is dispatched without copying its data, type or id.
    fn lines<'t>(
        &mut self,
        borrowed: &mut Borrowed<'t>,
        text: &'t str,
        on: &mut impl FnMut(Item<'_>),
    ) {
        let bytes = text.as_bytes();
        let len = bytes.len();
        let mut pos = 0;
        while pos < len {
            let (field, name_end, value_start) = match prefix_field(bytes, pos) {
                Some(known) => known,
                None => {
                    // The field name runs to the first colon or line end.
                    let rest = &bytes[pos..];
                    let name_len = find_name_end(rest);
                    let name_end = pos + name_len;
                    if rest.get(name_len) == Some(&b':') {
                        let mut value_start = name_end + 1;
                        if bytes.get(value_start) == Some(&b' ') {
                            value_start += 1;
                        }
                        (Field::of(&text[pos..name_end]), name_end, value_start)
                    } else {
                        (Field::of(&text[pos..name_end]), name_end, name_end)
                    }
                }
            };
            let end = if value_start == name_end && bytes.get(name_end) != Some(&b':') {
                name_end
            } else {
                find_line_end(&bytes[value_start..]).map_or(len, |offset| value_start + offset)
            };
            if end == pos {
                self.dispatch(borrowed, on);
            } else if name_end == pos {
                on(Item::Comment(&text[value_start..end]));
            } else {
                self.field(borrowed, field, &text[value_start..end], on);
            }
            pos = match (bytes.get(end), bytes.get(end + 1)) {
                (Some(b'\r'), Some(b'\n')) => end + 2,
                _ => end + 1,
            };
        }
    }

    /// Interprets one line (without its line end).
    fn line_str<'t>(
        &mut self,
        borrowed: &mut Borrowed<'t>,
        line: &'t str,
        on: &mut impl FnMut(Item<'_>),
    ) {
        if line.is_empty() {
            self.dispatch(borrowed, on);
            return;
        }
        // The line has no line end, so the name ends at the first colon or the end.
        match find_name_end(line.as_bytes()) {
            0 => on(Item::Comment(strip_space(&line[1..]))),
            colon if colon < line.len() => self.field(
                borrowed,
                Field::of(&line[..colon]),
                strip_space(&line[colon + 1..]),
                on,
            ),
            _ => self.field(borrowed, Field::of(line), "", on),
        }
    }

    fn field<'t>(
        &mut self,
        borrowed: &mut Borrowed<'t>,
        field: Field,
        value: &'t str,
        on: &mut impl FnMut(Item<'_>),
    ) {
        match field {
            Field::Data => {
                if borrowed.data.is_none() && self.data.is_empty() {
                    // Most events have one data line: keep it borrowed.
                    borrowed.data = Some(value);
                } else {
                    if let Some(first) = borrowed.data.take() {
                        self.data.push_str(first);
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.data.push('\n');
                }
            }
            Field::Event => borrowed.event = Some(value),
            // An id containing U+0000 is ignored (the spec's rule; such an id could not be
            // sent back in a header).
            Field::Id if !has_nul(value.as_bytes()) => borrowed.id = Some(value),
            Field::Retry => {
                if let Some(ms) = parse_retry(value) {
                    self.retry = Some(ms);
                    on(Item::Retry(ms));
                }
            }
            Field::Id | Field::Other => {}
        }
    }

    /// A blank line: the spec's "dispatch the event".
    fn dispatch(&mut self, borrowed: &mut Borrowed<'_>, on: &mut impl FnMut(Item<'_>)) {
        // The last event ID string becomes the last event ID buffer, even with no data.
        let id: &str = match borrowed.id {
            Some(id) => {
                borrowed.last_event_id = Some(id);
                id
            }
            None => {
                if self.last_event_id != self.id {
                    self.last_event_id.clone_from(&self.id);
                }
                &self.id
            }
        };
        let event = borrowed.event.take();
        let data = match borrowed.data.take() {
            Some(data) => data,
            None if self.data.is_empty() => {
                self.event.clear();
                return;
            }
            None => {
                // Every data value was pushed with an LF after it; the last is not data.
                self.data.pop();
                &self.data
            }
        };
        let event = match event {
            Some(event) if !event.is_empty() => event,
            Some(_) => "message",
            None if self.event.is_empty() => "message",
            None => &self.event,
        };
        on(Item::Event(Event { event, data, id }));
        self.data.clear();
        self.event.clear();
    }

    /// Copies the values still borrowed from a text into the parser's buffers, before the text
    /// goes away.
    fn keep(&mut self, borrowed: Borrowed<'_>) {
        if let Some(data) = borrowed.data {
            self.data.push_str(data);
            self.data.push('\n');
        }
        if let Some(event) = borrowed.event {
            self.event.clear();
            self.event.push_str(event);
        }
        if let Some(id) = borrowed.id {
            self.id.clear();
            self.id.push_str(id);
        }
        if let Some(last_event_id) = borrowed.last_event_id {
            self.last_event_id.clear();
            self.last_event_id.push_str(last_event_id);
        }
    }
}

/// Field values of the block being read that are still borrowed from the current text; each,
/// when set, is newer than the matching buffer of the [`Parser`].
#[derive(Debug, Default)]
struct Borrowed<'t> {
    /// The block's only data value so far (`Parser::data` is empty while this is set).
    data: Option<&'t str>,
    /// The block's latest `event` value.
    event: Option<&'t str>,
    /// The latest valid `id` value (it outlives the block: the last event ID buffer).
    id: Option<&'t str>,
    /// The last event ID string, when a dispatch in this text set it from `id`.
    last_event_id: Option<&'t str>,
}

/// The fields the spec knows; any other name is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Id,
    Retry,
    Other,
}

impl Field {
    fn of(name: &str) -> Self {
        match name {
            "data" => Self::Data,
            "event" => Self::Event,
            "id" => Self::Id,
            "retry" => Self::Retry,
            _ => Self::Other,
        }
    }
}

/// Recognises `data: `, `data:`, `id: ` and `event: ` at `pos` by comparing one 8-byte word:
/// returns the field, where its name ends and where its value starts.
#[inline]
fn prefix_field(bytes: &[u8], pos: usize) -> Option<(Field, usize, usize)> {
    const fn word(prefix: &[u8]) -> u64 {
        let mut bytes = [0u8; 8];
        let mut i = 0;
        while i < prefix.len() {
            bytes[i] = prefix[i];
            i += 1;
        }
        u64::from_le_bytes(bytes)
    }
    const fn mask(len: usize) -> u64 {
        u64::MAX >> (64 - 8 * len)
    }
    let mut buf = [0u8; 8];
    buf.copy_from_slice(bytes.get(pos..pos + 8)?);
    let w = u64::from_le_bytes(buf);
    if w & mask(6) == word(b"data: ") {
        Some((Field::Data, pos + 4, pos + 6))
    } else if w & mask(5) == word(b"data:") {
        Some((Field::Data, pos + 4, pos + 5))
    } else if w & mask(4) == word(b"id: ") {
        Some((Field::Id, pos + 2, pos + 4))
    } else if w & mask(7) == word(b"event: ") {
        Some((Field::Event, pos + 5, pos + 7))
    } else {
        None
    }
}

/// How many bytes a UTF-8 sequence starting with `lead` has (1 for ASCII and for bytes that
/// cannot start a sequence, which are invalid on their own).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// The length (0 to 3) of a character cut by the end of `bytes`: a lead byte near the end
/// followed by fewer continuation bytes than it needs, forming a valid prefix. Anything else
/// is either complete or invalid whatever follows, and is decoded now.
fn incomplete_tail(bytes: &[u8]) -> usize {
    let len = bytes.len();
    if bytes.last().is_none_or(|&b| b < 0x80) {
        return 0;
    }
    for back in 1..=len.min(3) {
        let byte = bytes[len - back];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let tail = &bytes[len - back..];
        let prefix = utf8_width(byte) > back
            && matches!(std::str::from_utf8(tail), Err(e) if e.error_len().is_none());
        return if prefix { back } else { 0 };
    }
    0
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
