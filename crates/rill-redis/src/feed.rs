//! Live fan-out: Pub/Sub connections (one, or one per cluster primary), one subscription per
//! topic with local sinks.
//!
//! The shared [`Feed`] maps each subscribed channel to its local sinks. Redis messages are
//! dispatched to the sinks right in the connection's reader (the `AsyncPushSender` hook of
//! redis-rs): no extra task hop and no queue per message, and the `Arc<Event>` is built once per
//! message and shared by every local sink. `Sink::deliver` never blocks, so the reader never
//! stalls.
//!
//! Each connection is a [`Link`] owned by a control task: it (un)subscribes channels as sinks
//! come and go (in the order the requests were made, so a detach racing an attach ends in the
//! right state), pings the connection, and on loss reconnects with a capped backoff, subscribes
//! its channels again and then tells every sink whose feed was cut (`Sink::interrupted`), so the
//! hub re-reads the log.
//!
//! On one Redis there is one link. On a cluster (sharded Pub/Sub: a channel lives on the
//! primary of its slot) there is one link per primary, and a router task keeps the map of slots
//! to primaries: it reads `CLUSTER SLOTS` at start, on a link's loss, on a `MOVED` answer, when
//! a primary ends a subscription by itself (its slot moved: a failover, a resharding), and every
//! [`TOPOLOGY_REFRESH`]. A topic whose slot moved is subscribed on its new primary and its sinks
//! are told, as after a reconnect.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{AsyncPushSender, ConnectionLike, MultiplexedConnection, SendError};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, PushInfo, PushKind, Value,
};
use rill_core::{Epoch, Event, Sink, Topic};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::keys::SLOTS;

/// The first pause between reconnect attempts; it doubles up to the configured cap.
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(50);

/// How often the router re-reads the cluster's slot map even when nothing asked for it, and
/// makes sure every topic is subscribed on the primary of its slot.
const TOPOLOGY_REFRESH: Duration = Duration::from_secs(10);

/// The least time between two slot map reads (a burst of `MOVED` answers reads it once).
const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);

/// How many times a subscription request is sent on to another primary before it is given up
/// (the topology is inconsistent for that long; the periodic sweep tries again later).
const MAX_HOPS: u8 = 20;

/// How many channels one batch of the re-subscription after a reconnect holds. A batch costs
/// one round trip instead of one per channel (hundreds of topics re-subscribed one by one took
/// over 30 s on a loaded machine). Bounded so that a batch's replies come well within the
/// command timeout, and a failure costs one batch's work.
const RESUBSCRIBE_BATCH: usize = 256;

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
    /// The topic's epoch group: 0 on one Redis (one epoch), its slot on a cluster. Also the
    /// slot that routes its channel.
    group: u16,
    /// A `RwLock` because delivery (the reader, per message) only reads, and attach/detach are
    /// rare by comparison. std's lock: it is never held across an await.
    sinks: RwLock<Vec<SinkSlot>>,
    /// The last event name seen, reused while names repeat (they nearly always do: a chat
    /// streams `message.delta` after `message.delta`), to save an allocation per message.
    last_name: Mutex<Option<Arc<str>>>,
    /// Set while the topic is re-subscribed after a connection loss (or moved to another
    /// primary), until its sinks were told (`Sink::interrupted`): messages in between are
    /// dropped, not delivered. They are in the log, and the hub's re-read (which starts after
    /// `interrupted`) finds them; delivering them would hand a sink an event past a gap it has
    /// not been told about yet.
    resyncing: AtomicBool,
}

/// What a link's control task is asked to do.
enum Control {
    /// Make the subscription of `channel` on this link match whether it has local sinks routed
    /// here, then mark sink `sink` live and answer. `hops`: how often it was sent on already.
    Sync {
        channel: Box<[u8]>,
        sink: Option<u64>,
        reply: Option<oneshot::Sender<()>>,
        hops: u8,
    },
    /// The channel's slot is now served by this link's primary: subscribe it here, then tell
    /// its live sinks (events may have gone by while it moved).
    Moved { channel: Box<[u8]>, hops: u8 },
    /// The server ended this subscription by itself (cluster: its slot left this primary).
    Dropped { channel: Box<[u8]> },
}

