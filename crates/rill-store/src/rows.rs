//! Rows as the database returns them, and their conversion into the core types.

use rill_core::StoreError;
use rill_core::chat::{Chat, HistoryRevision, Message, MessageStatus, Part, Role, Usage};

/// A `chats` row; `seq` stays here (cursors), the rest becomes a [`Chat`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChatRow {
    pub(crate) seq: i64,
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) bot_id: String,
    pub(crate) title: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) history_changes: i64,
}

impl ChatRow {
    pub(crate) fn into_chat(self) -> Chat {
        Chat {
            id: self.id,
            user_id: self.user_id,
            bot_id: self.bot_id,
            title: self.title,
            created_at_ms: self.created_at,
            updated_at_ms: self.updated_at,
            history_revision: HistoryRevision {
                chat_seq: self.seq,
                changes: self.history_changes,
            },
        }
    }
}

/// A `messages` row without the lease and checkpoint columns, which are bookkeeping of the
/// generation and not part of a [`Message`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MessageRow {
    pub(crate) seq: i64,
    pub(crate) id: String,
    pub(crate) chat_id: String,
    pub(crate) role: String,
    pub(crate) content: String,
    /// JSON array of parts; NULL for messages stored before parts existed.
    pub(crate) parts: Option<String>,
    pub(crate) status: String,
    pub(crate) finish_reason: Option<String>,
    pub(crate) input_tokens: Option<i64>,
    pub(crate) output_tokens: Option<i64>,
    pub(crate) reasoning_tokens: Option<i64>,
    pub(crate) error: Option<String>,
    pub(crate) bot_id: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl TryFrom<MessageRow> for Message {
    type Error = StoreError;

    fn try_from(row: MessageRow) -> Result<Self, StoreError> {
        // The CHECK constraints of the schema make these unreachable unless someone edits the
        // database by hand; then the listing fails loudly rather than inventing a value.
        let role = Role::parse(&row.role)
            .ok_or_else(|| StoreError::Backend(format!("message {}: unknown role", row.id)))?;
        let status = MessageStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Backend(format!("message {}: unknown status", row.id)))?;
        // Usage is stored as two columns and exists only when the provider reported it.
        let usage = match (row.input_tokens, row.output_tokens) {
            (Some(input), Some(output)) => Some(Usage {
                input_tokens: from_db_u64(input),
                output_tokens: from_db_u64(output),
                reasoning_tokens: row.reasoning_tokens.map(from_db_u64),
            }),
            _ => None,
        };
        let parts = match &row.parts {
            Some(json) => serde_json::from_str::<Vec<Part>>(json).map_err(|e| {
                StoreError::Backend(format!("message {}: unreadable parts: {e}", row.id))
            })?,
            // Stored before parts existed: its text is its one part.
            None if row.content.is_empty() => Vec::new(),
            None => vec![Part::text(row.content.clone())],
        };
        Ok(Message {
            id: row.id,
            chat_id: row.chat_id,
            seq: row.seq,
            role,
            content: row.content,
            parts,
            status,
            finish_reason: row.finish_reason,
            usage,
            error: row.error,
            bot_id: row.bot_id,
            model: row.model,
            created_at_ms: row.created_at,
            updated_at_ms: row.updated_at,
        })
    }
}

/// Counters are `u64` in the core types and signed 64-bit in both databases; values past
/// `i64::MAX` (never seen in practice) saturate rather than wrap into negatives.
pub(crate) fn to_db_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The inverse of [`to_db_u64`]; a negative value (only possible by hand-editing) reads as 0.
pub(crate) fn from_db_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Parts as stored: a JSON array, or NULL when they are just the text (one text part, or none
/// for an empty text), which reads back the same from `content` and so is not stored twice.
pub(crate) fn parts_json(content: &str, parts: &[Part]) -> Option<String> {
    match parts {
        [] if content.is_empty() => None,
        [Part::Text { text }] if text == content => None,
        // Serializing plain data cannot fail; an empty array if it did.
        _ => Some(serde_json::to_string(parts).unwrap_or_else(|_| "[]".to_owned())),
    }
}
