//! Live fan-out: one Pub/Sub connection per instance, one subscription per topic with local sinks.
//!
//! The shared [`Feed`] maps each subscribed channel to its local sinks. Redis messages are
//! dispatched to the sinks right in the connection's reader (the `AsyncPushSender` hook of
//! redis-rs): no extra task hop and no queue per message, and the `Arc<Event>` is built once per
//! message and shared by every local sink. `Sink::deliver` never blocks, so the reader never
//! stalls.
//!
//! A control task owns the connection: it (un)subscribes channels as sinks come and go (in the
//! order the requests were made, so a detach racing an attach ends in the right state), pings the
//! connection, and on loss reconnects with a capped backoff, subscribes every channel again and
//! then tells every sink whose feed was cut (`Sink::interrupted`), so the hub re-reads the log.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, Value};
use rill_core::{Epoch, Event, Sink, Topic};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The first pause between reconnect attempts; it doubles up to the configured cap.
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(50);

/// Which Pub/Sub flavour the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PubSubMode {
    /// SPUBLISH / SSUBSCRIBE (Redis 7 and later).
    Sharded,
    /// PUBLISH / SUBSCRIBE.
    Classic,
}

impl PubSubMode {
    pub(crate) fn publish_cmd(self) -> &'static str {
        match self {
            PubSubMode::Sharded => "SPUBLISH",
            PubSubMode::Classic => "PUBLISH",
        }
    }

    fn subscribe_cmd(self) -> &'static str {
        match self {
            PubSubMode::Sharded => "SSUBSCRIBE",
            PubSubMode::Classic => "SUBSCRIBE",
        }
    }

    fn unsubscribe_cmd(self) -> &'static str {
        match self {
            PubSubMode::Sharded => "SUNSUBSCRIBE",
            PubSubMode::Classic => "UNSUBSCRIBE",
        }
    }
}

/// One attached sink.
struct SinkSlot {
    id: u64,
    sink: Arc<dyn Sink>,
    /// Set once Redis confirmed a subscription that covers this sink: only such sinks can have
    /// missed events when the connection drops. (A sink still waiting for its confirmation is
    /// answered after the re-subscription, and its hub reads the log after that.)
    live: AtomicBool,
}

/// The local sinks of one topic.
pub(crate) struct TopicSinks {
    topic: Topic,
    channel: Box<[u8]>,
    /// A `RwLock` because delivery (the reader, per message) only reads, and attach/detach are
    /// rare by comparison. std's lock: it is never held across an await.
    sinks: RwLock<Vec<SinkSlot>>,
    /// The last event name seen, reused while names repeat (they nearly always do: a chat
    /// streams `message.delta` after `message.delta`), to save an allocation per message.
    last_name: Mutex<Option<Arc<str>>>,
    /// Set while the topic is re-subscribed after a connection loss, until its sinks were told
    /// (`Sink::interrupted`): messages in between are dropped, not delivered. They are in the
    /// log, and the hub's re-read (which starts after `interrupted`) finds them; delivering them
    /// would hand a sink an event past a gap it has not been told about yet.
    resyncing: AtomicBool,
}

/// What the control task is asked to do.
enum Control {
    /// Make the subscription of `channel` match whether it has local sinks, then mark sink `id`
    /// live and answer.
    Sync {
        channel: Box<[u8]>,
        sink: Option<u64>,
        reply: Option<oneshot::Sender<()>>,
    },
}

