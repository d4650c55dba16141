//! Unit tests of the session logic: live start, resume, dedupe of the attach/read overlap, gap
//! filling, resets, slow consumers, preludes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rill_core::{
    Attachment, Broker, BrokerError, Epoch, Event, LogRead, NewEvent, Published, Sink, Topic,
};
use rill_sse::{Item, OwnedEvent, Parser};

use crate::{
    Hub, HubConfig, HubStream, MemoryBroker, PreludeEvent, Retention, Start, StreamRequest,
    WhenFull, Wire,
};

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

fn ev(data: &str) -> NewEvent {
    NewEvent {
        name: Arc::from("message"),
        data: Bytes::from(data.to_owned()),
    }
}

/// Reads chunks until `n` events were parsed (bounded in time).
async fn events(stream: &mut HubStream, parser: &mut Parser, n: usize) -> Vec<OwnedEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("timed out waiting for events")
            .expect("stream ended");
        parser.feed(&chunk, |item| {
            if let Item::Event(e) = item {
                out.push(OwnedEvent::from(e));
            }
        });
    }
    out
}

/// Nothing more is ready right now.
async fn assert_idle(stream: &mut HubStream) {
    assert!(
        tokio::time::timeout(Duration::from_millis(50), stream.next())
            .await
            .is_err()
    );
}

fn data(events: &[OwnedEvent]) -> Vec<String> {
    events.iter().map(|e| e.data.clone()).collect()
}

