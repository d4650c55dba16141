//! The hub and its per-connection stream sessions: replay from a cursor, then live, with no gap
//! and no duplicate, written once for every broker.
//!
//! How a session stays exact (see also `rill_core::broker`):
//!
//! 1. It attaches a sink to every topic *before* reading anything, so no event published from
//!    then on can be missed: each lands in the connection's queue.
//! 2. It reads the log from the client's position in each topic and writes what it finds
//!    (replay), in batches.
//! 3. It then drains the queue, dropping events at or below the position already written
//!    (they were replayed). An event beyond `position + 1` means the live feed skipped some
//!    (the queue lagged, or the broker's feed was interrupted): the session reads the log again
//!    from its position to fill the gap.
//! 4. When a position is older than what the log retains, or the cursor is not one of ours, it
//!    writes `event: reset` for that topic and continues live from the topic's head. Never a
//!    silent gap.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use rill_core::cursor::topic_set_hash;
use rill_core::{
    Attachment, Broker, BrokerError, Coalesce, Encoder, Epoch, Event, Flow, NewEvent, PreludeEvent,
    Published, ResetReason, Start, StreamCursor, StreamRequest, Topic, Wire,
};

use crate::metrics::HubMetrics;
use crate::queue::{Item, Queue, Taken, TopicSink};

/// How a session writes its events: one of the built-in SSE styles, whose frames are cached in
/// [`Event::frames`] and shared by every subscriber, or a face's own encoder.
enum Writer {
    /// `Wire::Topics` (0) or `Wire::Raw` (1): the index of the frame cache.
    Sse(usize),
    Custom(Box<dyn Encoder>),
}

/// Settings of the hub's sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Live events a connection may have waiting before its [`WhenFull`] policy applies.
    pub queue_capacity: usize,
    /// Events read from the log per read while replaying (bounds a session's replay memory).
    pub replay_batch: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue_capacity: 512,
            replay_batch: 256,
        }
    }
}

/// The broker plus the session logic. Cheap to share (`Arc<Hub>`).
pub struct Hub {
    broker: Arc<dyn Broker>,
    config: HubConfig,
    metrics: Arc<HubMetrics>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(broker: Arc<dyn Broker>, config: HubConfig) -> Self {
        Hub {
            broker,
            config,
            metrics: Arc::new(HubMetrics::default()),
        }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    pub fn metrics(&self) -> &HubMetrics {
        &self.metrics
    }

    /// Publishes through the broker, counting it.
    pub async fn publish(&self, topic: &Topic, event: NewEvent) -> Result<Published, BrokerError> {
        let published = self.broker.publish(topic, event).await?;
        self.metrics
            .events_published
            .fetch_add(1, Ordering::Relaxed);
        Ok(published)
    }

    /// The id of an event at `offset` for a stream over `topic` alone (what publish answers).
    pub fn single_topic_id(epoch: &Epoch, topic: &Topic, offset: u64) -> String {
        StreamCursor {
            epochs: vec![epoch.clone()],
            topics_hash: topic_set_hash(std::slice::from_ref(topic)),
            offsets: vec![offset],
        }
        .to_string()
    }

    /// Opens a stream session. Sinks are attached before this returns, so nothing published
    /// after it returns is missed. Errors only when the broker fails (or no topic is given).
    pub async fn open(&self, request: StreamRequest) -> Result<HubStream, BrokerError> {
        let mut topics = request.topics;
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return Err(BrokerError::Limit(
                "a stream needs at least one topic".to_owned(),
            ));
        }
        let queue = Queue::new(
            self.config.queue_capacity,
            request.when_full,
            self.metrics.clone(),
        );
        let writer = match request.wire {
            Wire::Topics => Writer::Sse(0),
            Wire::Raw => Writer::Sse(1),
            Wire::Custom(encoder) => Writer::Custom(encoder),
        };
        let mut attachments = Vec::with_capacity(topics.len());
        for (idx, topic) in topics.iter().enumerate() {
            let sink = Arc::new(TopicSink {
                queue: queue.clone(),
                idx,
            });
            attachments.push(self.broker.attach(topic, sink).await?);
        }

        // Each topic's epoch: from the client's id, else read below. (A broker may keep one
        // epoch per topic, or per group of topics: see `StreamCursor`.)
        let n = topics.len();
        let mut positions = vec![0; n];
        let mut epochs: Vec<Option<Epoch>> = vec![None; n];
        let mut catch = vec![Catch::Live; n];
        let start = match request.start {
            Start::LastEventId(id) if id.trim().is_empty() => Start::Live,
            other => other,
        };
        match start {
            Start::Live => {}
            Start::LastEventId(id) => match StreamCursor::parse(id.trim()) {
                // An id of these topics: replay after it. If a topic's epoch has changed since,
                // its first log read says so and it resets (`epoch_changed`).
                Some(cursor) if cursor.fits(&topics) => {
                    for (i, e) in epochs.iter_mut().enumerate() {
                        *e = cursor.epoch_of(i).cloned();
                    }
                    positions = cursor.offsets;
                    catch = vec![Catch::Read; n];
                }
                _ => catch = vec![Catch::Reset(ResetReason::UnknownId); n],
            },
            Start::After(list) => {
                for (topic, offset) in list {
                    if let Ok(idx) = topics.binary_search(&topic) {
                        positions[idx] = offset;
                        catch[idx] = Catch::Read;
                    }
                }
            }
        }
        // Live topics start at their head, read after attaching: anything newer is queued.
        // The same read gives the epoch of every topic the id did not cover.
        let mut known = Vec::with_capacity(n);
        for idx in 0..n {
            let epoch = match epochs[idx].take() {
                Some(e) => e,
                None => {
                    let read = self.broker.read(&topics[idx], u64::MAX, 0).await?;
                    if catch[idx] == Catch::Live {
                        positions[idx] = read.head;
                    }
                    read.epoch
                }
            };
            known.push(epoch);
        }
        let epochs = known;
        let catching_up = catch.iter().any(|c| *c != Catch::Live);
        queue.set_catching_up(catching_up);
        self.metrics.open_streams.fetch_add(1, Ordering::Relaxed);
        let hash = topic_set_hash(&topics);
        Ok(HubStream {
            broker: self.broker.clone(),
            metrics: self.metrics.clone(),
            queue,
            _attachments: attachments,
            id_prefix: id_prefix(&epochs, hash),
            hash,
            epochs,
            topics,
            positions,
            catch,
            catching_up,
            writer,
            coalesce: request.coalesce,
            replay_batch: self.config.replay_batch.max(1),
            prelude: request.prelude,
            pending: VecDeque::new(),
            out: Vec::new(),
            id_buf: String::new(),
            data_buf: String::new(),
            ended: false,
            aborted: false,
        })
    }
}

