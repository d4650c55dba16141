//! Turning a provider's canonical events into chat events: which part each piece belongs to.
//!
//! Providers say "more text", "more reasoning", "a tool call begins" without knowing about
//! parts; the writer opens a new part whenever the kind changes (reasoning, then text, then a
//! tool call, then text again), numbers the parts, and closes them.

use std::collections::HashMap;

use rill_core::ProviderEvent;
use rill_core::chat::Part;
use serde_json::Value;

use super::events::{ChatEvent, DeltaKind};

/// The open text or reasoning part, which the next piece of the same kind extends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Text(u32),
    Reasoning(u32),
}

/// Numbers the parts of one assistant message and emits its chat events.
#[derive(Debug)]
pub struct PartsWriter {
    message_id: String,
    next_part: u32,
    open: Option<Open>,
    /// The signature announced for the open reasoning part, sent when it closes.
    signature: Option<String>,
    /// Tool calls whose arguments are still streaming: decoder key -> (part, text so far).
    tools: HashMap<u32, (u32, String)>,
    /// Every tool call by provider id, so a result finds its part.
    call_parts: HashMap<String, u32>,
}

impl PartsWriter {
    /// A writer for a new answer, message `message_id`.
    pub fn new(message_id: impl Into<String>) -> Self {
        Self::continuing(message_id, &[])
    }

