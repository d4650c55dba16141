//! The chat events of the wire contract (PRODUCT.md), as broker events on a chat's topic.
//!
//! `message.created` and `snapshot` carry a whole message; `message.delta` carries
//! `{"message_id","text"}`; `message.completed` carries
//! `{"message_id","status","finish_reason","usage"}` (plus `error` for status `error`);
//! `error` carries `{"code","message","message_id"}`.

use std::sync::Arc;

use bytes::Bytes;
use rill_core::NewEvent;
use rill_core::chat::{Message, MessageStatus, Usage};
use serde::Serialize;

pub const CREATED: &str = "message.created";
pub const DELTA: &str = "message.delta";
pub const COMPLETED: &str = "message.completed";
pub const SNAPSHOT: &str = "snapshot";
pub const ERROR: &str = "error";

/// The JSON a client sees for a message (in events and in the HTTP API alike).
#[derive(Debug, Serialize)]
pub struct MessageView<'a> {
    pub id: &'a str,
    pub chat_id: &'a str,
    pub role: &'static str,
    pub content: &'a str,
    pub status: &'static str,
    pub finish_reason: Option<&'a str>,
    pub usage: Option<Usage>,
    pub error: Option<&'a str>,
    pub bot_id: Option<&'a str>,
    pub model: Option<&'a str>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl<'a> From<&'a Message> for MessageView<'a> {
    fn from(m: &'a Message) -> Self {
        MessageView {
            id: &m.id,
            chat_id: &m.chat_id,
            role: m.role.as_str(),
            content: &m.content,
            status: m.status.as_str(),
            finish_reason: m.finish_reason.as_deref(),
            usage: m.usage,
            error: m.error.as_deref(),
            bot_id: m.bot_id.as_deref(),
            model: m.model.as_deref(),
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
        }
    }
}

fn event(name: &'static str, data: &impl Serialize) -> NewEvent {
    // Serializing plain structs of strings and numbers cannot fail.
    let json = serde_json::to_vec(data).unwrap_or_default();
    NewEvent {
        name: Arc::from(name),
        data: Bytes::from(json),
    }
}

pub fn created(message: &Message) -> NewEvent {
    event(CREATED, &MessageView::from(message))
}

/// A `snapshot`: the message as it stands (for a stream that cannot replay exactly).
pub fn snapshot(message: &Message) -> NewEvent {
    event(SNAPSHOT, &MessageView::from(message))
}

#[derive(Serialize)]
struct Delta<'a> {
    message_id: &'a str,
    text: &'a str,
}

pub fn delta(message_id: &str, text: &str) -> NewEvent {
    event(DELTA, &Delta { message_id, text })
}

#[derive(Serialize)]
struct Completed<'a> {
    message_id: &'a str,
    status: MessageStatus,
    finish_reason: Option<&'a str>,
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

pub fn completed(
    message_id: &str,
    status: MessageStatus,
    finish_reason: Option<&str>,
    usage: Option<Usage>,
    error: Option<&str>,
) -> NewEvent {
    event(
        COMPLETED,
        &Completed {
            message_id,
            status,
            finish_reason,
            usage,
            error,
        },
    )
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    code: &'a str,
    message: &'a str,
    message_id: &'a str,
}

pub fn error(code: &str, message: &str, message_id: &str) -> NewEvent {
    event(
        ERROR,
        &ErrorEvent {
            code,
            message,
            message_id,
        },
    )
}

/// The fields of a `message.delta` event's data, for readers that merge or replay deltas.
#[derive(Debug, serde::Deserialize)]
pub struct DeltaData {
    pub message_id: String,
    pub text: String,
}