fn envelope(topic: &str, data: &str) -> String {
    format!(r#"{{"topic":"{topic}","data":{data}}}"#)
}

async fn publish(hub: &Hub, t: &Topic, range: std::ops::RangeInclusive<u32>) {
    for i in range {
        hub.publish(t, ev(&i.to_string())).await.unwrap();
    }
}

fn hub_with(retention: Retention, config: HubConfig) -> Hub {
    Hub::new(MemoryBroker::new(retention), config)
}

#[tokio::test]
async fn live_start_then_resume_exactly() {
    let hub = hub_with(Retention::default(), HubConfig::default());
    let t = topic("a");
    publish(&hub, &t, 1..=3).await;
    let mut s = hub
        .open(StreamRequest::topics(vec![t.clone()], Start::Live))
        .await
        .unwrap();
    publish(&hub, &t, 4..=6).await;
    let mut p = Parser::new();
    let got = events(&mut s, &mut p, 3).await;
    assert_eq!(data(&got), ["4", "5", "6"].map(|d| envelope("a", d)));
    assert_eq!(got[2].id, s.cursor());
    let at_5 = got[1].id.clone();
    drop(s);

    publish(&hub, &t, 7..=8).await;
    let mut s = hub
        .open(StreamRequest::topics(
            vec![t.clone()],
            Start::LastEventId(at_5),
        ))
        .await
        .unwrap();
    publish(&hub, &t, 9..=9).await;
    let got = events(&mut s, &mut Parser::new(), 4).await;
    assert_eq!(data(&got), ["6", "7", "8", "9"].map(|d| envelope("a", d)));
    assert_idle(&mut s).await;
    let m = hub.metrics().snapshot();
    assert_eq!((m.events_published, m.open_streams, m.resets), (9, 1, 0));
    assert_eq!(m.events_replayed + m.events_delivered, 7);
}

#[tokio::test]
async fn multi_topic_ids_carry_every_position() {
    let hub = hub_with(Retention::default(), HubConfig::default());
    let (a, b, c) = (topic("a"), topic("b"), topic("c"));
    let req = || {
        StreamRequest::topics(
            vec![c.clone(), a.clone(), b.clone(), a.clone()],
            Start::Live,
        )
    };
    let mut s = hub.open(req()).await.unwrap();
    assert_eq!(s.topics(), &[a.clone(), b.clone(), c.clone()]);
    hub.publish(&b, ev("1")).await.unwrap();
    hub.publish(&a, ev("2")).await.unwrap();
    hub.publish(&b, ev("3")).await.unwrap();
    let got = events(&mut s, &mut Parser::new(), 3).await;
    assert_eq!(
        data(&got),
        [envelope("b", "1"), envelope("a", "2"), envelope("b", "3")]
    );
    assert!(got[0].id.ends_with(".0.1.0"), "{}", got[0].id);
    assert!(got[2].id.ends_with(".1.2.0"), "{}", got[2].id);
    let mid = got[0].id.clone();
    drop(s);
    hub.publish(&c, ev("4")).await.unwrap();
    let mut s = hub
        .open(StreamRequest::topics(
            vec![a.clone(), b.clone(), c.clone()],
            Start::LastEventId(mid),
        ))
        .await
        .unwrap();
    let got = events(&mut s, &mut Parser::new(), 3).await;
    // Replay goes topic by topic; within a topic the order is exact.
    let mut got = data(&got);
    got.sort();
    assert_eq!(
        got,
        [envelope("a", "2"), envelope("b", "3"), envelope("c", "4")]
    );
    assert!(s.cursor().ends_with(".1.2.1"));
}

#[tokio::test]
async fn resets_for_expired_foreign_and_old_ids() {
    let hub = hub_with(
        Retention {
            max_events: 3,
            max_age: Duration::from_secs(60),
        },
        HubConfig::default(),
    );
    let t = topic("t");
    let mut s = hub
        .open(StreamRequest::topics(vec![t.clone()], Start::Live))
        .await
        .unwrap();
    publish(&hub, &t, 1..=1).await;
    let first = events(&mut s, &mut Parser::new(), 1).await.remove(0).id;
    drop(s);
    publish(&hub, &t, 2..=10).await;

    let epoch = hub.broker().epoch().await.unwrap();
    let other_epoch = Hub::single_topic_id(&Epoch::new("zz").unwrap(), &t, 1);
    let other_set = Hub::single_topic_id(&epoch, &topic("u"), 1);
    for (id, reason) in [
        (first, "expired"),
        ("garbage".to_owned(), "unknown_id"),
        (other_epoch, "epoch_changed"),
        (other_set, "unknown_id"),
        (Hub::single_topic_id(&epoch, &t, 99), "unknown_id"),
    ] {
        let mut s = hub
            .open(StreamRequest::topics(
                vec![t.clone()],
                Start::LastEventId(id.clone()),
            ))
            .await
            .unwrap();
        let mut p = Parser::new();
        let got = events(&mut s, &mut p, 1).await;
        assert_eq!(got[0].event, "reset", "{id}");
        assert_eq!(
            got[0].data,
            format!(r#"{{"topic":"t","reason":"{reason}"}}"#),
            "{id}"
        );
        let head = hub.broker().read(&t, u64::MAX, 0).await.unwrap().head;
        assert_eq!(
            got[0].id,
            Hub::single_topic_id(&epoch, &t, head),
            "a reset jumps to the head"
        );
        hub.publish(&t, ev("live")).await.unwrap();
        let got = events(&mut s, &mut p, 1).await;
        assert_eq!(got[0].data, envelope("t", "live"));
        drop(s);
    }
}

/// A broker that publishes extra events in the middle of the hub's first replay read (the
/// attach/read overlap), and whose sinks lose every third live event and report an
/// interruption every seventh (a flaky live feed).
struct Racy {
    inner: Arc<MemoryBroker>,
    armed: Arc<AtomicBool>,
    race_topic: Topic,
}

struct Lossy {
    inner: Arc<dyn Sink>,
    n: AtomicU64,
}

impl Sink for Lossy {
    fn deliver(&self, event: &Arc<Event>) {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        if n % 3 != 2 {
            self.inner.deliver(event);
        }
        if n % 7 == 6 {
            self.inner.interrupted();
        }
    }
    fn interrupted(&self) {
        self.inner.interrupted();
    }
}

#[async_trait::async_trait]
impl Broker for Racy {
    async fn epoch(&self) -> Result<Epoch, BrokerError> {
        self.inner.epoch().await
    }
    async fn publish(&self, topic: &Topic, event: NewEvent) -> Result<Published, BrokerError> {
        self.inner.publish(topic, event).await
    }
    async fn read(&self, topic: &Topic, after: u64, limit: usize) -> Result<LogRead, BrokerError> {
        if limit > 0 && self.armed.swap(false, Ordering::SeqCst) {
            for i in 0..5 {
                self.inner
                    .publish_now(&self.race_topic, ev(&format!("{}", 100 + i)));
            }
        }
        self.inner.read(topic, after, limit).await
    }
    async fn attach(&self, topic: &Topic, sink: Arc<dyn Sink>) -> Result<Attachment, BrokerError> {
        self.inner
            .attach(
                topic,
                Arc::new(Lossy {
                    inner: sink,
                    n: AtomicU64::new(0),
                }),
            )
            .await
    }
}

#[tokio::test]
async fn dedupes_the_overlap_and_fills_gaps_from_the_log() {
    let inner = MemoryBroker::new(Retention::default());
    let t = topic("t");
    let armed = Arc::new(AtomicBool::new(true));
    let racy = Racy {
        inner: inner.clone(),
        armed: armed.clone(),
        race_topic: t.clone(),
    };
    let hub = Hub::new(
        Arc::new(racy),
        HubConfig {
            queue_capacity: 1000,
            replay_batch: 2,
        },
    );
    publish(&hub, &t, 1..=2).await;
    let start = Hub::single_topic_id(&inner.epoch_now(), &t, 1);
    let mut s = hub
        .open(StreamRequest::topics(
            vec![t.clone()],
            Start::LastEventId(start),
        ))
        .await
        .unwrap();
    // Published before the stream's first read; the race then publishes 100..105 during it.
    publish(&hub, &t, 1000..=1039).await;
    let mut expected: Vec<u32> = vec![2];
    expected.extend(1000..1040);
    expected.extend(100..105);
    let got = events(&mut s, &mut Parser::new(), expected.len()).await;
    let want: Vec<String> = expected
        .iter()
        .map(|d| envelope("t", &d.to_string()))
        .collect();
    assert_eq!(data(&got), want);
    assert!(
        !armed.load(Ordering::SeqCst),
        "the race ran during the first replay read"
    );
    assert_idle(&mut s).await;
}

#[tokio::test]
async fn slow_consumer_is_dropped_with_a_final_error() {
    let hub = hub_with(
        Retention::default(),
        HubConfig {
            queue_capacity: 4,
            replay_batch: 16,
        },
    );
    let t = topic("t");
    let mut s = hub
        .open(StreamRequest::topics(vec![t.clone()], Start::Live))
        .await
        .unwrap();
    publish(&hub, &t, 1..=10).await;
    let m = hub.metrics().snapshot();
    assert_eq!((m.slow_consumers_dropped, m.queued_events), (1, 0));
    let mut p = Parser::new();
    let got = events(&mut s, &mut p, 1).await;
    assert_eq!(got[0].event, "error");
    assert!(got[0].data.contains(r#""code":"slow_consumer""#));
    assert!(s.next().await.is_none());
    drop(s);
    assert_eq!(hub.metrics().snapshot().open_streams, 0);
}

#[tokio::test]
async fn lag_during_replay_rereads_the_log() {
    let hub = hub_with(
        Retention::default(),
        HubConfig {
            queue_capacity: 2,
            replay_batch: 3,
        },
    );
    let t = topic("t");
    publish(&hub, &t, 1..=10).await;
    let start = Hub::single_topic_id(&hub.broker().epoch().await.unwrap(), &t, 0);
    let mut s = hub
        .open(StreamRequest::topics(
            vec![t.clone()],
            Start::LastEventId(start),
        ))
        .await
        .unwrap();
    // While the stream has replayed nothing yet, far more than its queue holds goes live.
    publish(&hub, &t, 11..=20).await;
    let got = events(&mut s, &mut Parser::new(), 20).await;
    let want: Vec<String> = (1..=20).map(|i| envelope("t", &i.to_string())).collect();
    assert_eq!(data(&got), want);
    assert_eq!(hub.metrics().snapshot().slow_consumers_dropped, 0);
}

/// A coalescer for these tests: merges runs of events named `d` by concatenating their data
/// (the hub only hands it batches; what merging means is the caller's business).
struct Concat;

impl rill_core::Coalesce for Concat {
    fn coalesce(&self, events: &mut Vec<Arc<rill_core::Event>>) {
        let mut out: Vec<Arc<rill_core::Event>> = Vec::new();
        for e in events.drain(..) {
            match out.last() {
                Some(last) if &*last.name == "d" && &*e.name == "d" => {
                    let mut data = last.data.to_vec();
                    data.extend_from_slice(&e.data);
                    let merged = rill_core::Event::new(
                        e.topic.clone(),
                        e.offset,
                        e.name.clone(),
                        Bytes::from(data),
                        e.time_ms,
                    );
                    *out.last_mut().unwrap() = Arc::new(merged);
                }
                _ => out.push(e),
            }
        }
        *events = out;
    }
}

async fn publish_d(hub: &Hub, t: &Topic, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        hub.publish(
            t,
            NewEvent {
                name: Arc::from("d"),
                data: Bytes::from(i.to_string()),
            },
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn prelude_then_strictly_after_and_a_slow_reader_resyncs_merged() {
    let hub = hub_with(
        Retention::default(),
        HubConfig {
            queue_capacity: 2,
            replay_batch: 16,
        },
    );
    let t = Topic::for_chat("c1");
    publish_d(&hub, &t, 1..=3).await;
    let mut s = hub
        .open(StreamRequest {
            topics: vec![t.clone()],
            start: Start::After(vec![(t.clone(), 2)]),
            wire: Wire::Raw,
            when_full: WhenFull::Resync,
            prelude: vec![PreludeEvent {
                event: "snapshot".into(),
                data: "12".into(),
            }],
            coalesce: Some(Arc::new(Concat)),
        })
        .await
        .unwrap();
    let got = events(&mut s, &mut Parser::new(), 2).await;
    assert_eq!(got[0].event, "snapshot");
    assert!(got[0].id.ends_with(".2"));
    assert_eq!(got[1].data, "3");
    // A burst larger than the queue is read back from the log, merged, instead of dropping
    // the reader.
    publish_d(&hub, &t, 4..=9).await;
    let mut text = String::new();
    let mut p = Parser::new();
    let mut last_id = String::new();
    let mut n = 0;
    while !text.ends_with('9') {
        for e in events(&mut s, &mut p, 1).await {
            text.push_str(&e.data);
            last_id = e.id;
            n += 1;
        }
    }
    assert_eq!(text, "456789");
    assert!(n < 6, "the resynced events are merged ({n} events)");
    assert!(last_id.ends_with(".9"));
    assert_eq!(hub.metrics().snapshot().slow_consumers_dropped, 0);
}

/// An encoder for these tests: `<name>=<data>;` per event; ends after `end`, cuts off at `cut`.
struct Plain;

impl rill_core::Encoder for Plain {
    fn event(
        &mut self,
        name: &str,
        data: &[u8],
        _id: Option<&str>,
        out: &mut Vec<u8>,
    ) -> rill_core::Flow {
        if name == "quiet-end" {
            // Ends without writing anything: the stream must still end.
            return rill_core::Flow::End;
        }
        out.extend_from_slice(format!("{name}={};", String::from_utf8_lossy(data)).as_bytes());
        match name {
            "end" => rill_core::Flow::End,
            "cut" => rill_core::Flow::Abort,
            _ => rill_core::Flow::Continue,
        }
    }
}

async fn drain(s: &mut HubStream) -> String {
    let mut all = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("the stream ends")
    {
        all.push_str(&String::from_utf8_lossy(&chunk));
    }
    all
}

#[tokio::test]
async fn a_custom_encoder_writes_every_event_and_ends_the_stream() {
    let hub = hub_with(Retention::default(), HubConfig::default());
    let t = topic("t");
    for name in ["a", "end", "after"] {
        hub.publish(
            &t,
            NewEvent {
                name: Arc::from(name),
                data: Bytes::from_static(b"1"),
            },
        )
        .await
        .unwrap();
    }
    let open = |start| {
        hub.open(StreamRequest {
            topics: vec![t.clone()],
            start,
            wire: Wire::Custom(Box::new(Plain)),
            when_full: WhenFull::Resync,
            prelude: vec![PreludeEvent {
                event: "first".into(),
                data: "0".into(),
            }],
            coalesce: None,
        })
    };
    let mut s = open(Start::After(vec![(t.clone(), 0)])).await.unwrap();
    assert_eq!(drain(&mut s).await, "first=0;a=1;end=1;");
    assert!(!s.aborted());

    // Live events go through the encoder too, and `Abort` marks the stream as cut off.
    let mut s = open(Start::Live).await.unwrap();
    hub.publish(
        &t,
        NewEvent {
            name: Arc::from("cut"),
            data: Bytes::from_static(b"2"),
        },
    )
    .await
    .unwrap();
    assert_eq!(drain(&mut s).await, "first=0;cut=2;");
    assert!(s.aborted());

    // An encoder may end the stream on an event it writes nothing for.
    let mut s = open(Start::Live).await.unwrap();
    assert_eq!(s.next().await.as_deref(), Some(&b"first=0;"[..]));
    hub.publish(
        &t,
        NewEvent {
            name: Arc::from("quiet-end"),
            data: Bytes::from_static(b"3"),
        },
    )
    .await
    .unwrap();
    assert_eq!(drain(&mut s).await, "");
    assert!(!s.aborted());
}

#[tokio::test]
async fn queue_accounting_returns_to_zero() {
    let hub = hub_with(Retention::default(), HubConfig::default());
    let t = topic("t");
    let s = hub
        .open(StreamRequest::topics(vec![t.clone()], Start::Live))
        .await
        .unwrap();
    publish(&hub, &t, 1..=5).await;
    assert_eq!(hub.metrics().snapshot().queued_events, 5);
    drop(s);
    let m = hub.metrics().snapshot();
    assert_eq!((m.queued_events, m.queued_bytes, m.open_streams), (0, 0, 0));
}

#[test]
fn concurrent_publishers_get_distinct_offsets() {
    let broker = MemoryBroker::new(Retention {
        max_events: 10_000,
        max_age: Duration::from_secs(60),
    });
    let t = topic("t");
    let seen = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..500 {
                    let o = broker.publish_now(&t, ev("x")).offset;
                    seen.lock().unwrap().push(o);
                }
            });
        }
    });
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (1..=2000).collect::<Vec<u64>>());
}

