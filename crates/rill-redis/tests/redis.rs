//! Redis-specific behaviour of the broker: epochs, connection loss, start-up errors,
//! one subscription per topic, retention by age.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns; a panic is the failure report.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Cleanup, Proxy, admin, client_field, config, connect, delete_prefix, fresh_prefix, skip,
    subscribed_feed, subscriptions,
};
use rill_core::{Broker, BrokerError, Topic};
use rill_redis::{ConfigError, ConnectError, RedisBroker, RedisBrokerConfig};
use rill_test_support::broker_contract::{RecordingSink, event};

/// Long enough for any bounded operation on a loaded CI machine; only a hang fails it.
const LIVENESS: Duration = Duration::from_secs(30);

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

/// Waits (bounded) until `f` returns true.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + LIVENESS;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Redis losing our data (FLUSHDB, a restart without persistence) makes a new epoch: offsets
/// start again at 1 under it, every instance sees the same new epoch, and live sinks are told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_changes_when_data_is_lost() {
    if skip() {
        return;
    }
    let cleanup = Cleanup::default();
    let prefix = fresh_prefix();
    cleanup.add(&prefix);
    let a = connect(config(&prefix)).await;
    let b = connect(config(&prefix)).await;
    let t = topic("orders");
    let e1 = a.epoch().await.unwrap();
    assert_eq!(b.epoch().await.unwrap(), e1, "instances share the epoch");
    for i in 1..=3 {
        assert_eq!(a.publish(&t, event(i)).await.unwrap().offset, i);
    }
    let sink = RecordingSink::new();
    let _att = b.attach(&t, sink.clone()).await.unwrap();

    delete_prefix(&prefix).await;

    let p = a.publish(&t, event(100)).await.unwrap();
    assert_ne!(p.epoch, e1, "a new epoch after the data was lost");
    assert_eq!(p.offset, 1, "offsets start again under the new epoch");
    let r = b.read(&t, 0, 10).await.unwrap();
    assert_eq!(r.epoch, p.epoch);
    assert_eq!((r.head, r.first, r.events.len()), (1, 1, 1));
    assert_eq!(b.epoch().await.unwrap(), p.epoch);
    // B's live sink gets the new-epoch event and is told to re-read (where its hub finds the
    // new epoch and resets).
    sink.wait_until("interrupted() after the epoch change", LIVENESS, |s| {
        s.interruptions() >= 1
    })
    .await;
    sink.wait_for_count(1).await;
    assert_eq!(sink.offsets(), [1]);
}

/// Many instances asking for the epoch of an empty Redis at once all get the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_epoch_creation_agrees() {
    if skip() {
        return;
    }
    let cleanup = Cleanup::default();
    let prefix = fresh_prefix();
    cleanup.add(&prefix);
    let a = connect(config(&prefix)).await;
    let b = connect(config(&prefix)).await;
    delete_prefix(&prefix).await;
    let t = topic("race");
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let x = if i % 2 == 0 { a.clone() } else { b.clone() };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => x.epoch().await.unwrap(),
                1 => x.read(&t, 0, 1).await.unwrap().epoch,
                _ => x.publish(&t, event(i)).await.unwrap().epoch,
            }
        }));
    }
    let mut epochs = Vec::new();
    for task in tasks {
        epochs.push(task.await.unwrap());
    }
    assert!(
        epochs.windows(2).all(|w| w[0] == w[1]),
        "one epoch wins: {epochs:?}"
    );
}

/// Kills the subscribing broker's feed connection (by id), not a publishing broker's, nor other
/// tests' connections; returns its `CLIENT LIST` line from before.
async fn kill_feed_connection(prefix: &str) -> String {
    let line = subscribed_feed(&mut admin().await, prefix).await;
    let id = client_field(&line, "id").expect("CLIENT LIST gives an id");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut admin().await)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    line
}

