//! Applying chat events to a message: how the engine keeps its in-memory state, how a snapshot
//! is rebuilt from a checkpoint plus the log, and how a client assembles what it receives.

use rill_core::chat::{Message, Part};

use super::events::{ChatEvent, DeltaKind};

/// An event that does not fit the message it is applied to (a part that does not exist, a
/// delta of another kind): the stream it came from was not exact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event does not fit message {message_id}: {what}")]
pub struct ApplyError {
    pub message_id: String,
    pub what: String,
}

/// Applies `event` to `message` if it is about it; events of other messages are ignored.
///
/// A `message.part` for a part the message already has is ignored too (an event seen twice
/// across a snapshot), so applying a snapshot and then the events logged after its offset is
/// exact.
pub fn apply(message: &mut Message, event: &ChatEvent) -> Result<(), ApplyError> {
    if event.message_id() != Some(message.id.as_str()) {
        return Ok(());
    }
    let fail = |what: String| ApplyError {
        message_id: message.id.clone(),
        what,
    };
    match event {
        ChatEvent::Created(m) | ChatEvent::Snapshot(m) => *message = m.clone(),
        ChatEvent::PartStarted { part, value, .. } => {
            let index = *part as usize;
            if index == message.parts.len() {
                if let Part::Text { text } = value {
                    message.content.push_str(text);
                }
                message.parts.push(value.clone());
            } else if index > message.parts.len() {
                return Err(fail(format!(
                    "part {part} starts but the message has {} parts",
                    message.parts.len()
                )));
            }
        }
        ChatEvent::Delta {
            part, kind, text, ..
        } => {
            let no_parts = message.parts.is_empty();
            let target = message.parts.get_mut(*part as usize);
            match (kind, target) {
                (DeltaKind::Text, Some(Part::Text { text: t })) => {
                    t.push_str(text);
                    message.content.push_str(text);
                }
                (DeltaKind::Reasoning, Some(Part::Reasoning { text: t, .. })) => t.push_str(text),
                (DeltaKind::ToolInput, Some(Part::ToolCall { input_text, .. })) => {
                    input_text.push_str(text)
                }
                // A text delta of a server from before parts, on a message with no parts yet.
                (DeltaKind::Text, None) if no_parts && *part == 0 => {
                    message.parts.push(Part::text(text.clone()));
                    message.content.push_str(text);
                }
                (kind, _) => return Err(fail(format!("{kind:?} delta for part {part}"))),
            }
        }
        ChatEvent::PartDone {
            part,
            signature,
            input,
            ..
        } => match message.parts.get_mut(*part as usize) {
            Some(Part::Reasoning { signature: s, .. }) => {
                if signature.is_some() {
                    s.clone_from(signature);
                }
            }
            Some(Part::ToolCall { input: i, .. }) => i.clone_from(input),
            Some(_) => {}
            None => return Err(fail(format!("part {part} ends but does not exist"))),
        },
        ChatEvent::ToolResult {
            part,
            output,
            error,
            ..
        } => match message.parts.get_mut(*part as usize) {
            Some(Part::ToolCall {
                output: o,
                error: e,
                ..
            }) => {
                o.clone_from(output);
                e.clone_from(error);
            }
            _ => return Err(fail(format!("tool result for part {part}"))),
        },
        ChatEvent::Completed {
            status,
            finish_reason,
            usage,
            error,
            ..
        } => {
            message.status = *status;
            message.finish_reason.clone_from(finish_reason);
            message.usage = *usage;
            message.error.clone_from(error);
        }
        ChatEvent::Error { .. } | ChatEvent::Reset { .. } | ChatEvent::ChatDeleted { .. } => {}
    }
    Ok(())
}
