//! rill's answers in OpenAI's shapes, for the OpenAI face (`/v1`, docs/openai.md):
//!
//! - Chat Completions: [`ChunkWriter`] turns a provider's canonical events into
//!   `chat.completion.chunk` objects (and, gathered, one `chat.completion`): text as
//!   `delta.content`, reasoning as `delta.reasoning_content` (DeepSeek's name, which the SDKs
//!   pass through), tool calls as `delta.tool_calls` fragments by `index` (the first with `id`,
//!   `type` and `function.name`, then `function.arguments` pieces), then a chunk with
//!   `finish_reason`, and with `include_usage` one with `choices: []` and `usage`.
//! - Responses: [`ResponsesStream`] is the [`Encoder`] of a response's events, from the chat
//!   events of its exchange in the log; [`response_object`] is the `Response` of a stored
//!   answer (for polls, and the `response` of the first and last events).
//!
//! **Sequence numbers.** A response is one exchange of a chat; its events come from the chat
//! topic's log, one rill event giving at most [`PER_EVENT`] Responses events. An event's
//! `sequence_number` is `(offset - first) * PER_EVENT + k`, where `first` is the offset of the
//! exchange's first event and `k` its rank among the events that one rill event gives. So every
//! instance numbers every event the same way from the log alone, and `starting_after=N` replays
//! the exchange and writes only what is numbered above `N`: exactly the events after `N`, none
//! twice. Numbers increase but are not contiguous (OpenAI's SDKs only pass them through).

use std::collections::HashMap;

use rill_chat::protocol::ChatEvent;
use rill_core::chat::{Message, MessageStatus, Part, Role, Usage};
use rill_core::{Encoder, Flow, ProviderEvent, StreamCursor};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Chat Completions

/// Provider events into `chat.completion.chunk` objects, and the whole `chat.completion`.
#[derive(Debug)]
pub struct ChunkWriter {
    id: String,
    created: i64,
    model: String,
    /// Call keys (the decoder's) to OpenAI `index`es, in the order the calls began.
    calls: HashMap<u32, usize>,
    /// Gathered for the non-streaming answer.
    text: String,
    reasoning: String,
    tool_calls: Vec<Value>,
    finish: Option<String>,
    usage: Option<Usage>,
}

/// An OpenAI finish reason for a provider's (Anthropic's names included).
pub fn finish_reason(reason: Option<&str>, called_tools: bool) -> &'static str {
    match reason {
        Some("length" | "max_tokens" | "max_output_tokens") => "length",
        Some("content_filter" | "refusal") => "content_filter",
        Some("tool_calls" | "tool_use" | "function_call") => "tool_calls",
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

/// OpenAI's `usage` of a chat completion.
pub fn chat_usage(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens.saturating_add(usage.output_tokens),
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens.unwrap_or(0)},
    })
}

impl ChunkWriter {
    /// `id` is the completion's (`chatcmpl-...`), `created` its Unix time in seconds, `model`
    /// what the client asked for (the bot id).
    pub fn new(id: impl Into<String>, created: i64, model: impl Into<String>) -> Self {
        ChunkWriter {
            id: id.into(),
            created,
            model: model.into(),
            calls: HashMap::new(),
            text: String::new(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        })
    }

    /// The first chunk: the role, empty content (as OpenAI sends it).
    pub fn start(&self) -> Value {
        self.chunk(json!({"role": "assistant", "content": ""}), None)
    }