/// Killing the Pub/Sub connection while events are being published: the broker reconnects,
/// re-subscribes and tells the sinks; no event past the gap reaches a sink before it is told;
/// re-reading the log from each sink's position (the hub's recipe) gives every event exactly
/// once; live events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connection_killed() {
    if skip() {
        return;
    }
    let cleanup = Cleanup::default();
    let prefix = fresh_prefix();
    cleanup.add(&prefix);
    let broker = connect(config(&prefix)).await;
    let publisher = connect(config(&prefix)).await;
    let t = topic("feed/kill");
    let sinks: Vec<Arc<RecordingSink>> = (0..3).map(|_| RecordingSink::new()).collect();
    let mut atts = Vec::new();
    for s in &sinks {
        atts.push(broker.attach(&t, s.clone()).await.unwrap());
    }
    // Idle topics with sinks too, so re-subscribing takes a while after a reconnect: the busy
    // topic's messages may flow again well before the last idle topic is re-subscribed.
    let idle = RecordingSink::new();
    for i in 0..300 {
        atts.push(
            broker
                .attach(&topic(&format!("feed/idle/{i}")), idle.clone())
                .await
                .unwrap(),
        );
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let (publisher, t, stop) = (publisher.clone(), t.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = 0;
            for i in 1..=20_000u64 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                last = publisher.publish(&t, event(i)).await.unwrap().offset;
            }
            last
        })
    };
    for s in &sinks {
        s.wait_for_count(20).await;
    }

    kill_feed_connection(&prefix).await;
    for s in &sinks {
        s.wait_until("interrupted() after the reconnect", LIVENESS, |s| {
            s.interruptions() >= 1
        })
        .await;
    }
    // Keep publishing a little past the reconnect, then stop.
    let n_after = sinks[0].len() + 20;
    sinks[0].wait_for_count(n_after).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let last = publishing.await.unwrap();
    eventually("the feed to be ready again", || broker.ready()).await;

    for s in &sinks {
        s.wait_until("the last event live", LIVENESS, |s| {
            s.offsets().contains(&last)
        })
        .await;
        let offsets = s.offsets();
        let k = s.delivered_before_interruption().unwrap();
        assert_eq!(
            offsets[..k],
            (1..=k as u64).collect::<Vec<_>>(),
            "before the interruption: no gap (nothing past the gap before being told)"
        );
        // The hub's recipe: re-read from the position, then take live events past it.
        let mut seen = offsets[..k].to_vec();
        let mut after = k as u64;
        loop {
            let r = broker.read(&t, after, 1000).await.unwrap();
            if r.events.is_empty() {
                break;
            }
            for e in &r.events {
                seen.push(e.offset);
                after = e.offset;
            }
        }
        seen.extend(offsets[k..].iter().copied().filter(|&o| o > after));
        assert_eq!(seen, (1..=last).collect::<Vec<_>>(), "no gap, no duplicate");
        assert!(
            offsets[k..].windows(2).all(|w| w[0] < w[1]),
            "live events in order"
        );
    }
}

