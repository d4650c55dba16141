//! When to reconnect and how long to wait: exponential backoff with jitter and a cap.

use std::time::Duration;

use reqwest::StatusCode;

/// The smallest backoff base once attempts fail in a row (see [`RetryPolicy::delay`]).
pub const MIN_BACKOFF_BASE: Duration = Duration::from_millis(10);

/// How an [`EventStream`](crate::EventStream) reconnects.
///
/// The wait before the `n`-th consecutive reconnect (n = 1, 2, ...) is
/// `min(max_delay, base * 2^(n-1))`, plus a random share of up to `jitter` of it (so clients
/// cut off together do not all come back together). `base` is the server's last `retry:` value,
/// or `initial_delay` until the server sent one. The count starts again at 1 once an event
/// arrives, so a healthy stream that drops comes back after `base`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The base before the server sends `retry:` (browsers use about 3 s; we use 1 s).
    pub initial_delay: Duration,
    /// The cap of the exponential part.
    pub max_delay: Duration,
    /// The random share added to each wait, from 0.0 (none) to 1.0 (up to double).
    pub jitter: f64,
    /// Consecutive failed attempts (no event in between) before giving up with
    /// [`Error::RetriesExhausted`](crate::Error::RetriesExhausted). `None`: never give up.
    pub max_retries: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            jitter: 0.5,
            max_retries: None,
        }
    }
}

impl RetryPolicy {
    /// A policy that never reconnects: the first failure ends the stream.
    pub fn never() -> Self {
        RetryPolicy {
            max_retries: Some(0),
            ..RetryPolicy::default()
        }
    }

    /// The wait before consecutive attempt `attempt` (1-based), from `base`; `random` in [0, 1).
    ///
    /// From the second attempt on, the base is at least [`MIN_BACKOFF_BASE`]: a server that sent
    /// `retry: 0` and then keeps failing must not be hammered in a tight loop.
    pub fn delay(&self, base: Duration, attempt: u32, random: f64) -> Duration {
        let base = if attempt > 1 {
            base.max(MIN_BACKOFF_BASE)
        } else {
            base
        };
        let doublings = attempt.saturating_sub(1).min(31);
        let exponential = base.saturating_mul(1u32 << doublings).min(self.max_delay);
        let jitter = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        exponential + exponential.mul_f64(jitter)
    }
}

/// What to do with a non-200 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusAction {
    /// Try again later (408, 429, 5xx but 503 without `Retry-After`).
    Retry,
    /// Fail the connection for good: 204 and every other 2xx, 3xx the client could not follow,
    /// 4xx, and 503 without `Retry-After` (WHATWG and the web-platform tests fail the
    /// connection on every non-200 answer; we keep retrying only what is plainly transient).
    Stop,
}

pub(crate) fn classify(status: StatusCode, has_retry_after: bool) -> StatusAction {
    match status.as_u16() {
        408 | 429 => StatusAction::Retry,
        503 if has_retry_after => StatusAction::Retry,
        503 => StatusAction::Stop,
        500..=599 => StatusAction::Retry,
        _ => StatusAction::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        let policy = RetryPolicy {
            max_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        let base = Duration::from_millis(10);
        let delays: Vec<_> = (1..=6)
            .map(|n| policy.delay(base, n, 0.0).as_millis())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 100, 100]);
        // Jitter only adds, up to the configured share.
        assert_eq!(policy.delay(base, 1, 0.999_999).as_millis(), 14);
        assert_eq!(policy.delay(base, 40, 0.0), Duration::from_millis(100));
        // `retry: 0` is honoured once; failures in a row still back off.
        let zero = Duration::ZERO;
        let delays: Vec<_> = (1..=3)
            .map(|n| policy.delay(zero, n, 0.0).as_millis())
            .collect();
        assert_eq!(delays, [0, 20, 40]);
    }

    #[test]
    fn statuses() {
        for (status, retry_after, action) in [
            (408, false, StatusAction::Retry),
            (429, false, StatusAction::Retry),
            (500, false, StatusAction::Retry),
            (502, false, StatusAction::Retry),
            (503, false, StatusAction::Stop),
            (503, true, StatusAction::Retry),
            (204, false, StatusAction::Stop),
            (301, false, StatusAction::Stop),
            (401, false, StatusAction::Stop),
            (404, false, StatusAction::Stop),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(classify(status, retry_after), action, "{status}");
        }
    }
}