/// State shared by the broker, the attachments, the reader hook and the control task.
pub(crate) struct Feed {
    topics: RwLock<HashMap<Box<[u8]>, Arc<TopicSinks>>>,
    control: mpsc::UnboundedSender<Control>,
    next_sink: AtomicU64,
    /// The epoch of the last message seen; a message of another epoch means Redis lost its data
    /// under us (a flush, or a restart quicker than our ping noticed).
    epoch: Mutex<Option<Epoch>>,
    /// Which connection is current: a disconnect notice from an older one is ignored.
    generation: AtomicU64,
    disconnected: Notify,
    /// Whether the Pub/Sub connection is up and subscribed (readiness).
    connected: AtomicBool,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Detaches a sink when dropped.
pub(crate) struct Detach {
    feed: Arc<Feed>,
    topic: Arc<TopicSinks>,
    id: u64,
}

impl Drop for Detach {
    fn drop(&mut self) {
        let mut topics = write(&self.feed.topics);
        let now_empty = {
            let mut sinks = write(&self.topic.sinks);
            sinks.retain(|s| s.id != self.id);
            sinks.is_empty()
        };
        if now_empty {
            let ours = topics
                .get(&self.topic.channel)
                .is_some_and(|t| Arc::ptr_eq(t, &self.topic));
            if ours {
                topics.remove(&self.topic.channel);
            }
            drop(topics);
            // The control task unsubscribes (unless a new sink came meanwhile). A send error
            // means the broker is gone, and its connection with it.
            let _ = self.feed.control.send(Control::Sync {
                channel: self.topic.channel.clone(),
                sink: None,
                reply: None,
            });
        }
    }
}

impl Feed {
    /// Adds `sink` to `topic` and waits until Redis confirmed the subscription that feeds it.
    /// `Err(())` when the control task did not confirm within `timeout` (Redis away).
    pub(crate) async fn attach(
        self: &Arc<Self>,
        topic: &Topic,
        channel: String,
        sink: Arc<dyn Sink>,
        timeout: Duration,
    ) -> Result<Detach, ()> {
        let channel: Box<[u8]> = channel.into_bytes().into_boxed_slice();
        let id = self.next_sink.fetch_add(1, Ordering::Relaxed);
        let entry = {
            let mut topics = write(&self.topics);
            let entry = topics
                .entry(channel.clone())
                .or_insert_with(|| {
                    Arc::new(TopicSinks {
                        topic: topic.clone(),
                        channel: channel.clone(),
                        sinks: RwLock::new(Vec::new()),
                        last_name: Mutex::new(None),
                        resyncing: AtomicBool::new(false),
                    })
                })
                .clone();
            write(&entry.sinks).push(SinkSlot {
                id,
                sink,
                live: AtomicBool::new(false),
            });
            entry
        };
        // From here on, dropping the guard undoes the attach, on every path.
        let guard = Detach {
            feed: self.clone(),
            topic: entry,
            id,
        };
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Sync {
                channel,
                sink: Some(id),
                reply: Some(tx),
            })
            .map_err(|_| ())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(guard),
            _ => Err(()),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Sets the epoch the broker knows of (at connect), so the first message does not look like
    /// a change.
    pub(crate) fn set_epoch(&self, epoch: Epoch) {
        *lock(&self.epoch) = Some(epoch);
    }

    /// Every sink covered by a confirmed subscription is told its feed was interrupted; after a
    /// reconnect (`resynced`), the topic's messages flow again. The write lock excludes delivery
    /// for the topic meanwhile, so every message delivered after this comes after
    /// `interrupted()`.
    fn interrupt_live(&self, resynced: bool) -> usize {
        let topics: Vec<Arc<TopicSinks>> = read(&self.topics).values().cloned().collect();
        let mut n = 0;
        for t in topics {
            let sinks = write(&t.sinks);
            if resynced {
                t.resyncing.store(false, Ordering::Release);
            }
            for s in sinks.iter() {
                if s.live.load(Ordering::Acquire) {
                    s.sink.interrupted();
                    n += 1;
                }
            }
        }
        n
    }

