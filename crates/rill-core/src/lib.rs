//! Domain types and the traits that adapters implement: topics, stream cursors, the broker.
//!
//! **Invariant:** this crate does no I/O and knows no runtime, framework or database. Adapters
//! (`rill-hub`, `rill-redis`, `rill-store`, `rill-providers`) implement its traits; the HTTP crate
//! and the chat engine program against them.

pub mod broker;
pub mod cursor;
pub mod topic;

pub use broker::{Attachment, Broker, BrokerError, Event, LogRead, NewEvent, Published, ResetReason, Sink};
pub use cursor::{Epoch, StreamCursor};
pub use topic::{Topic, TopicError};
