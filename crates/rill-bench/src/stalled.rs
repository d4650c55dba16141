//! `rill bench stalled`: does the server give memory back after slow readers go away?
//!
//! First it publishes one round's events with no stalled reader (the warm-up: the topic's log
//! fills to its retention, so what the log keeps is in "before"). Then each round opens R subscribers that never read (small kernel receive buffers, so they stall
//! at once), publishes E events of P bytes as fast as a few publishers can (so every stalled
//! connection fills whatever the server buffers for it, up to its bounds), drops the stalled
//! connections, waits `settle`, and records the server's resident memory before the round, its
//! peak during it (sampled every 50 ms) and after. Repeated rounds show whether memory grows
//! from one round to the next. The number to read: the last round's after over the first
//! round's before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

use crate::proc::{MemoryUse, discover_server_pids, raise_open_files_limit};
use crate::report::{Table, bytes};
use crate::{BenchError, Target};

/// What `stalled` does.
#[derive(Clone, Debug)]
pub struct StalledOptions {
    pub target: Target,
    /// Stalled subscribers per round.
    pub readers: usize,
    /// Events published per round.
    pub events: u64,
    /// Bytes of padding in each event's data.
    pub payload_padding: usize,
    /// Rounds.
    pub rounds: usize,
    /// After the stalled connections are dropped, how long to wait before reading memory.
    pub settle: Duration,
    /// The topic.
    pub topic: String,
    /// Publish requests in flight at once.
    pub publishers: usize,
    /// The server's processes; empty: discovered from the listening port.
    pub server_pids: Vec<u32>,
}

/// One round's memory (VmRSS), in bytes.
#[derive(Clone, Debug, Serialize)]
pub struct StalledRound {
    pub before: MemoryUse,
    pub peak: MemoryUse,
    pub after: MemoryUse,
    /// Stalled subscribers that connected.
    pub opened: usize,
    pub published: u64,
    pub publish_errors: u64,
    pub publish_seconds: f64,
}

/// What `stalled` measured.
#[derive(Clone, Debug, Serialize)]
pub struct StalledReport {
    pub scenario: &'static str,
    pub server: String,
    /// The server's memory before the warm-up (a cold server).
    pub cold: MemoryUse,
    pub readers: usize,
    pub events_per_round: u64,
    pub event_bytes: usize,
    pub settle_seconds: f64,
    pub rounds: Vec<StalledRound>,
    /// The last round's `after` VmRSS over the first round's `before`.
    pub rss_after_over_before: Option<f64>,
}

