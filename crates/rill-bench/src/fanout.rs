//! `rill bench fanout`: N subscribers on one topic, a paced publisher, and per event the
//! publish-to-receive latency and a check that every subscriber got every sequence number.
//! `find_max` repeats the run at changing rates (bounded steps) on the same subscribers to find
//! the highest sustained rate whose p99 stays under a bound with nothing lost.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use memchr::memmem;
use rill_sse::Item;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::proc::{CpuUse, discover_server_pids, raise_open_files_limit};
use crate::progress::bar;
use crate::report::{Table, millis};
use crate::{BenchError, Target, wire};

/// The step number of warm-up events (sent until every subscriber has seen one).
const WARM_UP: u64 = u64::MAX >> 1;
/// Latency histograms are sharded so subscribers on different threads rarely share a lock.
const SHARDS: usize = 16;
/// The most events one step may publish (each subscriber keeps a bit per event).
const MAX_EVENTS_PER_STEP: u64 = 10_000_000;
/// Largest latency recorded, in microseconds (larger values are clamped).
const MAX_LATENCY_MICROS: u64 = 120_000_000;

/// The search of `--find-max`.
#[derive(Clone, Copy, Debug)]
pub struct FindMax {
    /// p99 publish-to-receive latency a passing step stays under.
    pub p99_bound: Duration,
    /// The most steps (runs of `duration` each) the search makes.
    pub max_steps: usize,
}

/// What `fanout` does.
#[derive(Clone, Debug)]
pub struct FanoutOptions {
    pub target: Target,
    /// Subscribers on the topic.
    pub subscribers: usize,
    /// Events published per second (the first rate tried with `find_max`).
    pub rate: f64,
    /// How long each run publishes.
    pub duration: Duration,
    /// The topic.
    pub topic: String,
    /// Bytes of padding in each event's data (on top of ~40 bytes of sequence and timestamp).
    pub payload_padding: usize,
    /// Publish requests in flight at once (a slow answer does not stall the pace).
    pub publishers: usize,
    /// After publishing ends, how long to wait for the last deliveries.
    pub drain: Duration,
    /// Connects in flight at once.
    pub concurrency: usize,
    /// The longest time opening the subscribers may take.
    pub open_timeout: Duration,
    /// Source addresses to spread subscribers over (see `connections`).
    pub source_addresses: Option<usize>,
    /// The server's processes (for CPU); empty: discovered from the listening port.
    pub server_pids: Vec<u32>,
    /// Search for the highest passing rate.
    pub find_max: Option<FindMax>,
    /// Draw progress bars.
    pub progress: bool,
}

/// One run at one rate.
#[derive(Clone, Debug, Serialize)]
pub struct FanoutStep {
    pub rate: f64,
    pub duration_seconds: f64,
    pub subscribers: usize,
    pub published: u64,
    pub publish_errors: u64,
    /// Publishes per second actually reached by the paced publisher.
    pub publish_rate: f64,
    /// published × subscribers.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Deliveries per second from the first publish to the last delivery.
    pub deliveries_per_second: f64,
    pub p50_micros: u64,
    pub p99_micros: u64,
    pub max_micros: u64,
    /// Subscribers the server closed during the run.
    pub disconnected: usize,
    /// The server's CPU time (user + system, all its processes) from this run's first publish
    /// to its last delivery or the end of the drain; `None` when it could not be read.
    pub server_cpu_seconds: Option<f64>,
    /// `server_cpu_seconds` per delivery, in microseconds.
    pub server_cpu_micros_per_delivery: Option<f64>,
    /// Within the latency bound with nothing lost (only meaningful with `find_max`).
    pub passed: bool,
}

/// What `fanout` measured.
#[derive(Clone, Debug, Serialize)]
pub struct FanoutReport {
    pub scenario: &'static str,
    pub server: String,
    pub flavor: crate::Flavor,
    pub subscribers_wanted: usize,
    pub subscribers_connected: usize,
    pub first_error: Option<String>,
    pub steps: Vec<FanoutStep>,
    /// With `find_max`: the highest passing step.
    pub best: Option<FanoutStep>,
    pub p99_bound_micros: Option<u64>,
    pub server_cpu_seconds: Option<f64>,
    pub generator_cpu_seconds: f64,
    /// Generator CPU over wall time while publishing (1.0 = one core busy).
    pub generator_cpu_share: f64,
    pub wall_seconds: f64,
}