type Attached = (Topic, Arc<dyn Sink>, Option<Attachment>);

/// A broker whose logs can be lost (a new epoch), like Redis restarting empty: sinks stay
/// attached across the loss and are told their feed was interrupted.
struct Losable {
    current: Mutex<Arc<MemoryBroker>>,
    sinks: Mutex<Vec<Attached>>,
}

impl Losable {
    fn broker(&self) -> Arc<MemoryBroker> {
        self.current.lock().unwrap().clone()
    }
    fn lose_logs(&self) {
        let fresh = MemoryBroker::new(Retention::default());
        *self.current.lock().unwrap() = fresh.clone();
        for (topic, sink, attachment) in self.sinks.lock().unwrap().iter_mut() {
            *attachment = Some(fresh.attach_now(topic, sink.clone()));
            sink.interrupted();
        }
    }
}

#[async_trait::async_trait]
impl Broker for Losable {
    async fn epoch(&self) -> Result<Epoch, BrokerError> {
        Ok(self.broker().epoch_now())
    }
    async fn publish(&self, topic: &Topic, event: NewEvent) -> Result<Published, BrokerError> {
        Ok(self.broker().publish_now(topic, event))
    }
    async fn read(&self, topic: &Topic, after: u64, limit: usize) -> Result<LogRead, BrokerError> {
        Ok(self.broker().read_now(topic, after, limit))
    }
    async fn attach(&self, topic: &Topic, sink: Arc<dyn Sink>) -> Result<Attachment, BrokerError> {
        let attachment = self.broker().attach_now(topic, sink.clone());
        self.sinks
            .lock()
            .unwrap()
            .push((topic.clone(), sink, Some(attachment)));
        Ok(Attachment::new(()))
    }
}