    /// The chunks of one event (none for what Chat Completions has no field for: tool results
    /// the upstream ran, sources, reasoning signatures).
    pub fn push(&mut self, event: ProviderEvent) -> Vec<Value> {
        match event {
            ProviderEvent::Text(text) => {
                self.text.push_str(&text);
                vec![self.chunk(json!({"content": text}), None)]
            }
            ProviderEvent::Reasoning(text) => {
                self.reasoning.push_str(&text);
                vec![self.chunk(json!({"reasoning_content": text}), None)]
            }
            ProviderEvent::ToolCallStart { key, id, name } => {
                let index = self.tool_calls.len();
                self.calls.insert(key, index);
                self.tool_calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }));
                vec![self.chunk(
                    json!({"tool_calls": [{
                        "index": index,
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }]}),
                    None,
                )]
            }
            ProviderEvent::ToolCallInput { key, text } => {
                let Some(&index) = self.calls.get(&key) else {
                    return Vec::new();
                };
                if let Some(Value::String(arguments)) = self
                    .tool_calls
                    .get_mut(index)
                    .and_then(|c| c.pointer_mut("/function/arguments"))
                {
                    arguments.push_str(&text);
                }
                vec![self.chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": text}}]}),
                    None,
                )]
            }
            ProviderEvent::Finish { reason, usage } => {
                let reason = finish_reason(reason.as_deref(), !self.tool_calls.is_empty());
                self.finish = Some(reason.to_owned());
                self.usage = usage;
                vec![self.chunk(json!({}), Some(reason))]
            }
            ProviderEvent::ToolCallEnd { .. }
            | ProviderEvent::ToolResult { .. }
            | ProviderEvent::Source { .. }
            | ProviderEvent::ReasoningSignature(_)
            | ProviderEvent::RedactedReasoning(_) => Vec::new(),
        }
    }

    /// The last chunk with `include_usage`: no choices, the usage (zeros when the provider gave
    /// none).
    pub fn usage_chunk(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": chat_usage(&self.usage.unwrap_or_default()),
        })
    }

    /// The whole answer as one `chat.completion` (the non-streaming response).
    pub fn completion(&self) -> Value {
        let mut message = json!({
            "role": "assistant",
            "content": self.text,
            "refusal": null,
            "annotations": [],
        });
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = json!(self.tool_calls);
            if self.text.is_empty() {
                message["content"] = Value::Null;
            }
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": self.finish.as_deref().unwrap_or("stop"),
            }],
            "usage": chat_usage(&self.usage.unwrap_or_default()),
        })
    }
}

/// An SSE `data:` frame of a JSON value (Chat Completions frames have no event name).
pub fn data_frame(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = rill_sse::encode_event(&mut out, None, None, &value.to_string());
    out
}

/// The end of a Chat Completions stream.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// An error inside a stream, as OpenAI sends one (`data: {"error":{...}}`; the SDKs raise it).
pub fn error_frame(message: &str, code: &str) -> Vec<u8> {
    data_frame(&json!({"error": {
        "message": message,
        "type": "server_error",
        "param": null,
        "code": code,
    }}))
}

// ---------------------------------------------------------------------------------------------
// Responses

/// The most Responses events one rill event gives (a text part's end gives three).
pub const PER_EVENT: u64 = 8;

/// The id of the response whose answer is message `message_id`.
pub fn response_id(message_id: &str) -> String {
    format!("resp_{message_id}")
}

/// The answer's message id of response `id`, if it is one of ours.
pub fn message_id_of(response_id: &str) -> Option<&str> {
    response_id.strip_prefix("resp_").filter(|m| {
        !m.is_empty()
            && m.len() <= 128
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    })
}

/// What a response says besides its answer (echoed in every `Response` object).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseMeta {
    /// The model the client asked for (the bot id).
    pub model: String,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub background: bool,
    pub temperature: Option<f32>,
    pub max_output_tokens: Option<u32>,
}

/// One output item as it builds.
#[derive(Clone, Debug)]
struct Item {
    /// The part of the message it shows.
    part: u32,
    output_index: usize,
    kind: ItemKind,
    text: String,
    done: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum ItemKind {
    Message,
    Reasoning,
    Call { call_id: String, name: String },
}

fn item_id(kind: &ItemKind, message_id: &str, part: u32) -> String {
    let prefix = match kind {
        ItemKind::Message => "msg",
        ItemKind::Reasoning => "rs",
        ItemKind::Call { .. } => "fc",
    };
    format!("{prefix}_{message_id}_{part}")
}

/// An output item as OpenAI shows it, `done` or still in progress.
fn item_json(kind: &ItemKind, message_id: &str, part: u32, text: &str, done: bool) -> Value {
    let id = item_id(kind, message_id, part);
    let status = if done { "completed" } else { "in_progress" };
    match kind {
        ItemKind::Message => {
            let content = if done {
                json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
            } else {
                json!([])
            };
            json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
        }
        ItemKind::Reasoning => {
            let summary = if done {
                json!([{"type": "summary_text", "text": text}])
            } else {
                json!([])
            };
            json!({"id": id, "type": "reasoning", "summary": summary})
        }
        ItemKind::Call { call_id, name } => json!({
            "id": id,
            "type": "function_call",
            "status": status,
            "call_id": call_id,
            "name": name,
            "arguments": text,
        }),
    }
}

/// The output items of an answer's parts (sources and tool results have no item; the demo's
/// tool runs are shown as its calls).
pub fn output_items(message: &Message) -> Vec<Value> {
    let done = message.status.is_final();
    message
        .parts
        .iter()
        .enumerate()
        .filter_map(|(i, part)| {
            let part_index = u32::try_from(i).ok()?;
            let (kind, text) = match part {
                Part::Text { text } => (ItemKind::Message, text.as_str()),
                Part::Reasoning { text, .. } => (ItemKind::Reasoning, text.as_str()),
                Part::ToolCall {
                    id,
                    name,
                    input_text,
                    ..
                } => (
                    ItemKind::Call {
                        call_id: id.clone(),
                        name: name.clone(),
                    },
                    input_text.as_str(),
                ),
                Part::Source { .. } => return None,
            };
            Some(item_json(&kind, &message.id, part_index, text, done))
        })
        .collect()
}

/// OpenAI's status of a response whose answer is `message`.
pub fn response_status(message: &Message) -> &'static str {
    match message.status {
        MessageStatus::Streaming => "in_progress",
        MessageStatus::Complete
            if finish_reason(message.finish_reason.as_deref(), false) == "length" =>
        {
            "incomplete"
        }
        MessageStatus::Complete => "completed",
        MessageStatus::Stopped => "cancelled",
        MessageStatus::Error | MessageStatus::Interrupted => "failed",
    }
}

