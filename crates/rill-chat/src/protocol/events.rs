//! The chat events: names, data, and their JSON both ways.

use std::sync::Arc;

use bytes::Bytes;
use rill_core::NewEvent;
use rill_core::chat::{Message, MessageStatus, Part, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const CREATED: &str = "message.created";
pub const DELTA: &str = "message.delta";
pub const REASONING_DELTA: &str = "message.reasoning.delta";
pub const TOOL_INPUT_DELTA: &str = "message.tool_input.delta";
pub const PART: &str = "message.part";
pub const PART_DONE: &str = "message.part.done";
pub const TOOL_RESULT: &str = "message.tool_result";
pub const COMPLETED: &str = "message.completed";
pub const SNAPSHOT: &str = "snapshot";
pub const ERROR: &str = "error";
pub const RESET: &str = "reset";
pub const CHAT_DELETED: &str = "chat.deleted";

/// Which part kind a delta extends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeltaKind {
    /// Answer text: `message.delta`.
    Text,
    /// Reasoning text: `message.reasoning.delta`.
    Reasoning,
    /// Tool-call argument text: `message.tool_input.delta`.
    ToolInput,
}

impl DeltaKind {
    pub fn event_name(self) -> &'static str {
        match self {
            DeltaKind::Text => DELTA,
            DeltaKind::Reasoning => REASONING_DELTA,
            DeltaKind::ToolInput => TOOL_INPUT_DELTA,
        }
    }

    pub fn from_event_name(name: &str) -> Option<Self> {
        Some(match name {
            DELTA => DeltaKind::Text,
            REASONING_DELTA => DeltaKind::Reasoning,
            TOOL_INPUT_DELTA => DeltaKind::ToolInput,
            _ => return None,
        })
    }
}

/// One event of a chat's stream.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatEvent {
    /// `message.created`: a user message, or an assistant's `streaming` placeholder.
    Created(Message),
    /// `snapshot`: a message as it stands; replace, do not append.
    Snapshot(Message),
    /// `message.part`: part `part` of the message begins, with its initial state (a source is
    /// whole at once; a tool call starts with its id and name).
    PartStarted {
        message_id: String,
        part: u32,
        value: Part,
    },
    /// `message.delta` (text), `message.reasoning.delta`, `message.tool_input.delta`: append
    /// `text` to part `part`.
    Delta {
        message_id: String,
        part: u32,
        kind: DeltaKind,
        text: String,
    },
    /// `message.part.done`: part `part` is complete. A reasoning part may carry its
    /// `signature`; a tool call carries its parsed `input` (absent when the model's arguments
    /// are not JSON).
    PartDone {
        message_id: String,
        part: u32,
        signature: Option<String>,
        input: Option<Value>,
    },
    /// `message.tool_result`: the result (or failure) of the tool call in part `part`.
    ToolResult {
        message_id: String,
        part: u32,
        output: Option<Value>,
        error: Option<String>,
    },
    /// `message.completed`: the message is final.
    Completed {
        message_id: String,
        status: MessageStatus,
        finish_reason: Option<String>,
        usage: Option<Usage>,
        error: Option<String>,
    },
    /// `error`: a generation failed (with `message_id`), or the server ends the connection
    /// (without; `reconnect` says whether to come back).
    Error {
        code: String,
        message: String,
        message_id: Option<String>,
        reconnect: Option<bool>,
    },
    /// `reset`: exact resume was impossible (`reason`); the state follows.
    Reset { topic: String, reason: String },
    /// `chat.deleted`: the chat is gone; its streams end after this event.
    ChatDeleted { chat_id: String },
}

#[derive(Serialize, Deserialize)]
struct PartStartedData {
    message_id: String,
    part: u32,
    #[serde(flatten)]
    value: Part,
}

#[derive(Serialize, Deserialize)]
struct DeltaData {
    message_id: String,
    #[serde(default)]
    part: u32,
    text: String,
}

