//! Configuration of `rill serve`: flags, `RILL_*` environment variables and a TOML file.
//!
//! Precedence, highest first: command-line flag, environment variable, TOML file (`--config`),
//! built-in default. Everything is validated into typed values before any port is bound, and a
//! bad value names the key it came from. Every key is documented in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// Flags of `rill serve`. Each one also reads `RILL_<NAME>` and the TOML key of the same name.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A TOML configuration file. Its keys are the flag names with `_` for `-`.
    #[arg(long, env = "RILL_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "RILL_LISTEN", value_name = "ADDR")]
    pub(crate) listen: Option<String>,

    /// How long graceful shutdown waits for open requests, e.g. `10s` [default: 10s].
    #[arg(long, env = "RILL_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub(crate) shutdown_grace: Option<String>,

    /// Log filter, in `RUST_LOG` syntax [default: info].
    #[arg(long, env = "RILL_LOG", value_name = "FILTER")]
    pub(crate) log: Option<String>,

    #[command(flatten)]
    pub(crate) streams: StreamArgs,
}

/// Stream and topics flags of `rill serve`: heartbeats, limits, retention (docs/configuration.md).
#[derive(Debug, Default, Args)]
pub(crate) struct StreamArgs {
    /// Idle time after which a stream gets a `: keep-alive` comment [default: 15s].
    #[arg(long, env = "RILL_HEARTBEAT", value_name = "DURATION")]
    pub(crate) heartbeat: Option<String>,

    /// The `retry:` hint every stream starts with [default: 3s].
    #[arg(long, env = "RILL_RETRY", value_name = "DURATION")]
    pub(crate) retry: Option<String>,

    /// Events kept per topic for replay by the in-process broker [default: 1000].
    #[arg(long, env = "RILL_RETENTION_EVENTS", value_name = "COUNT")]
    pub(crate) retention_events: Option<String>,

    /// How long the in-process broker keeps events for replay [default: 1h].
    #[arg(long, env = "RILL_RETENTION_AGE", value_name = "DURATION")]
    pub(crate) retention_age: Option<String>,

    /// Live events a stream may have waiting before it counts as a slow consumer [default: 512].
    #[arg(long, env = "RILL_QUEUE_SIZE", value_name = "COUNT")]
    pub(crate) queue_size: Option<String>,

    /// Largest `data` of a published event, in bytes [default: 65536].
    #[arg(long, env = "RILL_MAX_EVENT_SIZE", value_name = "BYTES")]
    pub(crate) max_event_size: Option<String>,

    /// Topics on one stream [default: 32].
    #[arg(long, env = "RILL_MAX_TOPICS", value_name = "COUNT")]
    pub(crate) max_topics: Option<String>,

    /// Open streams on this instance [default: 10000].
    #[arg(long, env = "RILL_MAX_CONNECTIONS", value_name = "COUNT")]
    pub(crate) max_connections: Option<String>,

    /// Open streams of one user [default: 100].
    #[arg(long, env = "RILL_MAX_CONNECTIONS_PER_USER", value_name = "COUNT")]
    pub(crate) max_connections_per_user: Option<String>,

    /// Streams end (telling the client to reconnect) after this long, or `off` [default: off].
    #[arg(long, env = "RILL_MAX_STREAM_DURATION", value_name = "DURATION")]
    pub(crate) max_stream_duration: Option<String>,
}

/// The TOML file. Unknown keys are an error, so a typo never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Option<String>,
    pub(crate) shutdown_grace: Option<String>,
    pub(crate) log: Option<String>,
    pub(crate) heartbeat: Option<String>,
    pub(crate) retry: Option<String>,
    pub(crate) retention_events: Option<String>,
    pub(crate) retention_age: Option<String>,
    pub(crate) queue_size: Option<String>,
    pub(crate) max_event_size: Option<String>,
    pub(crate) max_topics: Option<String>,
    pub(crate) max_connections: Option<String>,
    pub(crate) max_connections_per_user: Option<String>,
    pub(crate) max_stream_duration: Option<String>,
}

impl FileConfig {
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("invalid configuration file {}", path.display()))
    }
}

/// The resolved settings of `rill serve`.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) server: rill_server::Config,
    pub(crate) log: String,
}

/// Picks the flag/env value, else the file's, else `None`, remembering which key it came from.
fn pick(flag: Option<String>, file: Option<String>) -> Option<String> {
    flag.or(file)
}