/// One Pub/Sub connection and the channel to its control task.
pub(crate) struct Link {
    /// The node, `host:port` (one Redis: its URL's).
    name: Arc<str>,
    control: mpsc::UnboundedSender<Control>,
    /// Which connection is current: a disconnect notice from an older one is ignored.
    generation: AtomicU64,
    disconnected: Notify,
    /// Whether the connection is up and subscribed.
    connected: AtomicBool,
    /// Stops the control task (the broker is dropped, or the node left the cluster's primaries).
    cancel: CancellationToken,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// Where channels are subscribed.
enum Routes {
    /// One Redis: one link for every channel.
    Single(Arc<Link>),
    /// A cluster: the link of each slot's primary.
    Cluster(Arc<Router>),
}

/// State shared by the broker, the attachments, the reader hooks and the control tasks.
pub(crate) struct Feed {
    topics: RwLock<HashMap<Box<[u8]>, Arc<TopicSinks>>>,
    next_sink: AtomicU64,
    /// The epoch of each group as last seen, by a message or learnt when the first sink of the
    /// group attached; a message of another epoch means Redis lost the group's data under us
    /// (a flush, a restart or failover quicker than our ping noticed).
    epochs: Mutex<HashMap<u16, Epoch>>,
    routes: Routes,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("connected", &self.is_connected())
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
            // means the link is gone, and its connection with it.
            if let Some(link) = self.feed.link_for(self.topic.group) {
                let _ = link.control.send(Control::Sync {
                    channel: self.topic.channel.clone(),
                    sink: None,
                    reply: None,
                    hops: 0,
                });
            }
        }
    }
}

impl Feed {
    /// Adds `sink` to `topic` (epoch group `group`) and waits until Redis confirmed the
    /// subscription that feeds it. `Err(())` when that did not happen within `timeout` (Redis,
    /// or the topic's primary, away).
    pub(crate) async fn attach(
        self: &Arc<Self>,
        topic: &Topic,
        group: u16,
        channel: String,
        sink: Arc<dyn Sink>,
        timeout: Duration,
    ) -> Result<Detach, ()> {
        let deadline = tokio::time::Instant::now() + timeout;
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
                        group,
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
        let link = loop {
            if let Some(link) = self.link_for(group) {
                break link;
            }
            // A slot no primary serves yet (a failover in progress): ask for the map again.
            if let Routes::Cluster(router) = &self.routes {
                router.refresh();
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (tx, rx) = oneshot::channel();
        link.control
            .send(Control::Sync {
                channel,
                sink: Some(id),
                reply: Some(tx),
                hops: 0,
            })
            .map_err(|_| ())?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(())) => Ok(guard),
            _ => Err(()),
        }
    }

    /// The link that subscribes the channels of `group`.
    fn link_for(&self, group: u16) -> Option<Arc<Link>> {
        match &self.routes {
            Routes::Single(link) => Some(link.clone()),
            Routes::Cluster(router) => router.link_for(group),
        }
    }

    /// Whether `channel` has local sinks and is routed to `link`.
    fn wants(&self, link: &Link, channel: &[u8]) -> bool {
        let Some(topic) = read(&self.topics).get(channel).cloned() else {
            return false;
        };
        self.routed_here(link, &topic)
    }

    fn routed_here(&self, link: &Link, topic: &TopicSinks) -> bool {
        match &self.routes {
            Routes::Single(_) => true,
            Routes::Cluster(router) => router
                .link_for(topic.group)
                .is_some_and(|l| std::ptr::eq(&*l, link)),
        }
    }

    /// Live events flow: the connection is up (one Redis), or the connection to the primary of
    /// `home` (a cluster: the slot of the deployment's home epoch; the other primaries' links
    /// fail and recover on their own, and only their topics notice).
    pub(crate) fn is_connected_for(&self, home: u16) -> bool {
        self.link_for(home)
            .is_some_and(|l| l.connected.load(Ordering::Acquire))
    }

    /// Every link is up (for the `Debug` output and tests).
    pub(crate) fn is_connected(&self) -> bool {
        match &self.routes {
            Routes::Single(link) => link.connected.load(Ordering::Acquire),
            Routes::Cluster(router) => read(&router.links)
                .values()
                .all(|l| l.connected.load(Ordering::Acquire)),
        }
    }

    /// Whether the epoch of `group` is known (learnt or seen).
    pub(crate) fn knows_epoch(&self, group: u16) -> bool {
        lock(&self.epochs).contains_key(&group)
    }

    /// Records the epoch of `group` read when its first sink attached (after the subscription
    /// was confirmed, before the hub reads the log), unless a message told one meanwhile. From
    /// then on a message of another epoch tells the group's sinks.
    pub(crate) fn learn_epoch(&self, group: u16, epoch: Epoch) {
        lock(&self.epochs).entry(group).or_insert(epoch);
    }

