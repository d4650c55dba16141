//! Chats, messages and the history cursor: the data model of chat streaming.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => return None,
        })
    }
}

/// Where a message is in its life. Only `Streaming` ever changes; the others are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// A generation is writing it now.
    Streaming,
    /// The model finished.
    Complete,
    /// Someone pressed stop; the text is what had arrived.
    Stopped,
    /// The provider failed; the text is what had arrived.
    Error,
    /// The process running the generation died; the text is the last checkpoint.
    Interrupted,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Streaming => "streaming",
            MessageStatus::Complete => "complete",
            MessageStatus::Stopped => "stopped",
            MessageStatus::Error => "error",
            MessageStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "streaming" => MessageStatus::Streaming,
            "complete" => MessageStatus::Complete,
            "stopped" => MessageStatus::Stopped,
            "error" => MessageStatus::Error,
            "interrupted" => MessageStatus::Interrupted,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        self != MessageStatus::Streaming
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token counts reported by a provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A conversation of one user with one bot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    /// Opaque, URL-safe (a UUIDv7 string).
    pub id: String,
    /// The owner (`sub` of the token; `anonymous` in auth mode `none`).
    pub user_id: String,
    pub bot_id: String,
    /// A title derived from the first message, if any.
    pub title: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Opaque, URL-safe (a UUIDv7 string).
    pub id: String,
    pub chat_id: String,
    /// Position in the whole store, increasing with every insert: the order of a chat's
    /// messages and the key of history cursors. Not sent to clients as such.
    #[serde(skip)]
    pub seq: i64,
    pub role: Role,
    pub content: String,
    pub status: MessageStatus,
    /// The provider's reason (`stop`, `length`, ...), or rill's (`stopped`, `error`, `interrupted`).
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// For an `error` status: what went wrong, safe to show a user.
    pub error: Option<String>,
    pub bot_id: Option<String>,
    pub model: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A message to insert.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub chat_id: String,
    pub role: Role,
    pub content: String,
    /// `Streaming` for an assistant message being generated, `Complete` otherwise.
    pub status: MessageStatus,
    pub bot_id: Option<String>,
    pub model: Option<String>,
}

/// How a generation ended, written once when it does.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: MessageStatus,
    pub content: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
}

/// One page of a listing, and the cursor of the next (older) page if there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque; `None` when this page reaches the oldest item.
    pub next_before: Option<String>,
}

/// A position in a listing for `before=` cursors: items strictly older than `seq`.
///
/// Encoded as `c` followed by the decimal seq, so a cursor is short, URL-safe and cannot be
/// confused with an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageCursor(pub i64);

impl PageCursor {
    pub fn parse(s: &str) -> Option<Self> {
        let digits = s.strip_prefix('c')?;
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(PageCursor)
    }
}

impl fmt::Display for PageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        assert_eq!(PageCursor::parse("c42"), Some(PageCursor(42)));
        assert_eq!(PageCursor(42).to_string(), "c42");
        for bad in ["", "c", "42", "c-1", "c+1", "cx", "c99999999999999999999"] {
            assert_eq!(PageCursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn enums_round_trip() {
        for s in ["streaming", "complete", "stopped", "error", "interrupted"] {
            assert_eq!(MessageStatus::parse(s).map(|m| m.as_str()), Some(s));
        }
        for s in ["system", "user", "assistant"] {
            assert_eq!(Role::parse(s).map(|r| r.as_str()), Some(s));
        }
    }
}