/// Parses `value` for `key`, with an error that names the key and where it can be set.
fn parse_key<T>(
    key: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> anyhow::Result<T> {
    parse(value).map_err(|why| {
        anyhow::anyhow!(
            "invalid value {value:?} for `{key}` (flag --{flag}, env RILL_{env}, or key `{key}` in the TOML file): {why}",
            flag = key.replace('_', "-"),
            env = key.to_uppercase(),
        )
    })
}

pub(crate) fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{e} (expected e.g. 15s, 500ms, 2m)"))
}

impl ServeArgs {
    pub(crate) fn resolve(self) -> anyhow::Result<Settings> {
        let mut file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let defaults = rill_server::Config::default();
        let streams = self.streams.resolve(file_streams(&mut file))?;

        let listen = match pick(self.listen, file.listen) {
            Some(v) => parse_key("listen", &v, |s| {
                s.parse::<SocketAddr>().map_err(|e| e.to_string())
            })?,
            None => defaults.listen,
        };
        let shutdown_grace = match pick(self.shutdown_grace, file.shutdown_grace) {
            Some(v) => parse_key("shutdown_grace", &v, duration)?,
            None => defaults.shutdown_grace,
        };
        let log = pick(self.log, file.log).unwrap_or_else(|| "info".to_owned());
        if log.trim().is_empty() {
            bail!("invalid value for `log`: it is empty");
        }

        Ok(Settings {
            server: rill_server::Config {
                listen,
                shutdown_grace,
                streams,
            },
            log,
        })
    }
}

/// A whole number of at least 1.
pub(crate) fn count(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (expected a whole number)")),
    }
}

/// A duration of at least 1 ms.
pub(crate) fn positive_duration(value: &str) -> Result<Duration, String> {
    duration(value).and_then(|d| {
        if d.is_zero() {
            Err("must be more than 0".to_owned())
        } else {
            Ok(d)
        }
    })
}

impl StreamArgs {
    /// Resolves flags/env over the file's values (`file`).
    pub(crate) fn resolve(self, file: StreamArgs) -> anyhow::Result<rill_server::StreamConfig> {
        let mut c = rill_server::StreamConfig::default();
        if let Some(v) = pick(self.heartbeat, file.heartbeat) {
            c.heartbeat = parse_key("heartbeat", &v, positive_duration)?;
        }
        if let Some(v) = pick(self.retry, file.retry) {
            c.retry = parse_key("retry", &v, duration)?;
        }
        if let Some(v) = pick(self.retention_events, file.retention_events) {
            c.retention.max_events = parse_key("retention_events", &v, count)?;
        }
        if let Some(v) = pick(self.retention_age, file.retention_age) {
            c.retention.max_age = parse_key("retention_age", &v, positive_duration)?;
        }
        if let Some(v) = pick(self.queue_size, file.queue_size) {
            c.hub.queue_capacity = parse_key("queue_size", &v, count)?;
        }
        if let Some(v) = pick(self.max_event_size, file.max_event_size) {
            c.max_event_size = parse_key("max_event_size", &v, count)?;
        }
        if let Some(v) = pick(self.max_topics, file.max_topics) {
            c.max_topics = parse_key("max_topics", &v, count)?;
        }
        if let Some(v) = pick(self.max_connections, file.max_connections) {
            c.max_connections = parse_key("max_connections", &v, count)?;
        }
        if let Some(v) = pick(self.max_connections_per_user, file.max_connections_per_user) {
            c.max_connections_per_user = parse_key("max_connections_per_user", &v, count)?;
        }
        if let Some(v) = pick(self.max_stream_duration, file.max_stream_duration) {
            c.max_stream_duration = parse_key("max_stream_duration", &v, |s| {
                if s.trim() == "off" {
                    Ok(None)
                } else {
                    positive_duration(s).map(Some)
                }
            })?;
        }
        Ok(c)
    }
}

/// Takes the stream keys out of the file.
fn file_streams(file: &mut FileConfig) -> StreamArgs {
    StreamArgs {
        heartbeat: file.heartbeat.take(),
        retry: file.retry.take(),
        retention_events: file.retention_events.take(),
        retention_age: file.retention_age.take(),
        queue_size: file.queue_size.take(),
        max_event_size: file.max_event_size.take(),
        max_topics: file.max_topics.take(),
        max_connections: file.max_connections.take(),
        max_connections_per_user: file.max_connections_per_user.take(),
        max_stream_duration: file.max_stream_duration.take(),
    }
}
