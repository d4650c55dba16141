//! The chat stream protocol and the chat engine.
//!
//! [`protocol`] (always built) is the one home of the chat stream's vocabulary: rill's chat
//! events and their JSON, how they apply to a message, how a provider's canonical events become
//! parts, how runs of deltas merge, and the native and plain-text encodings. `rill-client`
//! builds this crate without its default `engine` feature to read exactly what the engine
//! writes.
//!
//! The engine (feature `engine`): a generation runs in its own task, detached from any HTTP
//! connection. It streams the provider's events into the chat's topic on the broker as chat
//! events, checkpoints the message (text and parts) to the store at a bounded interval, and
//! writes the final state once. Every tab, and any instance, follows the topic; stop cancels
//! the task, which drops the provider stream and so closes the upstream request. The engine
//! also plans every chat stream ([`ChatEngine::follow`], [`ChatEngine::exchange`],
//! [`ChatEngine::resume`]): where it starts, what goes first, where it ends; the HTTP layer
//! only maps requests onto those plans.
//!
//! **Invariant:** the engine programs against `rill-core` traits only (Broker, Store, Provider);
//! it knows no HTTP framework, database or LLM wire format.

pub mod protocol;

#[cfg(feature = "engine")]
mod engine;
#[cfg(feature = "engine")]
mod prompt;

#[cfg(feature = "engine")]
pub use engine::{
    Answerable, AskOptions, Bot, ChatEngine, ChatError, EngineSettings, Plan, Question, Resume,
    Sent, Snapshot, ToolOutput, control_topic, validate_key,
};
