//! Timeouts, retry policy and demo pacing shared by every provider of a process.

use std::num::NonZeroU32;
use std::time::Duration;

/// How providers wait and retry. One value per process (the binary fills it from its
/// configuration); the defaults suit hosted APIs and local servers alike.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderSettings {
    /// Longest wait for a TCP (and TLS) connection to the upstream.
    pub connect_timeout: Duration,
    /// Longest wait, per attempt, from sending the request to the first token of the answer.
    /// Generous by default: a local server may first load the model into memory.
    pub first_token_timeout: Duration,
    /// Longest silence between two tokens once the answer has started. Keep-alive comments and
    /// `ping` events do not count as tokens: a stuck model that only pings still times out.
    pub idle_timeout: Duration,
    /// Attempts in all (the first included) before the first token, for connection errors,
    /// 429 and 5xx. After the first token nothing is ever retried.
    pub max_attempts: NonZeroU32,
    /// The backoff before the second attempt; it doubles for each later one, with jitter.
    pub backoff_base: Duration,
    /// The cap of every wait between attempts, a `Retry-After` from the upstream included: a
    /// chat user should not wait minutes for a model that is rate limited.
    pub backoff_max: Duration,
    /// The demo model's delay before its first token.
    pub demo_first_token_delay: Duration,
    /// The demo model's pace; 0 means as fast as the consumer reads (for benchmarks).
    pub demo_tokens_per_second: u32,
}

/// The `max_tokens` sent to Anthropic when the bot sets none: the Messages API requires one.
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u32 = rill_dialects::anthropic::DEFAULT_MAX_TOKENS;

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            connect_timeout: Duration::from_secs(10),
            first_token_timeout: Duration::from_secs(90),
            idle_timeout: Duration::from_secs(30),
            max_attempts: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            demo_first_token_delay: Duration::from_millis(300),
            demo_tokens_per_second: 30,
        }
    }
}

impl ProviderSettings {
    /// The demo model with no delay at all: every token as soon as the consumer asks.
    pub fn unthrottled_demo(mut self) -> Self {
        self.demo_first_token_delay = Duration::ZERO;
        self.demo_tokens_per_second = 0;
        self
    }
}
