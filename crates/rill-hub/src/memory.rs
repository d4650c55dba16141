//! The in-process broker: per-topic logs in memory with retention, and live fan-out.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rill_core::{
    Attachment, Broker, BrokerError, Epoch, Event, LogRead, NewEvent, Published, Sink, Topic,
};

/// How much of each topic's log the in-process broker keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// At most this many events per topic (the oldest go first). At least 1.
    pub max_events: usize,
    /// Events older than this are dropped (checked on every publish and read of the topic, and
    /// by [`MemoryBroker::sweep`]).
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_events: 1000,
            max_age: Duration::from_secs(3600),
        }
    }
}

/// The number of shards of the topic map: enough that publishers to different topics rarely
/// meet on one lock, few enough to sweep quickly.
const SHARDS: usize = 32;

/// The default broker: every topic's log lives in this process and is lost when it exits (so
/// the epoch is random per process).
///
/// There is no global lock on the publish path: topics are spread over [`SHARDS`] shards whose
/// `RwLock` is only write-locked to add or remove a topic; a publish read-locks its shard and
/// then holds its topic's own mutex just for the append and the fan-out (sinks never block).
///
/// A topic's offset counter survives its events aging out, so offsets never restart within an
/// epoch: every topic ever published to costs a small entry (its name and counter, about 100
/// bytes) until the process exits. Topics that only had subscribers and never an event are
/// removed when their last subscriber leaves.
pub struct MemoryBroker {
    /// Itself, for attachment guards that forget idle topics after the last subscriber.
    me: Weak<MemoryBroker>,
    epoch: Epoch,
    retention: Retention,
    hasher: RandomState,
    // A hand-made sharded map rather than `dashmap`: removal of an idle topic must mark the
    // topic dead under its own lock while the shard is write-locked (see `TopicLog::dead`), which
    // is a few lines here and awkward through a generic concurrent map's API.
    shards: Box<[Shard]>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("epoch", &self.epoch)
            .field("retention", &self.retention)
            .finish()
    }
}

type Shard = RwLock<HashMap<Topic, Arc<TopicLog>>>;

struct TopicLog {
    // A std mutex, not tokio's: it is never held across an await, and the critical section
    // (append, prune, hand an `Arc` to each sink) is short.
    inner: Mutex<TopicInner>,
}

struct TopicInner {
    /// The offset of the newest event ever published (0: none yet).
    head: u64,
    /// Retained events, oldest first, with contiguous offsets ending at `head`.
    events: VecDeque<Arc<Event>>,
    sinks: Vec<(u64, Arc<dyn Sink>)>,
    next_sink_id: u64,
    /// Set when the topic was removed from its shard: whoever still holds this `Arc` must look
    /// the topic up again instead of writing into a log nobody will read.
    dead: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random_bits() -> u64 {
    // `RandomState` is seeded from the OS's randomness once per process (and per instance
    // afterwards): enough to make epochs of two processes differ, without an RNG dependency.
    let mut h = RandomState::new().build_hasher();
    now_ms().hash(&mut h);
    std::process::id().hash(&mut h);
    h.finish()
}

impl TopicInner {
    fn first(&self) -> u64 {
        self.events.front().map_or(self.head + 1, |e| e.offset)
    }

    fn prune(&mut self, retention: &Retention, now_ms: u64) {
        while self.events.len() > retention.max_events {
            self.events.pop_front();
        }
        let max_age = retention.max_age.as_millis() as u64;
        while self
            .events
            .front()
            .is_some_and(|e| now_ms.saturating_sub(e.time_ms) > max_age)
        {
            self.events.pop_front();
        }
    }
}

impl MemoryBroker {
    /// A broker with a fresh random epoch.
    pub fn new(retention: Retention) -> Arc<Self> {
        let retention = Retention {
            max_events: retention.max_events.max(1),
            ..retention
        };
        Arc::new_cyclic(|me| MemoryBroker {
            me: me.clone(),
            epoch: Epoch::from_random(random_bits()),
            retention,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        })
    }

