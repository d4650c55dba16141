//! The broker contract: what every `rill_core::Broker` must do, written once, run per broker.
//!
//! Each check is a `pub async fn` taking a [`MakeBroker`] (a factory, so checks that need their
//! own settings, like a small retention, get a fresh broker); [`run_all`] runs them all. A broker
//! crate calls them from its own tests, one `#[tokio::test]` per check so failures are named:
//!
//! ```text
//! #[tokio::test]
//! async fn offsets_start_at_one() {
//!     broker_contract::offsets_start_at_one(&make()).await;
//! }
//! ```
//!
//! The checks never assert on timing: waits for live events are bounded (so a broken broker
//! fails instead of hanging) but generous.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use rill_core::{Broker, Event, NewEvent, Sink, Topic};

/// How long a check waits for live events before it fails.
const WAIT: Duration = Duration::from_secs(15);

/// Settings a check needs from the broker it is given.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Events kept per topic.
    pub retention_count: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention_count: 10_000,
        }
    }
}

/// Makes a fresh, empty broker (its own key prefix, schema, ...) with the given options.
pub type MakeBroker = Box<dyn Fn(Options) -> BoxFuture<'static, Arc<dyn Broker>> + Send + Sync>;

/// A sink that records what it is given, for assertions.
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: Mutex<Vec<Arc<Event>>>,
    interrupted: AtomicUsize,
    /// How many events had been delivered when `interrupted()` was first called.
    before_interruption: Mutex<Option<usize>>,
    changed: tokio::sync::Notify,
}

impl RecordingSink {
    pub fn new() -> Arc<Self> {
        Arc::new(RecordingSink::default())
    }

    /// A copy of the events delivered so far.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The offsets delivered so far.
    pub fn offsets(&self) -> Vec<u64> {
        self.events().iter().map(|e| e.offset).collect()
    }

