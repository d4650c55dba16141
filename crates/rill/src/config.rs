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

    /// On SIGTERM (a rolling deploy), how long running answers may go on before the instance
    /// exits: it stops taking new answers and tells its streams to reconnect elsewhere at
    /// once. What is left then is handed to another instance (with Redis) or ends
    /// `interrupted` (one instance) [default: 60s].
    #[arg(long, env = "RILL_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub(crate) drain_timeout: Option<String>,

    /// Log filter, in `RUST_LOG` syntax [default: info].
    #[arg(long, env = "RILL_LOG", value_name = "FILTER")]
    pub(crate) log: Option<String>,

    #[command(flatten)]
    pub(crate) edge: EdgeArgs,

    #[command(flatten)]
    pub(crate) streams: StreamArgs,

    #[command(flatten)]
    pub(crate) connections: ConnectionArgs,

    #[command(flatten)]
    pub(crate) chat: crate::chat_config::ChatArgs,

    #[command(flatten)]
    pub(crate) redis: RedisArgs,

    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

/// Client-connection flags of `rill serve`: read and idle timeouts, the socket cap.
#[derive(Debug, Default, Args)]
pub(crate) struct ConnectionArgs {
    /// From accept to the first request's complete head, TLS handshake included [default: 10s].
    #[arg(long, env = "RILL_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    pub(crate) header_read_timeout: Option<String>,

    /// From a request's head to the end of its body [default: 30s].
    #[arg(long, env = "RILL_BODY_READ_TIMEOUT", value_name = "DURATION")]
    pub(crate) body_read_timeout: Option<String>,

    /// Close a connection with no request in flight after this long [default: 60s].
    #[arg(long, env = "RILL_IDLE_TIMEOUT", value_name = "DURATION")]
    pub(crate) idle_timeout: Option<String>,

    /// Open client sockets, lowered to stay below the open-files limit [default: 20000].
    #[arg(long, env = "RILL_MAX_OPEN_CONNECTIONS", value_name = "COUNT")]
    pub(crate) max_open_connections: Option<String>,

    /// Serve plain HTTP/1.1 event streams outside hyper, with no idle buffers [default: true].
    #[arg(long, env = "RILL_SSE_FAST_PATH", value_name = "BOOL")]
    pub(crate) sse_fast_path: Option<String>,
}

impl ConnectionArgs {
    /// Resolves flags/env over the file's values (`file`).
    pub(crate) fn resolve(
        self,
        file: ConnectionArgs,
    ) -> anyhow::Result<rill_server::ConnectionConfig> {
        let mut c = rill_server::ConnectionConfig::default();
        if let Some(v) = pick(self.header_read_timeout, file.header_read_timeout) {
            c.header_read_timeout = parse_key("header_read_timeout", &v, positive_duration)?;
        }
        if let Some(v) = pick(self.body_read_timeout, file.body_read_timeout) {
            c.body_read_timeout = parse_key("body_read_timeout", &v, positive_duration)?;
        }
        if let Some(v) = pick(self.idle_timeout, file.idle_timeout) {
            c.idle_timeout = parse_key("idle_timeout", &v, positive_duration)?;
        }
        if let Some(v) = pick(self.max_open_connections, file.max_open_connections) {
            c.max_open_connections = parse_key("max_open_connections", &v, count)?;
        }
        if let Some(v) = pick(self.sse_fast_path, file.sse_fast_path) {
            c.sse_fast_path = parse_key("sse_fast_path", &v, boolean)?;
        }
        Ok(c)
    }
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

    /// Close a connection whose writes make no progress this long [default: 30s].
    #[arg(long, env = "RILL_WRITE_STALL_TIMEOUT", value_name = "DURATION")]
    pub(crate) write_stall_timeout: Option<String>,
}

/// Auth, CORS and TLS flags of `rill serve` (`jwt_*` and `ticket_*` are shared with `rill token`).
#[derive(Debug, Args)]
pub(crate) struct EdgeArgs {
    /// Auth mode: `none` (every caller may do everything) or `jwt` [default: none].
    #[arg(long, env = "RILL_AUTH", value_name = "MODE")]
    pub(crate) auth: Option<String>,

    #[command(flatten)]
    pub(crate) jwt: JwtArgs,