fn responses_usage(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens.unwrap_or(0)},
        "total_tokens": usage.input_tokens.saturating_add(usage.output_tokens),
    })
}

/// The `Response` object of the answer `message`, with `output` given (the stored parts, or
/// what a stream has built), in its current state.
fn response_json(
    message: &Message,
    meta: &ResponseMeta,
    status: &str,
    output: Vec<Value>,
) -> Value {
    let error = match message.status {
        MessageStatus::Error => json!({
            "code": "server_error",
            "message": message.error.as_deref().unwrap_or("the provider failed"),
        }),
        MessageStatus::Interrupted => json!({
            "code": "server_error",
            "message": "the answer was interrupted: the instance running it stopped",
        }),
        _ => Value::Null,
    };
    let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
    json!({
        "id": response_id(&message.id),
        "object": "response",
        "created_at": message.created_at_ms.div_euclid(1000),
        "status": status,
        "background": meta.background,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": meta.instructions,
        "max_output_tokens": meta.max_output_tokens,
        "model": meta.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": meta.previous_response_id,
        "reasoning": {"effort": null, "summary": null},
        "store": true,
        "temperature": meta.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": message.usage.as_ref().map(responses_usage),
        "metadata": {},
    })
}

/// The `Response` of a stored answer (a poll, or a finished non-streaming request).
pub fn response_object(message: &Message, meta: &ResponseMeta) -> Value {
    response_json(
        message,
        meta,
        response_status(message),
        output_items(message),
    )
}

/// The chat events of one exchange as a response's events (see the module docs). Ends after
/// the answer's `message.completed`.
#[derive(Debug)]
pub struct ResponsesStream {
    /// The answer's message id.
    message_id: String,
    meta: ResponseMeta,
    /// The offset of the exchange's first event.
    first: u64,
    /// Only events numbered above this are written (`starting_after`).
    after: Option<u64>,
    /// The answer as it stands (for `response.*` objects).
    answer: Option<Message>,
    items: Vec<Item>,
    created: bool,
}

impl ResponsesStream {
    /// The response of answer `message_id`, whose exchange's events come after offset
    /// `start` (`Sent::start`), writing only events numbered above `after`.
    pub fn new(
        message_id: impl Into<String>,
        meta: ResponseMeta,
        start: u64,
        after: Option<u64>,
    ) -> Self {
        ResponsesStream {
            message_id: message_id.into(),
            meta,
            first: start.saturating_add(1),
            after,
            answer: None,
            items: Vec::new(),
            created: false,
        }
    }

    /// [`ResponsesStream::new`] for a stream that starts in the middle of the exchange (its
    /// start is no longer in the log): `seed` is where the response stood just before the
    /// first event the stream reads ([`seed_before`]).
    pub fn seeded(
        message_id: impl Into<String>,
        meta: ResponseMeta,
        start: u64,
        after: Option<u64>,
        seed: Seed,
    ) -> Self {
        let mut stream = Self::new(message_id, meta, start, after);
        for (i, (part, done)) in seed.message.parts.iter().zip(&seed.done).enumerate() {
            let Ok(part_index) = u32::try_from(i) else {
                break;
            };
            let (kind, text) = match part {
                Part::Text { text } => (ItemKind::Message, text.clone()),
                Part::Reasoning { text, .. } => (ItemKind::Reasoning, text.clone()),
                Part::ToolCall {
                    id,
                    name,
                    input_text,
                    ..
                } => (
                    ItemKind::Call {
                        call_id: id.clone(),
                        name: name.clone(),
                    },
                    input_text.clone(),
                ),
                Part::Source { .. } => continue,
            };
            stream.items.push(Item {
                part: part_index,
                output_index: stream.items.len(),
                kind,
                text,
                done: *done,
            });
        }
        stream.answer = Some(seed.message);
        stream.created = true;
        stream
    }