/// Many topics (several re-subscription batches' worth) are all subscribed again after the
/// Pub/Sub connection is killed: Redis holds one subscription per topic on the new connection,
/// every sink is told, every topic delivers live events again, and the connection still pairs
/// requests with their replies (a new attach works). Prints how long the re-subscription took
/// (`--nocapture`); nothing asserts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_topics_resubscribed_after_pubsub_connection_killed() {
    if skip() {
        return;
    }
    const N: usize = 1000;
    let cleanup = Cleanup::default();
    let prefix = fresh_prefix();
    cleanup.add(&prefix);
    let broker = connect(config(&prefix)).await;
    let publisher = connect(config(&prefix)).await;
    let topics: Vec<Topic> = (0..N).map(|i| topic(&format!("many/{i}"))).collect();
    let sinks: Vec<Arc<RecordingSink>> = (0..N).map(|_| RecordingSink::new()).collect();
    let mut atts = Vec::with_capacity(N);
    for (t, s) in topics.iter().zip(&sinks) {
        atts.push(broker.attach(t, s.clone()).await.unwrap());
    }
    let started = std::time::Instant::now();
    let before = kill_feed_connection(&prefix).await;
    assert_eq!(subscriptions(&before), N, "one subscription per topic");
    for s in &sinks {
        s.wait_until("interrupted() after the reconnect", LIVENESS, |s| {
            s.interruptions() >= 1
        })
        .await;
    }
    eprintln!(
        "re-subscribed {N} topics {:?} after CLIENT KILL of the Pub/Sub connection",
        started.elapsed()
    );
    eventually("the feed to be ready again", || broker.ready()).await;
    let after = subscribed_feed(&mut admin().await, &prefix).await;
    assert_ne!(
        client_field(&after, "id"),
        client_field(&before, "id"),
        "a new connection"
    );
    assert_eq!(subscriptions(&after), N, "every topic subscribed again");

    for t in &topics {
        publisher.publish(t, event(1)).await.unwrap();
    }
    for s in &sinks {
        s.wait_for_count(1).await;
        assert_eq!(s.offsets(), [1]);
    }
    let late = RecordingSink::new();
    let t = topic("many/late");
    let _late = broker.attach(&t, late.clone()).await.unwrap();
    publisher.publish(&t, event(1)).await.unwrap();
    late.wait_for_count(1).await;
    assert_eq!(late.offsets(), [1]);
}

/// Redis going away (and coming back): publish and read fail with `Unavailable` within the
/// command bound instead of hanging or dropping, readiness drops, attach fails; afterwards
/// everything recovers and the sinks are told to re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_then_back() {
    if skip() {
        return;
    }
    let cleanup = Cleanup::default();
    let prefix = fresh_prefix();
    cleanup.add(&prefix);
    let proxy = Proxy::start().await;
    let mut cfg = config(&prefix);
    cfg.url = proxy.url();
    cfg.command_timeout = Duration::from_millis(500);
    let broker = connect(cfg).await;
    let t = topic("outage");
    let sink = RecordingSink::new();
    let _att = broker.attach(&t, sink.clone()).await.unwrap();
    broker.publish(&t, event(1)).await.unwrap();
    sink.wait_for_count(1).await;
    assert!(broker.ready().await);

    proxy.cut();
    let r = tokio::time::timeout(LIVENESS, broker.publish(&t, event(2))).await;
    assert!(
        matches!(r, Ok(Err(BrokerError::Unavailable(_)))),
        "publish while down: {r:?}"
    );
    let r = tokio::time::timeout(LIVENESS, broker.read(&t, 0, 10)).await;
    assert!(
        matches!(r, Ok(Err(BrokerError::Unavailable(_)))),
        "read while down: {r:?}"
    );
    eventually("ready() to turn false", || async { !broker.ready().await }).await;
    let other = RecordingSink::new();
    let r = tokio::time::timeout(LIVENESS, broker.attach(&topic("outage/2"), other)).await;
    assert!(
        matches!(r, Ok(Err(BrokerError::Unavailable(_)))),
        "attach while down"
    );

    proxy.restore().await;
    eventually("ready() after Redis is back", || broker.ready()).await;
    sink.wait_until("interrupted() after the outage", LIVENESS, |s| {
        s.interruptions() >= 1
    })
    .await;
    let p = broker.publish(&t, event(3)).await.unwrap();
    // The publish during the cut either never reached Redis (no offset taken) or reached it and
    // only its answer was lost (the outcome a timeout cannot know): either way the log stays
    // dense, with nothing lost in between.
    assert!(
        matches!(p.offset, 2 | 3),
        "offset after the outage: {}",
        p.offset
    );
    let log = broker.read(&t, 0, 10).await.unwrap();
    let offsets: Vec<u64> = log.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (1..=p.offset).collect::<Vec<u64>>(), "a dense log");
    let live = p.offset;
    sink.wait_until("live events again", LIVENESS, |s| {
        s.offsets().contains(&live)
    })
    .await;
}