    /// PEM public key that verifies RS256/ES256 tokens (auth `jwt`).
    #[arg(long, env = "RILL_JWT_PUBLIC_KEY", value_name = "PATH")]
    pub(crate) jwt_public_key: Option<PathBuf>,

    /// Token algorithm: HS256 (with `jwt_secret`), RS256 or ES256 (with `jwt_public_key`)
    /// [default: HS256].
    #[arg(long, env = "RILL_JWT_ALGORITHM", value_name = "ALG")]
    pub(crate) jwt_algorithm: Option<String>,

    /// Key that signs stream tickets (32+ bytes); set the same on every instance so any of them
    /// accepts a ticket [default: random per process].
    #[arg(
        long,
        env = "RILL_TICKET_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub(crate) ticket_secret: Option<Secret>,

    /// How long a stream ticket may be used, e.g. `30s` [default: 30s].
    #[arg(long, env = "RILL_TICKET_TTL", value_name = "DURATION")]
    pub(crate) ticket_ttl: Option<String>,

    /// Browser origins allowed by CORS (with credentials), comma-separated, e.g.
    /// `https://app.example.com,http://localhost:3000` [default: none].
    #[arg(
        long,
        env = "RILL_CORS_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub(crate) cors_origins: Option<Vec<String>>,

    /// PEM certificate chain: serve TLS (h2 or HTTP/1.1 by ALPN). Needs `tls_key`.
    #[arg(long, env = "RILL_TLS_CERT", value_name = "PATH")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// PEM private key of `tls_cert`.
    #[arg(long, env = "RILL_TLS_KEY", value_name = "PATH")]
    pub(crate) tls_key: Option<PathBuf>,
}

/// A secret from a flag, the environment or the file. Its `Debug` never shows it, so no derived
/// `Debug` of the arguments can put it in a log line.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// The HS256 secret, shared by `rill serve` and `rill token`.
#[derive(Debug, Args)]
pub(crate) struct JwtArgs {
    /// HS256 secret that verifies tokens (auth `jwt`, 32+ bytes). Never logged.
    #[arg(
        long,
        env = "RILL_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub(crate) jwt_secret: Option<Secret>,
}

/// The TOML file. Unknown keys are an error, so a typo never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Option<String>,
    pub(crate) shutdown_grace: Option<String>,
    pub(crate) drain_timeout: Option<String>,
    pub(crate) log: Option<String>,
    pub(crate) auth: Option<String>,
    pub(crate) jwt_secret: Option<Secret>,
    pub(crate) jwt_public_key: Option<PathBuf>,
    pub(crate) jwt_algorithm: Option<String>,
    pub(crate) ticket_secret: Option<Secret>,
    pub(crate) ticket_ttl: Option<String>,
    pub(crate) cors_origins: Option<Vec<String>>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
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
    pub(crate) write_stall_timeout: Option<String>,
    pub(crate) header_read_timeout: Option<String>,
    pub(crate) body_read_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) max_open_connections: Option<String>,
    pub(crate) sse_fast_path: Option<String>,
    // Chat keys (resolved in chat_config.rs).
    pub(crate) database: Option<String>,
    pub(crate) broker: Option<String>,
    pub(crate) redis_key_prefix: Option<String>,
    pub(crate) lease_ttl: Option<String>,
    pub(crate) instance_id: Option<String>,
    pub(crate) checkpoint_interval: Option<String>,
    pub(crate) history_budget: Option<String>,
    pub(crate) history_cache_bytes: Option<String>,
    pub(crate) max_content_chars: Option<String>,
    pub(crate) demo_first_token_delay: Option<String>,
    pub(crate) demo_tokens_per_second: Option<String>,
    pub(crate) upstream_connect_timeout: Option<String>,
    pub(crate) upstream_first_token_timeout: Option<String>,
    pub(crate) upstream_idle_timeout: Option<String>,
    pub(crate) upstream_max_attempts: Option<String>,
    // Backend keys (resolved below: RedisArgs, StoreArgs).
    pub(crate) redis_ca_file: Option<PathBuf>,
    pub(crate) redis_cluster: Option<String>,
    pub(crate) database_ca_file: Option<PathBuf>,
    pub(crate) database_max_connections: Option<String>,
    pub(crate) database_acquire_timeout: Option<String>,
    pub(crate) database_idle_timeout: Option<String>,
    pub(crate) database_statement_timeout: Option<String>,
    pub(crate) database_migrations: Option<String>,
    /// The bots (`[[bots]]` tables); absent: the default bots.
    pub(crate) bots: Option<Vec<rill_core::BotConfig>>,
}

