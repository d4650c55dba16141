//! The Redis broker: a Stream per topic for replay, Pub/Sub for live fan-out.
//!
//! [`RedisBroker`] implements [`rill_core::Broker`] so that several rill instances share every
//! topic: any instance can publish, any instance can replay a topic's log by offset, and every
//! instance receives every event live. The key layout is in `keys.rs`, the atomic publish and
//! read in `scripts.rs`, the live feed in `feed.rs`; `docs/scale-out.md` states the guarantees.
//!
//! The client is redis-rs (`redis`), chosen over `fred` because it is the most used and best
//! kept Rust client and has what this broker needs and no more: a `ConnectionManager` that
//! reconnects the command connection by itself with a bounded backoff and per-command
//! timeouts, `Script` (EVALSHA that reloads the script after a Redis restart), and RESP3
//! connections with a push hook (`AsyncPushSender`) that hands us each Pub/Sub message right in
//! the connection's reader, which lets us dispatch without an extra queue and issue SSUBSCRIBE
//! (sharded Pub/Sub) as a plain command. Its own automatic re-subscription is not used: we must
//! know when the feed was cut, to tell the sinks (`Sink::interrupted`), so the Pub/Sub
//! connection's reconnect loop is ours.

mod config;
mod feed;
mod keys;
mod once;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Client, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisFuture, TlsCertificates,
    Value,
};
use rill_core::{
    Attachment, Broker, BrokerError, Epoch, Event, LogRead, NewEvent, Published, Sink, Topic,
};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use config::{ConfigError, ConnectError, RedisBrokerConfig};

use feed::{ClusterNodes, Feed, FeedSettings, PubSubMode, parse_u64};
use keys::{Keys, key_slot, topic_slot};
use scripts::Scripts;

/// The most events one `read` returns, whatever the caller asks: bounds one script's run time
/// and reply size (Redis is single-threaded; a huge XRANGE stalls every instance).
const MAX_READ: usize = 10_000;

/// A [`Broker`] backed by Redis (one server, or a Redis Cluster). Cheap to clone; every clone
/// shares the connections.
///
/// Dropping the last clone stops the Pub/Sub tasks (attachments still alive stop receiving).
#[derive(Clone, Debug)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Commands (publish, read, epoch): connections that reconnect by themselves.
    conn: Commands,
    keys: Keys,
    /// Whether keys and channels are routed by cluster slot (epochs per slot).
    cluster: bool,
    scripts: Scripts,
    feed: Arc<Feed>,
    mode: PubSubMode,
    retention_count: String,
    /// Retention age in ms as the scripts take it ("0": none).
    retention_age_ms: String,
    command_timeout: Duration,
    /// Stops the Pub/Sub tasks when the broker goes away.
    _stop: DropGuard,
}

/// The command connection: one multiplexed connection to one Redis, or redis-rs's cluster
/// connection, which routes each command by its key's slot, follows `MOVED`, keeps a connection
/// per node and reads the slot map again when it changes.
#[derive(Clone)]
enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Commands::Single(_) => "Commands::Single",
            Commands::Cluster(_) => "Commands::Cluster",
        })
    }
}

impl redis::aio::ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(cmd, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}

/// A TLS failure reads as one in redis-rs's (and rustls's) words: a certificate the trusted CAs
/// did not sign or that names another host, a handshake refused.
fn looks_like_tls(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("certificate") || r.contains("tls") || r.contains("handshake")
}

