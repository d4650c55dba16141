//! The in-process broker and the per-connection stream sessions (replay, live, reset, slow
//! consumers), for every broker.
//!
//! - [`MemoryBroker`]: the default [`rill_core::Broker`]: per-topic logs in memory with
//!   [`Retention`] by count and age, live fan-out, no global lock on the publish path.
//! - [`Hub`]: a broker plus the session logic. [`Hub::open`] turns a [`StreamRequest`] (topics,
//!   a [`Start`], a [`Wire`] style, a [`WhenFull`] policy and an optional prelude) into a
//!   [`HubStream`] whose [`HubStream::next`] yields ready-to-write SSE chunks: exact resume from a
//!   `Last-Event-ID`, `event: reset` where exactness is impossible, then live events.
//!
//! The HTTP layer adds the transport concerns (headers, `retry:`, heartbeats, shutdown); see
//! `rill-server`'s `sse` module. A chat handler opens its stream like this:
//!
//! ```
//! # async fn demo(hub: &rill_hub::Hub, offset: u64, snapshot_json: String) -> Result<(), rill_core::BrokerError> {
//! use rill_hub::{PreludeEvent, Start, StreamRequest, WhenFull, Wire};
//! let topic = rill_core::Topic::for_chat("c1");
//! let mut stream = hub
//!     .open(StreamRequest {
//!         topics: vec![topic.clone()],
//!         // Continue strictly after the offset the snapshot was computed at.
//!         start: Start::After(vec![(topic, offset)]),
//!         wire: Wire::Raw,
//!         when_full: WhenFull::MergeDeltas,
//!         prelude: vec![PreludeEvent { event: "snapshot".into(), data: snapshot_json }],
//!     })
//!     .await?;
//! while let Some(chunk) = stream.next().await {
//!     // write `chunk` to the response
//!     # let _ = chunk; break;
//! }
//! # Ok(()) }
//! ```

mod memory;
mod metrics;
mod queue;
mod stream;

pub use memory::{MemoryBroker, Retention};
pub use metrics::{HubMetrics, MetricsSnapshot};
pub use queue::{DELTA_EVENT, WhenFull};
pub use stream::{Hub, HubConfig, HubStream, PreludeEvent, Start, StreamRequest, Wire};

#[cfg(test)]
mod tests;