fn id_prefix(epochs: &[Epoch], hash: u32) -> String {
    // The cursor's own formatting, minus its offsets.
    let s = StreamCursor {
        epochs: epochs.to_vec(),
        topics_hash: hash,
        offsets: vec![0],
    }
    .to_string();
    s.strip_suffix(".0").unwrap_or(&s).to_owned()
}

/// What a topic of a session needs before its live events can be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Catch {
    /// Nothing: queued events at `position + 1` are written as they come.
    Live,
    /// Read the log after the position (resume, or a gap in the live feed).
    Read,
    /// Write `event: reset` with this reason and jump to the topic's head.
    Reset(ResetReason),
}

/// One connection's stream: call [`HubStream::next`] in a loop and write each chunk.
///
/// Dropping it detaches from the broker.
pub struct HubStream {
    broker: Arc<dyn Broker>,
    metrics: Arc<HubMetrics>,
    queue: Arc<Queue>,
    _attachments: Vec<Attachment>,
    /// Sorted, distinct.
    topics: Vec<Topic>,
    hash: u32,
    /// Each topic's epoch (in the order of `topics`).
    epochs: Vec<Epoch>,
    /// `<epoch(s)>.<topic-set hash>`: every id of this stream starts with it.
    id_prefix: String,
    /// The last offset written in each topic (what the next id carries).
    positions: Vec<u64>,
    catch: Vec<Catch>,
    /// Mirrors the queue's flag, to tell it only when it changes.
    catching_up: bool,
    writer: Writer,
    /// Merges runs of events read from the log (chat deltas), in this task.
    coalesce: Option<Arc<dyn Coalesce>>,
    replay_batch: usize,
    prelude: Vec<PreludeEvent>,
    /// Items taken from the queue (kept here so a cancelled `next` loses nothing, and so the
    /// buffer is reused).
    pending: VecDeque<Item>,
    /// The chunk being built.
    out: Vec<u8>,
    id_buf: String,
    data_buf: String,
    /// The stream is over: after its final event, or when its encoder ended it.
    ended: bool,
    /// The encoder ended it as broken ([`Flow::Abort`]).
    aborted: bool,
}

