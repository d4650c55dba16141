//! Stream settings and limits: heartbeat, retry hint, sizes, and the open-connection counters
//! that refuse a stream with a clear error instead of letting one user exhaust the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;

use crate::ApiError;

/// Settings of topic and chat streams and of publishing (validated by the binary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// A `: keep-alive` comment is written after this long without any write.
    pub heartbeat: Duration,
    /// The `retry:` hint every stream starts with (how long `EventSource` waits to reconnect).
    pub retry: Duration,
    /// Streams end (with a final event telling the client to reconnect) after this long; `None`:
    /// never. Lets load balancers rebalance long-lived connections.
    pub max_stream_duration: Option<Duration>,
    /// A connection whose writes make no progress for this long (a client that stopped reading)
    /// is closed, freeing its stream slot.
    pub write_stall_timeout: Duration,
    /// The largest `data` of a published event, in bytes (the request body may be 4 KiB more).
    pub max_event_size: usize,
    /// Topics on one stream.
    pub max_topics: usize,
    /// Open streams on this instance.
    pub max_connections: usize,
    /// Open streams of one user (`sub`; every anonymous caller is one user, `anonymous`).
    pub max_connections_per_user: usize,
    /// Per-topic retention of the in-process broker.
    pub retention: rill_hub::Retention,
    /// Sessions of the hub: the per-connection queue bound.
    pub hub: rill_hub::HubConfig,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            max_stream_duration: None,
            write_stall_timeout: Duration::from_secs(30),
            max_event_size: 64 * 1024,
            max_topics: 32,
            max_connections: 10_000,
            max_connections_per_user: 100,
            retention: rill_hub::Retention::default(),
            hub: rill_hub::HubConfig::default(),
        }
    }
}

impl StreamConfig {
    /// The request body limit of a publish: the event plus room for the JSON around it.
    pub fn max_body_size(&self) -> usize {
        self.max_event_size + 4096
    }
}

/// Counts open streams, in total and per user.
#[derive(Debug)]
pub struct StreamLimiter {
    max_total: usize,
    max_per_user: usize,
    // A std mutex: taken once per stream open and close, never across an await.
    open: Mutex<Open>,
    /// Set when the instance drains: new streams are refused (clients reconnect elsewhere).
    draining: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_user: HashMap<Arc<str>, usize>,
}

/// Holds a stream's place; dropping it frees it.
#[derive(Debug)]
pub struct StreamSlot {
    limiter: Arc<StreamLimiter>,
    user: Arc<str>,
}

impl StreamLimiter {
    pub fn new(config: &StreamConfig) -> Arc<Self> {
        Arc::new(StreamLimiter {
            max_total: config.max_connections,
            max_per_user: config.max_connections_per_user,
            open: Mutex::new(Open::default()),
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Takes a place for a stream of `user`: 503 `too_many_streams` when the instance is full
    /// (another instance may have room), 429 `too_many_user_streams` when the user is at their
    /// limit.
    /// Refuses every new stream from now on (`503 draining`): the instance is going away.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn acquire(self: &Arc<Self>, user: &Arc<str>) -> Result<StreamSlot, ApiError> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ApiError::draining());
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.max_total {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "this server has as many open streams as it allows; retry later",
            ));
        }
        let mine = open.per_user.get(user).copied().unwrap_or(0);
        if mine >= self.max_per_user {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_user_streams",
                format!(
                    "this user already has {mine} open streams, the most allowed; close one first"
                ),
            ));
        }
        open.total += 1;
        *open.per_user.entry(user.clone()).or_insert(0) += 1;
        Ok(StreamSlot {
            limiter: self.clone(),
            user: user.clone(),
        })
    }

    /// Open streams right now.
    pub fn open_streams(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_user() {
        let limiter = StreamLimiter::new(&StreamConfig {
            max_connections: 3,
            max_connections_per_user: 2,
            ..Default::default()
        });
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let a1 = limiter.acquire(&a).unwrap();
        let _a2 = limiter.acquire(&a).unwrap();
        assert_eq!(
            limiter.acquire(&a).unwrap_err().code,
            "too_many_user_streams"
        );
        let _b1 = limiter.acquire(&b).unwrap();
        assert_eq!(limiter.acquire(&b).unwrap_err().code, "too_many_streams");
        drop(a1);
        assert_eq!(limiter.open_streams(), 2);
        let _b2 = limiter.acquire(&b).unwrap();
    }
}
