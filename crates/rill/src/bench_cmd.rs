//! `rill bench`: load and latency scenarios (`connections`, `fanout`, `chat`) against a running
//! server; a progress bar while each runs, a result table at the end, or one JSON object with
//! `--json`. The scenarios live in `rill-bench`; this file only maps flags to their options.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use rill_bench::{
    ChatOptions, ConnectionsOptions, FanoutOptions, Flavor, StalledOptions, Target, run_chat,
    run_connections, run_fanout, run_stalled,
};

use crate::sub_cmd::ServerArgs;

/// Flags of `rill bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Flags every scenario shares.
#[derive(Debug, Args)]
struct Common {
    #[command(flatten)]
    server: ServerArgs,

    /// Print one JSON object with every figure instead of the table (and no progress bar).
    #[arg(long)]
    json: bool,

    /// The kind of server at --server: `rill`, or a peer of the side-by-side comparison
    /// (`nchan`, `pushpin`, `node`, `floor`; see bench/).
    #[arg(long, default_value = "rill", value_parser = parse_flavor, value_name = "KIND")]
    flavor: Flavor,

    /// The server's process ids, for its memory and CPU (repeatable) [default: the processes
    /// listening on the --server port, found in /proc].
    #[arg(long = "server-pid", value_name = "PID", value_delimiter = ',')]
    server_pids: Vec<u32>,
}

fn parse_flavor(name: &str) -> Result<Flavor, String> {
    Flavor::parse(name)
        .ok_or_else(|| format!("unknown server kind {name:?} (rill, nchan, pushpin, node, floor)"))
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open N idle subscribers, hold them through at least one heartbeat, and report how many
    /// were held and the server's memory per connection (VmRSS and its user-space, anonymous
    /// part, read from /proc/<pid>/status before and after). Against rill, start the server with
    /// `--max-connections` and `--max-connections-per-user` above N and a short `--heartbeat`.
    Connections(ConnectionsArgs),
    /// N subscribers on one topic, events published at a paced rate for a while: deliveries per
    /// second, publish-to-receive latency (p50/p99/max) and lost events; `--find-max` searches
    /// for the highest rate sustained with p99 under a bound and nothing lost.
    Fanout(FanoutArgs),
    /// C concurrent chats with the demo bot: time to first token, tokens per second and the time
    /// per token rill adds over the demo model run in-process. The server must run the demo
    /// unthrottled: `rill serve --demo-first-token-delay 0ms --demo-tokens-per-second 0`.
    Chat(ChatArgs),
    /// Rounds of R subscribers that never read while E events are published, then dropped:
    /// the server's resident memory before, at its peak and after each round (does the memory
    /// the stalled connections held come back?).
    Stalled(StalledArgs),
}

#[derive(Debug, Args)]
struct StalledArgs {
    #[command(flatten)]
    common: Common,
    /// Stalled subscribers per round.
    #[arg(short = 'n', long, default_value_t = 800)]
    readers: usize,
    /// Events published per round.
    #[arg(short = 'e', long, default_value_t = 2000)]
    events: u64,
    /// Padding bytes in each event's data.
    #[arg(long, default_value_t = 1000)]
    padding: usize,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How long to wait after dropping the stalled connections before reading memory.
    #[arg(long, default_value = "5s", value_parser = crate::config::duration)]
    settle: Duration,
    /// The topic.
    #[arg(long, default_value = "bench-stalled")]
    topic: String,
    /// Publish requests in flight at once.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
}