    /// The response as the stream has built it.
    fn response(&self, status: &str) -> Value {
        let Some(answer) = &self.answer else {
            return Value::Null;
        };
        let output = self
            .items
            .iter()
            .map(|i| item_json(&i.kind, &self.message_id, i.part, &i.text, i.done))
            .collect();
        response_json(answer, &self.meta, status, output)
    }

    /// Translates one chat event into the Responses events of it, with their `type`s.
    fn translate(&mut self, event: ChatEvent) -> (Vec<Value>, Flow) {
        let mut out = Vec::new();
        let mine = |id: Option<&str>| id == Some(self.message_id.as_str());
        match event {
            ChatEvent::Created(message) if message.role == Role::User => {
                // The question: the response exists (it is queued until its answer starts).
                let mut placeholder = message.clone();
                placeholder.id.clone_from(&self.message_id);
                placeholder.status = MessageStatus::Streaming;
                placeholder.usage = None;
                self.answer = Some(placeholder);
                self.created = true;
                out.push(json!({"type": "response.created", "response": self.response("queued")}));
            }
            ChatEvent::Created(message) if message.id == self.message_id => {
                self.answer = Some(message);
                if !self.created {
                    self.created = true;
                    out.push(json!({"type": "response.created", "response": self.response("in_progress")}));
                }
                out.push(json!({"type": "response.in_progress", "response": self.response("in_progress")}));
            }
            ChatEvent::PartStarted {
                message_id,
                part,
                value,
            } if mine(Some(&message_id)) => {
                let (kind, text) = match value {
                    Part::Text { text } => (ItemKind::Message, text),
                    Part::Reasoning { text, .. } => (ItemKind::Reasoning, text),
                    Part::ToolCall {
                        id,
                        name,
                        input_text,
                        ..
                    } => (ItemKind::Call { call_id: id, name }, input_text),
                    Part::Source { .. } => return (out, Flow::Continue),
                };
                let output_index = self.items.len();
                let item_id = item_id(&kind, &self.message_id, part);
                out.push(json!({
                    "type": "response.output_item.added",
                    "output_index": output_index,
                    "item": item_json(&kind, &self.message_id, part, "", false),
                }));
                match kind {
                    ItemKind::Message => out.push(json!({
                        "type": "response.content_part.added",
                        "item_id": item_id,
                        "output_index": output_index,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                    })),
                    ItemKind::Reasoning => out.push(json!({
                        "type": "response.reasoning_summary_part.added",
                        "item_id": item_id,
                        "output_index": output_index,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""},
                    })),
                    ItemKind::Call { .. } => {}
                }
                self.items.push(Item {
                    part,
                    output_index,
                    kind,
                    text: String::new(),
                    done: false,
                });
                // A part that starts with text (rill's start carries none today) streams it.
                if !text.is_empty() {
                    let (more, _) = self.delta(part, &text);
                    out.extend(more);
                }
            }
            ChatEvent::Delta {
                message_id,
                part,
                text,
                kind: _,
            } if mine(Some(&message_id)) => {
                let (more, _) = self.delta(part, &text);
                out.extend(more);
            }
            ChatEvent::PartDone {
                message_id, part, ..
            } if mine(Some(&message_id)) => {
                out.extend(self.close(part));
            }
            ChatEvent::Completed {
                message_id,
                status,
                finish_reason,
                usage,
                error,
            } if mine(Some(&message_id)) => {
                let open: Vec<u32> = self
                    .items
                    .iter()
                    .filter(|i| !i.done)
                    .map(|i| i.part)
                    .collect();
                for part in open {
                    out.extend(self.close(part));
                }
                if let Some(answer) = &mut self.answer {
                    answer.status = status;
                    answer.finish_reason = finish_reason;
                    answer.usage = usage;
                    answer.error = error;
                }
                let status = self.answer.as_ref().map_or("failed", response_status);
                let kind = match status {
                    "completed" => "response.completed",
                    // OpenAI's event list has none for a cancelled response: it ends as
                    // incomplete, with the response's status `cancelled`.
                    "incomplete" | "cancelled" => "response.incomplete",
                    _ => "response.failed",
                };
                out.push(json!({"type": kind, "response": self.response(status)}));
                return (out, Flow::End);
            }
            ChatEvent::ChatDeleted { .. } => {
                out.push(json!({
                    "type": "error",
                    "code": "response_deleted",
                    "message": "the response was deleted",
                    "param": null,
                }));
                return (out, Flow::End);
            }
            // A stream-level error (the server ends the connection): resume after the last
            // sequence number seen.
            ChatEvent::Error {
                message_id: None,
                code,
                message,
                ..
            } => {
                out.push(json!({"type": "error", "code": code, "message": message, "param": null}));
                return (out, Flow::Abort);
            }
            // The reader fell behind what the log keeps: the events in between are gone, and
            // going on would leave a silent hole. End; a resume says whether it can replay.
            ChatEvent::Reset { reason, .. } => {
                out.push(json!({
                    "type": "error",
                    "code": "stream_reset",
                    "message": format!("events of this response were lost ({reason}); resume with starting_after"),
                    "param": null,
                }));
                return (out, Flow::Abort);
            }
            _ => {}
        }
        (out, Flow::Continue)
    }

    fn delta(&mut self, part: u32, text: &str) -> (Vec<Value>, ()) {
        let message_id = self.message_id.clone();
        let Some(item) = self.items.iter_mut().find(|i| i.part == part && !i.done) else {
            return (Vec::new(), ());
        };
        item.text.push_str(text);
        let item_id = item_id(&item.kind, &message_id, part);
        let event = match &item.kind {
            ItemKind::Message => json!({
                "type": "response.output_text.delta",
                "item_id": item_id,
                "output_index": item.output_index,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            }),
            ItemKind::Reasoning => json!({
                "type": "response.reasoning_summary_text.delta",
                "item_id": item_id,
                "output_index": item.output_index,
                "summary_index": 0,
                "delta": text,
            }),
            ItemKind::Call { .. } => json!({
                "type": "response.function_call_arguments.delta",
                "item_id": item_id,
                "output_index": item.output_index,
                "delta": text,
            }),
        };
        (vec![event], ())
    }

    fn close(&mut self, part: u32) -> Vec<Value> {
        let message_id = self.message_id.clone();
        let Some(item) = self.items.iter_mut().find(|i| i.part == part && !i.done) else {
            return Vec::new();
        };
        item.done = true;
        let id = item_id(&item.kind, &message_id, part);
        let index = item.output_index;
        let text = item.text.clone();
        let whole = item_json(&item.kind, &message_id, part, &text, true);
        let mut out = Vec::new();
        match &item.kind {
            ItemKind::Message => {
                out.push(json!({
                    "type": "response.output_text.done",
                    "item_id": id, "output_index": index, "content_index": 0,
                    "text": text, "logprobs": [],
                }));
                out.push(json!({
                    "type": "response.content_part.done",
                    "item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []},
                }));
            }
            ItemKind::Reasoning => {
                out.push(json!({
                    "type": "response.reasoning_summary_text.done",
                    "item_id": id, "output_index": index, "summary_index": 0, "text": text,
                }));
                out.push(json!({
                    "type": "response.reasoning_summary_part.done",
                    "item_id": id, "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": text},
                }));
            }
            ItemKind::Call { name, .. } => out.push(json!({
                "type": "response.function_call_arguments.done",
                "item_id": id, "output_index": index, "name": name, "arguments": text,
            })),
        }
        out.push(
            json!({"type": "response.output_item.done", "output_index": index, "item": whole}),
        );
        out
    }
}