impl RedisBroker {
    /// Connects to Redis (or to every primary of a cluster), fails within `connect_timeout`
    /// (plus one command timeout) when it cannot, and starts the live feed.
    pub async fn connect(config: RedisBrokerConfig) -> Result<Self, ConnectError> {
        let urls = config.validate()?;
        let ca = config.ca_pem()?;
        let shown = urls
            .iter()
            .map(config::redacted)
            .collect::<Vec<_>>()
            .join(",");
        let tls = urls.iter().any(|u| u.scheme() == "rediss");
        if tls {
            // redis-rs asks rustls for the process's provider: make it ring (what the workspace
            // builds) unless the program installed one. An error means one is installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let fail = |reason: String| {
            if tls && looks_like_tls(&reason) {
                ConnectError::Tls {
                    url: shown.clone(),
                    reason,
                }
            } else {
                ConnectError::Unreachable {
                    url: shown.clone(),
                    reason,
                }
            }
        };
        let certs = |pem: &Vec<u8>| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        };
        let infos = urls
            .iter()
            .map(|u| {
                let info = u
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| ConnectError::Config(ConfigError::BadUrl(e.to_string())))?;
                // RESP3 for the push hook that sharded Pub/Sub on a multiplexed connection
                // needs.
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                Ok(info.set_redis_settings(settings))
            })
            .collect::<Result<Vec<ConnectionInfo>, ConnectError>>()?;
        let first = infos
            .first()
            .cloned()
            .ok_or_else(|| ConnectError::Config(ConfigError::BadUrl("no URL".into())))?;
        // The client of the first node: its settings (auth, TLS with the CA, RESP3) are those
        // of every connection to the deployment.
        let client = match &ca {
            Some(pem) => Client::build_with_tls(first, certs(pem)),
            None => Client::open(first),
        }
        .map_err(|e| fail(e.to_string()))?;

        let cancel = CancellationToken::new();
        let (conn, major) = if config.cluster {
            let mut builder = ClusterClientBuilder::new(infos)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.command_timeout)
                .retries(2)
                .min_retry_wait(50)
                .max_retry_wait(
                    u64::try_from(config.max_reconnect_delay.as_millis()).unwrap_or(u64::MAX),
                );
            if let Some(pem) = &ca {
                builder = builder.certs(certs(pem));
            }
            let cluster = builder.build().map_err(|e| fail(e.to_string()))?;
            let conn = tokio::time::timeout(config.connect_timeout, cluster.get_async_connection())
                .await
                .map_err(|_| fail(format!("no answer within {:?}", config.connect_timeout)))?
                .map_err(|e| fail(e.to_string()))?;
            let major = cluster_server_major(&conn, config.command_timeout)
                .await
                .map_err(&fail)?;
            (Commands::Cluster(conn), major)
        } else {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.command_timeout))
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(config.max_reconnect_delay);
            let conn = tokio::time::timeout(
                config.connect_timeout,
                ConnectionManager::new_with_config(client.clone(), manager_config),
            )
            .await
            .map_err(|_| fail(format!("no answer within {:?}", config.connect_timeout)))?
            .map_err(|e| fail(e.to_string()))?;
            let major = server_major(&conn, config.command_timeout)
                .await
                .map_err(&fail)?;
            (Commands::Single(conn), major)
        };
        let mode = if config.sharded_pubsub && major >= 7 {
            PubSubMode::Sharded
        } else {
            PubSubMode::Classic
        };
        let settings = FeedSettings {
            mode,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            max_reconnect_delay: config.max_reconnect_delay,
            ping_interval: config.ping_interval,
            client_name: format!("{}feed", config.key_prefix),
        };
        let feed = match &conn {
            Commands::Cluster(commands) => {
                let nodes = ClusterNodes {
                    template: client.get_connection_info().clone(),
                    commands: commands.clone(),
                };
                tokio::time::timeout(
                    config.connect_timeout + config.command_timeout,
                    feed::start_cluster(nodes, settings, cancel.clone()),
                )
                .await
            }
            Commands::Single(_) => {
                tokio::time::timeout(
                    config.connect_timeout,
                    feed::start(client, settings, cancel.clone()),
                )
                .await
            }
        }
        .map_err(|_| fail("the Pub/Sub connection timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;

        let broker = RedisBroker {
            inner: Arc::new(Inner {
                conn,
                keys: Keys::new(&config.key_prefix, config.cluster),
                cluster: config.cluster,
                scripts: Scripts::new(),
                feed,
                mode,
                retention_count: config.retention_count.to_string(),
                retention_age_ms: config
                    .retention_age
                    .map_or(0, |a| a.as_millis())
                    .to_string(),
                command_timeout: config.command_timeout,
                _stop: cancel.drop_guard(),
            }),
        };
        let epoch = broker.epoch().await.map_err(|e| fail(e.to_string()))?;
        broker
            .inner
            .feed
            .learn_epoch(broker.home_group(), epoch.clone());
        tracing::info!(url = %shown, %epoch, pubsub = ?mode, cluster = config.cluster,
            "Connected to Redis.");
        Ok(broker)
    }

    /// Whether live events currently flow (every Pub/Sub connection is up).
    pub fn live_feed_connected(&self) -> bool {
        self.inner.feed.is_connected()
    }

    /// The epoch group of `topic`: 0 on one Redis, its slot on a cluster.
    fn group(&self, topic: &Topic) -> u16 {
        if self.inner.cluster {
            topic_slot(topic)
        } else {
            0
        }
    }

    /// The epoch group of [`Broker::epoch`].
    fn home_group(&self) -> u16 {
        if self.inner.cluster {
            key_slot(self.inner.keys.home_epoch().as_bytes())
        } else {
            0
        }
    }

    /// The epoch of the key `epoch_key` (created when missing).
    async fn epoch_at(&self, epoch_key: String) -> Result<Epoch, BrokerError> {
        let mut inv = self.inner.scripts.epoch.prepare_invoke();
        inv.key(epoch_key).arg(fresh_epoch());
        let e: Vec<u8> = self.run("epoch", inv).await?;
        epoch_of(&e).ok_or_else(|| bad_reply("epoch"))
    }

    /// Runs a command with the broker's bound, mapping every failure to `Unavailable`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let mut conn = self.inner.conn.clone();
        match tokio::time::timeout(
            self.inner.command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, what, "A Redis command failed.");
                Err(BrokerError::Unavailable(format!(
                    "Redis {what} failed: {e}"
                )))
            }
            Err(_) => {
                tracing::warn!(what, "A Redis command timed out.");
                Err(BrokerError::Unavailable(format!(
                    "Redis did not answer {what} within {:?}",
                    self.inner.command_timeout
                )))
            }
        }
    }
}

