//! Domain types and the traits that adapters implement: topics, stream cursors, chats and
//! messages; the broker, store and provider traits.
//!
//! **Invariant:** this crate does no I/O and knows no runtime, framework or database. Adapters
//! (`rill-hub`, `rill-redis`, `rill-store`, `rill-providers`) implement its traits; the HTTP crate
//! and the chat engine program against them.

pub mod broker;
pub mod chat;
pub mod cursor;
pub mod once;
pub mod provider;
pub mod store;
pub mod stream;
pub mod topic;

pub use broker::{
    Attachment, Broker, BrokerError, Event, LogRead, NewEvent, Published, ResetReason, Sink,
};
pub use cursor::{Epoch, StreamCursor};
pub use once::SpentSet;
pub use provider::{
    BotConfig, CompletionRequest, CompletionStream, Continuation, PromptMessage, Provider,
    ProviderError, ProviderErrorKind, ProviderEvent, ProviderKind, RequestContext, ToolChoice,
    ToolSpec,
};
pub use store::{Store, StoreError};
pub use stream::{Coalesce, Encoder, Flow, PreludeEvent, Start, StreamRequest, WhenFull, Wire};
pub use topic::{Topic, TopicError};
