//! Measures the Redis broker on this machine: publish throughput, and live delivery rate to N
//! local sinks. Not a test: it asserts nothing, it prints figures (see docs/scale-out.md).
//!
//! ```text
//! cargo run --release -p rill-redis --example redis_bench -- [sinks] [events] [publishers]
//! ```
//!
//! Uses `RILL_TEST_REDIS` (default `redis://127.0.0.1:6379`) and a random key prefix that it
//! deletes at the end. `RILL_BENCH_CA_FILE=ca.pem` trusts that CA for a `rediss://` URL;
//! `RILL_BENCH_CLUSTER=1` treats the URL as a Redis Cluster seed (keys are then left behind: run
//! it on a throwaway cluster).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rill_core::{Broker, Event, NewEvent, Sink, Topic};
use rill_redis::{RedisBroker, RedisBrokerConfig};

/// Counts deliveries; the cheapest sink there is, so the figure is the broker's.
struct Counter(AtomicU64);

impl Sink for Counter {
    fn deliver(&self, _event: &Arc<Event>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn interrupted(&self) {}
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

async fn publish_all(broker: &RedisBroker, topics: &[Topic], events: u64, publishers: u64) -> f64 {
    let data = Bytes::from(format!("{{\"text\":\"{}\"}}", "x".repeat(80)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let broker = broker.clone();
        let topics = topics.to_vec();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            let name: Arc<str> = Arc::from("message.delta");
            let mut i = p;
            while i < events {
                let topic = &topics[(i as usize) % topics.len()];
                let ev = NewEvent {
                    name: name.clone(),
                    data: data.clone(),
                };
                if let Err(e) = broker.publish(topic, ev).await {
                    eprintln!("publish failed: {e}");
                    return;
                }
                i += publishers;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    events as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sinks = arg(1, 1000);
    let events = arg(2, 20_000);
    let publishers = arg(3, 16);
    let url = std::env::var("RILL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("rillbench:{:016x}:", rand::random::<u64>());
    let mut config = RedisBrokerConfig::new(url.clone());
    config.key_prefix = prefix.clone();
    config.retention_count = 10_000;
    config.tls_ca_file = std::env::var_os("RILL_BENCH_CA_FILE").map(Into::into);
    config.cluster = std::env::var_os("RILL_BENCH_CLUSTER").is_some();
    let config_cluster = config.cluster;
    let broker = RedisBroker::connect(config).await?;

    // 1. Publish throughput, no subscribers, over 100 topics.
    let topics: Vec<Topic> = (0..100)
        .map(|i| Topic::new(&format!("bench/{i}")))
        .collect::<Result<_, _>>()?;
    let rate = publish_all(&broker, &topics, events, publishers).await;
    println!(
        "publish: {rate:.0} events/s ({events} events, {publishers} concurrent publishers, 100 topics)"
    );

    // 2. Live delivery to N local sinks of one topic.
    let topic = Topic::new("bench/fanout")?;
    let counters: Vec<Arc<Counter>> = (0..sinks)
        .map(|_| Arc::new(Counter(AtomicU64::new(0))))
        .collect();
    let mut attachments = Vec::new();
    for c in &counters {
        attachments.push(broker.attach(&topic, c.clone()).await?);
    }
    let start = Instant::now();
    let prate = publish_all(&broker, std::slice::from_ref(&topic), events, publishers).await;
    let want = events * sinks;
    let deadline = Instant::now() + Duration::from_secs(120);
    let delivered = loop {
        let n: u64 = counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
        if n >= want || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fan-out: {:.0} deliveries/s ({delivered} of {want} to {sinks} sinks in {secs:.2} s; publish side {prate:.0} events/s)",
        delivered as f64 / secs
    );
    drop(attachments);

    // Clean up the bench keys (one server only: a cluster's keys are on several).
    if config_cluster || url.starts_with("rediss://") {
        return Ok(());
    }
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(&keys).exec_async(&mut c).await?;
    }
    Ok(())
}
