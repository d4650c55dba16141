//! `rill bench connections`: open N idle subscribers, hold them through a heartbeat, and
//! measure what each costs the server in memory.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rill_sse::Item;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::proc::{
    CpuUse, MemoryUse, discover_server_pids, raise_open_files_limit, tcp_kernel_memory,
};
use crate::progress::bar;
use crate::report::{Table, bytes};
use crate::{BenchError, Target, wire};

/// Connections one source address is given before the next is used (a source address has
/// ~28k ephemeral ports towards one server port; staying well below leaves room for TIME_WAIT).
const PER_SOURCE: usize = 10_000;

/// What `connections` does.
#[derive(Clone, Debug)]
pub struct ConnectionsOptions {
    /// The server.
    pub target: Target,
    /// Subscribers to open.
    pub connections: usize,
    /// The topic they subscribe to.
    pub topic: String,
    /// Connects in flight at once (the server's accept backlog is finite).
    pub concurrency: usize,
    /// The longest time opening all connections may take.
    pub open_timeout: Duration,
    /// The longest hold; it ends early once every open connection got a heartbeat.
    pub hold: Duration,
    /// Source addresses (127.0.0.2, .3, ...) to spread over; `None`: one per 10,000
    /// connections when there are more than 10,000, else the default route.
    pub source_addresses: Option<usize>,
    /// The server's processes (for memory and CPU); empty: discovered from the listening port.
    pub server_pids: Vec<u32>,
    /// Draw a progress bar.
    pub progress: bool,
}

/// What `connections` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionsReport {
    pub scenario: &'static str,
    pub server: String,
    pub flavor: crate::Flavor,
    pub wanted: usize,
    pub opened: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    /// Connections still open at the end that received a heartbeat during the hold.
    pub held_with_heartbeat: usize,
    /// Connections still open at the end.
    pub still_open: usize,
    pub source_addresses: usize,
    pub open_seconds: f64,
    pub hold_seconds: f64,
    pub server_pids: Vec<u32>,
    pub server_memory_before: Option<MemoryUse>,
    pub server_memory_after: Option<MemoryUse>,
    /// (RSS after - RSS before) / opened.
    pub server_rss_per_connection: Option<f64>,
    /// (RssAnon after - RssAnon before) / opened: the server's own user-space memory.
    pub server_user_memory_per_connection: Option<f64>,
    /// Kernel TCP buffer memory (all sockets, both ends) per connection.
    pub kernel_tcp_memory_per_connection: Option<f64>,
    pub server_cpu_seconds: Option<f64>,
    pub generator_cpu_seconds: f64,
    pub open_files_limit: u64,
}

const CONNECTING: u8 = 0;
const OPEN: u8 = 1;
const CLOSED: u8 = 2;
const FAILED: u8 = 3;