#[derive(Debug, Args)]
struct ConnectionsArgs {
    #[command(flatten)]
    common: Common,
    /// Idle subscribers to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: usize,
    /// The topic they subscribe to.
    #[arg(long, default_value = "bench-idle")]
    topic: String,
    /// The longest hold (it ends as soon as every connection got a heartbeat); make it longer
    /// than the server's heartbeat interval.
    #[arg(long, default_value = "20s", value_parser = crate::config::duration)]
    hold: Duration,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// The longest time opening all connections may take.
    #[arg(long, default_value = "120s", value_parser = crate::config::duration)]
    open_timeout: Duration,
    /// Source addresses 127.0.0.2, .3, ... to spread connections over [default: one per 10,000
    /// connections above 10,000] (one address has ~28k ephemeral ports).
    #[arg(long, value_name = "N")]
    source_addresses: Option<usize>,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers on the topic.
    #[arg(short = 'n', long, default_value_t = 1000)]
    subscribers: usize,
    /// Events published per second (the first rate tried with --find-max).
    #[arg(short = 'r', long, default_value_t = 100.0)]
    rate: f64,
    /// How long each run publishes.
    #[arg(short = 'd', long, default_value = "10s", value_parser = crate::config::duration)]
    duration: Duration,
    /// The topic.
    #[arg(long, default_value = "bench-fanout")]
    topic: String,
    /// Where publishes go when not the --server (Pushpin: its control API, default
    /// http://127.0.0.1:5561).
    #[arg(long, value_name = "URL")]
    publish_url: Option<String>,
    /// Padding bytes added to each event's data.
    #[arg(long, default_value_t = 0)]
    padding: usize,
    /// Publish requests in flight at once.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// How long to wait for the last deliveries after publishing ends.
    #[arg(long, default_value = "5s", value_parser = crate::config::duration)]
    drain: Duration,
    /// Search for the highest rate whose p99 stays under --p99 with nothing lost (bounded by
    /// --max-steps runs of --duration each).
    #[arg(long)]
    find_max: bool,
    /// The p99 bound of --find-max.
    #[arg(long, default_value = "50ms", value_parser = crate::config::duration)]
    p99: Duration,
    /// The most runs --find-max makes.
    #[arg(long, default_value_t = 8)]
    max_steps: usize,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// The longest time opening the subscribers may take.
    #[arg(long, default_value = "120s", value_parser = crate::config::duration)]
    open_timeout: Duration,
    /// Source addresses to spread subscribers over (see `connections`).
    #[arg(long, value_name = "N")]
    source_addresses: Option<usize>,
}

#[derive(Debug, Args)]
struct ChatArgs {
    #[command(flatten)]
    common: Common,
    /// Chats running at once.
    #[arg(short = 'c', long, default_value_t = 10)]
    chats: usize,
    /// Messages sent in each chat, one after another.
    #[arg(short = 'm', long, default_value_t = 3)]
    messages: usize,
    /// The bot.
    #[arg(long, default_value = "demo")]
    bot: String,
    /// The longest the run may take.
    #[arg(long, default_value = "120s", value_parser = crate::config::duration)]
    timeout: Duration,
}

fn target(common: &Common, publish: Option<&str>) -> anyhow::Result<Target> {
    Ok(Target::new(
        common.flavor,
        &common.server.server,
        publish,
        common.server.token.clone(),
    )?)
}

pub(crate) fn main(args: BenchArgs) -> anyhow::Result<()> {
    // One multi-threaded runtime with as many workers as cores this process may use (taskset
    // narrows that), so the generator never competes with itself.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (json, value, table) = match args.scenario {
        Scenario::Connections(args) => {
            let report = run_connections(ConnectionsOptions {
                target: target(&args.common, None)?,
                connections: args.connections,
                topic: args.topic,
                concurrency: args.concurrency,
                open_timeout: args.open_timeout,
                hold: args.hold,
                source_addresses: args.source_addresses,
                server_pids: args.common.server_pids.clone(),
                progress: !args.common.json,
            })
            .await?;
            (
                args.common.json,
                serde_json::to_value(&report)?,
                report.table(),
            )
        }
        Scenario::Fanout(args) => {
            let report = run_fanout(FanoutOptions {
                target: target(&args.common, args.publish_url.as_deref())?,
                subscribers: args.subscribers,
                rate: args.rate,
                duration: args.duration,
                topic: args.topic,
                payload_padding: args.padding,
                publishers: args.publishers,
                drain: args.drain,
                concurrency: args.concurrency,
                open_timeout: args.open_timeout,
                source_addresses: args.source_addresses,
                server_pids: args.common.server_pids.clone(),
                find_max: args.find_max.then_some(rill_bench::FindMax {
                    p99_bound: args.p99,
                    max_steps: args.max_steps,
                }),
                progress: !args.common.json,
            })
            .await?;
            (
                args.common.json,
                serde_json::to_value(&report)?,
                report.table(),
            )
        }
        Scenario::Stalled(args) => {
            let report = run_stalled(StalledOptions {
                target: target(&args.common, None)?,
                readers: args.readers,
                events: args.events,
                payload_padding: args.padding,
                rounds: args.rounds,
                settle: args.settle,
                topic: args.topic,
                publishers: args.publishers,
                server_pids: args.common.server_pids.clone(),
            })
            .await?;
            (
                args.common.json,
                serde_json::to_value(&report)?,
                report.table(),
            )
        }
        Scenario::Chat(args) => {
            let report = run_chat(ChatOptions {
                target: target(&args.common, None)?,
                chats: args.chats,
                messages: args.messages,
                bot: args.bot,
                timeout: args.timeout,
                progress: !args.common.json,
            })
            .await?;
            (
                args.common.json,
                serde_json::to_value(&report)?,
                report.table(),
            )
        }
    };
    if json {
        println!("{value}");
    } else {
        print!("{table}");
    }
    Ok(())
}