#[tokio::test]
async fn a_lost_log_resets_with_epoch_changed_then_continues() {
    let losable = Arc::new(Losable {
        current: Mutex::new(MemoryBroker::new(Retention::default())),
        sinks: Mutex::new(Vec::new()),
    });
    let hub = Hub::new(losable.clone(), HubConfig::default());
    let (a, b) = (topic("a"), topic("b"));
    let mut s = hub
        .open(StreamRequest::topics(
            vec![a.clone(), b.clone()],
            Start::Live,
        ))
        .await
        .unwrap();
    let mut p = Parser::new();
    hub.publish(&a, ev("1")).await.unwrap();
    let before = events(&mut s, &mut p, 1).await;
    assert_eq!(data(&before), [envelope("a", "1")]);

    losable.lose_logs();
    hub.publish(&b, ev("2")).await.unwrap();
    let got = events(&mut s, &mut p, 2).await;
    let mut resets: Vec<String> = got
        .iter()
        .map(|e| format!("{} {}", e.event, e.data))
        .collect();
    resets.sort();
    assert_eq!(
        resets,
        [
            r#"reset {"topic":"a","reason":"epoch_changed"}"#,
            r#"reset {"topic":"b","reason":"epoch_changed"}"#,
        ]
    );
    let new_epoch = losable.broker().epoch_now();
    assert!(
        got[1].id.starts_with(new_epoch.as_str()),
        "ids carry the new epoch: {}",
        got[1].id
    );
    hub.publish(&a, ev("3")).await.unwrap();
    let live = events(&mut s, &mut p, 1).await;
    assert_eq!(data(&live), [envelope("a", "3")]);
    // An id from before the loss now means epoch_changed on a fresh stream too.
    let mut old = hub
        .open(StreamRequest::topics(
            vec![a.clone(), b.clone()],
            Start::LastEventId(before[0].id.clone()),
        ))
        .await
        .unwrap();
    assert_eq!(
        events(&mut old, &mut Parser::new(), 1).await[0].data,
        r#"{"topic":"a","reason":"epoch_changed"}"#
    );
}

