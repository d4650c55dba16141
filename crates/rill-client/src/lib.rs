//! A reconnecting SSE client (GET and POST) and typed clients for rill's chats and topics.
//!
//! - [`SseRequest`] / [`EventStream`]: any SSE endpoint, rill's or not, as a `Stream` of
//!   [`SseItem`]s. It behaves like the browser's `EventSource` (and `fetch-event-source` for
//!   POST): `Last-Event-ID` on reconnect, `retry:` honoured, exponential backoff with jitter
//!   ([`RetryPolicy`]), stops on 204 and on 4xx but 408/429, checks the content type, follows
//!   redirects. Events are parsed by [`rill_sse::Parser`].
//! - [`Client`]: one rill server (base URL, bearer token, HTTP pool); [`TopicsClient`] publishes
//!   and subscribes on it; [`ChatsClient`] manages chats and streams answers as [`ChatEvent`]s,
//!   resuming after dropped connections, with every part of an answer
//!   (reasoning, tool calls, sources) assembled in [`ChatStream::message`].
//!
//! ```no_run
//! # async fn example() -> Result<(), rill_client::Error> {
//! use futures::StreamExt;
//! use rill_client::{Client, SseItem};
//!
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let topics = client.topics();
//! let mut events = topics.subscribe(&["prices"])?;
//! topics.publish("prices", None, &serde_json::json!({"BTC": 1})).await?;
//! while let Some(item) = events.next().await {
//!     if let SseItem::Event(event) = item? {
//!         println!("{} {}", event.topic, event.data);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod chats;
mod client;
mod error;
mod event_source;
mod policy;
mod topics;

pub use chats::{
    Accepted, Bot, CHAT_READ_TIMEOUT, Chat, ChatPage, ChatStream, ChatUpdate, ChatsClient,
    MessagePage,
};
pub use client::Client;
pub use error::{ApiError, Error};
pub use event_source::{EventStream, SseItem, SseRequest};
pub use policy::{MIN_BACKOFF_BASE, RetryPolicy};
pub use reqwest;
/// The chat events and the message model, shared with the server (`rill_chat::protocol`,
/// `rill_core::chat`).
pub use rill_chat::protocol::{ChatEvent, DeltaKind};
pub use rill_core::chat::{Message, MessageStatus, Part, Role, Usage};
pub use rill_sse::OwnedEvent as Event;
pub use topics::{Published, SUBSCRIBE_READ_TIMEOUT, TopicEvent, TopicStream, TopicsClient};
pub use url::Url;
