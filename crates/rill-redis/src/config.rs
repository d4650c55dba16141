//! The Redis broker's settings, validated before anything connects.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`crate::RedisBroker`].
///
/// Built by the binary from its own configuration; [`RedisBrokerConfig::new`] gives sensible
/// defaults for everything but the URL. Its `Debug` hides the URL's password.
#[derive(Clone)]
pub struct RedisBrokerConfig {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS) or
    /// `unix:///path/to/socket`. With [`cluster`](Self::cluster), one or more seed nodes,
    /// comma-separated (`redis://h1:6379,redis://h2:6379`). The password never reaches a log
    /// line or an error message.
    pub url: String,
    /// PEM file of the certificate authorities that sign the server's certificate, for
    /// `rediss://` URLs; `None` trusts the system's roots. Only these are trusted when set.
    pub tls_ca_file: Option<PathBuf>,
    /// The URL names nodes of a Redis Cluster: keys and channels are routed by slot, the epoch
    /// is kept per slot, and live events come over one Pub/Sub connection per primary
    /// (docs/scale-out.md).
    pub cluster: bool,
    /// Prepended to every key and channel, so several deployments (or tests) can share one Redis.
    /// Up to 64 chars of ASCII letters, digits and `_ - . : @ /`.
    pub key_prefix: String,
    /// How many events each topic's log keeps (the newest ones).
    pub retention_count: u64,
    /// How long an event stays in its topic's log; `None` keeps events until `retention_count`
    /// pushes them out.
    pub retention_age: Option<Duration>,
    /// Bound on connecting to Redis, at start-up and on every reconnect attempt.
    pub connect_timeout: Duration,
    /// Bound on every command (publish, read, subscribe): past it the call fails with
    /// `BrokerError::Unavailable` instead of hanging while Redis is away.
    pub command_timeout: Duration,
    /// The longest pause between two reconnect attempts (the backoff doubles from 50 ms up to it).
    pub max_reconnect_delay: Duration,
    /// How often the Pub/Sub connection is pinged, so a silently dead TCP connection (a host
    /// gone without a FIN) is noticed within about this time plus `command_timeout`.
    pub ping_interval: Duration,
    /// Use sharded Pub/Sub (SPUBLISH/SSUBSCRIBE) when the server has it (Redis 7 and later).
    /// Only a Redis Cluster gains from it; on one server it behaves like classic Pub/Sub.
    pub sharded_pubsub: bool,
}

impl RedisBrokerConfig {
    /// The defaults: prefix `rill:`, 1000 events and 1 hour per topic (as the in-process broker),
    /// 5 s bounds.
    pub fn new(url: impl Into<String>) -> Self {
        RedisBrokerConfig {
            url: url.into(),
            tls_ca_file: None,
            cluster: false,
            key_prefix: "rill:".to_owned(),
            retention_count: 1000,
            retention_age: Some(Duration::from_secs(3600)),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            sharded_pubsub: true,
        }
    }
}

impl std::fmt::Debug for RedisBrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url: Vec<String> = self
            .url
            .split(',')
            .map(|u| url::Url::parse(u).map_or_else(|_| "<invalid>".to_owned(), |u| redacted(&u)))
            .collect();
        f.debug_struct("RedisBrokerConfig")
            .field("url", &url.join(","))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("retention_count", &self.retention_count)
            .field("retention_age", &self.retention_age)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("ping_interval", &self.ping_interval)
            .field("sharded_pubsub", &self.sharded_pubsub)
            .finish()
    }
}

/// Why a Redis broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid Redis URL: {0}")]
    BadUrl(String),
    #[error(
        "unsupported Redis URL scheme {0:?}: use redis://host:port[/db], rediss://host:port[/db] \
         (TLS) or unix:///path/to/socket"
    )]
    BadScheme(String),
    #[error("invalid Redis Cluster URL: {0}")]
    BadCluster(String),
    #[error("cannot use the Redis CA file {path}: {reason}")]
    BadCaFile { path: String, reason: String },
    #[error("invalid Redis key prefix {0:?}: up to 64 ASCII letters, digits and _ - . : @ /")]
    BadPrefix(String),
    #[error("invalid Redis broker setting: {0}")]
    BadValue(&'static str),
}

/// What `RedisBroker::connect` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis did not answer, or answered with an error, within `connect_timeout`. The URL in the
    /// message has its password removed.
    #[error("cannot connect to Redis at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The TLS handshake failed: the server's certificate is not signed by a trusted CA (the
    /// CA file, or the system's roots), or does not name the host of the URL.
    #[error(
        "TLS with Redis at {url} failed: {reason}; check that the CA file (or the system's \
         roots) signed the server's certificate and that the URL's host is a name the \
         certificate holds"
    )]
    Tls { url: String, reason: String },
}

/// The URL without its password, for messages and logs.
pub(crate) fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have none to hide.
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