    /// Every sink covered by a confirmed subscription, of the topics `which` selects, is told
    /// its feed was interrupted; after a re-subscription (`resynced`), those topics' messages
    /// flow again. The write lock excludes delivery for the topic meanwhile, so every message
    /// delivered after this comes after `interrupted()`.
    fn interrupt(&self, which: impl Fn(&TopicSinks) -> bool, resynced: bool) -> usize {
        let topics: Vec<Arc<TopicSinks>> = read(&self.topics)
            .values()
            .filter(|t| which(t))
            .cloned()
            .collect();
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
            let mut known = lock(&self.epochs);
            match known.get(&topic.group) {
                Some(e) if e.as_str().as_bytes() == msg.epoch() => false,
                previous => {
                    let changed = previous.is_some();
                    if let Some(new) = std::str::from_utf8(msg.epoch()).ok().and_then(Epoch::new) {
                        known.insert(topic.group, new);
                    }
                    changed
                }
            }
        };
        if epoch_changed {
            // The logs were lost under us: the group's local feeds must re-read and reset.
            tracing::warn!(
                group = topic.group,
                "The Redis epoch changed (data lost); interrupting the live feeds of its topics."
            );
            let group = topic.group;
            self.interrupt(|t| t.group == group, false);
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

/// The redis-rs push hook of one connection: dispatches messages, reports the disconnect and
/// subscriptions the server ended by itself.
struct PushHandler {
    feed: Arc<Feed>,
    link: Arc<Link>,
    generation: u64,
}

impl AsyncPushSender for PushHandler {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            PushKind::Message | PushKind::SMessage => self.feed.on_message(info.data),
            PushKind::SUnsubscribe | PushKind::Unsubscribe => {
                // Our own unsubscribes come for channels no longer wanted here; one for a
                // channel still wanted was the server's doing (its slot moved away).
                if let Some(Value::BulkString(channel)) = info.data.first()
                    && self.feed.wants(&self.link, channel)
                {
                    let _ = self.link.control.send(Control::Dropped {
                        channel: channel.clone().into_boxed_slice(),
                    });
                }
            }
            PushKind::Disconnection
                if self.link.generation.load(Ordering::Acquire) == self.generation =>
            {
                self.link.connected.store(false, Ordering::Release);
                self.link.disconnected.notify_one();
            }
            _ => {}
        }
        Ok(())
    }
}

/// Settings of the control tasks.
#[derive(Clone, Debug)]
pub(crate) struct FeedSettings {
    pub(crate) mode: PubSubMode,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) max_reconnect_delay: Duration,
    pub(crate) ping_interval: Duration,
    /// `CLIENT SETNAME` of the Pub/Sub connections: `<key prefix>feed`.
    pub(crate) client_name: String,
}

/// Creates the feed of one Redis, connects its Pub/Sub connection (failing when Redis cannot
/// be reached) and spawns the control task, which ends when `cancel` fires.
pub(crate) async fn start(
    client: Client,
    settings: FeedSettings,
    cancel: CancellationToken,
) -> redis::RedisResult<Arc<Feed>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let link = Arc::new(Link {
        name: Arc::from(node_name(client.get_connection_info())),
        control: tx,
        generation: AtomicU64::new(0),
        disconnected: Notify::new(),
        connected: AtomicBool::new(false),
        cancel,
    });
    let feed = Arc::new(Feed {
        topics: RwLock::new(HashMap::new()),
        next_sink: AtomicU64::new(0),
        epochs: Mutex::new(HashMap::new()),
        routes: Routes::Single(link.clone()),
    });
    let conn = connect(&client, &feed, &link, &settings).await?;
    link.connected.store(true, Ordering::Release);
    let task = ControlTask {
        feed: feed.clone(),
        link,
        client,
        settings,
        rx,
    };
    tokio::spawn(task.run(Some(conn)));
    Ok(feed)
}

fn node_name(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        ConnectionAddr::Unix(path) => path.display().to_string(),
        other => format!("{other:?}"),
    }
}

