//! Two encodings of an exchange's events: rill's own SSE (the POST-SSE style), and plain text
//! (only the answer's text, for `curl` and shell pipelines).

use rill_core::{Encoder, Flow};

use super::events::{CHAT_DELETED, COMPLETED, ChatEvent, DELTA, ERROR, SNAPSHOT};
use rill_core::chat::MessageStatus;

/// Where a stream ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Until {
    /// It follows the chat until the client leaves.
    Forever,
    /// After the `message.completed` of this message (`None`: the first one that comes).
    Completed(Option<String>),
}

// Every stream also ends after `chat.deleted`: nothing more will come.

impl Until {
    /// Whether `event` (named `name`) is where the stream ends.
    pub fn ends_at(&self, name: &str, data: &[u8]) -> bool {
        if name == CHAT_DELETED {
            return true;
        }
        match self {
            Until::Forever => false,
            Until::Completed(_) if name != COMPLETED => false,
            Until::Completed(None) => true,
            Until::Completed(Some(id)) => matches!(
                ChatEvent::decode(name, data),
                Ok(Some(ChatEvent::Completed { message_id, .. })) if message_id == *id
            ),
        }
    }
}

/// Every event as rill's SSE, ending after [`Until`].
#[derive(Debug)]
pub struct SseUntil {
    until: Until,
}

impl SseUntil {
    pub fn new(until: Until) -> Self {
        SseUntil { until }
    }
}

impl Encoder for SseUntil {
    fn event(&mut self, name: &str, data: &[u8], id: Option<&str>, out: &mut Vec<u8>) -> Flow {
        let text = String::from_utf8_lossy(data);
        if let Err(error) = rill_sse::encode_event(out, id, Some(name), &text) {
            // Names and ids are ours and valid; this would be a bug, not input.
            tracing::error!(%error, name, "cannot encode an SSE event; skipped");
        }
        if self.until.ends_at(name, data) {
            Flow::End
        } else {
            Flow::Continue
        }
    }
}

/// Only the text of one answer, as it is generated. The stream ends cleanly when the answer
/// completes, and is cut off (an unfinished body: `curl` exits non-zero) when it is stopped,
/// fails, is interrupted, or cannot be followed exactly.
#[derive(Debug)]
pub struct PlainText {
    message_id: String,
    /// How many bytes of the answer's text were written: a snapshot writes only what follows.
    written: usize,
}

impl PlainText {
    pub fn new(message_id: impl Into<String>) -> Self {
        PlainText {
            message_id: message_id.into(),
            written: 0,
        }
    }
}

impl Encoder for PlainText {
    fn event(&mut self, name: &str, data: &[u8], _id: Option<&str>, out: &mut Vec<u8>) -> Flow {
        if name == CHAT_DELETED {
            return Flow::Abort;
        }
        if !matches!(name, DELTA | SNAPSHOT | COMPLETED | ERROR) {
            return Flow::Continue;
        }
        let Ok(Some(event)) = ChatEvent::decode(name, data) else {
            return Flow::Continue;
        };
        if event.message_id().is_some_and(|id| id != self.message_id) {
            return Flow::Continue;
        }
        match event {
            ChatEvent::Delta {
                text,
                kind: super::DeltaKind::Text,
                ..
            } => {
                self.written += text.len();
                out.extend_from_slice(text.as_bytes());
                Flow::Continue
            }
            ChatEvent::Snapshot(message) => {
                // What this reader has is a prefix of the text; anything else cannot be mended
                // in an append-only body.
                match message.content.get(self.written..) {
                    Some(rest) => {
                        out.extend_from_slice(rest.as_bytes());
                        self.written = message.content.len();
                        Flow::Continue
                    }
                    None => Flow::Abort,
                }
            }
            ChatEvent::Completed {
                status: MessageStatus::Complete,
                ..
            } => Flow::End,
            ChatEvent::Completed { .. } => Flow::Abort,
            // A stream-level error (shutdown, slow reader, broker down): the answer did not
            // reach this reader whole.
            ChatEvent::Error {
                message_id: None, ..
            } => Flow::Abort,
            _ => Flow::Continue,
        }
    }
}
