//! The chat stream protocol: rill's own chat events (their names and JSON), applying them to a
//! message, turning a provider's canonical events into them, merging runs of deltas, and the
//! native and plain-text encodings of a stream.
//!
//! This module is the one home of the protocol. It is pure (no I/O, no clock, no runtime) and
//! builds without the engine (`default-features = false`), so `rill-client` decodes exactly
//! what the engine encodes, and every face (`rill-dialects`) translates from the same events.
//!
//! A chat's topic carries, per assistant message:
//!
//! ```text
//! message.created (user)            the question (absent for a regenerated answer)
//! message.created (assistant)       the placeholder: status "streaming", no parts
//! message.part      part 0          a part begins: reasoning, text, tool_call or source
//! message.reasoning.delta part 0    ...its text, in pieces
//! message.part.done part 0          it is complete (reasoning: its signature)
//! message.part      part 1          text
//! message.delta     part 1          answer text, in pieces (the event of text-only clients)
//! message.part.done part 1
//! message.completed                 status, finish reason, usage
//! ```
//!
//! A part's id is its index in the message's `parts`. Every event carries `message_id`.

mod coalesce;
mod encode;
mod events;
mod reduce;
mod writer;

pub use coalesce::DeltaCoalescer;
pub use encode::{PlainText, SseUntil, Until};
pub use events::{
    CHAT_DELETED, COMPLETED, CREATED, ChatEvent, DELTA, DecodeError, DeltaKind, ERROR, PART,
    PART_DONE, REASONING_DELTA, RESET, SNAPSHOT, TOOL_INPUT_DELTA, TOOL_RESULT,
};
pub use reduce::{ApplyError, apply};
pub use writer::{PartsWriter, sanitize};