    /// How many times `interrupted()` was called.
    pub fn interruptions(&self) -> usize {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// How many events had been delivered when the feed was first reported interrupted (`None`:
    /// never). A broker must not deliver an event past a gap before saying so.
    pub fn delivered_before_interruption(&self) -> Option<usize> {
        *self
            .before_interruption
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits (at most `within`) until `cond` holds for this sink; panics with `what` if it never
    /// does.
    pub async fn wait_until(&self, what: &str, within: Duration, cond: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if cond(self) {
                return;
            }
            // Re-check now and then even without a notification (cheap, and robust against a
            // notification that raced the check above).
            let nap = tokio::time::sleep(Duration::from_millis(20));
            tokio::select! {
                () = changed => {}
                () = nap => {}
            }
            if tokio::time::Instant::now() > deadline {
                assert!(cond(self), "timed out after {within:?} waiting for {what}");
                return;
            }
        }
    }

    /// Waits until at least `n` events were delivered.
    pub async fn wait_for_count(&self, n: usize) {
        self.wait_until(&format!("{n} live events"), WAIT, |s| s.len() >= n)
            .await;
    }

    pub fn len(&self) -> usize {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Sink for RecordingSink {
    fn deliver(&self, event: &Arc<Event>) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.clone());
        self.changed.notify_waiters();
    }

    fn interrupted(&self) {
        let delivered = self.len();
        self.before_interruption
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(delivered);
        self.interrupted.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// A topic name unique to this process and call, so checks sharing a broker never meet.
pub fn topic(name: &str) -> Topic {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    match Topic::new(&format!("contract/{name}/{n}")) {
        Ok(t) => t,
        Err(e) => panic!("bad test topic {name:?}: {e}"),
    }
}

/// The event every check publishes: `{"i":<i>}` named `ev`.
pub fn event(i: u64) -> NewEvent {
    NewEvent {
        name: Arc::from("ev"),
        data: Bytes::from(format!("{{\"i\":{i}}}")),
    }
}

async fn publish(b: &dyn Broker, t: &Topic, i: u64) -> u64 {
    match b.publish(t, event(i)).await {
        Ok(p) => p.offset,
        Err(e) => panic!("publish to {t} failed: {e}"),
    }
}

/// Runs every check.
pub async fn run_all(make: &MakeBroker) {
    offsets_start_at_one(make).await;
    topics_are_independent(make).await;
    read_returns_what_follows(make).await;
    retention_by_count(make).await;
    attach_gets_live_events_until_detach(make).await;
    concurrent_publishers(make).await;
    attach_while_publishing(make).await;
}

/// Offsets start at 1 and grow by one per event; the event comes back as published.
pub async fn offsets_start_at_one(make: &MakeBroker) {
    let b = make(Options::default()).await;
    let t = topic("offsets");
    let empty = b.read(&t, 0, 10).await.expect("read of an empty topic");
    assert_eq!(
        (empty.head, empty.first, empty.events.len()),
        (0, 1, 0),
        "empty topic"
    );
    // The epoch answers. A topic's own epoch is the one its reads carry: one for the whole
    // broker on most, one per slot on a Redis Cluster (so `epoch()` may name another slot's).
    b.epoch().await.expect("epoch");
    let epoch = empty.epoch.clone();
    for i in 1..=5 {
        let p = b.publish(&t, event(i)).await.expect("publish");
        assert_eq!(p.offset, i);
        assert_eq!(p.epoch, epoch);
    }
    let r = b.read(&t, 0, 10).await.expect("read");
    assert_eq!((r.head, r.first), (5, 1));
    let offsets: Vec<u64> = r.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    let e = &r.events[2];
    assert_eq!(e.topic, t);
    assert_eq!(&*e.name, "ev");
    assert_eq!(&e.data[..], b"{\"i\":3}");
    assert!(e.time_ms > 0, "publish time is set");
}

/// Each topic has its own offsets.
pub async fn topics_are_independent(make: &MakeBroker) {
    let b = make(Options::default()).await;
    let (x, y) = (topic("x"), topic("y"));
    assert_eq!(publish(&*b, &x, 1).await, 1);
    assert_eq!(publish(&*b, &x, 2).await, 2);
    assert_eq!(publish(&*b, &y, 1).await, 1);
    assert_eq!(publish(&*b, &x, 3).await, 3);
    let ry = b.read(&y, 0, 10).await.expect("read y");
    assert_eq!(ry.head, 1);
    assert_eq!(ry.events.len(), 1);
    assert_eq!(ry.events[0].topic, y);
    let rx = b.read(&x, 0, 10).await.expect("read x");
    assert_eq!(rx.head, 3);
}

/// `read(after, limit)` returns exactly the events after `after`, at most `limit`.
pub async fn read_returns_what_follows(make: &MakeBroker) {
    let b = make(Options::default()).await;
    let t = topic("read");
    for i in 1..=10 {
        publish(&*b, &t, i).await;
    }
    let check = |after: u64, limit: usize, want: std::ops::RangeInclusive<u64>| {
        let b = b.clone();
        let t = t.clone();
        async move {
            let r = b.read(&t, after, limit).await.expect("read");
            let got: Vec<u64> = r.events.iter().map(|e| e.offset).collect();
            let want: Vec<u64> = want.collect();
            assert_eq!(got, want, "read(after {after}, limit {limit})");
            for e in &r.events {
                assert_eq!(e.data, Bytes::from(format!("{{\"i\":{}}}", e.offset)));
            }
            assert_eq!((r.head, r.first), (10, 1));
        }
    };
    check(0, 100, 1..=10).await;
    check(4, 100, 5..=10).await;
    check(4, 3, 5..=7).await;
    check(9, 100, 10..=10).await;
    #[allow(clippy::reversed_empty_ranges)]
    {
        check(10, 100, 1..=0).await;
        check(500, 100, 1..=0).await;
        check(u64::MAX, 100, 1..=0).await;
        check(0, 0, 1..=0).await;
    }
}

/// With a retention of N events, old events go: `first` moves past 1, the newest N stay.
pub async fn retention_by_count(make: &MakeBroker) {
    let keep = 5;
    let b = make(Options {
        retention_count: keep,
    })
    .await;
    let t = topic("retention");
    for i in 1..=12 {
        publish(&*b, &t, i).await;
    }
    let r = b.read(&t, 0, 100).await.expect("read");
    assert_eq!(r.head, 12);
    assert!(r.first > 1, "old events are dropped (first = {})", r.first);
    assert!(
        r.first <= 12 - keep + 1,
        "the newest {keep} are kept (first = {})",
        r.first
    );
    let got: Vec<u64> = r.events.iter().map(|e| e.offset).collect();
    let want: Vec<u64> = (r.first..=12).collect();
    assert_eq!(
        got, want,
        "what is retained is contiguous from first to head"
    );
}

/// A sink gets every event published after it attached, in order, and nothing after detach.
pub async fn attach_gets_live_events_until_detach(make: &MakeBroker) {
    let b = make(Options::default()).await;
    let t = topic("attach");
    publish(&*b, &t, 1).await;
    let sink = RecordingSink::new();
    let barrier = RecordingSink::new();
    let att = b.attach(&t, sink.clone()).await.expect("attach");
    let _barrier_att = b.attach(&t, barrier.clone()).await.expect("attach barrier");
    for i in 2..=6 {
        publish(&*b, &t, i).await;
    }
    sink.wait_for_count(5).await;
    assert_eq!(
        sink.offsets(),
        [2, 3, 4, 5, 6],
        "live events after attach, in order"
    );
    let e = &sink.events()[0];
    assert_eq!(
        (&*e.name, &e.data[..], &e.topic),
        ("ev", &b"{\"i\":2}"[..], &t)
    );
    drop(att);
    for i in 7..=9 {
        publish(&*b, &t, i).await;
    }
    // The barrier sink is attached to the same topic of the same broker: once it has event 9,
    // a still-attached sink would have had it too.
    barrier.wait_for_count(8).await;
    assert_eq!(barrier.offsets(), (2..=9).collect::<Vec<_>>());
    assert_eq!(sink.offsets(), [2, 3, 4, 5, 6], "nothing after detach");
    // Attaching again works (the subscription is re-made if it was dropped).
    let again = RecordingSink::new();
    let _att = b.attach(&t, again.clone()).await.expect("re-attach");
    publish(&*b, &t, 10).await;
    again.wait_for_count(1).await;
    assert_eq!(again.offsets(), [10]);
}

/// Concurrent publishers on one topic: dense offsets, and each sink gets every event once, in
/// order.
pub async fn concurrent_publishers(make: &MakeBroker) {
    const TASKS: u64 = 4;
    const EACH: u64 = 50;
    let b = make(Options::default()).await;
    let t = topic("concurrent");
    let sinks: Vec<Arc<RecordingSink>> = (0..3).map(|_| RecordingSink::new()).collect();
    let mut atts = Vec::new();
    for s in &sinks {
        atts.push(b.attach(&t, s.clone()).await.expect("attach"));
    }
    let mut tasks = Vec::new();
    for k in 0..TASKS {
        let b = b.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                got.push(publish(&*b, &t, k * EACH + i).await);
            }
            got
        }));
    }
    let mut offsets = BTreeSet::new();
    for task in tasks {
        for o in task.await.expect("publisher task") {
            assert!(offsets.insert(o), "offset {o} handed out twice");
        }
    }
    let n = TASKS * EACH;
    assert_eq!(
        offsets.into_iter().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "dense"
    );
    for s in &sinks {
        s.wait_for_count(n as usize).await;
        assert_eq!(
            s.offsets(),
            (1..=n).collect::<Vec<_>>(),
            "every event once, in order"
        );
    }
    let r = b.read(&t, 0, 1000).await.expect("read");
    assert_eq!(r.head, n);
    assert_eq!(r.events.len() as u64, n);
}