/// Runs the scenario.
pub async fn run_connections(options: ConnectionsOptions) -> Result<ConnectionsReport, BenchError> {
    if options.connections == 0 || options.concurrency == 0 {
        return Err(BenchError::Option(
            "connections and concurrency must be > 0".to_owned(),
        ));
    }
    let open_files_limit = raise_open_files_limit();
    let addr = options.target.subscribe_addr()?;
    let pids = if options.server_pids.is_empty() && addr.ip().is_loopback() {
        discover_server_pids(addr.port())
    } else {
        options.server_pids.clone()
    };
    let sources: Vec<Option<IpAddr>> = {
        let count = options
            .source_addresses
            .unwrap_or(if options.connections > PER_SOURCE {
                options.connections.div_ceil(PER_SOURCE)
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
    let request: Arc<[u8]> = options.target.subscribe_request(&options.topic).into();
    let memory_before = MemoryUse::of(&pids);
    let tcp_before = tcp_kernel_memory();
    let server_cpu_before = CpuUse::of(&pids);
    let own_cpu_before = CpuUse::own();

    let states: Arc<[AtomicU8]> = (0..options.connections)
        .map(|_| AtomicU8::new(CONNECTING))
        .collect();
    let comments: Arc<[AtomicU32]> = (0..options.connections)
        .map(|_| AtomicU32::new(0))
        .collect();
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let gate = Arc::new(Semaphore::new(options.concurrency));
    let progress = bar(options.progress, options.connections as u64, "opening");
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for index in 0..options.connections {
        let source = sources[index % sources.len()];
        let (request, states, comments, first_error, gate, progress) = (
            request.clone(),
            states.clone(),
            comments.clone(),
            first_error.clone(),
            gate.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let opened = wire::open(addr, source, &request).await;
            drop(permit);
            progress.inc(1);
            let mut conn = match opened {
                Ok(conn) => conn,
                Err(error) => {
                    states[index].store(FAILED, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert_with(|| error.to_string());
                    }
                    return;
                }
            };
            states[index].store(OPEN, Ordering::Relaxed);
            let counter = &comments[index];
            while conn
                .read_batch(|item| {
                    // A comment (rill, Node, Pushpin) or a ping event (some nchan setups):
                    // anything but the `retry` hint proves the stream is alive.
                    if !matches!(item, Item::Retry(_)) {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .await
            {}
            states[index].store(CLOSED, Ordering::Relaxed);
        });
    }
    // Opening ends when no connection is still connecting, or at the deadline.
    let deadline = started + options.open_timeout;
    while Instant::now() < deadline
        && states
            .iter()
            .any(|state| state.load(Ordering::Relaxed) == CONNECTING)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let count = |wanted: u8| {
        states
            .iter()
            .filter(|state| state.load(Ordering::Relaxed) == wanted)
            .count()
    };
    let opened = options.connections - count(FAILED) - count(CONNECTING);

    // Hold: until every open connection saw a comment (a heartbeat) since now, or `hold`.
    let baseline: Vec<u32> = comments.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let held = || {
        (0..options.connections)
            .filter(|&i| {
                states[i].load(Ordering::Relaxed) == OPEN
                    && comments[i].load(Ordering::Relaxed) > baseline[i]
            })
            .count()
    };
    let holding = bar(options.progress, opened as u64, "heartbeats");
    let hold_started = Instant::now();
    loop {
        let now_held = held();
        holding.set_position(now_held as u64);
        if now_held >= count(OPEN) || hold_started.elapsed() >= options.hold {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    holding.finish_and_clear();
    let hold_seconds = hold_started.elapsed().as_secs_f64();
    let memory_after = MemoryUse::of(&pids);
    let tcp_after = tcp_kernel_memory();
    let held_with_heartbeat = held();
    let still_open = count(OPEN);
    let server_cpu = CpuUse::of(&pids)
        .zip(server_cpu_before)
        .map(|(after, before)| after.since(before).total());
    let generator_cpu_seconds = CpuUse::own().since(own_cpu_before).total();
    tasks.shutdown().await;

    let per = |before: Option<u64>, after: Option<u64>| {
        (opened > 0)
            .then_some(())
            .and(before.zip(after))
            .map(|(before, after)| (after as f64 - before as f64) / opened as f64)
    };
    let first_error = first_error.lock().ok().and_then(|first| first.clone());
    Ok(ConnectionsReport {
        scenario: "connections",
        server: options.target.server.to_string(),
        flavor: options.target.flavor,
        wanted: options.connections,
        opened,
        failed: options.connections - opened,
        first_error,
        held_with_heartbeat,
        still_open,
        source_addresses: sources.iter().flatten().count(),
        open_seconds,
        hold_seconds,
        server_pids: pids,
        server_memory_before: memory_before,
        server_memory_after: memory_after,
        server_rss_per_connection: per(memory_before.map(|m| m.rss), memory_after.map(|m| m.rss)),
        server_user_memory_per_connection: per(
            memory_before.map(|m| m.anon),
            memory_after.map(|m| m.anon),
        ),
        kernel_tcp_memory_per_connection: per(tcp_before, tcp_after),
        server_cpu_seconds: server_cpu,
        generator_cpu_seconds,
        open_files_limit,
    })
}

impl ConnectionsReport {
    /// The human-readable result table.
    pub fn table(&self) -> Table {
        let mut table = Table::new(format!(
            "connections against {} ({:?})",
            self.server, self.flavor
        ));
        table
            .row("wanted", self.wanted)
            .row("opened", self.opened)
            .row("failed", self.failed);
        if let Some(error) = &self.first_error {
            table.row("first error", error);
        }
        table
            .row("held with heartbeat", self.held_with_heartbeat)
            .row("still open at the end", self.still_open)
            .row("source addresses", self.source_addresses.max(1))
            .row("open time", format!("{:.1} s", self.open_seconds))
            .row("hold time", format!("{:.1} s", self.hold_seconds));
        let or_na = |value: Option<f64>| value.map_or_else(|| "n/a".to_owned(), bytes);
        table
            .row("server pids", format!("{:?}", self.server_pids))
            .row(
                "server RSS / connection",
                or_na(self.server_rss_per_connection),
            )
            .row(
                "server user memory / connection",
                or_na(self.server_user_memory_per_connection),
            )
            .row(
                "kernel TCP memory / connection",
                or_na(self.kernel_tcp_memory_per_connection),
            )
            .row(
                "server CPU",
                self.server_cpu_seconds
                    .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.2} s")),
            )
            .row(
                "load generator CPU",
                format!("{:.2} s", self.generator_cpu_seconds),
            );
        table
    }
}