impl RedisBrokerConfig {
    /// Checks every field; returns the parsed URLs (one, or a cluster's seeds).
    pub(crate) fn validate(&self) -> Result<Vec<url::Url>, ConfigError> {
        let urls = self
            .url
            .split(',')
            .map(|u| url::Url::parse(u.trim()).map_err(|e| ConfigError::BadUrl(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        for url in &urls {
            match url.scheme() {
                "redis" | "rediss" => {}
                "unix" | "redis+unix" if !self.cluster => {}
                "unix" | "redis+unix" => {
                    return Err(ConfigError::BadCluster(
                        "a cluster is reached over TCP: use redis:// or rediss:// seeds".into(),
                    ));
                }
                other => return Err(ConfigError::BadScheme(other.to_owned())),
            }
        }
        if urls.len() > 1 && !self.cluster {
            return Err(ConfigError::BadUrl(
                "several URLs (comma-separated) are only for the seeds of a cluster".into(),
            ));
        }
        let tls = urls.iter().filter(|u| u.scheme() == "rediss").count();
        if tls != 0 && tls != urls.len() {
            return Err(ConfigError::BadCluster(
                "the seeds mix rediss:// and redis://: a cluster is all TLS or none".into(),
            ));
        }
        if let Some(path) = &self.tls_ca_file
            && tls == 0
        {
            return Err(ConfigError::BadCaFile {
                path: path.display().to_string(),
                reason: "a CA file is for TLS, but the URL is not rediss://".into(),
            });
        }
        let p = &self.key_prefix;
        let prefix_ok = p.len() <= 64
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:@/".contains(&b));
        if !prefix_ok {
            return Err(ConfigError::BadPrefix(p.clone()));
        }
        if self.retention_count == 0 {
            return Err(ConfigError::BadValue("retention_count must be at least 1"));
        }
        if self.retention_age.is_some_and(|a| a.as_millis() == 0) {
            return Err(ConfigError::BadValue("retention_age must be at least 1 ms"));
        }
        for (d, what) in [
            (self.connect_timeout, "connect_timeout must be positive"),
            (self.command_timeout, "command_timeout must be positive"),
            (
                self.max_reconnect_delay,
                "max_reconnect_delay must be positive",
            ),
            (self.ping_interval, "ping_interval must be positive"),
        ] {
            if d.is_zero() {
                return Err(ConfigError::BadValue(what));
            }
        }
        Ok(urls)
    }

    /// The CA file's PEM, checked to hold at least one certificate.
    pub(crate) fn ca_pem(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.tls_ca_file else {
            return Ok(None);
        };
        let bad = |reason: String| ConfigError::BadCaFile {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
        if !pem.windows(BEGIN.len()).any(|w| w == BEGIN) {
            return Err(bad(
                "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        Ok(Some(pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = RedisBrokerConfig::new("redis://127.0.0.1:6379/2");
        assert!(ok.validate().is_ok());
        assert!(RedisBrokerConfig::new("rediss://h:1").validate().is_ok());
        let mut c = RedisBrokerConfig::new("redis://a:1,redis://b:2");
        assert!(matches!(c.validate(), Err(ConfigError::BadUrl(_))));
        c.cluster = true;
        assert_eq!(c.validate().unwrap().len(), 2);
        c.url = "rediss://a:1,redis://b:2".into();
        assert!(matches!(c.validate(), Err(ConfigError::BadCluster(_))));
        c.url = "unix:///tmp/r.sock".into();
        assert!(matches!(c.validate(), Err(ConfigError::BadCluster(_))));
        let mut c = RedisBrokerConfig::new("redis://h:1");
        c.tls_ca_file = Some("/tmp/ca.pem".into());
        assert!(matches!(c.validate(), Err(ConfigError::BadCaFile { .. })));
        let e = RedisBrokerConfig::new("http://127.0.0.1:6379")
            .validate()
            .unwrap_err();
        assert!(
            matches!(e, ConfigError::BadScheme(ref s) if s == "http"),
            "{e}"
        );
        assert!(e.to_string().contains("redis://"));
        assert!(matches!(
            RedisBrokerConfig::new("not a url").validate(),
            Err(ConfigError::BadUrl(_))
        ));
        let mut c = RedisBrokerConfig::new("redis://h");
        c.key_prefix = "a{b}".into();
        assert!(matches!(c.validate(), Err(ConfigError::BadPrefix(_))));
        let mut c = RedisBrokerConfig::new("redis://h");
        c.retention_count = 0;
        assert!(matches!(c.validate(), Err(ConfigError::BadValue(_))));
    }

    #[test]
    fn password_is_redacted() {
        let u = url::Url::parse("redis://user:s3cret@h:6379/0").unwrap();
        let r = redacted(&u);
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("user"));
        let c = RedisBrokerConfig::new("redis://user:s3cret@h:6379/0");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
