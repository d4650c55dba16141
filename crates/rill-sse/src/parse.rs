//! The incremental event-stream parser: WHATWG "Server-sent events" interpretation rules, fed
//! chunk by chunk, allocation-free per event once its buffers have grown.
//!
//! How it stays fast without `unsafe`:
//! - Lines are found in the raw bytes (line ends are ASCII, and never part of an invalid UTF-8
//!   sequence, so decoding a run of whole lines on its own gives exactly what decoding the whole
//!   stream would). A run of whole lines is validated in bulk (`simdutf8`) once, when it is
//!   interpreted, and values are sliced out of the resulting `&str`.
//! - Bytes that cannot be interpreted yet (an unterminated line) are carried raw in `carry`,
//!   and so are whole `data`, `id` and `event` lines of an event not yet dispatched: they have no
//!   effect before the blank line, so they wait and are interpreted together with it. An event
//!   that arrives in several small chunks is then copied once, validated once and read once,
//!   instead of paying for every chunk (validation calls, value copies, a re-read carried line).
//!   Lines with an immediate effect (comments, `retry`, the blank line) are always interpreted
//!   in the call that completes them.
//! - In a small chunk, one pass of word tests finds every line end, and the byte after each
//!   tells whether the next line must be read now (a 256-entry table); the line ends are
//!   recorded (`u16` positions in the carry), so lines are never searched for twice. Large
//!   chunks are searched line by line (`memchr` on long lines) and read in place.
//! - Field values of an event wholly inside one chunk are borrowed from the chunk, not copied
//!   (see `Borrowed`); the common fields are recognised by comparing one 8-byte word.
//! - Invalid bytes take a slow path: `<[u8]>::utf8_chunks` gives the valid runs and one U+FFFD
//!   per invalid sequence, exactly as decoding the whole stream at once would.
//!
//! Why it is shaped this way, with instruction counts: docs/benchmarks.md, "SSE parser".

use std::mem;

use crate::scan::{
    control_bytes, find_line_end, find_name_end, has_nul, load, rfind_line_end, short_control_bytes,
};

/// Regions shorter than this are validated as one padded block (see [`Parser::interpret`]).
const SMALL_REGION: usize = 64;

/// How many bytes of whole, not yet interpreted lines the parser may hold back (see
/// [`Parser::feed`]): enough for a few small events, and a bound on what holding back costs in
/// memory (a stream of `id` lines without a blank line must not grow the carry forever).
const DEFER_LIMIT: usize = 4096;