/// A subscriber that attaches while events are being published, then reads the log and drops
/// live events it already replayed (the hub's recipe), sees every event exactly once.
pub async fn attach_while_publishing(make: &MakeBroker) {
    const N: u64 = 300;
    let b = make(Options::default()).await;
    let t = topic("join");
    let publisher = {
        let b = b.clone();
        let t = t.clone();
        tokio::spawn(async move {
            for i in 1..=N {
                publish(&*b, &t, i).await;
            }
        })
    };
    // Join somewhere in the middle of the burst.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let head = b.read(&t, 0, 0).await.expect("read head").head;
        if head >= N / 3 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sink = RecordingSink::new();
    let _att = b.attach(&t, sink.clone()).await.expect("attach");
    let mut seen: Vec<u64> = Vec::new();
    let mut after = 0;
    loop {
        let r = b.read(&t, after, 50).await.expect("read");
        if r.events.is_empty() {
            break;
        }
        for e in &r.events {
            seen.push(e.offset);
            after = e.offset;
        }
    }
    publisher.await.expect("publisher");
    let wanted_live = N.saturating_sub(after) as usize;
    sink.wait_until("the live events past the replay", WAIT, |s| {
        s.offsets().iter().filter(|&&o| o > after).count() >= wanted_live
    })
    .await;
    let live = sink.offsets();
    assert!(live.windows(2).all(|w| w[0] < w[1]), "live events in order");
    seen.extend(live.into_iter().filter(|&o| o > after));
    assert_eq!(
        seen,
        (1..=N).collect::<Vec<_>>(),
        "replay + live: no gap, no duplicate"
    );
}
