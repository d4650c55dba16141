//! What a stream session is asked for: its topics, where it starts, what goes first, how its
//! events are written and what happens when its reader falls behind.
//!
//! The hub (`rill-hub`) runs sessions; the chat engine (`rill-chat`) plans chat streams and the
//! HTTP layer maps requests onto these types. They live here so the engine can describe a whole
//! stream (a snapshot first, a face's encoder, an end after a given event) without depending on
//! the hub.

use std::fmt;
use std::sync::Arc;

use crate::{Event, Topic};

/// Where a stream starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// At each topic's head when the stream opens: only events published from then on.
    Live,
    /// From a `Last-Event-ID` sent by the client (header or query). An empty string means
    /// [`Start::Live`]; an id that is not ours, of another topic set or another epoch gives
    /// `event: reset` for each topic and continues live.
    LastEventId(String),
    /// Strictly after the given offsets (topics not listed start live). The chat engine uses
    /// this after a snapshot computed at an offset, sent as a [`PreludeEvent`].
    After(Vec<(Topic, u64)>),
}

/// An event written first, before anything from the log or the live feed, with the id of the
/// stream's starting position (e.g. the chat engine's `snapshot`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreludeEvent {
    pub event: String,
    /// JSON text, written as is (no envelope, whatever the wire style).
    pub data: String,
}

/// What a connection's queue does when a live event arrives and it is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Drop the subscriber: the stream ends with a final `event: error`
    /// `{"code":"slow_consumer"}`, and the client resumes with `Last-Event-ID`. The policy of
    /// topic streams.
    Disconnect,
    /// Drop the live events and read them from the log instead, once the reader catches up,
    /// merged by the stream's [`Coalesce`] (a slow phone gets fewer, larger deltas, the same
    /// text). Falling behind what the log retains gives `reset`. The policy of chat streams.
    Resync,
}

/// Whether a stream goes on after an event was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The event just written was the stream's last: end it (e.g. an exchange's completion).
    End,
    /// End the stream as broken: the response is cut off rather than finished, so a reader
    /// with no other way to learn it (plain text) sees that the answer did not complete.
    Abort,
}

/// Writes a stream's events in a dialect of its own (a face: plain text, the AI SDK's UI
/// message stream, OpenAI's chunks). Called in the connection's own task, once per event, in
/// order, with no gap and no duplicate: log and live events, the prelude, `reset` and the
/// stream's final `error` (which has no id) all come through here.
pub trait Encoder: Send + 'static {
    /// Appends what the client should see for this event to `out`.
    fn event(&mut self, name: &str, data: &[u8], id: Option<&str>, out: &mut Vec<u8>) -> Flow;
}

/// Merges runs of events into fewer, larger ones with the same meaning (chat deltas). Runs in
/// the connection's task on a batch read from the log, never on the publish path.
pub trait Coalesce: Send + Sync + 'static {
    /// Rewrites `events` (one topic's, in offset order) in place. A merged event must keep the
    /// offset of the last event it covers, and the order must not change.
    fn coalesce(&self, events: &mut Vec<Arc<Event>>);
}

/// How a stream's events are written.
pub enum Wire {
    /// Topic streams: SSE, `data` is the envelope `{"topic":"<name>","data":<published JSON>}`.
    Topics,
    /// Chat streams: SSE, `data` is the published JSON itself.
    Raw,
    /// A face's own encoding.
    Custom(Box<dyn Encoder>),
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wire::Topics => f.write_str("Topics"),
            Wire::Raw => f.write_str("Raw"),
            Wire::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// What to open: a set of topics, a start, a wire style, a full-queue policy, a prelude.
#[derive(Debug)]
pub struct StreamRequest {
    /// The topics; the hub sorts them and drops duplicates (the cursor lists them sorted).
    pub topics: Vec<Topic>,
    pub start: Start,
    pub wire: Wire,
    pub when_full: WhenFull,
    pub prelude: Vec<PreludeEvent>,
    /// Merges runs read from the log (replay, resync); `None` writes events as logged.
    pub coalesce: Option<Arc<dyn Coalesce>>,
}

impl fmt::Debug for dyn Coalesce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Coalesce")
    }
}

impl StreamRequest {
    /// A topics stream: envelope data, [`WhenFull::Disconnect`], no prelude.
    pub fn topics(topics: Vec<Topic>, start: Start) -> Self {
        StreamRequest {
            topics,
            start,
            wire: Wire::Topics,
            when_full: WhenFull::Disconnect,
            prelude: Vec::new(),
            coalesce: None,
        }
    }
}