/// The server's major version, from `INFO server` (0 when it does not say).
async fn server_major(conn: &ConnectionManager, timeout: Duration) -> Result<u32, String> {
    let mut c = conn.clone();
    let info: String = tokio::time::timeout(
        timeout,
        redis::cmd("INFO").arg("server").query_async(&mut c),
    )
    .await
    .map_err(|_| format!("INFO did not answer within {timeout:?}"))?
    .map_err(|e| e.to_string())?;
    Ok(major_of(&info))
}

/// The major version of one of the cluster's nodes (they run one version).
async fn cluster_server_major(conn: &ClusterConnection, timeout: Duration) -> Result<u32, String> {
    let mut c = conn.clone();
    let value = tokio::time::timeout(
        timeout,
        c.route_command(
            redis::cmd("INFO").arg("server").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
        ),
    )
    .await
    .map_err(|_| format!("INFO did not answer within {timeout:?}"))?
    .map_err(|e| e.to_string())?;
    let info: String = redis::from_redis_value(value).map_err(|e| e.to_string())?;
    Ok(major_of(&info))
}

fn major_of(info: &str) -> u32 {
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(0)
}

fn fresh_epoch() -> String {
    Epoch::from_random(rand::random::<u64>())
        .as_str()
        .to_owned()
}

fn bulk(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn bad_reply(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!("Redis answered {what} with an unexpected reply"))
}

fn epoch_of(b: &[u8]) -> Option<Epoch> {
    std::str::from_utf8(b).ok().and_then(Epoch::new)
}

#[async_trait::async_trait]
impl Broker for RedisBroker {
    /// The epoch; on a cluster, where each slot has its own, the one of the key prefix's slot
    /// (a topic's own is in its publishes and reads).
    async fn epoch(&self) -> Result<Epoch, BrokerError> {
        self.epoch_at(self.inner.keys.home_epoch()).await
    }

