//! The hub's counters and gauges, as plain atomics the server renders for Prometheus.
//!
//! Relaxed atomics on purpose: each is an independent tally, and the hot paths (a sink's
//! `deliver`, a connection's write) must not pay for ordering they do not need. Deliveries are
//! counted once per written chunk, not once per event.

use std::sync::atomic::{AtomicU64, Ordering};

/// Hub-wide counters (monotonic) and gauges (current values).
#[derive(Debug, Default)]
pub struct HubMetrics {
    /// Gauge: open streams.
    pub open_streams: AtomicU64,
    /// Counter: events published through [`crate::Hub::publish`].
    pub events_published: AtomicU64,
    /// Counter: live events written to streams (one per event per stream).
    pub events_delivered: AtomicU64,
    /// Counter: events written to streams from the log (resume and gap filling).
    pub events_replayed: AtomicU64,
    /// Counter: `reset` events sent.
    pub resets: AtomicU64,
    /// Counter: subscribers dropped because their queue was full.
    pub slow_consumers_dropped: AtomicU64,
    /// Gauge: live events waiting in connection queues, over all connections.
    pub queued_events: AtomicU64,
    /// Gauge: data bytes of the events waiting in connection queues.
    pub queued_bytes: AtomicU64,
}

/// A copy of [`HubMetrics`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub open_streams: u64,
    pub events_published: u64,
    pub events_delivered: u64,
    pub events_replayed: u64,
    pub resets: u64,
    pub slow_consumers_dropped: u64,
    pub queued_events: u64,
    pub queued_bytes: u64,
}

impl HubMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            open_streams: get(&self.open_streams),
            events_published: get(&self.events_published),
            events_delivered: get(&self.events_delivered),
            events_replayed: get(&self.events_replayed),
            resets: get(&self.resets),
            slow_consumers_dropped: get(&self.slow_consumers_dropped),
            queued_events: get(&self.queued_events),
            queued_bytes: get(&self.queued_bytes),
        }
    }
}
