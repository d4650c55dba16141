//! Single use across instances: [`rill_core::SpentSet`] on Redis (stream tickets).
//!
//! `SET <prefix>spent:<key> 1 NX PXAT <expiry>`: Redis sets the key only when it is absent, and
//! forgets it at the expiry, in one command, so of every `spend` of one key in the whole
//! deployment exactly one gets `true`. One key per command, so it works on a cluster as on one
//! Redis (the key is routed by its own slot).

use rill_core::{BrokerError, SpentSet};

use crate::RedisBroker;

#[async_trait::async_trait]
impl SpentSet for RedisBroker {
    async fn spend(&self, key: &str, expires_at_ms: u64) -> Result<bool, BrokerError> {
        let name = self.inner.keys.spent(key);
        // PXAT must be positive; a time already past makes Redis forget the key at once, which
        // is right for a ticket that expired anyway (its caller checks the expiry itself).
        let at = expires_at_ms.max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&name).arg(1).arg("NX").arg("PXAT").arg(at);
        let mut conn = self.inner.conn.clone();
        let reply: Result<Option<String>, _> =
            tokio::time::timeout(self.inner.command_timeout, cmd.query_async(&mut conn))
                .await
                .map_err(|_| {
                    BrokerError::Unavailable(format!(
                        "Redis did not answer a ticket check within {:?}",
                        self.inner.command_timeout
                    ))
                })?;
        match reply {
            // `OK`: set now, so not spent before. Nil: the key was there.
            Ok(set) => Ok(set.is_some()),
            Err(e) => {
                tracing::warn!(error = %e, "A Redis ticket check failed.");
                Err(BrokerError::Unavailable(format!(
                    "Redis ticket check failed: {e}"
                )))
            }
        }
    }
}