/// What subscribers report into for one step.
struct Step {
    total: AtomicU64,
    unique: AtomicU64,
    duplicates: AtomicU64,
    /// Microseconds since `Shared::base` of the latest delivery.
    last_receive: AtomicU64,
    latencies: Vec<Mutex<Histogram<u64>>>,
}

struct Shared {
    base: Instant,
    steps: Vec<Step>,
    warmed: AtomicUsize,
    disconnected: AtomicUsize,
}

impl Shared {
    fn micros(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Reads `{"r":R,"seq":S,"t":T` out of an event's data (rill wraps it in its envelope, so it is
/// searched for, not parsed as the whole data). Hand-rolled: a JSON parse per delivery would
/// cost more than everything else the subscriber does.
fn parse_payload(data: &[u8]) -> Option<(u64, u64, u64)> {
    let start = memmem::find(data, br#"{"r":"#)? + 5;
    let mut rest = &data[start..];
    let mut number = |prefix: &[u8]| -> Option<u64> {
        rest = rest.strip_prefix(prefix)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        rest = &rest[digits..];
        Some(value)
    };
    let step = number(b"")?;
    let seq = number(br#","seq":"#)?;
    let time = number(br#","t":"#)?;
    Some((step, seq, time))
}

/// One subscriber's bookkeeping, kept between reads.
struct Tally {
    shard: usize,
    step: Option<usize>,
    total: u64,
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    latencies: Vec<u64>,
    warmed: bool,
}

impl Tally {
    fn event(&mut self, shared: &Shared, data: &str) {
        let Some((step, seq, sent)) = parse_payload(data.as_bytes()) else {
            return;
        };
        if step == WARM_UP {
            if !self.warmed {
                self.warmed = true;
                shared.warmed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let Ok(step) = usize::try_from(step) else {
            return;
        };
        if step >= shared.steps.len() || self.step.is_some_and(|current| step < current) {
            return; // a straggler from an earlier step
        }
        if self.step != Some(step) {
            self.flush(shared);
            self.step = Some(step);
            self.total = shared.steps[step].total.load(Ordering::Acquire);
            self.seen.clear();
            self.seen
                .resize(usize::try_from(self.total.div_ceil(64)).unwrap_or(0), 0);
        }
        if seq < self.total {
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if self.seen[word] & bit == 0 {
                self.seen[word] |= bit;
                self.unique += 1;
            } else {
                self.duplicates += 1;
            }
        }
        self.latencies.push(shared.micros().saturating_sub(sent));
    }

    /// Publishes this read's counts: one atomic add and one lock per read, not per event.
    fn flush(&mut self, shared: &Shared) {
        let Some(step) = self.step.and_then(|step| shared.steps.get(step)) else {
            return;
        };
        if self.unique > 0 {
            step.unique.fetch_add(self.unique, Ordering::Relaxed);
            self.unique = 0;
        }
        if self.duplicates > 0 {
            step.duplicates
                .fetch_add(self.duplicates, Ordering::Relaxed);
            self.duplicates = 0;
        }
        if !self.latencies.is_empty() {
            step.last_receive
                .fetch_max(shared.micros(), Ordering::Relaxed);
            if let Ok(mut histogram) = step.latencies[self.shard].lock() {
                for &latency in &self.latencies {
                    histogram.saturating_record(latency.clamp(1, MAX_LATENCY_MICROS));
                }
            }
            self.latencies.clear();
        }
    }
}

/// Runs the scenario.
pub async fn run_fanout(options: FanoutOptions) -> Result<FanoutReport, BenchError> {
    if options.subscribers == 0 || options.rate <= 0.0 || options.publishers == 0 {
        return Err(BenchError::Option(
            "subscribers, rate and publishers must be > 0".to_owned(),
        ));
    }
    let steps = options.find_max.map_or(1, |find| find.max_steps.max(1));
    raise_open_files_limit();
    let addr = options.target.subscribe_addr()?;
    let pids = if options.server_pids.is_empty() && addr.ip().is_loopback() {
        discover_server_pids(addr.port())
    } else {
        options.server_pids.clone()
    };
    let shared = Arc::new(Shared {
        base: Instant::now(),
        steps: (0..steps)
            .map(|_| Step {
                total: AtomicU64::new(0),
                unique: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                last_receive: AtomicU64::new(0),
                latencies: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
            })
            .collect(),
        warmed: AtomicUsize::new(0),
        disconnected: AtomicUsize::new(0),
    });
    let wall = Instant::now();
    let own_cpu_before = CpuUse::own();
    let server_cpu_before = CpuUse::of(&pids);

    // Subscribers.
    let request: Arc<[u8]> = options.target.subscribe_request(&options.topic).into();
    let sources: Vec<Option<IpAddr>> = {
        let count = options
            .source_addresses
            .unwrap_or(if options.subscribers > 10_000 {
                options.subscribers.div_ceil(10_000)
            } else {
                0
            });
        if count == 0 || !addr.ip().is_loopback() || !addr.is_ipv4() {
            vec![None]
        } else {
            (0..count.min(250))
                .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))))
                .collect()
        }
    };
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let gate = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let opening = bar(options.progress, options.subscribers as u64, "subscribing");
    let mut tasks = JoinSet::new();
    for index in 0..options.subscribers {
        let source = sources[index % sources.len()];
        let (request, shared, connected, failed, first_error, gate, opening) = (
            request.clone(),
            shared.clone(),
            connected.clone(),
            failed.clone(),
            first_error.clone(),
            gate.clone(),
            opening.clone(),
        );
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let opened = wire::open(addr, source, &request).await;
            drop(permit);
            opening.inc(1);
            let mut conn = match opened {
                Ok(conn) => conn,
                Err(error) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert_with(|| error.to_string());
                    }
                    return;
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let mut tally = Tally {
                shard: index % SHARDS,
                step: None,
                total: 0,
                seen: Vec::new(),
                unique: 0,
                duplicates: 0,
                latencies: Vec::with_capacity(64),
                warmed: false,
            };
            loop {
                let alive = conn
                    .read_batch(|item| {
                        if let Item::Event(event) = item {
                            tally.event(&shared, event.data);
                        }
                    })
                    .await;
                tally.flush(&shared);
                if !alive {
                    break;
                }
            }
            shared.disconnected.fetch_add(1, Ordering::Relaxed);
        });
    }
    let deadline = Instant::now() + options.open_timeout;
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < options.subscribers
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    opening.finish_and_clear();
    let subscribers = connected.load(Ordering::Relaxed);
    let first_error = first_error.lock().ok().and_then(|first| first.clone());
    if subscribers == 0 {
        return Err(BenchError::TooFewSubscribers {
            connected: 0,
            wanted: options.subscribers,
            first_error: first_error.unwrap_or_default(),
        });
    }

    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(options.publishers)
        .timeout(Duration::from_secs(10))
        .build()?;
    let publisher = Publisher {
        client,
        target: options.target.clone(),
        topic: options.topic.clone(),
        padding: "x".repeat(options.payload_padding),
    };

    // Warm-up: publish until every subscriber has seen an event, so none misses the start.
    let warm_deadline = Instant::now() + Duration::from_secs(15).max(options.open_timeout / 4);
    let mut warm_seq = 0;
    while shared.warmed.load(Ordering::Relaxed) < subscribers && Instant::now() < warm_deadline {
        publisher.publish(WARM_UP, warm_seq, 0).await?;
        warm_seq += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let publishing_started = Instant::now();
    let cpu_at_publish = CpuUse::own();
    let mut results = Vec::new();
    let mut rate = options.rate;
    let (mut passed_rate, mut failed_rate) = (None::<f64>, None::<f64>);
    for index in 0..steps {
        let step = run_step(
            &options,
            &shared,
            &publisher,
            &pids,
            index,
            rate,
            subscribers,
        )
        .await?;
        let passed = options.find_max.is_none_or(|find| {
            step.lost == 0
                && step.publish_errors == 0
                && step.disconnected == 0
                && step.p99_micros as f64 <= find.p99_bound.as_secs_f64() * 1e6
                && step.publish_rate >= 0.95 * rate
        });
        let step = FanoutStep { passed, ..step };
        let disconnected = step.disconnected > 0;
        results.push(step);
        if options.find_max.is_none() || disconnected {
            break;
        }
        if passed {
            passed_rate = Some(rate);
        } else {
            failed_rate = Some(rate);
        }
        rate = match (passed_rate, failed_rate) {
            (Some(low), None) => low * 2.0,
            (None, Some(high)) => high / 2.0,
            (Some(low), Some(high)) if high / low > 1.08 => (low + high) / 2.0,
            _ => break,
        };
        if rate * options.duration.as_secs_f64() < 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let publish_wall = publishing_started.elapsed().as_secs_f64();
    let generator_cpu_share = CpuUse::own().since(cpu_at_publish).total() / publish_wall.max(1e-9);
    let server_cpu_seconds = CpuUse::of(&pids)
        .zip(server_cpu_before)
        .map(|(after, before)| after.since(before).total());
    let generator_cpu_seconds = CpuUse::own().since(own_cpu_before).total();
    tasks.shutdown().await;
    let best = options.find_max.and_then(|_| {
        results
            .iter()
            .filter(|step| step.passed)
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
            .cloned()
    });
    Ok(FanoutReport {
        scenario: "fanout",
        server: options.target.server.to_string(),
        flavor: options.target.flavor,
        subscribers_wanted: options.subscribers,
        subscribers_connected: subscribers,
        first_error,
        steps: results,
        best,
        p99_bound_micros: options
            .find_max
            .map(|find| u64::try_from(find.p99_bound.as_micros()).unwrap_or(u64::MAX)),
        server_cpu_seconds,
        generator_cpu_seconds,
        generator_cpu_share,
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}

/// A latency histogram: 1 µs to two minutes, three significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("constant bounds are valid")
}

/// Publishes benchmark events to the target.
struct Publisher {
    client: reqwest::Client,
    target: Target,
    topic: String,
    padding: String,
}

impl Publisher {
    async fn publish(&self, step: u64, seq: u64, sent: u64) -> Result<(), BenchError> {
        let payload = format!(
            r#"{{"r":{step},"seq":{seq},"t":{sent},"p":"{}"}}"#,
            self.padding
        );
        let (url, body) = self.target.publish_request(&self.topic, &payload);
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .bearer_auth_opt(self.target.token.as_deref())
            .body(body)
            .send()
            .await?;
        let status = response.status();
        // Read the body so the connection goes back to the pool.
        let _ = response.bytes().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(BenchError::Protocol(format!("publish answered {status}")))
        }
    }
}

/// `bearer_auth` only when there is a token.
trait BearerOpt {
    fn bearer_auth_opt(self, token: Option<&str>) -> Self;
}

impl BearerOpt for reqwest::RequestBuilder {
    fn bearer_auth_opt(self, token: Option<&str>) -> Self {
        match token {
            Some(token) => self.bearer_auth(token),
            None => self,
        }
    }
}

async fn run_step(
    options: &FanoutOptions,
    shared: &Arc<Shared>,
    publisher: &Publisher,
    pids: &[u32],
    index: usize,
    rate: f64,
    subscribers: usize,
) -> Result<FanoutStep, BenchError> {
    let step = &shared.steps[index];
    let total = ((rate * options.duration.as_secs_f64()).round() as u64).max(1);
    if total > MAX_EVENTS_PER_STEP {
        return Err(BenchError::Option(format!(
            "rate × duration is {total} events; at most {MAX_EVENTS_PER_STEP} per run"
        )));
    }
    step.total.store(total, Ordering::Release);
    let disconnected_before = shared.disconnected.load(Ordering::Relaxed);
    let live = subscribers.saturating_sub(disconnected_before);
    let progress = bar(options.progress, total, &format!("{rate:.0} ev/s"));
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let interval_nanos = 1e9 / rate;
    let server_cpu_before = CpuUse::of(pids);
    let start = Instant::now();
    let start_micros = shared.micros();
    let mut publishers = Vec::new();
    for _ in 0..options.publishers {
        let (next, errors, progress) = (next.clone(), errors.clone(), progress.clone());
        publishers.push(async move {
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    break;
                }
                let due = start + Duration::from_nanos((seq as f64 * interval_nanos) as u64);
                tokio::time::sleep_until(due.into()).await;
                if publisher
                    .publish(index as u64, seq, shared.micros())
                    .await
                    .is_err()
                {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                progress.inc(1);
            }
        });
    }
    futures::future::join_all(publishers).await;
    let publish_seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let publish_errors = errors.load(Ordering::Relaxed);
    let published = total - publish_errors;
    let expected = published * live as u64;
    let drain_deadline = Instant::now() + options.drain;
    while step.unique.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = step.unique.load(Ordering::Relaxed);
    let server_cpu_seconds = CpuUse::of(pids)
        .zip(server_cpu_before)
        .map(|(after, before)| after.since(before).total());
    let mut latencies = new_histogram();
    for shard in &step.latencies {
        if let Ok(shard) = shard.lock() {
            let _ = latencies.add(&*shard);
        }
    }
    let window = step
        .last_receive
        .load(Ordering::Relaxed)
        .saturating_sub(start_micros)
        .max(1) as f64
        / 1e6;
    Ok(FanoutStep {
        rate,
        duration_seconds: options.duration.as_secs_f64(),
        subscribers: live,
        published,
        publish_errors,
        publish_rate: total as f64 / publish_seconds.max(1e-9),
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicates: step.duplicates.load(Ordering::Relaxed),
        deliveries_per_second: delivered as f64 / window,
        p50_micros: latencies.value_at_quantile(0.50),
        p99_micros: latencies.value_at_quantile(0.99),
        max_micros: latencies.max(),
        disconnected: shared.disconnected.load(Ordering::Relaxed) - disconnected_before,
        server_cpu_seconds,
        server_cpu_micros_per_delivery: server_cpu_seconds
            .filter(|_| delivered > 0)
            .map(|seconds| seconds * 1e6 / delivered as f64),
        passed: true,
    })
}

impl FanoutReport {
    /// The human-readable result table.
    pub fn table(&self) -> Table {
        let mut table = Table::new(format!(
            "fanout against {} ({:?})",
            self.server, self.flavor
        ));
        table.row(
            "subscribers",
            format!(
                "{} of {}",
                self.subscribers_connected, self.subscribers_wanted
            ),
        );
        if let Some(error) = &self.first_error {
            table.row("first error", error);
        }
        for (index, step) in self.steps.iter().enumerate() {
            table.row(
                format!("step {}", index + 1),
                format!(
                    "rate {:.0}/s ({:.0}/s reached) × {:.0} s: delivered {}/{} ({} lost, {} dup), \
                     {:.0} deliveries/s, p50 {} p99 {} max {}{}{}",
                    step.rate,
                    step.publish_rate,
                    step.duration_seconds,
                    step.delivered,
                    step.expected,
                    step.lost,
                    step.duplicates,
                    step.deliveries_per_second,
                    millis(step.p50_micros),
                    millis(step.p99_micros),
                    millis(step.max_micros),
                    if step.disconnected > 0 {
                        format!(", {} disconnected", step.disconnected)
                    } else {
                        String::new()
                    },
                    match (self.p99_bound_micros, step.passed) {
                        (None, _) => "",
                        (Some(_), true) => " PASS",
                        (Some(_), false) => " fail",
                    }
                ),
            );
        }
        if let Some(bound) = self.p99_bound_micros {
            table.row(
                "best sustained",
                self.best.as_ref().map_or_else(
                    || format!("no rate passed (p99 < {})", millis(bound)),
                    |best| {
                        format!(
                            "{:.0} events/s = {:.0} deliveries/s (p99 {} < {})",
                            best.rate,
                            best.deliveries_per_second,
                            millis(best.p99_micros),
                            millis(bound)
                        )
                    },
                ),
            );
        }
        table
            .row(
                "server CPU",
                self.server_cpu_seconds
                    .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.2} s")),
            )
            .row(
                "load generator CPU",
                format!(
                    "{:.2} s ({:.0}% of a core while publishing)",
                    self.generator_cpu_seconds,
                    self.generator_cpu_share * 100.0
                ),
            )
            .row("wall time", format!("{:.1} s", self.wall_seconds));
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_found_inside_an_envelope() {
        let data = br#"{"topic":"t","data":{"r":2,"seq":17,"t":123456,"p":""}}"#;
        assert_eq!(parse_payload(data), Some((2, 17, 123456)));
        assert_eq!(parse_payload(b"{}"), None);
    }
}