    /// Handles one message from Redis (runs in the connection's reader: keep it cheap).
    fn on_message(&self, mut data: Vec<Value>) {
        if data.len() < 2 {
            return;
        }
        let (Value::BulkString(payload), Value::BulkString(channel)) =
            (data.swap_remove(1), &data[0])
        else {
            return;
        };
        let Some(topic) = read(&self.topics).get(channel.as_slice()).cloned() else {
            // Unsubscribed a moment ago, or a channel that is not ours.
            return;
        };
        let Some(msg) = Payload::parse(Bytes::from(payload)) else {
            tracing::warn!(topic = %topic.topic, "Ignored a malformed live event from Redis.");
            return;
        };
        let epoch_changed = {
            let mut known = lock(&self.epoch);
            if known
                .as_ref()
                .is_some_and(|e| e.as_str().as_bytes() == msg.epoch())
            {
                false
            } else {
                let new = std::str::from_utf8(msg.epoch()).ok().and_then(Epoch::new);
                let changed = known.is_some();
                if new.is_some() {
                    *known = new;
                }
                changed
            }
        };
        if epoch_changed {
            // The logs were lost under us: every local feed must re-read and reset.
            tracing::warn!("The Redis epoch changed (data lost); interrupting every live feed.");
            self.interrupt_live(false);
        }
        let name = {
            let mut last = lock(&topic.last_name);
            match &*last {
                Some(n) if n.as_bytes() == msg.name() => n.clone(),
                _ => {
                    let Ok(s) = std::str::from_utf8(msg.name()) else {
                        return;
                    };
                    let n: Arc<str> = Arc::from(s);
                    *last = Some(n.clone());
                    n
                }
            }
        };
        let event = Arc::new(Event::new(
            topic.topic.clone(),
            msg.offset,
            name,
            msg.data,
            msg.time_ms,
        ));
        let sinks = read(&topic.sinks);
        if topic.resyncing.load(Ordering::Acquire) {
            return;
        }
        // Sinks must not detach from inside `deliver` (the lock is held): the hub's only queue.
        for s in sinks.iter() {
            s.sink.deliver(&event);
        }
    }
}

/// A decoded live message: `<epoch>\n<offset>\n<time ms>\n<name>\n<data>` (the publish script's
/// format; data is last, so it may contain anything). Parsing copies nothing: the data is a
/// slice of the buffer Redis's reply was read into.
struct Payload {
    buf: Bytes,
    epoch_end: usize,
    name: std::ops::Range<usize>,
    offset: u64,
    time_ms: u64,
    data: Bytes,
}

impl Payload {
    fn parse(buf: Bytes) -> Option<Payload> {
        let mut cuts = [0usize; 4];
        let mut from = 0;
        for c in &mut cuts {
            let i = memchr::memchr(b'\n', buf.get(from..)?)? + from;
            *c = i;
            from = i + 1;
        }
        let offset = parse_u64(&buf[cuts[0] + 1..cuts[1]])?;
        let time_ms = parse_u64(&buf[cuts[1] + 1..cuts[2]])?;
        let data = buf.slice(cuts[3] + 1..);
        Some(Payload {
            epoch_end: cuts[0],
            name: cuts[2] + 1..cuts[3],
            offset,
            time_ms,
            data,
            buf,
        })
    }

    fn epoch(&self) -> &[u8] {
        &self.buf[..self.epoch_end]
    }

    fn name(&self) -> &[u8] {
        &self.buf[self.name.clone()]
    }
}

/// Parses a plain decimal `u64` (what the script writes).
pub(crate) fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in b {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// The redis-rs push hook of one connection: dispatches messages, reports the disconnect.
struct PushHandler {
    feed: Arc<Feed>,
    generation: u64,
}

impl AsyncPushSender for PushHandler {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            PushKind::Message | PushKind::SMessage => self.feed.on_message(info.data),
            PushKind::Disconnection
                if self.feed.generation.load(Ordering::Acquire) == self.generation =>
            {
                self.feed.connected.store(false, Ordering::Release);
                self.feed.disconnected.notify_one();
            }
            _ => {}
        }
        Ok(())
    }
}

/// Settings of the control task.
#[derive(Clone, Debug)]
pub(crate) struct FeedSettings {
    pub(crate) mode: PubSubMode,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) max_reconnect_delay: Duration,
    pub(crate) ping_interval: Duration,
    /// `CLIENT SETNAME` of the Pub/Sub connection: `<key prefix>feed`.
    pub(crate) client_name: String,
}