    async fn publish(&self, topic: &Topic, event: NewEvent) -> Result<Published, BrokerError> {
        let keys = &self.inner.keys;
        let mut inv = self.inner.scripts.publish.prepare_invoke();
        inv.key(keys.epoch(topic))
            .key(keys.seq(topic))
            .key(keys.log(topic))
            .arg(fresh_epoch())
            .arg(event.name.as_bytes())
            .arg(&event.data[..])
            .arg(&self.inner.retention_count)
            .arg(&self.inner.retention_age_ms)
            .arg(keys.channel(topic))
            .arg(self.inner.mode.publish_cmd());
        let reply: Vec<Vec<u8>> = self.run("publish", inv).await?;
        let [epoch, offset] = reply.as_slice() else {
            return Err(bad_reply("publish"));
        };
        Ok(Published {
            epoch: epoch_of(epoch).ok_or_else(|| bad_reply("publish"))?,
            offset: parse_u64(offset).ok_or_else(|| bad_reply("publish"))?,
        })
    }

    async fn read(&self, topic: &Topic, after: u64, limit: usize) -> Result<LogRead, BrokerError> {
        let keys = &self.inner.keys;
        let limit = limit.min(MAX_READ);
        // Nothing can follow u64::MAX: ask for no events, still get epoch, head and first.
        let (start, limit) = match after.checked_add(1) {
            Some(s) => (format!("{s}-0"), limit),
            None => ("0-1".to_owned(), 0),
        };
        let mut inv = self.inner.scripts.read.prepare_invoke();
        inv.key(keys.epoch(topic))
            .key(keys.seq(topic))
            .key(keys.log(topic))
            .arg(fresh_epoch())
            .arg(start)
            .arg(limit)
            .arg(&self.inner.retention_age_ms);
        let reply: Vec<Value> = self.run("read", inv).await?;
        let mut it = reply.into_iter().map(bulk);
        let mut next = || it.next().flatten();
        let epoch = next()
            .and_then(|e| epoch_of(&e))
            .ok_or_else(|| bad_reply("read"))?;
        let head = next()
            .and_then(|h| parse_u64(&h))
            .ok_or_else(|| bad_reply("read"))?;
        let first = next()
            .and_then(|f| parse_u64(&f))
            .ok_or_else(|| bad_reply("read"))?;
        let mut events = Vec::new();
        while let Some(offset) = next() {
            let (Some(name), Some(data), Some(time)) = (next(), next(), next()) else {
                return Err(bad_reply("read"));
            };
            let offset = parse_u64(&offset).ok_or_else(|| bad_reply("read"))?;
            let time_ms = parse_u64(&time).ok_or_else(|| bad_reply("read"))?;
            let name = String::from_utf8(name).map_err(|_| bad_reply("read"))?;
            events.push(Arc::new(Event::new(
                topic.clone(),
                offset,
                Arc::from(name),
                Bytes::from(data),
                time_ms,
            )));
        }
        Ok(LogRead {
            epoch,
            head,
            first,
            events,
        })
    }

    async fn attach(&self, topic: &Topic, sink: Arc<dyn Sink>) -> Result<Attachment, BrokerError> {
        let channel = self.inner.keys.channel(topic);
        let group = self.group(topic);
        let guard = self
            .inner
            .feed
            .attach(topic, group, channel, sink, self.inner.command_timeout)
            .await
            .map_err(|()| {
                BrokerError::Unavailable(
                    "the Redis live feed is down (subscribing did not complete)".into(),
                )
            })?;
        if !self.inner.feed.knows_epoch(group) {
            // The first topic of its slot here: learn the slot's epoch now, after the
            // subscription and before the caller reads the log, so a message of another epoch
            // is recognised as one (see `Feed::learn_epoch`).
            let epoch = self.epoch_at(self.inner.keys.epoch(topic)).await?;
            self.inner.feed.learn_epoch(group, epoch);
        }
        Ok(Attachment::new(guard))
    }

    /// The Pub/Sub connection that carries the home slot is up and the epoch answers. (On a
    /// cluster, a primary that is down makes only its own topics fail, with 503, not the
    /// instance unready: every instance would be unready at once.)
    async fn ready(&self) -> bool {
        self.inner.feed.is_connected_for(self.home_group()) && self.epoch().await.is_ok()
    }
}
