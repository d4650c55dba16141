//! Chats, messages and their parts, and the history cursor: the canonical data model of chat
//! streaming. Every wire dialect (rill's own chat events, the AI SDK's UI message stream,
//! OpenAI's chunks and Responses events, Anthropic's events) translates to and from these types.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Of `output_tokens`, those spent reasoning, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

/// One part of a message. A message is an ordered list of parts; a part's id within its message
/// is its index in that list, stable because parts are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Answer text. A message's `content` is the concatenation of its text parts.
    Text { text: String },
    /// The model's reasoning ("thinking"), shown apart from the answer.
    Reasoning {
        text: String,
        /// Provider metadata that must go back with the reasoning in later requests
        /// (Anthropic's `signature`, which authenticates a thinking block).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        /// Reasoning the provider keeps opaque (Anthropic `redacted_thinking`, OpenRouter
        /// `reasoning.encrypted`): the blob is kept as is and sent back, never shown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redacted: Option<String>,
    },
    /// A call of a tool by the model, with its result when the upstream supplies one.
    ToolCall {
        /// The provider's call id (`call_...`, `toolu_...`), which a result refers to.
        id: String,
        name: String,
        /// The arguments as the model streamed them (JSON text, possibly incomplete while
        /// streaming).
        input_text: String,
        /// The arguments parsed, once complete; `None` while streaming or when the model sent
        /// text that is not JSON.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
        /// The tool's result, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        /// The tool's failure, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A source the answer cites.
    Source {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

impl Part {
    /// The kind as named on the wire (`text`, `reasoning`, `tool_call`, `source`).
    pub fn kind(&self) -> &'static str {
        match self {
            Part::Text { .. } => "text",
            Part::Reasoning { .. } => "reasoning",
            Part::ToolCall { .. } => "tool_call",
            Part::Source { .. } => "source",
        }
    }

    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Part::Text { text: text.into() }
    }
}

/// The concatenated text of `parts`: what `content` holds.
pub fn text_of(parts: &[Part]) -> String {
    let mut text = String::new();
    for part in parts {
        if let Part::Text { text: t } = part {
            text.push_str(t);
        }
    }
    text
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
    /// Where the chat's history stands when this was read. Not sent to clients.
    #[serde(skip)]
    pub history_revision: HistoryRevision,
}

/// Where a chat's history stands: a value that changes whenever a message is added to the
/// chat, or a message's final state is written or changed afterwards. Equal revisions read at
/// two times mean the history the model would see is the same at both (the engine's history
/// cache relies on it; the store keeps it, in the database itself).
///
/// A message's checkpoints while it is being written do not change it: an answer that is still
/// streaming is not part of what a model is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HistoryRevision {
    /// The chat's row, never reused: a chat deleted and created again with the same id has
    /// another one.
    pub chat_seq: i64,
    /// How many changes the chat's history has had: one per message added, and one per write
    /// of a message that is not `streaming` (its final state, or tool results recorded on it).
    pub changes: i64,
}

impl HistoryRevision {
    /// This revision after `n` more changes.
    #[must_use]
    pub fn after(self, n: i64) -> Self {
        HistoryRevision {
            chat_seq: self.chat_seq,
            changes: self.changes.saturating_add(n),
        }
    }
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
    /// The concatenated text of the text parts: what clients that know only text show.
    pub content: String,
    /// Every part, in order (text, reasoning, tool calls, sources).
    #[serde(default)]
    pub parts: Vec<Part>,
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
    /// A key the client chose for this message (`Idempotency-Key`, or the id an AI SDK client
    /// gave it): unique within the chat, so a repeated request finds the first one's message.
    pub client_key: Option<String>,
    /// For a `Streaming` placeholder: the lease of the generation that will write it, stored
    /// with the row (taking it afterwards would be one more write before the first token).
    pub lease: Option<Lease>,
}

/// A generation's lease on a `Streaming` message: which instance writes it, and until when
/// (Unix ms). Another instance takes the message over only once the lease has run out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until_ms: i64,
}

/// How a generation ended, written once when it does.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: MessageStatus,
    pub content: String,
    pub parts: Vec<Part>,
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