/// Opens a RESP3 connection whose pushes go to a fresh [`PushHandler`].
async fn connect(
    client: &Client,
    feed: &Arc<Feed>,
    link: &Arc<Link>,
    settings: &FeedSettings,
) -> redis::RedisResult<MultiplexedConnection> {
    let generation = link.generation.fetch_add(1, Ordering::AcqRel) + 1;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.command_timeout))
        .set_push_sender(PushHandler {
            feed: feed.clone(),
            link: link.clone(),
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
    link: Arc<Link>,
    client: Client,
    settings: FeedSettings,
    rx: mpsc::UnboundedReceiver<Control>,
}

/// Why the control loop stopped using a connection.
enum Stop {
    Lost,
    Shutdown,
}

/// How a (un)subscribe went.
enum Subscribed {
    Done,
    /// The connection failed (or timed out): reconnect.
    Lost(redis::RedisError),
    /// The server refused it (cluster: `MOVED`, `CLUSTERDOWN`): the map is stale.
    Refused(redis::RedisError),
}

impl Subscribed {
    /// A failed (un)subscribe: refused when the server's answer says the slot map is stale,
    /// lost otherwise.
    fn failed(e: redis::RedisError) -> Subscribed {
        if e.redirect_node().is_some() || e.code() == Some("CLUSTERDOWN") {
            Subscribed::Refused(e)
        } else {
            Subscribed::Lost(e)
        }
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "timed out"))
}

impl ControlTask {
    async fn run(mut self, first: Option<MultiplexedConnection>) {
        let mut conn = first;
        // Requests that could not be answered because the connection failed while serving them:
        // answered after the next successful re-subscription.
        let mut pending: Vec<Control> = Vec::new();
        let mut subscribed: HashSet<Box<[u8]>> = HashSet::new();
        // A connection made by this task (not handed in) is a re-connection.
        let mut reconnected = conn.is_none();
        loop {
            let mut c = match conn.take() {
                Some(c) => c,
                None => match self.reconnect().await {
                    Some(c) => c,
                    None => return,
                },
            };
            if reconnected {
                // Subscribe every channel that has local sinks routed here again, then tell
                // the sinks.
                subscribed.clear();
                let entries: Vec<Arc<TopicSinks>> = read(&self.feed.topics)
                    .values()
                    .filter(|t| self.feed.routed_here(&self.link, t))
                    .cloned()
                    .collect();
                for t in &entries {
                    t.resyncing.store(true, Ordering::Release);
                }
                let channels: Vec<Box<[u8]>> = entries.iter().map(|t| t.channel.clone()).collect();
                if !self.resubscribe(&mut c, &channels, &mut subscribed).await {
                    continue;
                }
                self.link.connected.store(true, Ordering::Release);
                let (feed, link) = (&self.feed, &self.link);
                let n = feed.interrupt(|t| feed.routed_here(link, t), true);
                tracing::info!(
                    node = %self.link.name,
                    channels = subscribed.len(),
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
                    self.link.connected.store(false, Ordering::Release);
                    tracing::warn!(node = %self.link.name,
                        "Lost the Redis Pub/Sub connection; reconnecting.");
                    if let Routes::Cluster(router) = &self.feed.routes {
                        // A primary gone may mean a failover: read the map again.
                        router.refresh();
                    }
                }
            }
        }
    }

