//! Single use across instances: a set of spent keys that expire (stream tickets).
//!
//! A stream ticket may open one stream. Each instance could remember the tickets it saw, but
//! then a ticket opens one stream *per instance*; with a shared backend (Redis), one `spend`
//! per key succeeds in the whole deployment. The in-process set lives in `rill-server`, the
//! Redis one in `rill-redis`.

use crate::BrokerError;

/// A set of spent keys, each forgotten after its expiry.
#[async_trait::async_trait]
pub trait SpentSet: Send + Sync + 'static {
    /// Marks `key` spent until `expires_at_ms` (Unix ms). Returns `true` when the key was not
    /// spent before (the caller may go on), `false` when it was (a replay). Atomic: of two
    /// concurrent calls with the same key, exactly one gets `true`.
    async fn spend(&self, key: &str, expires_at_ms: u64) -> Result<bool, BrokerError>;
}