impl FileConfig {
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid configuration file {}", path.display()))
    }

    /// Parses the file. Top-level numbers and booleans are taken as their text, so
    /// `max_open_connections = 100` and `sse_fast_path = false` mean what the quoted forms do
    /// (every key is parsed from text, like its flag and environment variable).
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        for (_, value) in table.iter_mut() {
            let as_text = match value {
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => continue,
            };
            *value = toml::Value::String(as_text);
        }
        Ok(toml::Value::Table(table).try_into()?)
    }
}

/// The resolved settings of `rill serve`.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) server: rill_server::Config,
    pub(crate) log: String,
    /// How long a draining instance lets its answers run (see `--drain-timeout`).
    pub(crate) drain_timeout: std::time::Duration,
    pub(crate) chat: crate::chat_config::ChatSettings,
    pub(crate) redis: RedisSettings,
    pub(crate) store: rill_store::StoreOptions,
}

/// The default of `drain_timeout`: long enough for most answers to finish during a deploy.
pub(crate) const DEFAULT_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Picks the flag/env value, else the file's, else `None`, remembering which key it came from.
pub(crate) fn pick(flag: Option<String>, file: Option<String>) -> Option<String> {
    flag.or(file)
}

/// Parses `value` for `key`, with an error that names the key and where it can be set.
pub(crate) fn parse_key<T>(
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
        let edge = self.edge.resolve(file_edge(&mut file))?;
        let streams = self.streams.resolve(file_streams(&mut file))?;
        let connections = self.connections.resolve(ConnectionArgs {
            header_read_timeout: file.header_read_timeout.take(),
            body_read_timeout: file.body_read_timeout.take(),
            idle_timeout: file.idle_timeout.take(),
            max_open_connections: file.max_open_connections.take(),
            sse_fast_path: file.sse_fast_path.take(),
        })?;
        let bots = file.bots.take();
        let chat = self.chat.resolve(file_chat(&mut file), bots)?;
        let redis = self.redis.resolve(RedisArgs::from_file(&mut file))?;
        let store = self.store.resolve(StoreArgs::from_file(&mut file))?;
        if matches!(chat.broker, crate::chat_config::Broker::Memory)
            && (redis.cluster || redis.ca_file.is_some())
        {
            bail!(
                "`redis_cluster` / `redis_ca_file` are set, but `broker` is `memory`: set `broker` to the Redis URL (redis://... or rediss://...)"
            );
        }
        if store.ca_file.is_some() && chat.database.starts_with("sqlite:") {
            bail!(
                "`database_ca_file` is set, but `database` is a SQLite file: it is for PostgreSQL over TLS"
            );
        }

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
        let drain_timeout = match pick(self.drain_timeout, file.drain_timeout) {
            Some(v) => parse_key("drain_timeout", &v, duration)?,
            None => DEFAULT_DRAIN_TIMEOUT,
        };
        let log = pick(self.log, file.log).unwrap_or_else(|| "info".to_owned());
        if log.trim().is_empty() {
            bail!("invalid value for `log`: it is empty");
        }

        Ok(Settings {
            server: rill_server::Config {
                listen,
                shutdown_grace,
                auth: edge.auth,
                cors_origins: edge.cors_origins,
                tls: edge.tls,
                streams,
                connections,
            },
            log,
            drain_timeout,
            chat,
            redis,
            store,
        })
    }
}