impl std::fmt::Debug for HubStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubStream")
            .field("topics", &self.topics)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl Drop for HubStream {
    fn drop(&mut self) {
        self.metrics.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HubStream {
    /// The stream's topics, sorted.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    /// Whether the stream ended as broken (its encoder returned [`Flow::Abort`]): the caller
    /// cuts the response off instead of finishing it. Meaningful once `next` returned `None`.
    pub fn aborted(&self) -> bool {
        self.aborted
    }

    /// The id of the stream's current position (what the last written event carried).
    pub fn cursor(&self) -> String {
        StreamCursor {
            epochs: self.epochs.clone(),
            topics_hash: self.hash,
            offsets: self.positions.clone(),
        }
        .to_string()
    }

    /// The next chunk of SSE bytes: everything ready, encoded as one buffer (so one write).
    /// `None` once the stream has ended (after a final `event: error`, e.g. `slow_consumer`);
    /// the caller then closes the response.
    ///
    /// Cancel-safe: all progress lives in `self`, so it can sit in a `select!` with heartbeats
    /// and shutdown.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.ended {
                if !self.out.is_empty() {
                    return Some(self.flush());
                }
                return None;
            }
            if !self.prelude.is_empty() {
                self.write_prelude();
                if self.ended {
                    continue;
                }
            }
            // Replay and resets, one log read at a time so a long replay goes out in chunks.
            if let Some(idx) = self.catch.iter().position(|c| *c != Catch::Live) {
                // Boxed: a catch-up's future is large and short-lived; inline it would size
                // the `next` future every idle stream holds while it waits.
                if let Err(error) = Box::pin(self.catch_up(idx)).await {
                    self.fail(&error);
                }
                if !self.out.is_empty() {
                    return Some(self.flush());
                }
                continue;
            }
            if self.catching_up {
                self.catching_up = false;
                self.queue.set_catching_up(false);
            }
            let taken = self.queue.take(&mut self.pending);
            if let Some(frame) = self.lone_frame(&taken) {
                return Some(frame);
            }
            // Flags first: the events of an interrupted or lagged topic come from the log (which
            // also reveals a lost log, i.e. a new epoch, before anything is labelled wrongly).
            if taken.lagged {
                self.catch.iter_mut().for_each(|c| *c = Catch::Read);
            }
            for idx in taken.interrupted {
                if self.catch[idx] == Catch::Live {
                    self.catch[idx] = Catch::Read;
                }
            }
            self.write_pending();
            if taken.overflowed {
                self.write_error(
                    "slow_consumer",
                    "the stream fell too far behind; reconnect with Last-Event-ID to resume",
                );
                self.ended = true;
                return Some(self.flush());
            }
            if self.catch.iter().any(|c| *c != Catch::Live) {
                self.catching_up = true;
                self.queue.set_catching_up(true);
            }
            if !self.out.is_empty() {
                return Some(self.flush());
            }
            if self.catching_up || self.ended {
                continue;
            }
            self.queue.wait().await;
        }
    }

    fn flush(&mut self) -> Bytes {
        // Nothing is kept allocated between chunks: an idle stream holds no output buffer.
        Bytes::from(std::mem::take(&mut self.out))
    }

    /// The paced case: exactly one live event is ready and nothing else is to be written (no
    /// flag, no pending output), on a single-topic stream in one of the built-in SSE styles.
    /// Then the chunk is the event's shared frame itself: no copy and no allocation per
    /// subscriber. Anything else goes the general way (`write_pending`).
    fn lone_frame(&mut self, taken: &Taken) -> Option<Bytes> {
        if taken.lagged
            || taken.overflowed
            || !taken.interrupted.is_empty()
            || self.ended
            || !self.out.is_empty()
            || self.pending.len() != 1
            || self.topics.len() != 1
        {
            return None;
        }
        let Writer::Sse(wire) = self.writer else {
            return None;
        };
        let item = self.pending.front()?;
        if self.catch[item.idx] != Catch::Live
            || item.event.offset != self.positions[item.idx].saturating_add(1)
        {
            return None;
        }
        let item = self.pending.pop_front()?;
        self.positions[item.idx] = item.event.offset;
        self.metrics
            .events_delivered
            .fetch_add(1, Ordering::Relaxed);
        Some(single_topic_frame(&self.id_prefix, wire, &item.event).clone())
    }

    /// The broker failed: tell the client and end (it reconnects and resumes).
    fn fail(&mut self, error: &BrokerError) {
        tracing::warn!(%error, "a stream ends: the broker failed");
        self.write_error(
            "broker_unavailable",
            "the event broker is unavailable; reconnect later",
        );
        self.ended = true;
    }

    fn write_prelude(&mut self) {
        let prelude = std::mem::take(&mut self.prelude);
        self.fill_id();
        for p in &prelude {
            if self.ended {
                break;
            }
            match &mut self.writer {
                Writer::Sse(_) => encode(&mut self.out, Some(&self.id_buf), &p.event, &p.data),
                Writer::Custom(encoder) => {
                    let flow = encoder.event(
                        &p.event,
                        p.data.as_bytes(),
                        Some(&self.id_buf),
                        &mut self.out,
                    );
                    self.on_flow(flow);
                }
            }
        }
    }

    fn write_error(&mut self, code: &str, message: &str) {
        let data = serde_json::json!({ "code": code, "message": message }).to_string();
        match &mut self.writer {
            Writer::Sse(_) => encode(&mut self.out, None, "error", &data),
            Writer::Custom(encoder) => {
                // The stream ends after its error whatever the encoder says; an encoder that
                // asks to cut it off is heard.
                if encoder.event("error", data.as_bytes(), None, &mut self.out) == Flow::Abort {
                    self.aborted = true;
                }
            }
        }
    }

    /// What an encoder said after an event.
    fn on_flow(&mut self, flow: Flow) {
        match flow {
            Flow::Continue => {}
            Flow::End => self.ended = true,
            Flow::Abort => {
                self.ended = true;
                self.aborted = true;
            }
        }
    }

    /// One step of catching up topic `idx`.
    async fn catch_up(&mut self, idx: usize) -> Result<(), BrokerError> {
        let topic = self.topics[idx].clone();
        match self.catch[idx] {
            Catch::Live => {}
            Catch::Reset(reason) => {
                let read = self.broker.read(&topic, u64::MAX, 0).await?;
                if read.epoch != self.epochs[idx] {
                    self.epoch_changed(idx, read.epoch);
                    return Ok(());
                }
                self.positions[idx] = read.head;
                self.catch[idx] = Catch::Live;
                self.write_reset(idx, reason);
            }
            Catch::Read => {
                let pos = self.positions[idx];
                let read = self.broker.read(&topic, pos, self.replay_batch).await?;
                if read.epoch != self.epochs[idx] {
                    self.epoch_changed(idx, read.epoch);
                    return Ok(());
                }
                if pos > read.head {
                    // A position beyond anything published in this epoch: not an id we gave.
                    self.catch[idx] = Catch::Reset(ResetReason::UnknownId);
                    return Ok(());
                }
                if pos.saturating_add(1) < read.first {
                    self.positions[idx] = read.head;
                    self.catch[idx] = Catch::Live;
                    self.write_reset(idx, ResetReason::Expired);
                    return Ok(());
                }
                let mut replayed = 0;
                let done = read.events.len() < self.replay_batch;
                let mut events = read.events;
                if let Some(coalesce) = &self.coalesce {
                    coalesce.coalesce(&mut events);
                }
                for event in &events {
                    if self.ended {
                        break;
                    }
                    if event.offset > self.positions[idx] {
                        self.write_event(idx, event);
                        replayed += 1;
                    }
                }
                self.metrics
                    .events_replayed
                    .fetch_add(replayed, Ordering::Relaxed);
                if done || replayed == 0 || self.positions[idx] >= read.head {
                    self.catch[idx] = Catch::Live;
                }
            }
        }
        Ok(())
    }

    /// The log of topic `idx` was lost (its epoch is now `epoch`): so were those of every topic
    /// of the same epoch (one key holds it: all of a broker with one epoch, a cluster slot's
    /// topics), and their positions mean nothing; reset them. Topics of other epochs go on.
    fn epoch_changed(&mut self, idx: usize, epoch: Epoch) {
        let old = self.epochs[idx].clone();
        for (e, c) in self.epochs.iter_mut().zip(self.catch.iter_mut()) {
            if *e == old {
                *e = epoch.clone();
                *c = Catch::Reset(ResetReason::EpochChanged);
            }
        }
        self.id_prefix = id_prefix(&self.epochs, self.hash);
    }

    /// Writes the queued live events taken from the queue, deduplicating and spotting gaps.
    fn write_pending(&mut self) {
        let mut delivered = 0;
        while let Some(item) = self.pending.pop_front() {
            if self.ended {
                self.pending.clear();
                break;
            }
            let idx = item.idx;
            if self.catch[idx] != Catch::Live {
                // A log read is due for this topic; it will cover this event.
                continue;
            }
            let pos = self.positions[idx];
            if item.event.offset <= pos {
                continue; // already written (replayed, or before this stream's start)
            }
            if item.event.offset != pos.saturating_add(1) {
                // A gap (events the live feed skipped): the log has the exact events.
                self.catch[idx] = Catch::Read;
                continue;
            }
            self.write_event(idx, &item.event);
            delivered += 1;
        }
        self.metrics
            .events_delivered
            .fetch_add(delivered, Ordering::Relaxed);
    }

    fn fill_id(&mut self) {
        self.id_buf.clear();
        self.id_buf.push_str(&self.id_prefix);
        for p in &self.positions {
            let _ = write!(self.id_buf, ".{p}");
        }
    }

    fn write_event(&mut self, idx: usize, event: &Arc<Event>) {
        self.positions[idx] = event.offset;
        let wire = match &mut self.writer {
            Writer::Sse(wire) => *wire,
            Writer::Custom(_) => {
                self.fill_id();
                let Writer::Custom(encoder) = &mut self.writer else {
                    return;
                };
                let flow =
                    encoder.event(&event.name, &event.data, Some(&self.id_buf), &mut self.out);
                self.on_flow(flow);
                return;
            }
        };
        if self.topics.len() == 1 {
            // Every single-topic stream of this topic writes the very same bytes for this
            // event, id included: encode once, share with all of them.
            let frame = single_topic_frame(&self.id_prefix, wire, event);
            self.out.extend_from_slice(frame);
        } else {
            self.fill_id();
            self.data_buf.clear();
            event_data(&mut self.data_buf, wire, event);
            encode(
                &mut self.out,
                Some(&self.id_buf),
                &event.name,
                &self.data_buf,
            );
        }
    }

    fn write_reset(&mut self, idx: usize, reason: ResetReason) {
        self.metrics.resets.fetch_add(1, Ordering::Relaxed);
        self.fill_id();
        let data = format!(
            r#"{{"topic":"{}","reason":"{}"}}"#,
            self.topics[idx],
            reason.as_str()
        );
        match &mut self.writer {
            Writer::Sse(_) => encode(&mut self.out, Some(&self.id_buf), "reset", &data),
            Writer::Custom(encoder) => {
                let flow =
                    encoder.event("reset", data.as_bytes(), Some(&self.id_buf), &mut self.out);
                self.on_flow(flow);
            }
        }
    }
}