/// Creates the feed, connects its Pub/Sub connection (failing when Redis cannot be reached) and
/// spawns the control task, which ends when `cancel` fires.
pub(crate) async fn start(
    client: Client,
    settings: FeedSettings,
    cancel: CancellationToken,
) -> redis::RedisResult<Arc<Feed>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let feed = Arc::new(Feed {
        topics: RwLock::new(HashMap::new()),
        control: tx,
        next_sink: AtomicU64::new(0),
        epoch: Mutex::new(None),
        generation: AtomicU64::new(0),
        disconnected: Notify::new(),
        connected: AtomicBool::new(false),
    });
    let conn = connect(&client, &feed, &settings).await?;
    feed.connected.store(true, Ordering::Release);
    let task = ControlTask {
        feed: feed.clone(),
        client,
        settings,
        rx,
        cancel,
    };
    tokio::spawn(task.run(conn));
    Ok(feed)
}

/// Opens a RESP3 connection whose pushes go to a fresh [`PushHandler`].
async fn connect(
    client: &Client,
    feed: &Arc<Feed>,
    settings: &FeedSettings,
) -> redis::RedisResult<MultiplexedConnection> {
    let generation = feed.generation.fetch_add(1, Ordering::AcqRel) + 1;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.command_timeout))
        .set_push_sender(PushHandler {
            feed: feed.clone(),
            generation,
        });
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    // Named, so an operator (or a test) can tell this instance's live feed in CLIENT LIST.
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(&settings.client_name)
        .exec_async(&mut conn)
        .await?;
    Ok(conn)
}

struct ControlTask {
    feed: Arc<Feed>,
    client: Client,
    settings: FeedSettings,
    rx: mpsc::UnboundedReceiver<Control>,
    cancel: CancellationToken,
}

/// Why the control loop stopped using a connection.
enum Stop {
    Lost,
    Shutdown,
}

impl ControlTask {
    async fn run(mut self, first: MultiplexedConnection) {
        let mut conn = Some(first);
        // Requests that could not be answered because the connection failed while serving them:
        // answered after the next successful re-subscription.
        let mut pending: Vec<Control> = Vec::new();
        let mut subscribed: HashSet<Box<[u8]>> = HashSet::new();
        let mut reconnected = false;
        loop {
            let mut c = match conn.take() {
                Some(c) => c,
                None => match self.reconnect().await {
                    Some(c) => c,
                    None => return,
                },
            };
            if reconnected {
                // Subscribe every channel that has local sinks again, then tell the sinks.
                subscribed.clear();
                let entries: Vec<Arc<TopicSinks>> =
                    read(&self.feed.topics).values().cloned().collect();
                for t in &entries {
                    t.resyncing.store(true, Ordering::Release);
                }
                let mut ok = true;
                for ch in entries.iter().map(|t| t.channel.clone()) {
                    if let Err(error) = self.subscribe(&mut c, &ch, true).await {
                        tracing::warn!(%error, "Re-subscribing to Redis failed; reconnecting.");
                        ok = false;
                        break;
                    }
                    subscribed.insert(ch);
                }
                if !ok {
                    continue;
                }
                self.feed.connected.store(true, Ordering::Release);
                let n = self.feed.interrupt_live(true);
                tracing::info!(
                    sinks = n,
                    "Reconnected to Redis Pub/Sub; live feeds re-synchronise."
                );
            }
            reconnected = true;
            for req in std::mem::take(&mut pending) {
                self.answer(req, &subscribed);
            }
            match self.serve(&mut c, &mut subscribed, &mut pending).await {
                Stop::Shutdown => return,
                Stop::Lost => {
                    self.feed.connected.store(false, Ordering::Release);
                    tracing::warn!("Lost the Redis Pub/Sub connection; reconnecting.");
                }
            }
        }
    }