    /// A writer that continues message `message_id`, whose parts so far are `parts` (an answer
    /// another instance could not finish): more text or reasoning extends its last part when
    /// that is of the same kind, and results find the tool calls it already has.
    pub fn continuing(message_id: impl Into<String>, parts: &[Part]) -> Self {
        let last = parts
            .len()
            .checked_sub(1)
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX));
        let open = match (parts.last(), last) {
            (Some(Part::Text { .. }), Some(i)) => Some(Open::Text(i)),
            (Some(Part::Reasoning { redacted: None, .. }), Some(i)) => Some(Open::Reasoning(i)),
            _ => None,
        };
        let call_parts = parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Part::ToolCall { id, .. } => Some((id.clone(), u32::try_from(i).ok()?)),
                _ => None,
            })
            .collect();
        PartsWriter {
            message_id: message_id.into(),
            next_part: u32::try_from(parts.len()).unwrap_or(u32::MAX),
            open,
            signature: None,
            tools: HashMap::new(),
            call_parts,
        }
    }

    /// The chat events for one provider event, appended to `out`. `Finish` closes every open
    /// part (the caller writes the completion itself).
    pub fn push(&mut self, event: ProviderEvent, out: &mut Vec<ChatEvent>) {
        match event {
            ProviderEvent::Text(text) => self.piece(DeltaKind::Text, sanitize(text), out),
            ProviderEvent::Reasoning(text) => self.piece(DeltaKind::Reasoning, sanitize(text), out),
            ProviderEvent::ReasoningSignature(signature) => {
                if !matches!(self.open, Some(Open::Reasoning(_))) {
                    // A thinking block with a signature and no text: it still is a part.
                    self.close(out);
                    let part = self.start(
                        Part::Reasoning {
                            text: String::new(),
                            signature: None,
                            redacted: None,
                        },
                        out,
                    );
                    self.open = Some(Open::Reasoning(part));
                }
                self.signature = Some(signature);
            }
            ProviderEvent::RedactedReasoning(data) => {
                self.close(out);
                let part = self.start(
                    Part::Reasoning {
                        text: String::new(),
                        signature: None,
                        redacted: Some(data),
                    },
                    out,
                );
                out.push(self.done(part, None, None));
            }
            ProviderEvent::ToolCallStart { key, id, name } => {
                self.close(out);
                let part = self.start(
                    Part::ToolCall {
                        id: id.clone(),
                        name: sanitize(name),
                        input_text: String::new(),
                        input: None,
                        output: None,
                        error: None,
                    },
                    out,
                );
                // A reused key ends the call that had it (Ollama numbers parallel calls 0, 0).
                if let Some((earlier, text)) = self.tools.insert(key, (part, String::new())) {
                    out.push(self.done(earlier, None, Some(parse_input(&text))));
                }
                self.call_parts.insert(id, part);
            }
            ProviderEvent::ToolCallInput { key, text } => {
                let text = sanitize(text);
                if text.is_empty() {
                    return;
                }
                if let Some((part, so_far)) = self.tools.get_mut(&key) {
                    so_far.push_str(&text);
                    out.push(ChatEvent::Delta {
                        message_id: self.message_id.clone(),
                        part: *part,
                        kind: DeltaKind::ToolInput,
                        text,
                    });
                }
            }
            ProviderEvent::ToolCallEnd { key } => {
                if let Some((part, text)) = self.tools.remove(&key) {
                    out.push(self.done(part, None, Some(parse_input(&text))));
                }
            }
            ProviderEvent::ToolResult { id, output, error } => {
                if let Some(part) = self.call_parts.get(&id) {
                    out.push(ChatEvent::ToolResult {
                        message_id: self.message_id.clone(),
                        part: *part,
                        output,
                        error: error.map(sanitize),
                    });
                }
            }
            ProviderEvent::Source { url, title } => {
                self.close(out);
                self.start(
                    Part::Source {
                        url: sanitize(url),
                        title: title.map(sanitize),
                    },
                    out,
                );
            }
            ProviderEvent::Finish { .. } => self.finish(out),
        }
    }

    /// Closes every open part: the answer ended (finished, stopped or failed).
    pub fn finish(&mut self, out: &mut Vec<ChatEvent>) {
        self.close(out);
        let mut open: Vec<(u32, String)> = self.tools.drain().map(|(_, v)| v).collect();
        open.sort_by_key(|(part, _)| *part);
        for (part, text) in open {
            out.push(self.done(part, None, Some(parse_input(&text))));
        }
    }

    fn piece(&mut self, kind: DeltaKind, text: String, out: &mut Vec<ChatEvent>) {
        if text.is_empty() {
            return;
        }
        let part = match (kind, self.open) {
            (DeltaKind::Text, Some(Open::Text(part)))
            | (DeltaKind::Reasoning, Some(Open::Reasoning(part))) => part,
            _ => {
                self.close(out);
                let (value, open): (Part, fn(u32) -> Open) = match kind {
                    DeltaKind::Reasoning => (
                        Part::Reasoning {
                            text: String::new(),
                            signature: None,
                            redacted: None,
                        },
                        Open::Reasoning,
                    ),
                    _ => (Part::text(""), Open::Text),
                };
                let part = self.start(value, out);
                self.open = Some(open(part));
                part
            }
        };
        out.push(ChatEvent::Delta {
            message_id: self.message_id.clone(),
            part,
            kind,
            text,
        });
    }

    fn start(&mut self, value: Part, out: &mut Vec<ChatEvent>) -> u32 {
        let part = self.next_part;
        self.next_part = self.next_part.saturating_add(1);
        out.push(ChatEvent::PartStarted {
            message_id: self.message_id.clone(),
            part,
            value,
        });
        part
    }

    /// Closes the open text or reasoning part.
    fn close(&mut self, out: &mut Vec<ChatEvent>) {
        match self.open.take() {
            Some(Open::Text(part)) => out.push(self.done(part, None, None)),
            Some(Open::Reasoning(part)) => {
                let signature = self.signature.take();
                out.push(self.done(part, signature, None));
            }
            None => {}
        }
    }

    fn done(&self, part: u32, signature: Option<String>, input: Option<Value>) -> ChatEvent {
        ChatEvent::PartDone {
            message_id: self.message_id.clone(),
            part,
            signature,
            input: input.flatten_null(),
        }
    }
}

/// The parsed arguments of a tool call: `{}` for none at all (a call without arguments), the
/// JSON when it parses, and `None` (kept only as text) when the model wrote something else.
fn parse_input(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(text).unwrap_or(Value::Null)
}

trait FlattenNull {
    fn flatten_null(self) -> Option<Value>;
}

impl FlattenNull for Option<Value> {
    fn flatten_null(self) -> Option<Value> {
        self.filter(|v| !v.is_null())
    }
}