    pub fn epoch_now(&self) -> Epoch {
        self.epoch.clone()
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    fn shard(&self, topic: &Topic) -> &Shard {
        let i = (self.hasher.hash_one(topic) as usize) % SHARDS;
        &self.shards[i]
    }

    /// The topic's log, created if missing.
    fn log(&self, topic: &Topic) -> Arc<TopicLog> {
        let shard = self.shard(topic);
        if let Some(log) = shard.read().unwrap_or_else(|e| e.into_inner()).get(topic) {
            return log.clone();
        }
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        map.entry(topic.clone())
            .or_insert_with(|| {
                Arc::new(TopicLog {
                    inner: Mutex::new(TopicInner {
                        head: 0,
                        events: VecDeque::new(),
                        sinks: Vec::new(),
                        next_sink_id: 0,
                        dead: false,
                    }),
                })
            })
            .clone()
    }

    /// The topic's log if it exists (reads never create topics).
    fn existing(&self, topic: &Topic) -> Option<Arc<TopicLog>> {
        self.shard(topic)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
    }

    /// Drops every event older than the retention age, in every topic. Publishing and reading
    /// a topic prune it too; this frees the memory of topics nobody touches any more. Call it
    /// now and then (the server does, once a minute).
    pub fn sweep(&self) {
        let now = now_ms();
        for shard in self.shards.iter() {
            let logs: Vec<Arc<TopicLog>> = shard
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for log in logs {
                log.inner
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .prune(&self.retention, now);
            }
        }
    }

    /// How many events are retained over all topics (for tests and metrics).
    pub fn retained_events(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .map(|log| {
                        log.inner
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .events
                            .len()
                    })
                    .sum::<usize>()
            })
            .sum()
    }

    fn detach(weak: &Weak<Self>, topic: &Topic, log: &Arc<TopicLog>, id: u64) {
        let idle = {
            let mut inner = log.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.sinks.retain(|(sid, _)| *sid != id);
            inner.sinks.is_empty() && inner.head == 0
        };
        // A topic that never had an event and has no subscriber left is forgotten, so that
        // subscribing to random names cannot grow memory forever.
        let Some(broker) = weak.upgrade().filter(|_| idle) else {
            return;
        };
        let mut map = broker
            .shard(topic)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !map
            .get(topic)
            .is_some_and(|current| Arc::ptr_eq(current, log))
        {
            return;
        }
        let mut inner = log.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.sinks.is_empty() && inner.head == 0 {
            inner.dead = true;
            drop(inner);
            map.remove(topic);
        }
    }

    /// Publishes without awaiting (the broker never waits for anything).
    pub fn publish_now(&self, topic: &Topic, event: NewEvent) -> Published {
        loop {
            let log = self.log(topic);
            let mut inner = log.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.dead {
                continue;
            }
            inner.head += 1;
            let time_ms = now_ms();
            let event = Arc::new(Event::new(
                topic.clone(),
                inner.head,
                event.name,
                event.data,
                time_ms,
            ));
            inner.events.push_back(event.clone());
            inner.prune(&self.retention, time_ms);
            for (_, sink) in &inner.sinks {
                sink.deliver(&event);
            }
            return Published {
                epoch: self.epoch.clone(),
                offset: inner.head,
            };
        }
    }

    /// Reads without awaiting.
    pub fn read_now(&self, topic: &Topic, after: u64, limit: usize) -> LogRead {
        let Some(log) = self.existing(topic) else {
            return LogRead {
                epoch: self.epoch.clone(),
                head: 0,
                first: 1,
                events: Vec::new(),
            };
        };
        let mut inner = log.inner.lock().unwrap_or_else(|e| e.into_inner());
        if limit > 0 {
            inner.prune(&self.retention, now_ms());
        }
        let first = inner.first();
        let skip = after
            .saturating_add(1)
            .saturating_sub(first)
            .min(inner.events.len() as u64) as usize;
        let events = inner
            .events
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect();
        LogRead {
            epoch: self.epoch.clone(),
            head: inner.head,
            first,
            events,
        }
    }

    /// Attaches a sink without awaiting.
    pub fn attach_now(&self, topic: &Topic, sink: Arc<dyn Sink>) -> Attachment {
        loop {
            let log = self.log(topic);
            let mut inner = log.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.dead {
                continue;
            }
            let id = inner.next_sink_id;
            inner.next_sink_id += 1;
            inner.sinks.push((id, sink));
            drop(inner);
            let guard = Detach {
                broker: self.me.clone(),
                topic: topic.clone(),
                log,
                id,
            };
            return Attachment::new(guard);
        }
    }
}

