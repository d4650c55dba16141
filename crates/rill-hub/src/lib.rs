//! The in-process broker and the per-connection stream sessions (replay, live, reset, slow
//! consumers), for every broker.
//!
//! - [`MemoryBroker`]: the default [`rill_core::Broker`]: per-topic logs in memory with
//!   [`Retention`] by count and age, live fan-out, no global lock on the publish path.
//! - [`Hub`]: a broker plus the session logic. [`Hub::open`] turns a [`StreamRequest`] (topics,
//!   a [`Start`], a [`Wire`] style or a face's [`rill_core::Encoder`], a [`WhenFull`] policy, an
//!   optional prelude and an optional [`rill_core::Coalesce`]) into a [`HubStream`] whose
//!   [`HubStream::next`] yields ready-to-write chunks: exact resume from a `Last-Event-ID`,
//!   `event: reset` where exactness is impossible, then live events.
//!
//! The hub knows no chat: it moves events by offset. What a chat event means, how runs of
//! deltas merge and how a face writes them are the chat protocol's business (`rill-chat`),
//! handed in through the request.
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
//!         when_full: WhenFull::Resync,
//!         prelude: vec![PreludeEvent { event: "snapshot".into(), data: snapshot_json }],
//!         coalesce: None,
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
pub use rill_core::{PreludeEvent, Start, StreamRequest, WhenFull, Wire};
pub use stream::{Hub, HubConfig, HubStream};

#[cfg(test)]
mod tests;