    /// Subscribes `channels` again after a reconnect, a batch per round trip, adding them to
    /// `subscribed`; a refused one is re-routed. `false` when the connection failed meanwhile
    /// (the caller reconnects and starts over).
    async fn resubscribe(
        &self,
        c: &mut MultiplexedConnection,
        channels: &[Box<[u8]>],
        subscribed: &mut HashSet<Box<[u8]>>,
    ) -> bool {
        for batch in channels.chunks(RESUBSCRIBE_BATCH) {
            let outcomes = match self.subscribe_batch(c, batch).await {
                Ok(outcomes) => outcomes,
                Err(error) => {
                    tracing::warn!(%error, "Re-subscribing to Redis failed; reconnecting.");
                    return false;
                }
            };
            // In the channels' order, as one subscription after the other would go.
            for (ch, outcome) in batch.iter().zip(outcomes) {
                match outcome {
                    Subscribed::Done => {
                        subscribed.insert(ch.clone());
                    }
                    Subscribed::Refused(error) => {
                        // Its slot is elsewhere now: the router moves it.
                        tracing::info!(%error, "A re-subscription was refused; re-routing.");
                        self.reroute(Control::Moved {
                            channel: ch.clone(),
                            hops: 0,
                        });
                    }
                    Subscribed::Lost(error) => {
                        tracing::warn!(%error, "Re-subscribing to Redis failed; reconnecting.");
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Serves requests on a live connection until it is lost or the link shuts down.
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
                () = self.link.cancel.cancelled() => return Stop::Shutdown,
                () = self.link.disconnected.notified() => return Stop::Lost,
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
                    if let Some(stop) = self.handle(req, c, subscribed, pending).await {
                        return stop;
                    }
                }
            }
        }
    }

    /// One request on a live connection; `Some` when the connection must be given up.
    async fn handle(
        &mut self,
        req: Control,
        c: &mut MultiplexedConnection,
        subscribed: &mut HashSet<Box<[u8]>>,
        pending: &mut Vec<Control>,
    ) -> Option<Stop> {
        let channel = match &req {
            Control::Sync { channel, .. } | Control::Moved { channel, .. } => channel.clone(),
            Control::Dropped { channel } => {
                // Not subscribed anymore; its sinks may miss events until it is subscribed
                // where its slot now lives: hold its messages back, and let the router move it.
                subscribed.remove(channel);
                if let Some(t) = read(&self.feed.topics).get(channel) {
                    t.resyncing.store(true, Ordering::Release);
                }
                self.reroute(Control::Moved {
                    channel: channel.clone(),
                    hops: 0,
                });
                return None;
            }
        };
        let want = self.feed.wants(&self.link, &channel);
        let have = subscribed.contains(&channel);
        if want != have {
            match self.subscribe(c, &channel, want).await {
                Subscribed::Done => {
                    if want {
                        subscribed.insert(channel);
                    } else {
                        subscribed.remove(&channel);
                    }
                }
                Subscribed::Refused(error) if want => {
                    tracing::info!(%error, node = %self.link.name,
                        "A subscription was refused; re-routing it.");
                    self.reroute(req);
                    return None;
                }
                Subscribed::Refused(_) => {
                    // An unsubscribe the server refused: it holds no such subscription.
                    subscribed.remove(&channel);
                }
                Subscribed::Lost(error) => {
                    tracing::warn!(%error, "A Redis (un)subscribe failed; reconnecting.");
                    pending.push(req);
                    return Some(Stop::Lost);
                }
            }
        }
        self.answer(req, subscribed);
        None
    }

    /// Hands a request to the router (cluster), which reads the slot map and sends it to the
    /// link of the channel's primary.
    fn reroute(&self, req: Control) {
        match &self.feed.routes {
            Routes::Cluster(router) => router.reroute(req),
            Routes::Single(_) => {
                // One Redis refused a subscription: nothing to re-route to. The caller's attach
                // times out (its reply is dropped here) and fails as unavailable.
                tracing::warn!("Redis refused a subscription.");
            }
        }
    }

    /// Marks the requesting sink live (its subscription is confirmed) and answers it; after a
    /// move, tells the topic's live sinks.
    fn answer(&self, req: Control, subscribed: &HashSet<Box<[u8]>>) {
        match req {
            Control::Sync {
                channel,
                sink,
                reply,
                ..
            } => {
                if let Some(id) = sink
                    && subscribed.contains(&channel)
                    && let Some(t) = read(&self.feed.topics).get(&channel)
                {
                    for s in read(&t.sinks).iter().filter(|s| s.id == id) {
                        s.live.store(true, Ordering::Release);
                    }
                }
                if let Some(reply) = reply {
                    // The attach may have timed out and gone; nothing to tell then.
                    let _ = reply.send(());
                }
            }
            // Not subscribed here: the topic is gone meanwhile, or routed elsewhere again (that
            // link tells its sinks).
            Control::Moved { channel, .. } => {
                if subscribed.contains(&channel) {
                    let n = self.feed.interrupt(|t| *t.channel == *channel, true);
                    tracing::info!(node = %self.link.name, sinks = n,
                        "A topic's slot moved; its live feeds re-synchronise.");
                }
            }
            Control::Dropped { .. } => {}
        }
    }

    async fn subscribe(
        &self,
        c: &mut MultiplexedConnection,
        channel: &[u8],
        on: bool,
    ) -> Subscribed {
        let name = if on {
            self.settings.mode.subscribe_cmd()
        } else {
            self.settings.mode.unsubscribe_cmd()
        };
        let mut cmd = redis::cmd(name);
        cmd.arg(channel);
        let fut = cmd.exec_async(c);
        match tokio::time::timeout(self.settings.command_timeout, fut).await {
            Ok(Ok(())) => Subscribed::Done,
            Ok(Err(e)) => Subscribed::failed(e),
            Err(_) => Subscribed::Lost(timed_out()),
        }
    }

    /// Subscribes `channels` in one round trip and gives each one's outcome, in their order;
    /// `Err` when the connection failed or timed out (every outcome unknown).
    ///
    /// A pipeline of one (S)SUBSCRIBE per channel, not one command naming them all: the
    /// multiplexed connection pairs each request with one reply, but a SUBSCRIBE of n channels
    /// is answered by n confirmations, and redis-rs (1.2) hands the surplus ones to whatever
    /// requests come next on the connection (answering them early, and theirs later). A
    /// pipeline expecting one reply per command keeps the pairing exact, and needs no grouping
    /// by slot (an SSUBSCRIBE of several channels must name one slot's, and is refused as a
    /// whole): each refusal names its channel, as with one subscription at a time.
    async fn subscribe_batch(
        &self,
        c: &mut MultiplexedConnection,
        channels: &[Box<[u8]>],
    ) -> redis::RedisResult<Vec<Subscribed>> {
        let mut pipe = redis::pipe();
        for ch in channels {
            pipe.cmd(self.settings.mode.subscribe_cmd()).arg(&ch[..]);
        }
        let fut = c.req_packed_commands(&pipe, 0, channels.len());
        let replies = tokio::time::timeout(self.settings.command_timeout, fut)
            .await
            .map_err(|_| timed_out())??;
        if replies.len() != channels.len() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "a batch of subscriptions got another number of replies",
            )));
        }
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                Value::ServerError(e) => Subscribed::failed(e.into()),
                // The confirmation (what `exec_async` takes as success, too).
                _ => Subscribed::Done,
            })
            .collect())
    }

    /// Connects again with a capped exponential backoff; `None` on shutdown.
    async fn reconnect(&mut self) -> Option<MultiplexedConnection> {
        let mut delay = MIN_RECONNECT_DELAY;
        loop {
            tokio::select! {
                () = self.link.cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            match connect(&self.client, &self.feed, &self.link, &self.settings).await {
                Ok(c) => return Some(c),
                Err(error) => {
                    tracing::warn!(%error, node = %self.link.name,
                        retry_in_ms = delay.as_millis() as u64,
                        "Reconnecting to Redis Pub/Sub failed.");
                    if let Routes::Cluster(router) = &self.feed.routes {
                        router.refresh();
                    }
                    delay = (delay * 2).min(self.settings.max_reconnect_delay);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster: one link per primary, routed by slot.

/// What the router task is asked to do.
enum RouterMsg {
    /// Read the slot map again (debounced).
    Refresh,
    /// Read the slot map, then send this request to the link of its channel's slot.
    Reroute(Control),
}

/// The slot map and the links of a cluster's primaries.
pub(crate) struct Router {
    /// The link of each slot's primary; `None`: no primary known for it.
    slots: RwLock<Vec<Option<Arc<Link>>>>,
    /// The links, by node (`host:port`).
    links: RwLock<HashMap<Arc<str>, Arc<Link>>>,
    requests: mpsc::UnboundedSender<RouterMsg>,
}

impl Router {
    fn link_for(&self, slot: u16) -> Option<Arc<Link>> {
        read(&self.slots).get(usize::from(slot)).cloned().flatten()
    }

    fn refresh(&self) {
        let _ = self.requests.send(RouterMsg::Refresh);
    }

    fn reroute(&self, req: Control) {
        let _ = self.requests.send(RouterMsg::Reroute(req));
    }
}

/// What a cluster feed needs to open connections to primaries.
pub(crate) struct ClusterNodes {
    /// The seed's connection settings (auth, TLS with its CA, RESP3); each primary's client is
    /// this with the primary's host and port.
    pub(crate) template: ConnectionInfo,
    /// The command connection, to read `CLUSTER SLOTS`.
    pub(crate) commands: ClusterConnection,
}

impl ClusterNodes {
    fn client(&self, host: &str, port: u16) -> redis::RedisResult<Client> {
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        Client::open(self.template.clone().set_addr(addr))
    }

    /// The primaries and their slot ranges, from `CLUSTER SLOTS`.
    async fn slot_map(
        &self,
        timeout: Duration,
    ) -> redis::RedisResult<Vec<(u16, u16, String, u16)>> {
        let mut conn = self.commands.clone();
        let value = tokio::time::timeout(
            timeout,
            conn.route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            ),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "CLUSTER SLOTS timed out"))
        })??;
        parse_slots(value).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "CLUSTER SLOTS answered in an unexpected form",
            ))
        })
    }
}