struct Detach {
    broker: Weak<MemoryBroker>,
    topic: Topic,
    log: Arc<TopicLog>,
    id: u64,
}

impl Drop for Detach {
    fn drop(&mut self) {
        MemoryBroker::detach(&self.broker, &self.topic, &self.log, self.id);
    }
}

#[async_trait::async_trait]
impl Broker for MemoryBroker {
    async fn epoch(&self) -> Result<Epoch, BrokerError> {
        Ok(self.epoch.clone())
    }

    async fn publish(&self, topic: &Topic, event: NewEvent) -> Result<Published, BrokerError> {
        Ok(self.publish_now(topic, event))
    }

    async fn read(&self, topic: &Topic, after: u64, limit: usize) -> Result<LogRead, BrokerError> {
        Ok(self.read_now(topic, after, limit))
    }

    async fn attach(&self, topic: &Topic, sink: Arc<dyn Sink>) -> Result<Attachment, BrokerError> {
        Ok(self.attach_now(topic, sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(data: &str) -> NewEvent {
        NewEvent {
            name: Arc::from("message"),
            data: Bytes::from(data.to_owned()),
        }
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<u64>>);
    impl Sink for Collect {
        fn deliver(&self, event: &Arc<Event>) {
            self.0.lock().unwrap().push(event.offset);
        }
        fn interrupted(&self) {}
    }

    #[test]
    fn offsets_retention_and_read() {
        let b = MemoryBroker::new(Retention {
            max_events: 3,
            max_age: Duration::from_secs(60),
        });
        let t = Topic::new("t").unwrap();
        assert_eq!(b.read_now(&t, 0, 10).head, 0);
        for i in 1..=5 {
            assert_eq!(b.publish_now(&t, ev("1")).offset, i);
        }
        let r = b.read_now(&t, 0, 10);
        assert_eq!((r.head, r.first), (5, 3));
        assert_eq!(
            r.events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let r = b.read_now(&t, 3, 1);
        assert_eq!(
            r.events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            vec![4]
        );
        assert!(b.read_now(&t, 5, 10).events.is_empty());
        assert!(b.read_now(&t, u64::MAX, 10).events.is_empty());
        let head_only = b.read_now(&t, u64::MAX, 0);
        assert_eq!((head_only.head, head_only.events.len()), (5, 0));
    }

    #[test]
    fn age_retention_keeps_the_counter() {
        let b = MemoryBroker::new(Retention {
            max_events: 100,
            max_age: Duration::ZERO,
        });
        let t = Topic::new("t").unwrap();
        b.publish_now(&t, ev("1"));
        b.publish_now(&t, ev("2"));
        // Events are at least 0 ms old; wait for the clock to move past them.
        let until = SystemTime::now() + Duration::from_millis(5);
        while SystemTime::now() <= until {
            std::hint::spin_loop();
        }
        b.sweep();
        assert_eq!(b.retained_events(), 0);
        let r = b.read_now(&t, 0, 10);
        assert_eq!((r.head, r.first, r.events.len()), (2, 3, 0));
        assert_eq!(b.publish_now(&t, ev("3")).offset, 3);
    }

    #[test]
    fn fan_out_and_detach_forgets_idle_topics() {
        let b = MemoryBroker::new(Retention::default());
        let t = Topic::new("t").unwrap();
        let sink = Arc::new(Collect::default());
        let a = b.attach_now(&t, sink.clone());
        b.publish_now(&t, ev("1"));
        b.publish_now(&t, ev("2"));
        drop(a);
        b.publish_now(&t, ev("3"));
        assert_eq!(*sink.0.lock().unwrap(), vec![1, 2]);

        let idle = Topic::new("idle").unwrap();
        let a = b.attach_now(&idle, sink.clone());
        assert!(b.existing(&idle).is_some());
        drop(a);
        assert!(b.existing(&idle).is_none());
        assert!(
            b.existing(&t).is_some(),
            "a topic with events keeps its counter"
        );
    }

    #[test]
    fn epochs_differ_between_brokers() {
        let a = MemoryBroker::new(Retention::default());
        let b = MemoryBroker::new(Retention::default());
        assert_ne!(a.epoch, b.epoch);
    }
}