/// A broker pointed at a closed port fails to start, quickly and clearly.
#[tokio::test]
async fn connect_to_closed_port_fails_fast() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = RedisBrokerConfig::new(format!("redis://:hunter2@127.0.0.1:{port}/0"));
    cfg.connect_timeout = Duration::from_secs(2);
    let r = tokio::time::timeout(LIVENESS, RedisBroker::connect(cfg)).await;
    let err = match r {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("connected to a closed port"),
        Err(_) => panic!("connect did not give up"),
    };
    let msg = err.to_string();
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")),
        "names the address: {msg}"
    );
    assert!(!msg.contains("hunter2"), "no password in messages: {msg}");
}

#[tokio::test]
async fn bad_url_scheme_is_a_clear_error() {
    let err = RedisBroker::connect(RedisBrokerConfig::new("http://127.0.0.1:6379"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::Config(ConfigError::BadScheme(_))),
        "{err}"
    );
    assert!(err.to_string().contains("redis://"), "{err}");
}

/// However many local sinks a topic has, the instance subscribes to it once, and unsubscribes
/// when the last one leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscription_per_topic() {
    if skip() {
        return;
    }
    let cleanup = Cleanup::default();
    let prefix = fresh_prefix();
    cleanup.add(&prefix);
    let broker = connect(config(&prefix)).await;
    let t = topic("popular");
    let channel = format!("{prefix}{{popular}}");
    let sinks: Vec<Arc<RecordingSink>> = (0..10).map(|_| RecordingSink::new()).collect();
    let mut atts = Vec::new();
    for s in &sinks {
        atts.push(broker.attach(&t, s.clone()).await.unwrap());
    }
    let mut admin = admin().await;
    let subscribers = |admin: &mut redis::aio::MultiplexedConnection| {
        let channel = channel.clone();
        let mut admin = admin.clone();
        async move {
            let shard: (String, i64) = redis::cmd("PUBSUB")
                .arg("SHARDNUMSUB")
                .arg(&channel)
                .query_async(&mut admin)
                .await
                .unwrap();
            let classic: (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut admin)
                .await
                .unwrap();
            shard.1 + classic.1
        }
    };
    assert_eq!(
        subscribers(&mut admin).await,
        1,
        "one Redis subscription for 10 sinks"
    );
    broker.publish(&t, event(1)).await.unwrap();
    for s in &sinks {
        s.wait_for_count(1).await;
        assert_eq!(s.offsets(), [1]);
    }
    atts.truncate(1);
    assert_eq!(
        subscribers(&mut admin).await,
        1,
        "still subscribed while a sink remains"
    );
    atts.clear();
    let mut a2 = admin.clone();
    eventually("the unsubscribe after the last detach", || {
        let f = subscribers(&mut a2);
        async move { f.await == 0 }
    })
    .await;
}

/// Events older than the retention age leave the log, on publish and on read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age() {
    if skip() {
        return;
    }
    let cleanup = Cleanup::default();
    let prefix = fresh_prefix();
    cleanup.add(&prefix);
    let age = Duration::from_millis(300);
    let mut cfg = config(&prefix);
    cfg.retention_age = Some(age);
    let broker = connect(cfg).await;
    let t = topic("aging");
    for i in 1..=5 {
        broker.publish(&t, event(i)).await.unwrap();
    }
    // Twice the age: the first five are expired whatever the scheduling.
    tokio::time::sleep(age * 2).await;
    broker.publish(&t, event(6)).await.unwrap();
    let r = broker.read(&t, 0, 100).await.unwrap();
    assert_eq!(
        (r.head, r.first),
        (6, 6),
        "expired events are trimmed on publish"
    );
    assert_eq!(r.events.iter().map(|e| e.offset).collect::<Vec<_>>(), [6]);
    tokio::time::sleep(age * 2).await;
    let r = broker.read(&t, 0, 100).await.unwrap();
    assert_eq!(
        (r.head, r.first, r.events.len()),
        (6, 7, 0),
        "and on read, with no publish"
    );
    assert_eq!(
        broker.publish(&t, event(7)).await.unwrap().offset,
        7,
        "offsets go on"
    );
}