/// A broker with an epoch per shard, as a Redis Cluster has per slot: topics whose name starts
/// with `a` live on one shard, the others on the other.
struct Sharded {
    shards: [Arc<Losable>; 2],
}

impl Sharded {
    fn shard(&self, t: &Topic) -> &Arc<Losable> {
        &self.shards[usize::from(!t.as_str().starts_with('a'))]
    }
}

#[async_trait::async_trait]
impl Broker for Sharded {
    async fn epoch(&self) -> Result<Epoch, BrokerError> {
        self.shards[0].epoch().await
    }
    async fn publish(&self, topic: &Topic, event: NewEvent) -> Result<Published, BrokerError> {
        self.shard(topic).publish(topic, event).await
    }
    async fn read(&self, topic: &Topic, after: u64, limit: usize) -> Result<LogRead, BrokerError> {
        self.shard(topic).read(topic, after, limit).await
    }
    async fn attach(&self, topic: &Topic, sink: Arc<dyn Sink>) -> Result<Attachment, BrokerError> {
        self.shard(topic).attach(topic, sink).await
    }
}

#[tokio::test]
async fn a_shard_that_loses_its_logs_resets_only_its_topics() {
    let shard = || {
        Arc::new(Losable {
            current: Mutex::new(MemoryBroker::new(Retention::default())),
            sinks: Mutex::new(Vec::new()),
        })
    };
    let sharded = Arc::new(Sharded {
        shards: [shard(), shard()],
    });
    let hub = Hub::new(sharded.clone(), HubConfig::default());
    let (a, b) = (topic("a"), topic("b"));
    let both = || vec![a.clone(), b.clone()];
    let mut s = hub
        .open(StreamRequest::topics(both(), Start::Live))
        .await
        .unwrap();
    let mut p = Parser::new();
    hub.publish(&a, ev("1")).await.unwrap();
    hub.publish(&b, ev("2")).await.unwrap();
    let before = events(&mut s, &mut p, 2).await;
    let id = before[1].id.clone();
    let (ea, eb) = (
        sharded.shards[0].broker().epoch_now(),
        sharded.shards[1].broker().epoch_now(),
    );
    assert!(
        id.starts_with(&format!("{ea}-{eb}.")),
        "the id carries both epochs: {id}"
    );

    sharded.shards[1].lose_logs();
    hub.publish(&b, ev("3")).await.unwrap();
    hub.publish(&a, ev("4")).await.unwrap();
    let mut got: Vec<String> = events(&mut s, &mut p, 2)
        .await
        .iter()
        .map(|e| format!("{} {}", e.event, e.data))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            format!("message {}", envelope("a", "4")),
            r#"reset {"topic":"b","reason":"epoch_changed"}"#.to_owned(),
        ],
        "only b's shard lost its log"
    );
    hub.publish(&b, ev("5")).await.unwrap();
    assert_eq!(data(&events(&mut s, &mut p, 1).await), [envelope("b", "5")]);

    // Resuming from before the loss: a replays exactly, b resets.
    let mut old = hub
        .open(StreamRequest::topics(both(), Start::LastEventId(id)))
        .await
        .unwrap();
    let mut got: Vec<String> = events(&mut old, &mut Parser::new(), 2)
        .await
        .iter()
        .map(|e| format!("{} {}", e.event, e.data))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            format!("message {}", envelope("a", "4")),
            r#"reset {"topic":"b","reason":"epoch_changed"}"#.to_owned(),
        ]
    );
}