#[derive(Serialize, Deserialize)]
struct PartDoneData {
    message_id: String,
    part: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct ToolResultData {
    message_id: String,
    part: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct CompletedData {
    message_id: String,
    status: MessageStatus,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ErrorData {
    code: String,
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reconnect: Option<bool>,
}

#[derive(Serialize, Deserialize)]
struct ResetData {
    #[serde(default)]
    topic: String,
    #[serde(default)]
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct ChatDeletedData {
    chat_id: String,
}

/// Why event data could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed {name} event: {source}")]
pub struct DecodeError {
    name: String,
    source: serde_json::Error,
}

impl ChatEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            ChatEvent::Created(_) => CREATED,
            ChatEvent::Snapshot(_) => SNAPSHOT,
            ChatEvent::PartStarted { .. } => PART,
            ChatEvent::Delta { kind, .. } => kind.event_name(),
            ChatEvent::PartDone { .. } => PART_DONE,
            ChatEvent::ToolResult { .. } => TOOL_RESULT,
            ChatEvent::Completed { .. } => COMPLETED,
            ChatEvent::Error { .. } => ERROR,
            ChatEvent::Reset { .. } => RESET,
            ChatEvent::ChatDeleted { .. } => CHAT_DELETED,
        }
    }

    /// The id of the message the event is about (`None` for stream-level events).
    pub fn message_id(&self) -> Option<&str> {
        match self {
            ChatEvent::Created(m) | ChatEvent::Snapshot(m) => Some(&m.id),
            ChatEvent::PartStarted { message_id, .. }
            | ChatEvent::Delta { message_id, .. }
            | ChatEvent::PartDone { message_id, .. }
            | ChatEvent::ToolResult { message_id, .. }
            | ChatEvent::Completed { message_id, .. } => Some(message_id),
            ChatEvent::Error { message_id, .. } => message_id.as_deref(),
            ChatEvent::Reset { .. } | ChatEvent::ChatDeleted { .. } => None,
        }
    }

    /// The event's JSON data.
    pub fn data(&self) -> Vec<u8> {
        // Serializing plain structs of strings, numbers and JSON values cannot fail.
        let json = match self {
            ChatEvent::Created(m) | ChatEvent::Snapshot(m) => serde_json::to_vec(m),
            ChatEvent::PartStarted {
                message_id,
                part,
                value,
            } => serde_json::to_vec(&PartStartedData {
                message_id: message_id.clone(),
                part: *part,
                value: value.clone(),
            }),
            ChatEvent::Delta {
                message_id,
                part,
                text,
                ..
            } => serde_json::to_vec(&DeltaData {
                message_id: message_id.clone(),
                part: *part,
                text: text.clone(),
            }),
            ChatEvent::PartDone {
                message_id,
                part,
                signature,
                input,
            } => serde_json::to_vec(&PartDoneData {
                message_id: message_id.clone(),
                part: *part,
                signature: signature.clone(),
                input: input.clone(),
            }),
            ChatEvent::ToolResult {
                message_id,
                part,
                output,
                error,
            } => serde_json::to_vec(&ToolResultData {
                message_id: message_id.clone(),
                part: *part,
                output: output.clone(),
                error: error.clone(),
            }),
            ChatEvent::Completed {
                message_id,
                status,
                finish_reason,
                usage,
                error,
            } => serde_json::to_vec(&CompletedData {
                message_id: message_id.clone(),
                status: *status,
                finish_reason: finish_reason.clone(),
                usage: *usage,
                error: error.clone(),
            }),
            ChatEvent::Error {
                code,
                message,
                message_id,
                reconnect,
            } => serde_json::to_vec(&ErrorData {
                code: code.clone(),
                message: message.clone(),
                message_id: message_id.clone(),
                reconnect: *reconnect,
            }),
            ChatEvent::Reset { topic, reason } => serde_json::to_vec(&ResetData {
                topic: topic.clone(),
                reason: reason.clone(),
            }),
            ChatEvent::ChatDeleted { chat_id } => serde_json::to_vec(&ChatDeletedData {
                chat_id: chat_id.clone(),
            }),
        };
        json.unwrap_or_default()
    }

    /// The event as published on the chat's topic.
    pub fn to_new_event(&self) -> NewEvent {
        NewEvent {
            name: Arc::from(self.name()),
            data: Bytes::from(self.data()),
        }
    }

    /// Reads an event. `Ok(None)` for names this protocol does not know (a newer server's
    /// events, the stream's own comments): readers skip them.
    pub fn decode(name: &str, data: &[u8]) -> Result<Option<Self>, DecodeError> {
        let err = |source| DecodeError {
            name: name.to_owned(),
            source,
        };
        Ok(Some(match name {
            CREATED => ChatEvent::Created(serde_json::from_slice(data).map_err(err)?),
            SNAPSHOT => ChatEvent::Snapshot(serde_json::from_slice(data).map_err(err)?),
            PART => {
                let d: PartStartedData = serde_json::from_slice(data).map_err(err)?;
                ChatEvent::PartStarted {
                    message_id: d.message_id,
                    part: d.part,
                    value: d.value,
                }
            }
            DELTA | REASONING_DELTA | TOOL_INPUT_DELTA => {
                let d: DeltaData = serde_json::from_slice(data).map_err(err)?;
                ChatEvent::Delta {
                    message_id: d.message_id,
                    part: d.part,
                    kind: DeltaKind::from_event_name(name).unwrap_or(DeltaKind::Text),
                    text: d.text,
                }
            }
            PART_DONE => {
                let d: PartDoneData = serde_json::from_slice(data).map_err(err)?;
                ChatEvent::PartDone {
                    message_id: d.message_id,
                    part: d.part,
                    signature: d.signature,
                    input: d.input,
                }
            }
            TOOL_RESULT => {
                let d: ToolResultData = serde_json::from_slice(data).map_err(err)?;
                ChatEvent::ToolResult {
                    message_id: d.message_id,
                    part: d.part,
                    output: d.output,
                    error: d.error,
                }
            }
            COMPLETED => {
                let d: CompletedData = serde_json::from_slice(data).map_err(err)?;
                ChatEvent::Completed {
                    message_id: d.message_id,
                    status: d.status,
                    finish_reason: d.finish_reason,
                    usage: d.usage,
                    error: d.error,
                }
            }
            ERROR => {
                let d: ErrorData = serde_json::from_slice(data).map_err(err)?;
                ChatEvent::Error {
                    code: d.code,
                    message: d.message,
                    message_id: d.message_id,
                    reconnect: d.reconnect,
                }
            }
            RESET => {
                let d: ResetData = serde_json::from_slice(data).map_err(err)?;
                ChatEvent::Reset {
                    topic: d.topic,
                    reason: d.reason,
                }
            }
            CHAT_DELETED => {
                let d: ChatDeletedData = serde_json::from_slice(data).map_err(err)?;
                ChatEvent::ChatDeleted { chat_id: d.chat_id }
            }
            _ => return Ok(None),
        }))
    }

    /// A `message.completed` for a message as stored.
    pub fn completed_of(message: &Message) -> Self {
        ChatEvent::Completed {
            message_id: message.id.clone(),
            status: message.status,
            finish_reason: message.finish_reason.clone(),
            usage: message.usage,
            error: message.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::chat::Role;

    fn message() -> Message {
        Message {
            id: "m1".into(),
            chat_id: "c1".into(),
            seq: 0,
            role: Role::Assistant,
            content: "hi".into(),
            parts: vec![
                Part::Reasoning {
                    text: "think".into(),
                    signature: Some("sig".into()),
                    redacted: None,
                },
                Part::text("hi"),
            ],
            status: MessageStatus::Streaming,
            finish_reason: None,
            usage: None,
            error: None,
            bot_id: Some("demo".into()),
            model: Some("demo".into()),
            created_at_ms: 1,
            updated_at_ms: 2,
        }
    }

    /// Every event reads back as itself, and the JSON of each is what docs/api.md shows.
    #[test]
    fn round_trip_and_exact_json() {
        let cases: Vec<(ChatEvent, &str)> = vec![
            (
                ChatEvent::PartStarted {
                    message_id: "m1".into(),
                    part: 2,
                    value: Part::ToolCall {
                        id: "call_1".into(),
                        name: "weather".into(),
                        input_text: String::new(),
                        input: None,
                        output: None,
                        error: None,
                    },
                },
                r#"{"message_id":"m1","part":2,"type":"tool_call","id":"call_1","name":"weather","input_text":""}"#,
            ),
            (
                ChatEvent::Delta {
                    message_id: "m1".into(),
                    part: 1,
                    kind: DeltaKind::Text,
                    text: "Hel\"lo".into(),
                },
                r#"{"message_id":"m1","part":1,"text":"Hel\"lo"}"#,
            ),
            (
                ChatEvent::PartDone {
                    message_id: "m1".into(),
                    part: 2,
                    signature: None,
                    input: Some(serde_json::json!({"city": "Seoul"})),
                },
                r#"{"message_id":"m1","part":2,"input":{"city":"Seoul"}}"#,
            ),
            (
                ChatEvent::ToolResult {
                    message_id: "m1".into(),
                    part: 2,
                    output: Some(serde_json::json!({"temp": 21})),
                    error: None,
                },
                r#"{"message_id":"m1","part":2,"output":{"temp":21}}"#,
            ),
            (
                ChatEvent::Completed {
                    message_id: "m1".into(),
                    status: MessageStatus::Complete,
                    finish_reason: Some("stop".into()),
                    usage: Some(Usage {
                        input_tokens: 3,
                        output_tokens: 5,
                        reasoning_tokens: Some(2),
                    }),
                    error: None,
                },
                r#"{"message_id":"m1","status":"complete","finish_reason":"stop","usage":{"input_tokens":3,"output_tokens":5,"reasoning_tokens":2}}"#,
            ),
        ];
        for (event, json) in cases {
            assert_eq!(String::from_utf8(event.data()).unwrap(), json);
            let back = ChatEvent::decode(event.name(), json.as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(back, event);
        }
        let created = ChatEvent::Created(message());
        let back = ChatEvent::decode(CREATED, &created.data())
            .unwrap()
            .unwrap();
        assert_eq!(back, created);
    }

    #[test]
    fn unknown_names_are_skipped_and_bad_data_is_an_error() {
        assert!(
            ChatEvent::decode("message.future", b"{}")
                .unwrap()
                .is_none()
        );
        assert!(ChatEvent::decode(DELTA, b"{").is_err());
        // A delta of an older server (no `part`) reads as part 0.
        let old = ChatEvent::decode(DELTA, br#"{"message_id":"m","text":"a"}"#)
            .unwrap()
            .unwrap();
        assert!(matches!(old, ChatEvent::Delta { part: 0, .. }));
    }
}