/// The UTF-8 byte order mark, stripped once at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

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
    /// Raw bytes received but not interpreted yet, starting at a line start: whole lines with no
    /// effect before the next blank line (see [`IMMEDIATE`]), then the unterminated last line.
    /// Cleared, never shrunk, so steady state does not allocate.
    carry: Vec<u8>,
    /// Where the unterminated last line of `carry` starts (`carry.len()` when `carry` ends with
    /// a line end).
    carry_line: usize,
    /// Where each whole line of `carry` ends (its CR or LF, with [`CR_LF`] set when an LF
    /// follows), found when its bytes arrived, so that they are not searched for again when
    /// read: the first `carry_ends_len` entries. Positions are below [`DEFER_LIMIT`] (only a
    /// carry that small records them), so they fit in `u16`. A buffer written by index rather
    /// than pushed to, so that the loop that fills it has no call in it (see
    /// `record_line_ends`); it grows to what a chunk may need, at most [`DEFER_LIMIT`] entries.
    carry_ends: Vec<u16>,
    /// How many entries of `carry_ends` are in use.
    carry_ends_len: usize,
    /// The spec's data buffer: every `data` value followed by LF. Empty means no `data` field yet.
    data: String,
    /// The spec's event type buffer.
    event: String,
    /// The last event ID string: the spec's last event ID buffer as of the last dispatch. It is
    /// also the last event ID buffer itself unless `id_pending`.
    last_event_id: String,
    /// The last event ID buffer when it differs from `last_event_id` (an `id` field was read in
    /// a block not dispatched yet). Kept apart so that the usual case, an id read and dispatched
    /// in the same call, copies the id once, not twice.
    pending_id: String,
    /// `pending_id` holds the last event ID buffer.
    id_pending: bool,
    /// The reconnection time from the last valid `retry` field.
    retry: Option<u64>,
    /// The start of the stream has been interpreted (and a BOM there dropped).
    past_start: bool,
    /// The last byte fed was a CR: an LF right after it belongs to that line end.
    after_cr: bool,
    /// Scratch for decoding lines with invalid UTF-8 (U+FFFD inserted).
    lossy: String,
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
        self.carry.clear();
        self.carry_line = 0;
        self.carry_ends_len = 0;
        self.data.clear();
        self.event.clear();
        self.id_pending = false;
        self.past_start = false;
        self.after_cr = false;
    }

    /// Feeds one chunk of the stream; calls `on` for each dispatched event, each valid `retry`
    /// field (when it is read) and each comment line, in stream order.
    ///
    /// The chunk is cut at two line boundaries `q <= p`: the carried bytes and `chunk[..q]` are
    /// interpreted together from the carry buffer, `chunk[q..p]` in place (its values borrowed
    /// from the chunk), and `chunk[p..]` is carried. Any such cuts give the same items; they are
    /// chosen so that every line with an immediate effect is interpreted now (`p` is past the
    /// last one), that an event wholly inside the chunk is read in place (`q` is at most the end
    /// of the first such line), and that a small event split over small chunks is read once.
    pub fn feed(&mut self, mut chunk: &[u8], mut on: impl FnMut(Item<'_>)) {
        let Some(&last) = chunk.last() else {
            return;
        };
        if mem::replace(&mut self.after_cr, last == b'\r') && chunk[0] == b'\n' {
            // The LF of a CR LF cut between chunks: the CR already ended the line. When the CR
            // is still carried, the LF joins it there (so that a later LF is not read as part
            // of the pair); when it was interpreted, the LF is dropped.
            if let Some(cr) = self.carry.len().checked_sub(1) {
                // The CR's recorded line end (if any) learns that an LF follows it.
                if let Some(last) = self.carry_ends_len.checked_sub(1)
                    && line_end_and_next(self.carry_ends[last]).0 == cr
                {
                    self.carry_ends[last] |= CR_LF;
                }
                self.carry.push(b'\n');
                self.carry_line = self.carry.len();
            }
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return;
            }
        }
        if self.past_start && self.carry.len() + chunk.len() <= DEFER_LIMIT {
            self.feed_small(chunk, &mut on);
        } else {
            self.feed_large(chunk, &mut on);
        }
    }

    /// [`Parser::feed`] while little is held back: one pass records where the chunk's lines end
    /// and finds the first and the last line that must be read now; when there is none, the
    /// chunk is only carried. Lines are then read at the recorded ends.
    fn feed_small(&mut self, chunk: &[u8], on: &mut impl FnMut(Item<'_>)) {
        let base = self.carry.len();
        let used = self.carry_ends_len;
        // A chunk has at most one line end per byte.
        let room = used + chunk.len();
        if self.carry_ends.len() < room {
            self.carry_ends.resize(room, 0);
        }
        // Which lines must be read now: the first one's first byte may be carried.
        let mut now = IMMEDIATE[usize::from(if self.carry_line < base {
            self.carry[self.carry_line]
        } else {
            chunk[0]
        })];
        let new_ends = &mut self.carry_ends[used..room];
        let found = record_line_ends(chunk, new_ends);
        // Where the first and the last of them end (0: none), and how many ends precede that.
        let (mut first_now, mut last_now) = ((0, 0), (0, 0));
        let mut tail = 0;
        for (index, recorded) in new_ends[..found].iter_mut().enumerate() {
            let (_, next) = line_end_and_next(*recorded);
            // From the chunk's start to the carry's (the sum is below `DEFER_LIMIT`, so the
            // CR LF bit is untouched).
            *recorded += base as u16;
            if now {
                last_now = (next, used + index + 1);
                if first_now.0 == 0 {
                    first_now = last_now;
                }
            }
            tail = next;
            now = chunk.get(next).is_some_and(|&b| IMMEDIATE[usize::from(b)]);
        }
        self.carry_ends_len = used + found;
        if last_now.0 == 0 {
            // Only lines that can wait: carry them with the rest.
            if found > 0 {
                self.carry_line = base + tail;
            }
            self.carry.extend_from_slice(chunk);
            return;
        }
        let (p, p_ends) = last_now;
        let ends = mem::take(&mut self.carry_ends);
        let (mut q, mut q_ends) = (0, 0);
        if base > 0 {
            (q, q_ends) = first_now;
            self.interpret_carry(&chunk[..q], Known::ends(&ends[..q_ends], 0), on);
        }
        if q < p {
            let known = Known::ends(&ends[q_ends..p_ends], base + q);
            self.interpret(&chunk[q..p], known, on);
        }
        self.carry_ends = ends;
        // What remains is carried: its whole lines (all can wait) keep their recorded ends.
        let kept = self.carry_ends_len - p_ends;
        if kept > 0 {
            self.carry_ends.copy_within(p_ends..self.carry_ends_len, 0);
            for end in &mut self.carry_ends[..kept] {
                // Positions past `p` in the chunk: the subtraction cannot underflow.
                *end -= (base + p) as u16;
            }
        }
        self.carry_ends_len = kept;
        self.carry.extend_from_slice(&chunk[p..]);
        self.carry_line = tail - p;
    }

    /// [`Parser::feed`] for large chunks (or a large carry): everything up to the chunk's last
    /// line end is read now, and only the unterminated last line is carried (so the carry holds
    /// no whole lines afterwards).
    #[inline(never)]
    fn feed_large(&mut self, chunk: &[u8], on: &mut impl FnMut(Item<'_>)) {
        // Forwards first (memchr's forward loop is the faster one, and a chunk inside a long
        // line has no line end at all), then backwards from the end to that first line end.
        let Some(first_end) = find_line_end(chunk) else {
            // No line end: the whole chunk continues the carried line.
            self.carry.extend_from_slice(chunk);
            return;
        };
        let last_end = rfind_line_end(&chunk[first_end..]).map_or(first_end, |at| first_end + at);
        let p = last_end + 1;
        let mut q = 0;
        if !self.carry.is_empty() {
            q = self.after_first_immediate(chunk, first_end, p);
            // The carried line ends at the chunk's first line end: tell the reader, so that a
            // long carried line is not searched again.
            let ends = mem::take(&mut self.carry_ends);
            let known = Known::ends(&ends[..self.carry_ends_len], 0);
            self.interpret_carry(&chunk[..q], known.then(self.carry.len() + first_end), on);
            self.carry_ends = ends;
            self.carry_ends_len = 0;
        }
        if q < p {
            self.interpret(&chunk[q..p], Known::NONE, on);
        }
        self.carry.extend_from_slice(&chunk[p..]);
        self.carry_line = 0;
    }

    /// For a chunk that follows carried bytes, whose first line end is `first_end`: where the
    /// first line with an immediate effect ends in `chunk` (after its line end), or `p` when
    /// none ends before `p`. Lines are searched for at most [`DEFER_LIMIT`] bytes past the
    /// first: beyond that, the cut is after the first line, so a chunk of many lines that can
    /// wait is not searched twice.
    fn after_first_immediate(&self, chunk: &[u8], first_end: usize, p: usize) -> usize {
        let first_next = after_line_end(chunk, first_end);
        let mut start = 0;
        let mut end = first_end;
        loop {
            let head = if start == 0 && self.carry_line < self.carry.len() {
                self.carry[self.carry_line]
            } else {
                // An empty line's first byte is its line end.
                chunk[start]
            };
            let next = after_line_end(chunk, end);
            if IMMEDIATE[usize::from(head)] {
                return next;
            }
            if next >= p {
                return p;
            }
            if next - first_next > DEFER_LIMIT {
                return first_next;
            }
            start = next;
            // `p` is after a line end, so there is one before it.
            end = match find_line_end(&chunk[start..p]) {
                Some(offset) => start + offset,
                None => return p,
            };
        }
    }

    /// Interprets the carried bytes followed by `rest` (whole lines: `rest` ends with a line
    /// end), then empties the carry.
    fn interpret_carry(&mut self, rest: &[u8], known: Known<'_>, on: &mut impl FnMut(Item<'_>)) {
        // Taken out, and put back, so that it can be read while `self` changes.
        let mut carry = mem::take(&mut self.carry);
        carry.extend_from_slice(rest);
        self.interpret(&carry, known, on);
        carry.clear();
        self.carry = carry;
    }

    /// Interprets `bytes`, whole lines from a line start: validates them once, then reads them.
    #[inline(always)]
    fn interpret(&mut self, mut bytes: &[u8], mut known: Known<'_>, on: &mut impl FnMut(Item<'_>)) {
        if !self.past_start {
            // The region that starts the stream: it holds the whole first line.
            self.past_start = true;
            if let Some(rest) = bytes.strip_prefix(BOM) {
                bytes = rest;
                known.base += BOM.len();
            }
        }
        // simdutf8 leaves inputs under 64 bytes to std's byte-at-a-time check; a short region
        // is cheaper to copy into a 64-byte block padded with ASCII, which is valid exactly
        // when the region is, and validate in one vector step.
        let mut block = [b' '; SMALL_REGION];
        let valid = if bytes.len() < SMALL_REGION {
            block[..bytes.len()].copy_from_slice(bytes);
            simdutf8::basic::from_utf8(&block)
                .ok()
                .map(|text| &text[..bytes.len()])
        } else {
            simdutf8::basic::from_utf8(bytes).ok()
        };
        let mut borrowed = Borrowed::default();
        match valid {
            Some(text) => {
                self.lines(&mut borrowed, text, known, on);
                self.keep(borrowed);
            }
            None => self.interpret_lossy(bytes, on),
        }
    }

    /// [`Parser::interpret`] for bytes that are not valid UTF-8: whole lines decode on their
    /// own as they would in the stream (see the top of this file), with one U+FFFD per invalid
    /// sequence.
    #[cold]
    fn interpret_lossy(&mut self, bytes: &[u8], on: &mut impl FnMut(Item<'_>)) {
        // The scratch buffer is taken out so it can be read while `self` changes.
        let mut lossy = mem::take(&mut self.lossy);
        lossy.clear();
        for piece in bytes.utf8_chunks() {
            lossy.push_str(piece.valid());
            if !piece.invalid().is_empty() {
                lossy.push('\u{FFFD}');
            }
        }
        let mut borrowed = Borrowed::default();
        self.lines(&mut borrowed, &lossy, Known::NONE, on);
        self.keep(borrowed);
        self.lossy = lossy;
    }

    /// Interprets the lines of `text`, which ends with a line end: first those whose ends are
    /// known, then the rest, searching for each line's end.
    ///
    /// Values read here are borrowed from `text` (see [`Borrowed`]) and copied into the
    /// parser's buffers only if the text ends before their event is dispatched, so an event
    /// wholly inside one text is dispatched without copying its data, type or id.
    fn lines<'t>(
        &mut self,
        borrowed: &mut Borrowed<'t>,
        text: &'t str,
        known: Known<'_>,
        on: &mut impl FnMut(Item<'_>),
    ) {
        let bytes = text.as_bytes();
        let mut start = 0;
        for &recorded in known.ends {
            let (end, next) = line_end_and_next(recorded);
            self.line(borrowed, text, start, end.wrapping_sub(known.base), on);
            start = next.wrapping_sub(known.base);
        }
        let mut next_end = known.next_end.map(|end| end.wrapping_sub(known.base));
        while start < bytes.len() {
            let end = match next_end.take() {
                Some(end) => end,
                None => match find_line_end(&bytes[start..]) {
                    Some(offset) => start + offset,
                    // Not reached: `text` ends with a line end.
                    None => return,
                },
            };
            self.line(borrowed, text, start, end, on);
            start = after_line_end(bytes, end);
        }
    }

    /// Interprets the line `text[start..end]` (`end` is its line end).
    ///
    /// The hot path: `data: `, `data:`, `id: ` and `event: ` are recognised by comparing one
    /// 8-byte word; other lines look for their colon.
    #[inline(always)]
    fn line<'t>(
        &mut self,
        borrowed: &mut Borrowed<'t>,
        text: &'t str,
        start: usize,
        end: usize,
        on: &mut impl FnMut(Item<'_>),
    ) {
        let bytes = text.as_bytes();
        if start == end {
            self.dispatch(borrowed, on);
            return;
        }
        // A known prefix holds no CR or LF, so when it matches the line is at least that long.
        // Each field is read with its own call, so that each is specialised (no second match
        // on the field at run time).
        match prefix_field(bytes, start) {
            Some((Field::Data, value_start)) => {
                self.field(borrowed, Field::Data, &text[value_start..end], on);
                return;
            }
            Some((Field::Id, value_start)) => {
                self.field(borrowed, Field::Id, &text[value_start..end], on);
                return;
            }
            Some((Field::Event, value_start)) => {
                self.field(borrowed, Field::Event, &text[value_start..end], on);
                return;
            }
            _ => {}
        }
        self.other_line(borrowed, text, start, end, on);
    }

    /// [`Parser::line`] for a line that starts with none of the common prefixes: the field name
    /// runs to the first colon (none: the whole line is the name, the value is empty); a colon
    /// first makes a comment. Out of line, so that the common path keeps its registers.
    #[cold]
    #[inline(never)]
    fn other_line<'t>(
        &mut self,
        borrowed: &mut Borrowed<'t>,
        text: &'t str,
        start: usize,
        end: usize,
        on: &mut impl FnMut(Item<'_>),
    ) {
        let bytes = text.as_bytes();
        let name_end = start + find_name_end(&bytes[start..end]);
        let field = (name_end != start).then(|| Field::of(&text[start..name_end]));
        let value_start = match bytes.get(name_end + 1) {
            _ if name_end == end => end,
            Some(b' ') if name_end + 1 < end => name_end + 2,
            _ => name_end + 1,
        };
        let Some(field) = field else {
            on(Item::Comment(&text[value_start..end]));
            return;
        };
        self.field(borrowed, field, &text[value_start..end], on);
    }

    /// Interprets one field (the spec's "process the field").
    #[inline(always)]
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
    #[inline(always)]
    fn dispatch(&mut self, borrowed: &mut Borrowed<'_>, on: &mut impl FnMut(Item<'_>)) {
        // The last event ID string becomes the last event ID buffer, even with no data.
        let id: &str = match borrowed.id {
            Some(id) => {
                borrowed.last_event_id = Some(id);
                id
            }
            None => {
                if self.id_pending {
                    self.id_pending = false;
                    mem::swap(&mut self.last_event_id, &mut self.pending_id);
                }
                &self.last_event_id
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
    #[inline(always)]
    fn keep(&mut self, borrowed: Borrowed<'_>) {
        if let Some(data) = borrowed.data {
            self.data.push_str(data);
            self.data.push('\n');
        }
        if let Some(event) = borrowed.event {
            self.event.clear();
            self.event.push_str(event);
        }
        match (borrowed.id, borrowed.last_event_id) {
            // The usual case: the last id read was dispatched, so both buffers hold it.
            (Some(id), Some(last)) if std::ptr::eq(id, last) => {
                self.last_event_id.clear();
                self.last_event_id.push_str(last);
                self.id_pending = false;
            }
            (Some(id), last) => {
                if let Some(last) = last {
                    self.last_event_id.clear();
                    self.last_event_id.push_str(last);
                }
                self.pending_id.clear();
                self.pending_id.push_str(id);
                self.id_pending = true;
            }
            // A dispatch sets the last event ID from a borrowed id only.
            (None, _) => {}
        }
    }
}

/// Whether a line whose first byte is the index must be interpreted when it ends: comments
/// (`:`), `retry` (any line starting with `r`, to keep the test to one byte) and blank lines (the
/// first byte is a line end) act at once. Any other field has no effect before the blank line
/// that dispatches its event, so it may wait unread in the carry until then.
static IMMEDIATE: [bool; 256] = {
    let mut table = [false; 256];
    table[b'\n' as usize] = true;
    table[b'\r' as usize] = true;
    table[b':' as usize] = true;
    table[b'r' as usize] = true;
    table
};

/// Writes the position of every line end of `chunk` (its CR or LF; the LF of a CR LF is not
/// one) into `ends`, which has room for one per byte, and returns how many there are: one pass
/// of word tests, cheaper on a short chunk than a search per line. Little state and no call
/// inside, so that the loop stays in registers. `chunk` is shorter than [`DEFER_LIMIT`], so
/// positions fit in `u16`.
#[inline(always)]
fn record_line_ends(chunk: &[u8], ends: &mut [u16]) -> usize {
    let len = chunk.len();
    let mut found = 0;
    let mut at = 0;
    for word in chunk.chunks_exact(8) {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let mask = control_bytes(u64::from_le_bytes(bytes));
        found = put_line_ends(chunk, at, mask, ends, found);
        at += 8;
    }
    if at < len {
        if len >= 8 {
            // The last word again, without the bytes already seen.
            let word_at = len - 8;
            let mask = control_bytes(load(chunk, word_at)) & (u64::MAX << (8 * (at - word_at)));
            found = put_line_ends(chunk, word_at, mask, ends, found);
        } else {
            found = put_line_ends(chunk, at, short_control_bytes(&chunk[at..]), ends, found);
        }
    }
    found
}

/// Writes the line ends among the bytes flagged in `mask` (see [`control_bytes`]) of the word
/// at `word_at` into `ends` from `found` on; returns the new count.
#[inline(always)]
fn put_line_ends(
    chunk: &[u8],
    word_at: usize,
    mut mask: u64,
    ends: &mut [u16],
    mut found: usize,
) -> usize {
    while mask != 0 {
        let at = word_at + (mask.trailing_zeros() / 8) as usize;
        mask &= mask - 1;
        let byte = chunk[at];
        if byte == b'\n' {
            // An LF right after a CR is the second half of a CR LF.
            if at == 0 || chunk[at - 1] != b'\r' {
                ends[found] = at as u16;
                found += 1;
            }
        } else if byte == b'\r' {
            let pair = chunk.get(at + 1) == Some(&b'\n');
            ends[found] = at as u16 | if pair { CR_LF } else { 0 };
            found += 1;
        }
    }
    found
}

/// The bit of a recorded line end (see `Parser::carry_ends`) that says it is the CR of a CR LF,
/// so that where the next line starts is known without reading the bytes again. Positions are
/// below [`DEFER_LIMIT`], far from this bit.
const CR_LF: u16 = 0x8000;

/// A recorded line end: where the line ends (its CR or LF) and where the next line starts.
#[inline(always)]
fn line_end_and_next(recorded: u16) -> (usize, usize) {
    let end = usize::from(recorded & !CR_LF);
    (end, end + 1 + usize::from(recorded >> 15))
}

/// Where the line after the line end at `end` starts (CR LF is one line end).
#[inline]
fn after_line_end(bytes: &[u8], end: usize) -> usize {
    if bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n') {
        end + 2
    } else {
        end + 1
    }
}

/// Line ends of a region found before it is read: `ends` (the position of each line's CR or LF,
/// in order), then maybe the end of the line after them (`next_end`); every position is `base`
/// more than its place in the region.
#[derive(Debug, Clone, Copy)]
struct Known<'e> {
    ends: &'e [u16],
    next_end: Option<usize>,
    base: usize,
}

impl<'e> Known<'e> {
    /// Nothing known: every line end is searched for.
    const NONE: Known<'static> = Known {
        ends: &[],
        next_end: None,
        base: 0,
    };

    fn ends(ends: &'e [u16], base: usize) -> Self {
        Self {
            ends,
            next_end: None,
            base,
        }
    }

    fn then(self, next_end: usize) -> Self {
        Self {
            next_end: Some(next_end),
            ..self
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
/// returns the field and where its value starts.
#[inline]
fn prefix_field(bytes: &[u8], pos: usize) -> Option<(Field, usize)> {
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
    // The first byte picks the one or two prefixes worth comparing.
    match buf[0] {
        b'd' if w & mask(6) == word(b"data: ") => Some((Field::Data, pos + 6)),
        b'd' if w & mask(5) == word(b"data:") => Some((Field::Data, pos + 5)),
        b'i' if w & mask(4) == word(b"id: ") => Some((Field::Id, pos + 4)),
        b'e' if w & mask(7) == word(b"event: ") => Some((Field::Event, pos + 7)),
        _ => None,
    }
}

/// A `retry` value: one or more ASCII digits, base ten. A value too large for `u64` is ignored
/// like any other unusable value (as Chromium does).
fn parse_retry(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}