/// Where a response stood at some offset of the log: its answer then, and which of its parts
/// were complete.
#[derive(Clone, Debug, PartialEq)]
pub struct Seed {
    pub message: Message,
    /// Per part of `message`.
    pub done: Vec<bool>,
}

/// Where answer `message_id` stood just before a stretch of the log, rebuilt backwards from a
/// later state of it: `later` is the answer as of the end of the stretch (the stored final
/// answer, or a running one's snapshot), and `events` the chat events of the stretch, in log
/// order. Parts are only ever appended and texts only extended, so taking the stretch's deltas
/// off the ends of the texts, and its parts off the end of the list, is exact. `None` when the
/// events do not fit `later` (or the stretch starts before the answer did).
pub fn seed_before(message_id: &str, later: &Message, events: &[ChatEvent]) -> Option<Seed> {
    let mut message = later.clone();
    // Done at the end of the stretch: every part of a final answer; of a running one, all but
    // the last, unless that is a tool call whose arguments were parsed (its end was logged).
    let count = message.parts.len();
    let mut done: Vec<bool> = message
        .parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            message.status.is_final()
                || i + 1 < count
                || matches!(part, Part::ToolCall { input: Some(_), .. })
        })
        .collect();
    for event in events.iter().rev() {
        if event.message_id() != Some(message_id) {
            continue;
        }
        match event {
            ChatEvent::Created(_) => return None,
            ChatEvent::Delta { part, text, .. } => {
                let slot = usize::try_from(*part).ok()?;
                let target = match message.parts.get_mut(slot)? {
                    Part::Text { text } | Part::Reasoning { text, .. } => text,
                    Part::ToolCall { input_text, .. } => input_text,
                    Part::Source { .. } => return None,
                };
                let keep = target.len().checked_sub(text.len())?;
                if !target.ends_with(text.as_str()) || !target.is_char_boundary(keep) {
                    return None;
                }
                target.truncate(keep);
            }
            ChatEvent::PartStarted { part, .. } => {
                let slot = usize::try_from(*part).ok()?;
                if slot + 1 != message.parts.len() {
                    return None;
                }
                message.parts.truncate(slot);
                done.truncate(slot);
            }
            ChatEvent::PartDone { part, .. } => {
                *done.get_mut(usize::try_from(*part).ok()?)? = false;
            }
            ChatEvent::Completed { .. } => {
                message.status = MessageStatus::Streaming;
                message.finish_reason = None;
                message.usage = None;
                message.error = None;
            }
            _ => {}
        }
    }
    message.content = rill_core::chat::text_of(&message.parts);
    Some(Seed { message, done })
}

