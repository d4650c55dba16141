//! A reconnecting SSE client (GET and POST) and typed clients for rill's chats and topics.
//!
//! - [`SseRequest`] / [`EventStream`]: any SSE endpoint, rill's or not, as a `Stream` of
//!   [`SseItem`]s. It behaves like the browser's `EventSource` (and `fetch-event-source` for
//!   POST): `Last-Event-ID` on reconnect, `retry:` honoured, exponential backoff with jitter
//!   ([`RetryPolicy`]), stops on 204 and on 4xx but 408/429, checks the content type, follows
//!   redirects. Events are parsed by [`rill_sse::Parser`].
//! - [`Client`]: one rill server (base URL, bearer token, HTTP pool); [`TopicsClient`] publishes
//!   and subscribes on it; [`ChatsClient`] manages chats and streams answers as [`ChatEvent`]s,
//!   resuming after dropped connections.
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
    Accepted, Bot, CHAT_READ_TIMEOUT, Chat, ChatEvent, ChatPage, ChatStream, ChatsClient, Message,
    MessagePage, MessageStatus, Role, Usage,
};
pub use client::Client;
pub use error::{ApiError, Error};
pub use event_source::{EventStream, SseItem, SseRequest};
pub use policy::{MIN_BACKOFF_BASE, RetryPolicy};
pub use reqwest;
pub use rill_sse::OwnedEvent as Event;
pub use topics::{Published, SUBSCRIBE_READ_TIMEOUT, TopicEvent, TopicStream, TopicsClient};
pub use url::Url;