/// Takes the chat keys out of the file.
fn file_chat(file: &mut FileConfig) -> crate::chat_config::ChatArgs {
    crate::chat_config::ChatArgs {
        database: file.database.take(),
        broker: file.broker.take(),
        redis_key_prefix: file.redis_key_prefix.take(),
        lease_ttl: file.lease_ttl.take(),
        instance_id: file.instance_id.take(),
        checkpoint_interval: file.checkpoint_interval.take(),
        history_budget: file.history_budget.take(),
        history_cache_bytes: file.history_cache_bytes.take(),
        max_content_chars: file.max_content_chars.take(),
        demo_first_token_delay: file.demo_first_token_delay.take(),
        demo_tokens_per_second: file.demo_tokens_per_second.take(),
        upstream_connect_timeout: file.upstream_connect_timeout.take(),
        upstream_first_token_timeout: file.upstream_first_token_timeout.take(),
        upstream_idle_timeout: file.upstream_idle_timeout.take(),
        upstream_max_attempts: file.upstream_max_attempts.take(),
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
        if let Some(v) = pick(self.write_stall_timeout, file.write_stall_timeout) {
            c.write_stall_timeout = parse_key("write_stall_timeout", &v, positive_duration)?;
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
        write_stall_timeout: file.write_stall_timeout.take(),
    }
}

/// Takes the auth/CORS/TLS keys out of the file, so they are resolved in one place.
fn file_edge(file: &mut FileConfig) -> EdgeArgs {
    EdgeArgs {
        auth: file.auth.take(),
        jwt: JwtArgs {
            jwt_secret: file.jwt_secret.take(),
        },
        jwt_public_key: file.jwt_public_key.take(),
        jwt_algorithm: file.jwt_algorithm.take(),
        ticket_secret: file.ticket_secret.take(),
        ticket_ttl: file.ticket_ttl.take(),
        cors_origins: file.cors_origins.take(),
        tls_cert: file.tls_cert.take(),
        tls_key: file.tls_key.take(),
    }
}

/// The resolved auth, CORS and TLS settings.
pub(crate) struct Edge {
    pub(crate) auth: rill_server::Auth,
    pub(crate) cors_origins: Vec<rill_server::Origin>,
    pub(crate) tls: Option<rill_server::TlsConfig>,
}

impl JwtArgs {
    /// The HS256 secret from the flag/env, else from the file's `jwt_secret`.
    pub(crate) fn secret(self, file: Option<Secret>) -> Option<Secret> {
        self.jwt_secret.or(file)
    }
}

impl EdgeArgs {
    /// Resolves flags/env over the file's values (`file`).
    pub(crate) fn resolve(self, file: EdgeArgs) -> anyhow::Result<Edge> {
        let auth = match pick(self.auth, file.auth).as_deref() {
            None | Some("none") => rill_server::Auth::none(),
            Some("jwt") => {
                let algorithm = pick(self.jwt_algorithm, file.jwt_algorithm)
                    .unwrap_or_else(|| "HS256".to_owned());
                let key = match algorithm.to_ascii_uppercase().as_str() {
                    "HS256" => {
                        let Some(secret) = self.jwt.secret(file.jwt.jwt_secret) else {
                            bail!(
                                "`auth = jwt` with HS256 needs `jwt_secret` (flag --jwt-secret, env RILL_JWT_SECRET)"
                            );
                        };
                        rill_server::JwtKey::hs256(secret.expose().as_bytes())
                            .context("invalid value for `jwt_secret`")?
                    }
                    alg @ ("RS256" | "ES256") => {
                        let Some(path) = self.jwt_public_key.or(file.jwt_public_key) else {
                            bail!(
                                "`auth = jwt` with {alg} needs `jwt_public_key` (flag --jwt-public-key, env RILL_JWT_PUBLIC_KEY)"
                            );
                        };
                        let pem = std::fs::read(&path).with_context(|| {
                            format!("cannot read `jwt_public_key` {}", path.display())
                        })?;
                        let key = if alg == "RS256" {
                            rill_server::JwtKey::rs256_pem(&pem)
                        } else {
                            rill_server::JwtKey::es256_pem(&pem)
                        };
                        key.with_context(|| {
                            format!("invalid value for `jwt_public_key` ({})", path.display())
                        })?
                    }
                    _ => bail!(
                        "invalid value {algorithm:?} for `jwt_algorithm` (flag --jwt-algorithm, env RILL_JWT_ALGORITHM): expected HS256, RS256 or ES256"
                    ),
                };
                let ticket_secret = self.ticket_secret.or(file.ticket_secret);
                if let Some(secret) = &ticket_secret
                    && secret.expose().len() < rill_server::MIN_SECRET_LEN
                {
                    bail!(
                        "invalid value for `ticket_secret`: it must be at least {} bytes",
                        rill_server::MIN_SECRET_LEN
                    );
                }
                let ticket_ttl = match pick(self.ticket_ttl, file.ticket_ttl) {
                    Some(v) => parse_key("ticket_ttl", &v, |s| {
                        duration(s).and_then(|d| {
                            if d.as_secs() >= 1 {
                                Ok(d)
                            } else {
                                Err("must be at least 1s".to_owned())
                            }
                        })
                    })?,
                    None => Duration::from_secs(30),
                };
                rill_server::Auth::jwt(
                    key,
                    ticket_secret.as_ref().map(|s| s.expose().as_bytes()),
                    ticket_ttl,
                )
            }
            Some(other) => bail!(
                "invalid value {other:?} for `auth` (flag --auth, env RILL_AUTH, or key `auth` in the TOML file): expected none or jwt"
            ),
        };

        let cors_origins = self
            .cors_origins
            .or(file.cors_origins)
            .unwrap_or_default()
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(|o| {
                rill_server::Origin::parse(o)
                    .with_context(|| "invalid value in `cors_origins`".to_owned())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(
                rill_server::TlsConfig::from_pem_files(&cert, &key)
                    .context("invalid `tls_cert` / `tls_key`")?,
            ),
            _ => bail!("`tls_cert` and `tls_key` go together: set both or neither"),
        };

        Ok(Edge {
            auth,
            cors_origins,
            tls,
        })
    }
}

/// Redis flags of `rill serve` beyond the URL: TLS trust and Cluster mode (docs/scale-out.md).
#[derive(Debug, Default, Args)]
pub(crate) struct RedisArgs {
    /// PEM file of the CA that signs the Redis server's certificate, for `rediss://` URLs
    /// [default: the system's roots].
    #[arg(long, env = "RILL_REDIS_CA_FILE", value_name = "PATH")]
    pub(crate) redis_ca_file: Option<PathBuf>,

    /// `broker` is a Redis Cluster (its URL, or several comma-separated, are seed nodes):
    /// `true` or `false` [default: false].
    #[arg(
        long,
        env = "RILL_REDIS_CLUSTER",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub(crate) redis_cluster: Option<String>,
}

/// The resolved Redis settings beyond the URL.
#[derive(Debug, Default)]
pub(crate) struct RedisSettings {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cluster: bool,
}

impl RedisArgs {
    fn from_file(file: &mut FileConfig) -> Self {
        RedisArgs {
            redis_ca_file: file.redis_ca_file.take(),
            redis_cluster: file.redis_cluster.take(),
        }
    }

    pub(crate) fn resolve(self, file: RedisArgs) -> anyhow::Result<RedisSettings> {
        let cluster = match pick(self.redis_cluster, file.redis_cluster) {
            Some(v) => parse_key("redis_cluster", &v, boolean)?,
            None => false,
        };
        let ca_file = self.redis_ca_file.or(file.redis_ca_file);
        if let Some(path) = &ca_file {
            // Checked here so a typo stops start-up naming the key, before anything connects.
            std::fs::metadata(path).with_context(|| {
                format!(
                    "cannot read `redis_ca_file` {} (flag --redis-ca-file, env RILL_REDIS_CA_FILE)",
                    path.display()
                )
            })?;
        }
        Ok(RedisSettings { ca_file, cluster })
    }
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub(crate) fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

/// Database flags beyond the URL: TLS trust, the pool, migrations (docs/configuration.md).
/// Shared by `rill serve` and `rill migrate`.
#[derive(Debug, Default, Args)]
pub(crate) struct StoreArgs {
    /// PEM file of the CA that signs the PostgreSQL server's certificate; without `sslmode` in
    /// the URL it means `verify-full` [default: the system's roots].
    #[arg(long, env = "RILL_DATABASE_CA_FILE", value_name = "PATH")]
    pub(crate) database_ca_file: Option<PathBuf>,

    /// PostgreSQL connections per instance [default: 16].
    #[arg(long, env = "RILL_DATABASE_MAX_CONNECTIONS", value_name = "COUNT")]
    pub(crate) database_max_connections: Option<String>,

    /// How long a query waits for a free pooled connection [default: 5s].
    #[arg(long, env = "RILL_DATABASE_ACQUIRE_TIMEOUT", value_name = "DURATION")]
    pub(crate) database_acquire_timeout: Option<String>,

    /// Pooled connections idle this long are closed, or `off` [default: 10m].
    #[arg(long, env = "RILL_DATABASE_IDLE_TIMEOUT", value_name = "DURATION")]
    pub(crate) database_idle_timeout: Option<String>,

    /// PostgreSQL cancels a statement running longer, or `off` [default: 30s].
    #[arg(long, env = "RILL_DATABASE_STATEMENT_TIMEOUT", value_name = "DURATION")]
    pub(crate) database_statement_timeout: Option<String>,

    /// At start-up: `apply` the migrations, or `verify` that `rill migrate` did (refuse to start
    /// otherwise) [default: apply].
    #[arg(long, env = "RILL_DATABASE_MIGRATIONS", value_name = "MODE")]
    pub(crate) database_migrations: Option<String>,
}

impl StoreArgs {
    pub(crate) fn from_file(file: &mut FileConfig) -> Self {
        StoreArgs {
            database_ca_file: file.database_ca_file.take(),
            database_max_connections: file.database_max_connections.take(),
            database_acquire_timeout: file.database_acquire_timeout.take(),
            database_idle_timeout: file.database_idle_timeout.take(),
            database_statement_timeout: file.database_statement_timeout.take(),
            database_migrations: file.database_migrations.take(),
        }
    }

    /// Resolves flags/env over the file's values (`file`).
    pub(crate) fn resolve(self, file: StoreArgs) -> anyhow::Result<rill_store::StoreOptions> {
        let mut o = rill_store::StoreOptions {
            ca_file: self.database_ca_file.or(file.database_ca_file),
            ..rill_store::StoreOptions::default()
        };
        if let Some(path) = &o.ca_file {
            std::fs::metadata(path).with_context(|| {
                format!(
                    "cannot read `database_ca_file` {} (flag --database-ca-file, env RILL_DATABASE_CA_FILE)",
                    path.display()
                )
            })?;
        }
        if let Some(v) = pick(self.database_max_connections, file.database_max_connections) {
            o.max_connections = parse_key("database_max_connections", &v, |s| {
                count(s).and_then(|n| u32::try_from(n).map_err(|_| "too large".to_owned()))
            })?;
        }
        if let Some(v) = pick(self.database_acquire_timeout, file.database_acquire_timeout) {
            o.acquire_timeout = parse_key("database_acquire_timeout", &v, positive_duration)?;
        }
        if let Some(v) = pick(self.database_idle_timeout, file.database_idle_timeout) {
            o.idle_timeout = parse_key("database_idle_timeout", &v, duration_or_off)?;
        }
        if let Some(v) = pick(
            self.database_statement_timeout,
            file.database_statement_timeout,
        ) {
            o.statement_timeout = parse_key("database_statement_timeout", &v, duration_or_off)?;
        }
        if let Some(v) = pick(self.database_migrations, file.database_migrations) {
            o.migrations = parse_key("database_migrations", &v, |s| match s.trim() {
                "apply" => Ok(rill_store::Migrations::Apply),
                "verify" => Ok(rill_store::Migrations::Verify),
                _ => Err("expected apply or verify".to_owned()),
            })?;
        }
        Ok(o)
    }
}

/// A positive duration, or `off` for none.
fn duration_or_off(value: &str) -> Result<Option<Duration>, String> {
    if value.trim() == "off" {
        Ok(None)
    } else {
        positive_duration(value).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_and_booleans_read_as_their_text() {
        let file = FileConfig::parse(
            "max_open_connections = 100\nsse_fast_path = false\nheartbeat = \"20s\"\n",
        )
        .expect("a valid file");
        assert_eq!(file.max_open_connections.as_deref(), Some("100"));
        assert_eq!(file.sse_fast_path.as_deref(), Some("false"));
        assert_eq!(file.heartbeat.as_deref(), Some("20s"));
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_are_still_refused() {
        let error = FileConfig::parse("heartbeet = \"20s\"\n").expect_err("a typo");
        assert!(format!("{error:#}").contains("heartbeet"), "{error:#}");
        let error = FileConfig::parse("heartbeat = [1]\n").expect_err("an array");
        assert!(
            format!("{error:#}").contains("heartbeat") || format!("{error:#}").contains("string"),
            "{error:#}"
        );
    }
}