/// Runs the scenario.
pub async fn run_stalled(options: StalledOptions) -> Result<StalledReport, BenchError> {
    if options.readers == 0 || options.rounds == 0 || options.publishers == 0 {
        return Err(BenchError::Option(
            "readers, rounds and publishers must be > 0".to_owned(),
        ));
    }
    raise_open_files_limit();
    let addr = options.target.subscribe_addr()?;
    let pids = if options.server_pids.is_empty() && addr.ip().is_loopback() {
        discover_server_pids(addr.port())
    } else {
        options.server_pids.clone()
    };
    let memory = || MemoryUse::of(&pids).ok_or(BenchError::NoServerProcess);
    let request: Arc<[u8]> = options.target.subscribe_request(&options.topic).into();
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(options.publishers)
        .timeout(Duration::from_secs(10))
        .build()?;
    let padding = "x".repeat(options.payload_padding);
    let cold = memory()?;
    publish_all(&options, &client, &padding).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rounds = Vec::with_capacity(options.rounds);
    for _ in 0..options.rounds {
        let before = memory()?;
        // Open the stalled readers: they send their request and never read.
        let mut readers = Vec::with_capacity(options.readers);
        for _ in 0..options.readers {
            let Ok(socket) = TcpSocket::new_v4() else {
                continue;
            };
            let _ = socket.set_recv_buffer_size(4 * 1024);
            let Ok(mut stream) = socket.connect(addr).await else {
                continue;
            };
            if stream.write_all(&request).await.is_ok() {
                readers.push(stream);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Sample the peak while publishing.
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (sampling, pids) = (sampling.clone(), pids.clone());
            tokio::spawn(async move {
                let mut peak = MemoryUse::default();
                while sampling.load(Ordering::Relaxed) {
                    if let Some(now) = MemoryUse::of(&pids) {
                        peak.rss = peak.rss.max(now.rss);
                        peak.anon = peak.anon.max(now.anon);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                peak
            })
        };
        let started = Instant::now();
        let publish_errors = publish_all(&options, &client, &padding).await;
        let publish_seconds = started.elapsed().as_secs_f64();
        // Let the server finish what it does with the last events (and drop slow consumers).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let opened = readers.len();
        drop(readers);
        tokio::time::sleep(Duration::from_millis(500)).await;
        sampling.store(false, Ordering::Relaxed);
        let peak = sampler.await.unwrap_or_default();
        tokio::time::sleep(options.settle).await;
        let after = memory()?;
        rounds.push(StalledRound {
            before,
            peak,
            after,
            opened,
            published: options.events - publish_errors,
            publish_errors,
            publish_seconds,
        });
    }
    let rss_after_over_before = match (rounds.first(), rounds.last()) {
        (Some(first), Some(last)) if first.before.rss > 0 => {
            Some(last.after.rss as f64 / first.before.rss as f64)
        }
        _ => None,
    };
    Ok(StalledReport {
        scenario: "stalled",
        server: options.target.server.to_string(),
        cold,
        readers: options.readers,
        events_per_round: options.events,
        event_bytes: options.payload_padding + 20,
        settle_seconds: options.settle.as_secs_f64(),
        rounds,
        rss_after_over_before,
    })
}

/// Publishes one round's events with `options.publishers` requests in flight; the errors.
async fn publish_all(options: &StalledOptions, client: &reqwest::Client, padding: &str) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for _ in 0..options.publishers {
        let (next, errors, client, target, topic, padding) = (
            next.clone(),
            errors.clone(),
            client.clone(),
            options.target.clone(),
            options.topic.clone(),
            padding.to_owned(),
        );
        let events = options.events;
        publishers.push(tokio::spawn(async move {
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= events {
                    break;
                }
                let payload = format!(r#"{{"seq":{seq},"p":"{padding}"}}"#);
                let (url, body) = target.publish_request(&topic, &payload);
                let mut post = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(token) = &target.token {
                    post = post.bearer_auth(token);
                }
                let ok = match post.send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for publisher in publishers {
        let _ = publisher.await;
    }
    errors.load(Ordering::Relaxed)
}

impl StalledReport {
    /// The human-readable result table.
    pub fn table(&self) -> Table {
        let mut table = Table::new(format!(
            "stalled readers against {}: {} readers, {} events of ~{} bytes per round",
            self.server, self.readers, self.events_per_round, self.event_bytes
        ));
        table.row(
            "cold (before the warm-up)",
            format!(
                "RSS {} (anon {})",
                bytes(self.cold.rss as f64),
                bytes(self.cold.anon as f64)
            ),
        );
        for (index, round) in self.rounds.iter().enumerate() {
            table.row(
                format!("round {}", index + 1),
                format!(
                    "RSS {} -> peak {} -> after {} s: {} (anon {} -> {} -> {}); {} opened, {} \
                     published ({} errors) in {:.1} s",
                    bytes(round.before.rss as f64),
                    bytes(round.peak.rss as f64),
                    self.settle_seconds,
                    bytes(round.after.rss as f64),
                    bytes(round.before.anon as f64),
                    bytes(round.peak.anon as f64),
                    bytes(round.after.anon as f64),
                    round.opened,
                    round.published,
                    round.publish_errors,
                    round.publish_seconds
                ),
            );
        }
        if let Some(ratio) = self.rss_after_over_before {
            table.row("last after / first before", format!("{ratio:.2}×"));
        }
        table
    }
}
