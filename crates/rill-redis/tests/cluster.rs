//! The Redis broker on a Redis Cluster of three primaries (private, started by each test): topics
//! spread over every primary, live events through each topic's own primary, and a primary that
//! restarts empty changes the epoch of its own slots only. (The broker contract also runs on a
//! cluster: contract.rs.)

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{
    client_field, cluster_config, connect, redis_cluster, skip_private, subscribed_feed,
    subscriptions,
};
use rill_core::{Broker, Epoch, SpentSet, Topic};
use rill_test_support::broker_contract::{RecordingSink, event};
use rill_test_support::redis_servers::RedisCluster;

/// Long enough for any bounded operation on a loaded CI machine; only a hang fails it.
const LIVENESS: Duration = Duration::from_secs(30);

/// `n` topics and the primary (node index) each lives on, as the cluster itself computes it.
fn spread(cluster: &RedisCluster, prefix: &str, n: usize) -> Vec<(Topic, usize)> {
    (0..n)
        .map(|i| {
            let t = Topic::new(&format!("spread/{i}")).unwrap();
            let slot = cluster.key_slot(&format!("{prefix}{{{}}}:seq", t.as_str()));
            (t, cluster.owner_of(slot))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_on_every_primary_are_published_read_and_fed_across_brokers() {
    if skip_private() {
        return;
    }
    let cluster = redis_cluster().await;
    let cfg = cluster_config(&cluster);
    let prefix = cfg.key_prefix.clone();
    let a = connect(cfg.clone()).await;
    let b = connect(cfg).await;
    let topics = spread(&cluster, &prefix, 30);
    let nodes: BTreeSet<usize> = topics.iter().map(|(_, n)| *n).collect();
    assert_eq!(nodes.len(), 3, "the topics live on every primary");

    let sinks: Vec<Arc<RecordingSink>> = topics.iter().map(|_| RecordingSink::new()).collect();
    let mut atts = Vec::new();
    for ((t, _), s) in topics.iter().zip(&sinks) {
        atts.push(b.attach(t, s.clone()).await.unwrap());
    }
    for (t, _) in &topics {
        for i in 1..=2 {
            assert_eq!(a.publish(t, event(i)).await.unwrap().offset, i);
        }
    }
    for ((t, _), s) in topics.iter().zip(&sinks) {
        s.wait_until("both live events", LIVENESS, |s| s.offsets().len() >= 2)
            .await;
        assert_eq!(s.offsets(), [1, 2], "{t}");
        let r = b.read(t, 0, 10).await.unwrap();
        assert_eq!((r.head, r.first, r.events.len()), (2, 1, 2), "{t}");
    }
    assert!(a.ready().await && b.ready().await);
    assert!(b.live_feed_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restarted_empty_changes_only_its_own_epochs() {
    if skip_private() {
        return;
    }
    let mut cluster = redis_cluster().await;
    let cfg = cluster_config(&cluster);
    let prefix = cfg.key_prefix.clone();
    let a = connect(cfg.clone()).await;
    let b = connect(cfg).await;
    let topics = spread(&cluster, &prefix, 30);
    let victim = topics[0].1;

    let sinks: Vec<Arc<RecordingSink>> = topics.iter().map(|_| RecordingSink::new()).collect();
    let mut atts = Vec::new();
    for ((t, _), s) in topics.iter().zip(&sinks) {
        atts.push(b.attach(t, s.clone()).await.unwrap());
    }
    let mut epochs: Vec<Epoch> = Vec::new();
    for (t, _) in &topics {
        a.publish(t, event(1)).await.unwrap();
        epochs.push(a.publish(t, event(2)).await.unwrap().epoch);
    }
    for s in &sinks {
        s.wait_for_count(2).await;
    }

    // Blocking (it waits for the node), off the runtime's threads; the cluster lives on to the
    // end of the test.
    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.kill(victim);
        cluster.restart_empty(victim);
        cluster
    })
    .await
    .unwrap();

    for ((t, node), (s, old)) in topics.iter().zip(sinks.iter().zip(&epochs)) {
        // The restarted primary may take a moment to accept scripts again: retry, bounded.
        let mut published = None;
        for _ in 0..300 {
            match a.publish(t, event(3)).await {
                Ok(p) => {
                    published = Some(p);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let p = published.unwrap_or_else(|| panic!("{t} publishes again"));
        if *node == victim {
            assert_ne!(&p.epoch, old, "{t}: its primary lost its data");
            assert_eq!(p.offset, 1, "{t}: offsets start again");
            s.wait_until("told the feed was cut", LIVENESS, |s| {
                s.interruptions() >= 1
            })
            .await;
            s.wait_until("the new-epoch event", LIVENESS, |s| {
                s.events().last().is_some_and(|e| e.offset == 1)
            })
            .await;
        } else {
            assert_eq!(&p.epoch, old, "{t}: another primary's epoch is kept");
            assert_eq!(p.offset, 3, "{t}: nothing lost");
            s.wait_for_count(3).await;
            assert_eq!(s.offsets(), [1, 2, 3], "{t}");
            assert_eq!(s.interruptions(), 0, "{t}: its feed was never cut");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_spent_once_across_brokers_on_a_cluster() {
    if skip_private() {
        return;
    }
    let cluster = redis_cluster().await;
    let cfg = cluster_config(&cluster);
    let a = connect(cfg.clone()).await;
    let b = connect(cfg).await;
    let until = now_ms() + 60_000;
    let mut wins = 0;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let x = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            x.spend("ticket-1", until).await.unwrap()
        }));
    }
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one spend of a key wins");
    // Keys on other slots are independent.
    for k in 0..20 {
        assert!(a.spend(&format!("ticket-{}", k + 2), until).await.unwrap());
    }
}

/// Every primary's Pub/Sub connection killed at once, with hundreds of topics on each: every
/// link subscribes its topics again (in batches of channels of many slots), each primary holds
/// exactly its topics' subscriptions again, every sink is told, and every topic delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_topics_resubscribed_on_every_primary_after_pubsub_connections_killed() {
    if skip_private() {
        return;
    }
    let cluster = redis_cluster().await;
    let cfg = cluster_config(&cluster);
    let prefix = cfg.key_prefix.clone();
    let a = connect(cfg.clone()).await;
    let b = connect(cfg).await;
    const N: usize = 900;
    let topics: Vec<Topic> = (0..N)
        .map(|i| Topic::new(&format!("many/{i}")).unwrap())
        .collect();
    let sinks: Vec<Arc<RecordingSink>> = topics.iter().map(|_| RecordingSink::new()).collect();
    let mut atts = Vec::new();
    for (t, s) in topics.iter().zip(&sinks) {
        atts.push(b.attach(t, s.clone()).await.unwrap());
    }
    // Where the topics live, as each primary's subscriptions say (some 300 each, more than a
    // re-subscription batch).
    let ports = cluster.ports();
    let mut before = Vec::new();
    for port in &ports {
        before.push(subscribed_feed(&mut node(*port).await, &prefix).await);
    }
    let per_node: Vec<usize> = before.iter().map(|l| subscriptions(l)).collect();
    assert_eq!(per_node.iter().sum::<usize>(), N, "{per_node:?}");
    let mut killed = Vec::new();
    for (port, line) in ports.iter().zip(&before) {
        let id = client_field(line, "id").unwrap().to_owned();
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&id)
            .query_async(&mut node(*port).await)
            .await
            .unwrap();
        assert_eq!(n, 1);
        killed.push(id);
    }
    for s in &sinks {
        s.wait_until("interrupted() after the reconnect", LIVENESS, |s| {
            s.interruptions() >= 1
        })
        .await;
    }
    for ((port, want), old) in ports.iter().zip(&per_node).zip(&killed) {
        let line = subscribed_feed(&mut node(*port).await, &prefix).await;
        assert_ne!(
            client_field(&line, "id"),
            Some(old.as_str()),
            "a new connection"
        );
        assert_eq!(
            subscriptions(&line),
            *want,
            "port {port}: every topic again"
        );
    }
    for t in &topics {
        a.publish(t, event(1)).await.unwrap();
    }
    for (t, s) in topics.iter().zip(&sinks) {
        s.wait_for_count(1).await;
        assert_eq!(s.offsets(), [1], "{t}");
    }
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
