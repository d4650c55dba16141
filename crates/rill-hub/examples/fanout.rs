//! A quick in-process fan-out measurement of the hub (no HTTP): N subscribers of one topic,
//! events published at a steady rate, deliveries per second and the latency from publish to
//! the subscriber's chunk. The real benchmark is `rill bench`; this isolates the hub.
//!
//! `cargo run --release -p rill-hub --example fanout -- 10000 100 5`
//! (subscribers, events per second, seconds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rill_core::{NewEvent, Topic};
use rill_hub::{Hub, HubConfig, MemoryBroker, Retention, Start, StreamRequest};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (subscribers, rate, seconds) = (arg(1, 10_000), arg(2, 100), arg(3, 5));
    let total = rate * seconds;
    let broker = MemoryBroker::new(Retention {
        max_events: 10_000,
        max_age: Duration::from_secs(600),
    });
    let hub = Arc::new(Hub::new(broker, HubConfig::default()));
    let topic = Topic::new("bench")?;
    // Publish instants by offset, so subscribers can compute latency.
    let published: Arc<Vec<AtomicU64>> = Arc::new((0..=total).map(|_| AtomicU64::new(0)).collect());
    let origin = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));

    // Every event's data has the same length, so frames have the same length.
    let data = Bytes::from(format!(r#"{{"n":0,"pad":"{}"}}"#, "x".repeat(64)));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let mut stream = hub
            .open(StreamRequest::topics(vec![topic.clone()], Start::Live))
            .await?;
        let (published, delivered, latencies) =
            (published.clone(), delivered.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = 0u64;
            let mut frame_len = 0usize;
            let mut samples = Vec::new();
            while seen < total {
                let Some(chunk) = stream.next().await else {
                    break;
                };
                if frame_len == 0 {
                    // The first chunk starts at a frame boundary: its first frame ends at "\n\n".
                    frame_len = chunk
                        .windows(2)
                        .position(|w| w == b"\n\n")
                        .map_or(chunk.len(), |p| p + 2);
                }
                let n = (chunk.len() / frame_len.max(1)) as u64;
                seen += n;
                delivered.fetch_add(n, Ordering::Relaxed);
                let at = origin.elapsed().as_micros() as u64;
                let sent = published[seen.min(total) as usize].load(Ordering::Relaxed);
                samples.push(at.saturating_sub(sent));
            }
            latencies.lock().map(|mut l| l.extend(samples)).ok();
        }));
    }

    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for n in 1..=total {
        ticker.tick().await;
        published[n as usize].store(origin.elapsed().as_micros() as u64, Ordering::Relaxed);
        hub.publish(
            &topic,
            NewEvent {
                name: Arc::from("message"),
                data: data.clone(),
            },
        )
        .await?;
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let d = delivered.load(Ordering::Relaxed);
    println!(
        "{subscribers} subscribers, {total} events in {elapsed:.2?}: {d} deliveries, {:.0} deliveries/s; latency p50 {} us, p99 {} us, max {} us",
        d as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        l.last().copied().unwrap_or(0)
    );
    Ok(())
}
