//! The broker interface: per-topic logs with replay, and live fan-out.
//!
//! A broker does three things, and nothing else:
//!
//! - [`Broker::publish`] appends an event to a topic's log, giving it the next offset, and hands
//!   it to every live [`Sink`] attached to that topic, atomically with the append (so every
//!   attached sink sees every event appended after it attached, in offset order).
//! - [`Broker::read`] returns retained events after an offset (replay).
//! - [`Broker::attach`] registers a [`Sink`] for live events until the [`Attachment`] drops.
//!
//! Gap-free, duplicate-free resume is *not* the broker's job: the hub attaches first, then reads
//! the log, then drops live events whose offset it has already replayed. That logic is written
//! once, in `rill-hub`, and holds for every broker. Brokers: `rill-hub::MemoryBroker` (in-process,
//! the default) and `rill-redis::RedisBroker` (a Redis Stream per topic plus Pub/Sub).

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::{Epoch, Topic};

/// The longest event name, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 64;

/// An event to publish.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The SSE event name (`message` by default). Must pass [`valid_event_name`].
    pub name: Arc<str>,
    /// The event's data as JSON text (already validated by the caller).
    pub data: Bytes,
}

/// An event in a topic's log.
///
/// Shared as `Arc<Event>` by every subscriber: the hub encodes its SSE frame once per wire style
/// and caches it in `frames`, so fan-out to N subscribers costs one encoding.
pub struct Event {
    pub topic: Topic,
    /// Position in the topic's log, starting at 1.
    pub offset: u64,
    pub name: Arc<str>,
    /// JSON text.
    pub data: Bytes,
    /// Publish time in milliseconds since the Unix epoch (for age retention and latency).
    pub time_ms: u64,
    /// Encoded frames, filled lazily by the hub; index by wire style. Brokers create this empty.
    pub frames: [OnceLock<Bytes>; 2],
}

impl Event {
    pub fn new(topic: Topic, offset: u64, name: Arc<str>, data: Bytes, time_ms: u64) -> Self {
        Event {
            topic,
            offset,
            name,
            data,
            time_ms,
            frames: Default::default(),
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("topic", &self.topic)
            .field("offset", &self.offset)
            .field("name", &self.name)
            .field("data", &String::from_utf8_lossy(&self.data))
            .finish_non_exhaustive()
    }
}

/// Where a published event landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub epoch: Epoch,
    pub offset: u64,
}

/// A slice of a topic's log.
#[derive(Clone, Debug)]
pub struct LogRead {
    pub epoch: Epoch,
    /// The offset of the newest event ever published to the topic (0 if none).
    pub head: u64,
    /// The offset of the oldest retained event (`head + 1` when none is retained). A reader whose
    /// position is below `first - 1` has missed events that are gone: it must be reset.
    pub first: u64,
    /// Retained events with offset greater than the requested one, oldest first, at most the
    /// requested limit.
    pub events: Vec<Arc<Event>>,
}

/// Why a live feed or a replay could not continue exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// Part of what was missed is no longer retained.
    Expired,
    /// The id is not one of this server's, or belongs to another set of topics.
    UnknownId,
    /// The id is from an earlier epoch: the log it refers to was lost.
    EpochChanged,
    /// The subscriber fell behind and its events were dropped (hub policy).
    SlowConsumer,
    /// The broker lost its live feed and could not re-synchronise exactly.
    FeedLost,
}

impl ResetReason {
    /// The machine-readable `reason` sent in `event: reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Expired => "expired",
            ResetReason::UnknownId => "unknown_id",
            ResetReason::EpochChanged => "epoch_changed",
            ResetReason::SlowConsumer => "slow_consumer",
            ResetReason::FeedLost => "feed_lost",
        }
    }
}

/// A receiver of live events, implemented by the hub's per-connection queues.
///
/// Brokers call these from their publish path (the in-process broker) or from their feed task
/// (Redis), so they must never block or await: a full queue is the sink's business (it applies
/// its own policy: drop the connection, or merge deltas).
pub trait Sink: Send + Sync + 'static {
    /// A live event of the attached topic. Within one attachment, offsets arrive in increasing
    /// order; the first may be older than what the hub already replayed (it dedupes).
    fn deliver(&self, event: &Arc<Event>);
    /// The live feed was interrupted (e.g. the broker reconnected): events may have been missed
    /// since the last delivered one. The hub re-reads the log from its position to fill the gap,
    /// and resets the topic if it cannot.
    fn interrupted(&self);
}

/// Keeps a [`Sink`] attached; dropping it detaches (cheaply, without awaiting).
pub struct Attachment {
    _guard: Box<dyn Send + Sync>,
}

impl Attachment {
    /// Wraps a guard whose `Drop` detaches the sink.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Attachment {
            _guard: Box::new(guard),
        }
    }
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Attachment")
    }
}

/// What can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker's backend cannot be reached (Redis down): the HTTP layer answers 503.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    /// A limit of the broker refused the request (e.g. too many topics in memory).
    #[error("{0}")]
    Limit(String),
}

/// Per-topic logs with replay, and live fan-out. See the module docs.
#[async_trait::async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The current epoch.
    async fn epoch(&self) -> Result<Epoch, BrokerError>;

    /// Appends `event` to `topic`'s log and delivers it to the attached sinks.
    async fn publish(&self, topic: &Topic, event: NewEvent) -> Result<Published, BrokerError>;

    /// Reads up to `limit` retained events of `topic` with offset greater than `after`.
    async fn read(&self, topic: &Topic, after: u64, limit: usize) -> Result<LogRead, BrokerError>;

    /// Attaches `sink` to `topic`'s live events until the returned guard drops.
    async fn attach(&self, topic: &Topic, sink: Arc<dyn Sink>) -> Result<Attachment, BrokerError>;

    /// Whether the broker can serve right now (`/readyz`).
    async fn ready(&self) -> bool {
        self.epoch().await.is_ok()
    }
}

/// Whether `name` may be an SSE event name: 1 to [`MAX_EVENT_NAME_LEN`] bytes of visible ASCII
/// (no spaces, no control characters, so it can never break SSE framing).
pub fn valid_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_graphic())
}
