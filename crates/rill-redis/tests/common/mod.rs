//! Helpers for the Redis broker tests: the test Redis, per-test key prefixes, cleanup, a proxy.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_core::Broker;
use rill_redis::{RedisBroker, RedisBrokerConfig};
use rill_test_support::broker_contract::{MakeBroker, Options};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub fn redis_url() -> String {
    std::env::var("RILL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// True (after saying so loudly) when Redis tests are to be skipped.
pub fn skip() -> bool {
    if std::env::var_os("RILL_TEST_SKIP_REDIS").is_some() {
        eprintln!("!!! RILL_TEST_SKIP_REDIS is set: SKIPPING a Redis broker test !!!");
        return true;
    }
    false
}

/// A key prefix no other test uses.
pub fn fresh_prefix() -> String {
    format!("rilltest:{:016x}:", rand::random::<u64>())
}

/// Deletes every key of the prefixes it was given when dropped (also when the test panics).
#[derive(Clone, Default)]
pub struct Cleanup {
    prefixes: Arc<Mutex<Vec<String>>>,
}

impl Cleanup {
    pub fn add(&self, prefix: &str) {
        self.prefixes.lock().unwrap().push(prefix.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if Arc::strong_count(&self.prefixes) > 1 {
            return;
        }
        let prefixes =
            std::mem::take(&mut *self.prefixes.lock().unwrap_or_else(|e| e.into_inner()));
        if prefixes.is_empty() {
            return;
        }
        // A plain blocking connection: Drop cannot await, and this runs once per test.
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        for p in prefixes {
            delete_prefix_sync(&mut c, &p);
        }
    }
}

fn delete_prefix_sync(c: &mut redis::Connection, prefix: &str) {
    let keys: Vec<String> = match redis::cmd("KEYS").arg(format!("{prefix}*")).query(c) {
        Ok(k) => k,
        Err(_) => return,
    };
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(c);
    }
}

/// Deletes a prefix's keys now: what FLUSHDB does to this broker's data, without touching other
/// tests' keys.
pub async fn delete_prefix(prefix: &str) {
    let prefix = prefix.to_owned();
    tokio::task::spawn_blocking(move || {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        delete_prefix_sync(&mut c, &prefix);
    })
    .await
    .unwrap();
}

/// A config for the test Redis with short bounds, so failure paths finish quickly.
pub fn config(prefix: &str) -> RedisBrokerConfig {
    let mut c = RedisBrokerConfig::new(redis_url());
    c.key_prefix = prefix.to_owned();
    c.connect_timeout = Duration::from_secs(2);
    c.command_timeout = Duration::from_secs(2);
    c.max_reconnect_delay = Duration::from_millis(500);
    c.ping_interval = Duration::from_millis(500);
    c
}

pub async fn connect(cfg: RedisBrokerConfig) -> RedisBroker {
    match RedisBroker::connect(cfg).await {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// A broker factory for the contract suite: every broker gets its own prefix, cleaned up when
/// `cleanup` drops.
pub fn make(cleanup: &Cleanup) -> MakeBroker {
    let cleanup = cleanup.clone();
    Box::new(move |opts: Options| {
        let prefix = fresh_prefix();
        cleanup.add(&prefix);
        Box::pin(async move {
            let mut cfg = config(&prefix);
            cfg.retention_count = opts.retention_count;
            Arc::new(connect(cfg).await) as Arc<dyn Broker>
        })
    })
}

/// An async Redis connection for inspecting the server from a test.
pub async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A field (`id`, `sub`, `ssub`...) of a `CLIENT LIST` line.
pub fn client_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|f| f.strip_prefix(field).and_then(|v| v.strip_prefix('=')))
}

/// The channels a `CLIENT LIST` line's connection is subscribed to (classic and sharded).
pub fn subscriptions(line: &str) -> usize {
    ["sub", "ssub"]
        .iter()
        .filter_map(|f| client_field(line, f)?.parse::<usize>().ok())
        .sum()
}

/// The `CLIENT LIST` line of the feed connection of `prefix` that holds subscriptions, on the
/// server `conn` talks to: every broker of the prefix has a feed connection of that name there
/// (Redis lists clients in no fixed order), only the subscribing broker's has subscriptions.
pub async fn subscribed_feed(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> String {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    let name = format!("name={prefix}feed ");
    let mut lines: Vec<&str> = list
        .lines()
        .filter(|l| l.contains(&name) && subscriptions(l) > 0)
        .collect();
    assert_eq!(lines.len(), 1, "one subscribed feed connection: {lines:?}");
    lines.pop().unwrap().to_owned()
}

/// A TCP proxy to Redis that a test can cut (closing every connection and the port) and
/// restore on the same port: Redis going away and coming back, without touching the shared
/// Redis server other tests use.
pub struct Proxy {
    pub port: u16,
    cut: Mutex<CancellationToken>,
}

impl Proxy {
    pub async fn start() -> Arc<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Arc::new(Proxy {
            port,
            cut: Mutex::new(CancellationToken::new()),
        });
        proxy.serve(listener);
        proxy
    }

    pub fn url(&self) -> String {
        let upstream = url::Url::parse(&redis_url()).unwrap();
        let mut u = upstream.clone();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }

    fn serve(&self, listener: TcpListener) {
        let token = self.cut.lock().unwrap().clone();
        let upstream = url::Url::parse(&redis_url()).unwrap();
        let target = format!(
            "{}:{}",
            upstream.host_str().unwrap_or("127.0.0.1"),
            upstream.port().unwrap_or(6379)
        );
        tokio::spawn(async move {
            loop {
                let (mut down, _) = tokio::select! {
                    () = token.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => return },
                };
                let token = token.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    }
                });
            }
        });
    }

    /// Closes every proxied connection and the listening port.
    pub fn cut(&self) {
        self.cut.lock().unwrap().cancel();
    }

    /// Listens again on the same port.
    pub async fn restore(&self) {
        *self.cut.lock().unwrap() = CancellationToken::new();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) => {
                    tries += 1;
                    assert!(
                        tries < 100,
                        "cannot listen on port {} again: {e}",
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }
}