/// `[[start, end, [host, port, id, ...], replicas...], ...]` into `(start, end, host, port)`.
fn parse_slots(value: Value) -> Option<Vec<(u16, u16, String, u16)>> {
    let Value::Array(ranges) = value else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(i) => u16::try_from(*i).ok(),
        _ => None,
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else {
            return None;
        };
        let (start, end) = (int(parts.first()?)?, int(parts.get(1)?)?);
        let Value::Array(primary) = parts.get(2)? else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        out.push((start, end, host, int(primary.get(1)?)?));
    }
    Some(out)
}

/// Creates the feed of a cluster: reads the slot map, connects to every primary (failing when
/// one cannot be reached) and spawns the control tasks and the router, which end when `cancel`
/// fires.
pub(crate) async fn start_cluster(
    nodes: ClusterNodes,
    settings: FeedSettings,
    cancel: CancellationToken,
) -> redis::RedisResult<Arc<Feed>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Arc::new(Router {
        slots: RwLock::new(vec![None; usize::from(SLOTS)]),
        links: RwLock::new(HashMap::new()),
        requests: tx,
    });
    let feed = Arc::new(Feed {
        topics: RwLock::new(HashMap::new()),
        next_sink: AtomicU64::new(0),
        epochs: Mutex::new(HashMap::new()),
        routes: Routes::Cluster(router.clone()),
    });
    let task = RouterTask {
        feed: feed.clone(),
        router,
        nodes,
        settings,
        cancel,
        rx,
    };
    let map = task.nodes.slot_map(task.settings.command_timeout).await?;
    task.apply(map, true).await?;
    tokio::spawn(task.run());
    Ok(feed)
}