    /// Serves requests on a live connection until it is lost or the broker shuts down.
    async fn serve(
        &mut self,
        c: &mut MultiplexedConnection,
        subscribed: &mut HashSet<Box<[u8]>>,
        pending: &mut Vec<Control>,
    ) -> Stop {
        let mut ping = tokio::time::interval(self.settings.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return Stop::Shutdown,
                () = self.feed.disconnected.notified() => return Stop::Lost,
                _ = ping.tick() => {
                    let r = tokio::time::timeout(
                        self.settings.command_timeout,
                        redis::cmd("PING").query_async::<Value>(c),
                    ).await;
                    if !matches!(r, Ok(Ok(_))) {
                        return Stop::Lost;
                    }
                }
                req = self.rx.recv() => {
                    let Some(req) = req else { return Stop::Shutdown };
                    let Control::Sync { channel, .. } = &req;
                    let want = read(&self.feed.topics).contains_key(channel);
                    let have = subscribed.contains(channel);
                    if want != have {
                        if let Err(error) = self.subscribe(c, channel, want).await {
                            tracing::warn!(%error, "A Redis (un)subscribe failed; reconnecting.");
                            pending.push(req);
                            return Stop::Lost;
                        }
                        if want {
                            subscribed.insert(channel.clone());
                        } else {
                            subscribed.remove(channel);
                        }
                    }
                    self.answer(req, subscribed);
                }
            }
        }
    }

    /// Marks the requesting sink live (its subscription is confirmed) and answers it.
    fn answer(&self, req: Control, subscribed: &HashSet<Box<[u8]>>) {
        let Control::Sync {
            channel,
            sink,
            reply,
        } = req;
        if let Some(id) = sink {
            if subscribed.contains(&channel) {
                if let Some(t) = read(&self.feed.topics).get(&channel) {
                    for s in read(&t.sinks).iter().filter(|s| s.id == id) {
                        s.live.store(true, Ordering::Release);
                    }
                }
            }
        }
        if let Some(reply) = reply {
            // The attach may have timed out and gone; nothing to tell then.
            let _ = reply.send(());
        }
    }

    async fn subscribe(
        &self,
        c: &mut MultiplexedConnection,
        channel: &[u8],
        on: bool,
    ) -> redis::RedisResult<()> {
        let name = if on {
            self.settings.mode.subscribe_cmd()
        } else {
            self.settings.mode.unsubscribe_cmd()
        };
        let mut cmd = redis::cmd(name);
        cmd.arg(channel);
        let fut = cmd.exec_async(c);
        match tokio::time::timeout(self.settings.command_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
        }
    }

    /// Connects again with a capped exponential backoff; `None` on shutdown.
    async fn reconnect(&mut self) -> Option<MultiplexedConnection> {
        let mut delay = MIN_RECONNECT_DELAY;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            match connect(&self.client, &self.feed, &self.settings).await {
                Ok(c) => return Some(c),
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64,
                        "Reconnecting to Redis Pub/Sub failed.");
                    delay = (delay * 2).min(self.settings.max_reconnect_delay);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_parsing() {
        let p = Payload::parse(Bytes::from_static(b"ep1\n42\n1700\nmessage\n{\"a\":\n1}")).unwrap();
        assert_eq!(p.epoch(), b"ep1");
        assert_eq!(p.offset, 42);
        assert_eq!(p.time_ms, 1700);
        assert_eq!(p.name(), b"message");
        assert_eq!(&p.data[..], b"{\"a\":\n1}");
        let p = Payload::parse(Bytes::from_static(b"e\n1\n2\nn\n")).unwrap();
        assert!(p.data.is_empty());
        for bad in [
            &b""[..],
            b"e\n1\n2\nn",
            b"e\nx\n2\nn\n{}",
            b"e\n1\n-2\nn\n{}",
        ] {
            assert!(
                Payload::parse(Bytes::copy_from_slice(bad)).is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn u64_parsing() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"+1"), None);
    }
}