/// Model text as rill stores and streams it: a NUL character (which PostgreSQL cannot store in
/// text) becomes U+FFFD, so what clients see always equals what is stored, on either database.
pub fn sanitize(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::apply;
    use rill_core::chat::{Message, MessageStatus, Role};

    fn run(events: Vec<ProviderEvent>) -> (Vec<ChatEvent>, Message) {
        let mut writer = PartsWriter::new("m");
        let mut out = Vec::new();
        for e in events {
            writer.push(e, &mut out);
        }
        let mut message = Message {
            id: "m".into(),
            chat_id: "c".into(),
            seq: 0,
            role: Role::Assistant,
            content: String::new(),
            parts: Vec::new(),
            status: MessageStatus::Streaming,
            finish_reason: None,
            usage: None,
            error: None,
            bot_id: None,
            model: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        for e in &out {
            apply(&mut message, e).unwrap();
        }
        (out, message)
    }

    #[test]
    fn parts_open_on_kind_changes_and_close_at_the_end() {
        use ProviderEvent::*;
        let (events, message) = run(vec![
            Reasoning("Let me ".into()),
            Reasoning("think.".into()),
            ReasoningSignature("sig-1".into()),
            Text("Hello".into()),
            ToolCallStart {
                key: 0,
                id: "call_a".into(),
                name: "weather".into(),
            },
            ToolCallInput {
                key: 0,
                text: "{\"city\":".into(),
            },
            ToolCallInput {
                key: 0,
                text: "\"Seoul\"}".into(),
            },
            ToolResult {
                id: "call_a".into(),
                output: Some(serde_json::json!({"temp": 21})),
                error: None,
            },
            Source {
                url: "https://example.com".into(),
                title: Some("Ex".into()),
            },
            Text(" it is 21\0".into()),
            Finish {
                reason: None,
                usage: None,
            },
        ]);
        assert_eq!(message.content, "Hello it is 21\u{FFFD}");
        assert_eq!(
            message.parts,
            vec![
                Part::Reasoning {
                    text: "Let me think.".into(),
                    signature: Some("sig-1".into()),
                    redacted: None
                },
                Part::text("Hello"),
                Part::ToolCall {
                    id: "call_a".into(),
                    name: "weather".into(),
                    input_text: "{\"city\":\"Seoul\"}".into(),
                    input: Some(serde_json::json!({"city": "Seoul"})),
                    output: Some(serde_json::json!({"temp": 21})),
                    error: None,
                },
                Part::Source {
                    url: "https://example.com".into(),
                    title: Some("Ex".into())
                },
                Part::text(" it is 21\u{FFFD}"),
            ]
        );
        // Each part is started once and done once (sources need no end).
        let names: Vec<&str> = events.iter().map(ChatEvent::name).collect();
        assert_eq!(names.iter().filter(|n| **n == "message.part").count(), 5);
        assert_eq!(
            names.iter().filter(|n| **n == "message.part.done").count(),
            4
        );
    }

    #[test]
    fn a_continued_answer_extends_its_last_part() {
        let parts = vec![
            Part::Reasoning {
                text: "hm".into(),
                signature: None,
                redacted: None,
            },
            Part::text("Hel"),
        ];
        let mut writer = PartsWriter::continuing("m", &parts);
        let mut out = Vec::new();
        writer.push(ProviderEvent::Text("lo".into()), &mut out);
        assert_eq!(
            out,
            vec![ChatEvent::Delta {
                message_id: "m".into(),
                part: 1,
                kind: DeltaKind::Text,
                text: "lo".into()
            }]
        );
        // Reasoning after text starts a new part, numbered after the existing ones.
        out.clear();
        writer.push(ProviderEvent::Reasoning("x".into()), &mut out);
        assert!(matches!(out[1], ChatEvent::PartStarted { part: 2, .. }));
    }

    #[test]
    fn reused_tool_keys_are_separate_calls() {
        use ProviderEvent::*;
        let (_, message) = run(vec![
            ToolCallStart {
                key: 0,
                id: "a".into(),
                name: "f".into(),
            },
            ToolCallInput {
                key: 0,
                text: "{\"x\":1}".into(),
            },
            ToolCallStart {
                key: 0,
                id: "b".into(),
                name: "g".into(),
            },
            ToolCallInput {
                key: 0,
                text: "not json".into(),
            },
            Finish {
                reason: Some("tool_calls".into()),
                usage: None,
            },
        ]);
        let inputs: Vec<Option<Value>> = message
            .parts
            .iter()
            .map(|p| match p {
                Part::ToolCall { input, .. } => input.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(inputs, vec![Some(serde_json::json!({"x": 1})), None]);
    }
}