/// A config for a private server (TLS, cluster) with the test's short bounds.
pub fn private_config(url: &str, prefix: &str) -> RedisBrokerConfig {
    let mut c = config(prefix);
    c.url = url.to_owned();
    c
}

/// The config of a broker on a private TLS Redis, trusting its CA.
pub fn tls_config(server: &rill_test_support::redis_servers::TlsRedis) -> RedisBrokerConfig {
    let mut c = private_config(&server.url(), &fresh_prefix());
    c.tls_ca_file = Some(server.ca_file());
    c
}

/// The config of a broker on a private Redis Cluster.
pub fn cluster_config(
    cluster: &rill_test_support::redis_servers::RedisCluster,
) -> RedisBrokerConfig {
    let mut c = private_config(&cluster.url(), &fresh_prefix());
    c.cluster = true;
    c
}

/// A broker factory on a private server: `base` with a fresh prefix per broker (nothing to
/// clean: the server goes with the test).
pub fn make_with(base: RedisBrokerConfig) -> MakeBroker {
    Box::new(move |opts: Options| {
        let mut cfg = base.clone();
        cfg.key_prefix = fresh_prefix();
        cfg.retention_count = opts.retention_count;
        Box::pin(async move { Arc::new(connect(cfg).await) as Arc<dyn Broker> })
    })
}

/// True (loudly) when tests that start a private Redis (TLS, cluster) must be skipped.
pub fn skip_private() -> bool {
    rill_test_support::redis_servers::skip()
}

/// Starts a private TLS Redis (blocking work, off the runtime's threads).
pub async fn tls_redis() -> rill_test_support::redis_servers::TlsRedis {
    tokio::task::spawn_blocking(rill_test_support::redis_servers::TlsRedis::start)
        .await
        .unwrap()
}

/// Starts a private Redis Cluster of three primaries.
pub async fn redis_cluster() -> rill_test_support::redis_servers::RedisCluster {
    tokio::task::spawn_blocking(|| rill_test_support::redis_servers::RedisCluster::start(3))
        .await
        .unwrap()
}