struct RouterTask {
    feed: Arc<Feed>,
    router: Arc<Router>,
    nodes: ClusterNodes,
    settings: FeedSettings,
    cancel: CancellationToken,
    rx: mpsc::UnboundedReceiver<RouterMsg>,
}

impl RouterTask {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TOPOLOGY_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let mut rerouted = Vec::new();
            let sweep = tokio::select! {
                () = self.cancel.cancelled() => return,
                _ = tick.tick() => true,
                msg = self.rx.recv() => {
                    let Some(msg) = msg else { return };
                    // Debounce: whatever else asked meanwhile is served by the same read.
                    tokio::time::sleep(MIN_REFRESH_GAP).await;
                    for m in std::iter::once(msg).chain(std::iter::from_fn(|| self.rx.try_recv().ok())) {
                        if let RouterMsg::Reroute(req) = m {
                            rerouted.push(req);
                        }
                    }
                    false
                }
            };
            match self.nodes.slot_map(self.settings.command_timeout).await {
                Ok(map) => {
                    // Connecting to a new primary happens in its link's task; this never fails.
                    let _ = self.apply(map, false).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "Reading the Redis Cluster slot map failed.");
                }
            }
            for req in rerouted {
                self.forward(req);
            }
            if sweep {
                self.sweep();
            }
        }
    }

    /// Installs a slot map: links for new primaries (connected here at start-up, so it fails
    /// fast; in their own task later), moves of topics whose slot changed primary, and the end
    /// of links that serve no slot anymore.
    async fn apply(
        &self,
        map: Vec<(u16, u16, String, u16)>,
        initial: bool,
    ) -> redis::RedisResult<()> {
        let mut new_slots: Vec<Option<Arc<Link>>> = vec![None; usize::from(SLOTS)];
        let mut used: HashSet<Arc<str>> = HashSet::new();
        for (start, end, host, port) in map {
            let name: Arc<str> = Arc::from(format!("{host}:{port}"));
            let existing = read(&self.router.links).get(&name).cloned();
            let link = match existing {
                Some(l) => l,
                None => {
                    let link = self.open_link(name.clone(), &host, port, initial).await?;
                    write(&self.router.links).insert(name.clone(), link.clone());
                    link
                }
            };
            used.insert(name);
            for s in start..=end.min(SLOTS - 1) {
                new_slots[usize::from(s)] = Some(link.clone());
            }
        }
        let old_slots = std::mem::replace(&mut *write(&self.router.slots), new_slots);
        // Topics whose slot changed primary: subscribe where they live now, and tell the sinks.
        let topics: Vec<Arc<TopicSinks>> = read(&self.feed.topics).values().cloned().collect();
        for t in topics {
            let before = old_slots.get(usize::from(t.group)).cloned().flatten();
            let after = self.router.link_for(t.group);
            let same = match (&before, &after) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            t.resyncing.store(true, Ordering::Release);
            if let Some(after) = &after {
                let _ = after.control.send(Control::Moved {
                    channel: t.channel.clone(),
                    hops: 0,
                });
            }
            if let Some(before) = &before {
                // Unsubscribes there if it still can (it no longer wants the channel).
                let _ = before.control.send(Control::Sync {
                    channel: t.channel.clone(),
                    sink: None,
                    reply: None,
                    hops: 0,
                });
            }
        }
        // Links that serve no slot anymore (a primary demoted, or gone) stop.
        let gone: Vec<Arc<Link>> = {
            let mut links = write(&self.router.links);
            let names: Vec<Arc<str>> = links
                .keys()
                .filter(|n| !used.contains(*n))
                .cloned()
                .collect();
            names.iter().filter_map(|n| links.remove(n)).collect()
        };
        for link in gone {
            tracing::info!(node = %link.name, "A Redis node serves no slot anymore; closing its Pub/Sub link.");
            link.cancel.cancel();
        }
        Ok(())
    }

    async fn open_link(
        &self,
        name: Arc<str>,
        host: &str,
        port: u16,
        connect_now: bool,
    ) -> redis::RedisResult<Arc<Link>> {
        let client = self.nodes.client(host, port)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            name,
            control: tx,
            generation: AtomicU64::new(0),
            disconnected: Notify::new(),
            connected: AtomicBool::new(false),
            cancel: self.cancel.child_token(),
        });
        let first = if connect_now {
            let c = connect(&client, &self.feed, &link, &self.settings).await?;
            link.connected.store(true, Ordering::Release);
            Some(c)
        } else {
            None
        };
        tracing::info!(node = %link.name, "Opening a Redis Cluster Pub/Sub link.");
        let task = ControlTask {
            feed: self.feed.clone(),
            link: link.clone(),
            client,
            settings: self.settings.clone(),
            rx,
        };
        tokio::spawn(task.run(first));
        Ok(link)
    }

    /// Sends a re-routed request to the link of its channel's slot, counting the hop.
    fn forward(&self, req: Control) {
        let (channel, hops) = match &req {
            Control::Sync { channel, hops, .. } | Control::Moved { channel, hops } => {
                (channel.clone(), *hops)
            }
            Control::Dropped { .. } => return,
        };
        if hops >= MAX_HOPS {
            // Given up for now (the attach waiting for it fails as unavailable); the sweep
            // tries a moved topic again.
            tracing::warn!(
                hops,
                "A subscription could not be placed on a primary; giving up for now."
            );
            return;
        }
        let group = read(&self.feed.topics).get(&channel).map(|t| t.group);
        let Some(link) = group.and_then(|g| self.router.link_for(g)) else {
            return;
        };
        let req = match req {
            Control::Sync {
                channel,
                sink,
                reply,
                hops,
            } => Control::Sync {
                channel,
                sink,
                reply,
                hops: hops + 1,
            },
            Control::Moved { channel, hops } => Control::Moved {
                channel,
                hops: hops + 1,
            },
            dropped @ Control::Dropped { .. } => dropped,
        };
        let _ = link.control.send(req);
    }

    /// Makes sure every topic is subscribed on its slot's primary: a topic still held back
    /// (`resyncing`) after a move that did not complete is moved again, the others are checked.
    fn sweep(&self) {
        let topics: Vec<Arc<TopicSinks>> = read(&self.feed.topics).values().cloned().collect();
        for t in topics {
            let Some(link) = self.router.link_for(t.group) else {
                continue;
            };
            let req = if t.resyncing.load(Ordering::Acquire) {
                Control::Moved {
                    channel: t.channel.clone(),
                    hops: 0,
                }
            } else {
                Control::Sync {
                    channel: t.channel.clone(),
                    sink: None,
                    reply: None,
                    hops: 0,
                }
            };
            let _ = link.control.send(req);
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

    #[test]
    fn slot_map_parsing() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let map = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![b("127.0.0.1"), Value::Int(7000), b("id0")]),
                Value::Array(vec![b("127.0.0.1"), Value::Int(7003), b("id3")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![b("10.0.0.2"), Value::Int(7001), b("id1")]),
            ]),
        ]);
        assert_eq!(
            parse_slots(map),
            Some(vec![
                (0, 5460, "127.0.0.1".to_owned(), 7000),
                (5461, 16383, "10.0.0.2".to_owned(), 7001),
            ])
        );
        assert_eq!(parse_slots(Value::Nil), None);
        assert_eq!(
            parse_slots(Value::Array(vec![Value::Array(vec![Value::Int(0)])])),
            None
        );
    }
}