impl Encoder for ResponsesStream {
    fn event(&mut self, name: &str, data: &[u8], id: Option<&str>, out: &mut Vec<u8>) -> Flow {
        let Ok(Some(event)) = ChatEvent::decode(name, data) else {
            return Flow::Continue;
        };
        // Where this event is in the log: its number's base.
        let offset = id
            .and_then(StreamCursor::parse)
            .and_then(|c| c.offsets.first().copied());
        let (events, flow) = self.translate(event);
        let base = offset.map(|o| o.saturating_sub(self.first).saturating_mul(PER_EVENT));
        for (k, mut event) in events.into_iter().enumerate() {
            let kind = event["type"].as_str().unwrap_or("error").to_owned();
            // An `error` (the stream ends) is no event of the response: it repeats the number
            // of the last event written, so resuming after it loses nothing.
            let number = match base {
                Some(base) if kind != "error" => {
                    let number = base.saturating_add(u64::try_from(k).unwrap_or(u64::MAX));
                    if self.after.is_some_and(|after| number <= after) {
                        continue;
                    }
                    self.after = Some(number);
                    number
                }
                _ => self.after.unwrap_or(0),
            };
            event["sequence_number"] = json!(number);
            let _ = rill_sse::encode_event(out, None, Some(&kind), &event.to_string());
        }
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_chat::protocol::PartsWriter;

    fn message(id: &str, role: Role, status: MessageStatus) -> Message {
        Message {
            id: id.into(),
            chat_id: "c1".into(),
            seq: 0,
            role,
            content: String::new(),
            parts: Vec::new(),
            status,
            finish_reason: None,
            usage: None,
            error: None,
            bot_id: Some("demo".into()),
            model: Some("demo".into()),
            created_at_ms: 1_700_000_000_123,
            updated_at_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn chunks_in_openai_shape() {
        let mut w = ChunkWriter::new("chatcmpl-1", 1_700_000_000, "demo");
        let start = w.start();
        assert_eq!(start["object"], "chat.completion.chunk");
        assert_eq!(
            start["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let r = w.push(ProviderEvent::Reasoning("hmm".into()));
        assert_eq!(
            r[0]["choices"][0]["delta"],
            json!({"reasoning_content": "hmm"})
        );
        let c = w.push(ProviderEvent::ToolCallStart {
            key: 7,
            id: "call_1".into(),
            name: "get_weather".into(),
        });
        assert_eq!(
            c[0]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
        );
        let a = w.push(ProviderEvent::ToolCallInput {
            key: 7,
            text: "{\"city\":".into(),
        });
        assert_eq!(
            a[0]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "function": {"arguments": "{\"city\":"}}])
        );
        w.push(ProviderEvent::ToolCallInput {
            key: 7,
            text: "\"Paris\"}".into(),
        });
        assert!(w.push(ProviderEvent::ToolCallEnd { key: 7 }).is_empty());
        let t = w.push(ProviderEvent::Text("Hi".into()));
        assert_eq!(t[0]["choices"][0]["delta"], json!({"content": "Hi"}));
        let f = w.push(ProviderEvent::Finish {
            reason: Some("tool_use".into()),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                reasoning_tokens: Some(1),
            }),
        });
        assert_eq!(f[0]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(f[0]["choices"][0]["delta"], json!({}));
        let u = w.usage_chunk();
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 7);
        assert_eq!(
            u["usage"]["completion_tokens_details"]["reasoning_tokens"],
            1
        );
        let whole = w.completion();
        assert_eq!(whole["object"], "chat.completion");
        let m = &whole["choices"][0]["message"];
        assert_eq!(m["content"], "Hi");
        assert_eq!(m["reasoning_content"], "hmm");
        assert_eq!(
            m["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            String::from_utf8(data_frame(&json!({"a": 1}))).expect("utf-8"),
            "data: {\"a\":1}\n\n"
        );
    }

    /// The chat events of an exchange, with their offsets (the question at 11).
    fn exchange() -> Vec<(u64, ChatEvent)> {
        let user = message("u1", Role::User, MessageStatus::Complete);
        let answer = message("a1", Role::Assistant, MessageStatus::Streaming);
        let mut events = vec![ChatEvent::Created(user), ChatEvent::Created(answer)];
        let mut writer = PartsWriter::new("a1");
        for e in [
            ProviderEvent::Reasoning("think".into()),
            ProviderEvent::Text("Hel".into()),
            ProviderEvent::Text("lo".into()),
            ProviderEvent::ToolCallStart {
                key: 0,
                id: "call_1".into(),
                name: "f".into(),
            },
            ProviderEvent::ToolCallInput {
                key: 0,
                text: "{}".into(),
            },
            ProviderEvent::ToolCallEnd { key: 0 },
        ] {
            writer.push(e, &mut events);
        }
        writer.finish(&mut events);
        events.push(ChatEvent::Completed {
            message_id: "a1".into(),
            status: MessageStatus::Complete,
            finish_reason: Some("stop".into()),
            usage: Some(Usage {
                input_tokens: 1,
                output_tokens: 2,
                reasoning_tokens: None,
            }),
            error: None,
        });
        events
            .into_iter()
            .zip(11u64..)
            .map(|(e, o)| (o, e))
            .collect()
    }

    fn cursor(offset: u64) -> String {
        let topic = rill_core::Topic::for_chat("c1");
        StreamCursor {
            epochs: vec![rill_core::Epoch::new("e1").expect("epoch")],
            topics_hash: rill_core::cursor::topic_set_hash(std::slice::from_ref(&topic)),
            offsets: vec![offset],
        }
        .to_string()
    }

    fn run(after: Option<u64>) -> Vec<Value> {
        let mut stream = ResponsesStream::new(
            "a1",
            ResponseMeta {
                model: "demo".into(),
                ..ResponseMeta::default()
            },
            10,
            after,
        );
        let mut out = Vec::new();
        for (offset, event) in exchange() {
            let flow = stream.event(event.name(), &event.data(), Some(&cursor(offset)), &mut out);
            if matches!(flow, Flow::End) {
                break;
            }
        }
        parse(&out)
    }

    fn parse(out: &[u8]) -> Vec<Value> {
        let text = String::from_utf8(out.to_vec()).expect("utf-8");
        text.split("\n\n")
            .filter(|b| !b.is_empty())
            .map(|block| {
                let mut name = "";
                let mut data = "";
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n;
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = d;
                    }
                }
                let value: Value = serde_json::from_str(data).expect("json");
                assert_eq!(value["type"], name);
                value
            })
            .collect()
    }

    #[test]
    fn responses_events_in_order_with_their_numbers() {
        let events = run(None);
        let types: Vec<&str> = events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let numbers: Vec<u64> = events
            .iter()
            .map(|e| e["sequence_number"].as_u64().expect("number"))
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        assert_eq!(numbers[0], 0);
        let done = events.last().expect("last");
        assert_eq!(done["response"]["id"], "resp_a1");
        assert_eq!(done["response"]["status"], "completed");
        assert_eq!(done["response"]["output"][1]["content"][0]["text"], "Hello");
        assert_eq!(done["response"]["output"][2]["call_id"], "call_1");
        assert_eq!(done["response"]["usage"]["total_tokens"], 3);
        assert_eq!(events[12]["text"], "Hello");
        assert_eq!(events[11]["output_index"], 1);

        // Resuming after any event gives exactly the rest.
        for (i, event) in events.iter().enumerate() {
            let after = event["sequence_number"].as_u64();
            let rest = run(after);
            assert_eq!(rest, events[i + 1..].to_vec(), "after {after:?}");
        }
    }

    /// The answer as of the events of `exchange()` up to offset `upto` (inclusive).
    fn answer_at(upto: u64) -> Message {
        let mut answer = message("a1", Role::Assistant, MessageStatus::Streaming);
        for (offset, event) in exchange() {
            if offset > upto || offset < 13 {
                continue;
            }
            rill_chat::protocol::apply(&mut answer, &event).expect("fits");
        }
        answer
    }

    fn run_seeded(after: u64, later_offset: u64) -> Vec<Value> {
        let x = 11 + after / PER_EVENT;
        let events: Vec<(u64, ChatEvent)> =
            exchange().into_iter().filter(|(o, _)| *o >= x).collect();
        let stretch: Vec<ChatEvent> = events
            .iter()
            .filter(|(o, _)| *o <= later_offset)
            .map(|(_, e)| e.clone())
            .collect();
        let seed = seed_before("a1", &answer_at(later_offset), &stretch).expect("seed");
        let meta = ResponseMeta {
            model: "demo".into(),
            ..ResponseMeta::default()
        };
        let mut stream = ResponsesStream::seeded("a1", meta, 10, Some(after), seed);
        let mut out = Vec::new();
        for (offset, event) in events {
            let flow = stream.event(event.name(), &event.data(), Some(&cursor(offset)), &mut out);
            if matches!(flow, Flow::End) {
                break;
            }
        }
        parse(&out)
    }

    #[test]
    fn a_resume_whose_start_left_the_log_is_exact_from_a_later_state() {
        let events = run(None);
        let last_offset = exchange().last().map(|(o, _)| *o).expect("events");
        // After every event past the answer's placeholder, from the final answer and from
        // each running state in between.
        for (i, event) in events.iter().enumerate().skip(2) {
            let after = event["sequence_number"].as_u64().expect("number");
            let x = 11 + after / PER_EVENT;
            for later in x..last_offset {
                assert_eq!(
                    run_seeded(after, later),
                    events[i + 1..].to_vec(),
                    "after {after}, later {later}"
                );
            }
            let final_answer = run_seeded(after, last_offset);
            assert_eq!(
                final_answer,
                events[i + 1..].to_vec(),
                "after {after}, final"
            );
        }
    }

    #[test]
    fn a_lost_stretch_ends_the_stream_with_an_error_numbered_like_the_last_event() {
        let mut stream = ResponsesStream::new("a1", ResponseMeta::default(), 10, None);
        let mut out = Vec::new();
        for (offset, event) in exchange().into_iter().take(3) {
            stream.event(event.name(), &event.data(), Some(&cursor(offset)), &mut out);
        }
        let reset = ChatEvent::Reset {
            topic: "_chat/c1".into(),
            reason: "expired".into(),
        };
        let mut tail = Vec::new();
        let flow = stream.event(reset.name(), &reset.data(), Some(&cursor(40)), &mut tail);
        assert!(matches!(flow, Flow::Abort));
        let tail = String::from_utf8(tail).expect("utf-8");
        assert!(tail.starts_with("event: error\n"), "{tail}");
        let data: Value = serde_json::from_str(
            tail.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data"),
        )
        .expect("json");
        assert_eq!(data["code"], "stream_reset");
        // The last event written was the reasoning part's start (offset 13, second of two).
        assert_eq!(data["sequence_number"], 17);
    }

    #[test]
    fn a_stored_answer_as_a_response() {
        let mut answer = message("a1", Role::Assistant, MessageStatus::Stopped);
        answer.parts = vec![
            Part::Reasoning {
                text: "t".into(),
                signature: None,
                redacted: None,
            },
            Part::Source {
                url: "https://x".into(),
                title: None,
            },
            Part::text("Hi"),
        ];
        let meta = ResponseMeta {
            model: "demo".into(),
            background: true,
            ..ResponseMeta::default()
        };
        let r = response_object(&answer, &meta);
        assert_eq!(r["status"], "cancelled");
        assert_eq!(r["created_at"], 1_700_000_000);
        assert_eq!(r["background"], true);
        assert_eq!(r["output"][0]["type"], "reasoning");
        assert_eq!(r["output"][1]["type"], "message");
        assert_eq!(r["output"][1]["id"], "msg_a1_2");
        assert_eq!(r["output"][1]["content"][0]["text"], "Hi");
        assert_eq!(message_id_of("resp_0190-ab"), Some("0190-ab"));
        assert_eq!(message_id_of("resp_../x"), None);
        assert_eq!(message_id_of("chatcmpl-1"), None);
    }
}