/// The `data:` of an event in a built-in wire style (0: topics envelope, 1: raw). Topic names
/// need no JSON escaping (their charset has no quote, backslash or control character).
/// The frame every single-topic stream of `event`'s topic writes for it in SSE style `wire`,
/// encoded by the first to ask and cached in the event.
fn single_topic_frame<'e>(id_prefix: &str, wire: usize, event: &'e Event) -> &'e Bytes {
    event.frames[wire].get_or_init(|| {
        let mut frame = Vec::with_capacity(event.data.len() + 64 + event.topic.as_str().len());
        let id = format!("{id_prefix}.{}", event.offset);
        let mut data = String::new();
        event_data(&mut data, wire, event);
        encode(&mut frame, Some(&id), &event.name, &data);
        Bytes::from(frame)
    })
}

fn event_data(out: &mut String, wire: usize, event: &Event) {
    let data = String::from_utf8_lossy(&event.data);
    match wire {
        1 => out.push_str(&data),
        _ => {
            out.reserve(data.len() + event.topic.as_str().len() + 20);
            out.push_str(r#"{"topic":""#);
            out.push_str(event.topic.as_str());
            out.push_str(r#"","data":"#);
            out.push_str(&data);
            out.push('}');
        }
    }
}

fn encode(out: &mut Vec<u8>, id: Option<&str>, event: &str, data: &str) {
    if let Err(error) = rill_sse::encode_event(out, id, Some(event), data) {
        // Ids and names are validated before they get here; this is a bug, not input.
        tracing::error!(%error, event, "cannot encode an SSE event; skipped");
    }
}
