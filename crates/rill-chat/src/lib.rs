//! The chat engine: bots, detached generations, checkpoints, stop, history budget, recovery.
//!
//! A generation runs in its own task, detached from any HTTP connection. It streams the
//! provider's tokens into the chat's topic on the broker as the chat events of the wire contract
//! ([`events`]), checkpoints the text to the store at a bounded interval, and writes the final
//! state once. Every tab, and any instance, follows the topic; stop cancels the task, which drops
//! the provider stream and so closes the upstream request.
//!
//! **Invariant:** the engine programs against `rill-core` traits only (Broker, Store, Provider);
//! it knows no HTTP framework, database or LLM wire format.

mod engine;
pub mod events;
mod prompt;

pub use engine::{Bot, ChatEngine, ChatError, EngineSettings, Sent, Snapshot};
