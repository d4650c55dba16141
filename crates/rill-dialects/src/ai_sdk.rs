//! The Vercel AI SDK's UI message stream (`ai` 6 and 7: `useChat`, `DefaultChatTransport`,
//! `streamText(...).toUIMessageStreamResponse()`), both ways.
//!
//! Outbound, to `useChat`: [`UiStream`] writes a chat stream's events as UI message chunks
//! (`data: <chunk JSON>`, then `data: [DONE]`), and [`ui_message`] gives a stored message as the
//! `UIMessage` the client assembles from that stream. Inbound, from an app's own route:
//! [`request_body`] sends the history as UI messages, the way `DefaultChatTransport` does, and
//! [`ChunkDecoder`] reads the chunks the route answers.
//!
//! The client validates every chunk strictly (an unknown `type`, a `null` optional field or a
//! delta before its start ends the chat in `error`), so the encoder only writes chunks that both
//! majors accept, and only in an order they accept:
//!
//! | rill | UI message chunks |
//! |---|---|
//! | the answer's `message.created` | `start` (`messageId` = the stored id, metadata `createdAt`, `bot`, `model`), `start-step` |
//! | text / reasoning part | `text-start` / `reasoning-start` (id `t<part>` / `r<part>`), deltas, `-end` |
//! | tool call | `tool-input-start`, `tool-input-delta`s, `tool-input-available` (`input`: the parsed arguments, or their text when they are not JSON) |
//! | tool result | `tool-output-available` / `tool-output-error` |
//! | source | `source-url` (`sourceId` `s<part>`) |
//! | a part after a tool call | `finish-step`, `start-step` first: the model's next step |
//! | completed | `finish-step`; `finish` (`finishReason`, metadata `status` and `usage`) |
//! | stopped | `finish-step`, `abort`, `finish` (metadata `status: "stopped"`) |
//! | failed, interrupted, lost | `finish-step`, `message-metadata`, `error`, `finish` (`finishReason: "error"`) |
//!
//! Redacted reasoning is never shown, so never sent. Both directions use only the chunk types
//! and finish reasons of `ai` 6, which `ai` 7 accepts as well.

use std::collections::{HashMap, VecDeque};

use rill_chat::protocol::{ChatEvent, DeltaKind};
use rill_core::chat::{Message, MessageStatus, Part, Role, Usage};
use rill_core::{
    CompletionRequest, Encoder, Flow, ProviderError, ProviderErrorKind, ProviderEvent,
};
use serde_json::{Map, Value, json};

use crate::{Decoder, encode_error, ended_early, malformed};

/// The header that tells the AI SDK (and people reading traffic) what the body is.
pub const STREAM_HEADER: (&str, &str) = ("x-vercel-ai-ui-message-stream", "v1");

/// The end of every stream, as the SDK's own server writes it.
const DONE: &[u8] = b"data: [DONE]\n\n";

// ---- outbound: chat events -> UI message chunks -------------------------------------------------

/// What the client holds for one part of the message.
#[derive(Clone, Debug, PartialEq)]
enum Slot {
    /// Not shown (redacted reasoning), or a part this stream never saw start.
    Hidden,
    Text {
        open: bool,
    },
    Reasoning {
        open: bool,
    },
    Tool {
        call_id: String,
        name: String,
        /// The argument text so far: the input when the arguments are not JSON.
        input_text: String,
        state: ToolState,
    },
    Source,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ToolState {
    /// `tool-input-start` sent; arguments streaming.
    Streaming,
    /// `tool-input-available` sent.
    Available,
    /// `tool-output-available` or `tool-output-error` sent.
    Done,
}

/// One answer's chat events as the UI message stream, from `start` to `data: [DONE]`.
///
/// It follows the answer `message_id` only: other messages' events (the question's
/// `message.created`) are skipped. It ends the stream ([`Flow::End`]) after the answer's
/// `message.completed`, after a stream-level `error`, a `reset` (exact replay became
/// impossible) or `chat.deleted`, each told to the client as an `error` chunk. A `snapshot` of
/// the answer (a stream that joins late, or an exchange whose events the log no longer has)
/// gives every part it holds, so the client never sees a delta without its start or a part
/// twice.
#[derive(Debug)]
pub struct UiStream {
    message_id: String,
    started: bool,
    step_open: bool,
    /// The last part shown is a tool call: the next text, reasoning or source is a new step.
    after_tool: bool,
    parts: Vec<Slot>,
    ended: bool,
}

impl UiStream {
    pub fn new(message_id: impl Into<String>) -> Self {
        UiStream {
            message_id: message_id.into(),
            started: false,
            step_open: false,
            after_tool: false,
            parts: Vec::new(),
            ended: false,
        }
    }

    fn start(&mut self, message: Option<&Message>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        match message {
            Some(message) => {
                let metadata = Value::Object(start_metadata(message));
                chunk(
                    out,
                    "start",
                    &[
                        ("messageId", F::S(&self.message_id)),
                        ("messageMetadata", F::J(&metadata)),
                    ],
                );
            }
            None => chunk(out, "start", &[("messageId", F::S(&self.message_id))]),
        }
        chunk(out, "start-step", &[]);
        self.step_open = true;
    }

    /// A text, reasoning or source part after a tool call begins the model's next step, as
    /// the SDK's own multi-step answers have it. Not while a call's arguments still stream:
    /// the client looks a call up in the current step only.
    fn next_step_if_due(&mut self, out: &mut Vec<u8>) {
        let streaming_call = self.parts.iter().any(|s| {
            matches!(
                s,
                Slot::Tool {
                    state: ToolState::Streaming,
                    ..
                }
            )
        });
        if self.after_tool && !streaming_call {
            if self.step_open {
                chunk(out, "finish-step", &[]);
            }
            chunk(out, "start-step", &[]);
            self.step_open = true;
        }
        self.after_tool = false;
    }

    fn part_started(&mut self, index: u32, value: &Part, out: &mut Vec<u8>) {
        self.start(None, out);
        let index = index as usize;
        if index < self.parts.len() {
            return; // seen already (in a snapshot)
        }
        if index > self.parts.len() {
            // Parts this stream never saw: nothing can be said about them without lying.
            tracing::warn!(
                message_id = %self.message_id,
                index,
                "a part starts after parts this stream never saw"
            );
            self.parts.resize(index, Slot::Hidden);
        }
        // A text or reasoning part never stays open when another part starts (the engine
        // closes it first); one a snapshot left open (its last part: done or not, a snapshot
        // cannot tell) is done now, and must end before a step ends.
        for open in 0..self.parts.len() {
            if matches!(
                self.parts[open],
                Slot::Text { open: true } | Slot::Reasoning { open: true }
            ) {
                self.done(open, None, out);
            }
        }
        let slot = match value {
            Part::Text { text } => {
                self.next_step_if_due(out);
                let id = format!("t{index}");
                chunk(out, "text-start", &[("id", F::S(&id))]);
                if !text.is_empty() {
                    chunk(
                        out,
                        "text-delta",
                        &[("id", F::S(&id)), ("delta", F::S(text))],
                    );
                }
                Slot::Text { open: true }
            }
            Part::Reasoning {
                redacted: Some(_), ..
            } => Slot::Hidden,
            Part::Reasoning { text, .. } => {
                self.next_step_if_due(out);
                let id = format!("r{index}");
                chunk(out, "reasoning-start", &[("id", F::S(&id))]);
                if !text.is_empty() {
                    chunk(
                        out,
                        "reasoning-delta",
                        &[("id", F::S(&id)), ("delta", F::S(text))],
                    );
                }
                Slot::Reasoning { open: true }
            }
            Part::ToolCall {
                id,
                name,
                input_text,
                ..
            } => {
                self.after_tool = true;
                chunk(
                    out,
                    "tool-input-start",
                    &[("toolCallId", F::S(id)), ("toolName", F::S(name))],
                );
                if !input_text.is_empty() {
                    chunk(
                        out,
                        "tool-input-delta",
                        &[
                            ("toolCallId", F::S(id)),
                            ("inputTextDelta", F::S(input_text)),
                        ],
                    );
                }
                Slot::Tool {
                    call_id: id.clone(),
                    name: name.clone(),
                    input_text: input_text.clone(),
                    state: ToolState::Streaming,
                }
            }
            Part::Source { url, title } => {
                self.next_step_if_due(out);
                let id = format!("s{index}");
                match title {
                    Some(title) => chunk(
                        out,
                        "source-url",
                        &[
                            ("sourceId", F::S(&id)),
                            ("url", F::S(url)),
                            ("title", F::S(title)),
                        ],
                    ),
                    None => chunk(
                        out,
                        "source-url",
                        &[("sourceId", F::S(&id)), ("url", F::S(url))],
                    ),
                }
                Slot::Source
            }
        };
        self.parts.push(slot);
    }

    fn delta(&mut self, index: u32, kind: DeltaKind, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let Some(slot) = self.parts.get_mut(index as usize) else {
            return;
        };
        match (kind, slot) {
            (DeltaKind::Text, Slot::Text { open: true }) => {
                let id = format!("t{index}");
                chunk(
                    out,
                    "text-delta",
                    &[("id", F::S(&id)), ("delta", F::S(text))],
                );
            }
            (DeltaKind::Reasoning, Slot::Reasoning { open: true }) => {
                let id = format!("r{index}");
                chunk(
                    out,
                    "reasoning-delta",
                    &[("id", F::S(&id)), ("delta", F::S(text))],
                );
            }
            (
                DeltaKind::ToolInput,
                Slot::Tool {
                    call_id,
                    input_text,
                    state: ToolState::Streaming,
                    ..
                },
            ) => {
                input_text.push_str(text);
                chunk(
                    out,
                    "tool-input-delta",
                    &[
                        ("toolCallId", F::S(call_id)),
                        ("inputTextDelta", F::S(text)),
                    ],
                );
            }
            // A delta of a hidden or closed part: the client could not take it.
            _ => {}
        }
    }

    /// Closes part `index`: the end of a text or reasoning part, the whole input of a call.
    fn done(&mut self, index: usize, input: Option<&Value>, out: &mut Vec<u8>) {
        let Some(slot) = self.parts.get_mut(index) else {
            return;
        };
        match slot {
            Slot::Text { open } if *open => {
                *open = false;
                chunk(out, "text-end", &[("id", F::S(&format!("t{index}")))]);
            }
            Slot::Reasoning { open } if *open => {
                *open = false;
                chunk(out, "reasoning-end", &[("id", F::S(&format!("r{index}")))]);
            }
            Slot::Tool {
                call_id,
                name,
                input_text,
                state,
            } if *state == ToolState::Streaming => {
                *state = ToolState::Available;
                let input = tool_input(input, input_text);
                chunk(
                    out,
                    "tool-input-available",
                    &[
                        ("toolCallId", F::S(call_id)),
                        ("toolName", F::S(name)),
                        ("input", F::J(&input)),
                    ],
                );
            }
            _ => {}
        }
    }

    fn tool_result(
        &mut self,
        index: usize,
        output: Option<&Value>,
        error: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        // The call's input must be whole first: a later `tool-input-available` would take the
        // client's part back to `input-available`.
        self.done(index, None, out);
        let Some(Slot::Tool { call_id, state, .. }) = self.parts.get_mut(index) else {
            return;
        };
        *state = ToolState::Done;
        match error {
            Some(error) => chunk(
                out,
                "tool-output-error",
                &[("toolCallId", F::S(call_id)), ("errorText", F::S(error))],
            ),
            None => chunk(
                out,
                "tool-output-available",
                &[
                    ("toolCallId", F::S(call_id)),
                    ("output", F::J(output.unwrap_or(&Value::Null))),
                ],
            ),
        }
    }

    /// Every part of `message` this stream has not shown yet; parts still being written stay
    /// open for the deltas that follow.
    fn snapshot(&mut self, message: &Message, out: &mut Vec<u8>) {
        self.start(Some(message), out);
        let streaming = message.status == MessageStatus::Streaming;
        let count = message.parts.len();
        for (index, part) in message.parts.iter().enumerate().skip(self.parts.len()) {
            let Ok(part_index) = u32::try_from(index) else {
                break;
            };
            self.part_started(part_index, part, out);
            let last = index + 1 == count;
            match part {
                Part::Text { .. } | Part::Reasoning { .. } if !(last && streaming) => {
                    self.done(index, None, out);
                }
                Part::ToolCall {
                    input,
                    output,
                    error,
                    ..
                } => {
                    if input.is_some() || output.is_some() || error.is_some() || !streaming {
                        self.done(index, input.as_ref(), out);
                    }
                    if output.is_some() || error.is_some() {
                        self.tool_result(index, output.as_ref(), error.as_deref(), out);
                    }
                }
                _ => {}
            }
        }
    }

    /// Closes whatever is open and ends the step.
    fn close_all(&mut self, out: &mut Vec<u8>) {
        for index in 0..self.parts.len() {
            self.done(index, None, out);
        }
        if self.step_open {
            self.step_open = false;
            chunk(out, "finish-step", &[]);
        }
    }

    fn completed(
        &mut self,
        status: MessageStatus,
        finish_reason: Option<&str>,
        usage: Option<&Usage>,
        error: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Flow {
        self.start(None, out);
        self.close_all(out);
        let metadata = Value::Object(finish_metadata(status, usage, error));
        match status {
            MessageStatus::Complete => chunk(
                out,
                "finish",
                &[
                    (
                        "finishReason",
                        F::S(finish_reason_of(status, finish_reason)),
                    ),
                    ("messageMetadata", F::J(&metadata)),
                ],
            ),
            MessageStatus::Stopped => {
                chunk(out, "abort", &[("reason", F::S("stopped"))]);
                chunk(out, "finish", &[("messageMetadata", F::J(&metadata))]);
            }
            MessageStatus::Error | MessageStatus::Interrupted | MessageStatus::Streaming => {
                let text = match (status, error) {
                    (_, Some(error)) => error,
                    (MessageStatus::Interrupted, None) => {
                        "the answer was interrupted before it was complete"
                    }
                    _ => "the answer failed",
                };
                chunk(
                    out,
                    "message-metadata",
                    &[("messageMetadata", F::J(&metadata))],
                );
                chunk(out, "error", &[("errorText", F::S(text))]);
                chunk(out, "finish", &[("finishReason", F::S("error"))]);
            }
        }
        self.end(out)
    }

    /// The stream ends before the answer does: the client is told why.
    fn fail(&mut self, text: &str, out: &mut Vec<u8>) -> Flow {
        if self.started {
            self.close_all(out);
        }
        chunk(out, "error", &[("errorText", F::S(text))]);
        self.end(out)
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Flow {
        out.extend_from_slice(DONE);
        self.ended = true;
        Flow::End
    }
}

impl Encoder for UiStream {
    fn event(&mut self, name: &str, data: &[u8], _id: Option<&str>, out: &mut Vec<u8>) -> Flow {
        if self.ended {
            return Flow::End;
        }
        let event = match ChatEvent::decode(name, data) {
            Ok(Some(event)) => event,
            Ok(None) => return Flow::Continue,
            Err(error) => {
                // Our own log's events: one that does not read is a bug, not input.
                tracing::error!(%error, "a chat event does not decode; skipped");
                return Flow::Continue;
            }
        };
        let ours = event.message_id() == Some(self.message_id.as_str());
        match &event {
            ChatEvent::Created(message) if ours => self.start(Some(message), out),
            ChatEvent::Snapshot(message) if ours => self.snapshot(message, out),
            ChatEvent::PartStarted { part, value, .. } if ours => {
                self.part_started(*part, value, out)
            }
            ChatEvent::Delta {
                part, kind, text, ..
            } if ours => self.delta(*part, *kind, text, out),
            ChatEvent::PartDone { part, input, .. } if ours => {
                self.done(*part as usize, input.as_ref(), out)
            }
            ChatEvent::ToolResult {
                part,
                output,
                error,
                ..
            } if ours => self.tool_result(*part as usize, output.as_ref(), error.as_deref(), out),
            ChatEvent::Completed {
                status,
                finish_reason,
                usage,
                error,
                ..
            } if ours => {
                return self.completed(
                    *status,
                    finish_reason.as_deref(),
                    usage.as_ref(),
                    error.as_deref(),
                    out,
                );
            }
            // The stream's own end (slow reader, broker down): the answer goes on, elsewhere.
            ChatEvent::Error {
                message_id: None,
                message,
                ..
            } => return self.fail(message, out),
            ChatEvent::Reset { .. } => {
                return self.fail(
                    "the stream lost its place in the answer; resume it to see the rest",
                    out,
                );
            }
            ChatEvent::ChatDeleted { .. } => return self.fail("the chat was deleted", out),
            // The question, other messages, and the answer's `error` (its completion carries
            // the same words).
            _ => {}
        }
        Flow::Continue
    }
}

/// The end of a stream cut short by the server itself (shutdown, maximum duration, expired
/// credential): an `error` chunk with `text`, then `[DONE]`.
pub fn error_frames(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64);
    chunk(&mut out, "error", &[("errorText", F::S(text))]);
    out.extend_from_slice(DONE);
    out
}

/// A field of a chunk: a string, or any JSON.
enum F<'a> {
    S(&'a str),
    J(&'a Value),
}

/// Appends one chunk as an SSE event, `type` first as the SDK writes it (so the bytes do not
/// depend on how `serde_json` orders maps).
fn chunk(out: &mut Vec<u8>, kind: &str, fields: &[(&str, F<'_>)]) {
    out.extend_from_slice(b"data: {\"type\":");
    write_json(out, &kind);
    for (key, value) in fields {
        out.push(b',');
        write_json(out, key);
        out.push(b':');
        match value {
            F::S(s) => write_json(out, s),
            F::J(v) => write_json(out, v),
        }
    }
    out.extend_from_slice(b"}\n\n");
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Strings and `Value`s always serialize (map keys are strings).
    if let Err(error) = serde_json::to_writer(&mut *out, value) {
        tracing::error!(%error, "cannot serialize a UI message chunk");
    }
}

/// A call's input as the client takes it: the parsed arguments, else their text.
fn tool_input(input: Option<&Value>, input_text: &str) -> Value {
    match input {
        Some(input) => input.clone(),
        None => match serde_json::from_str::<Value>(input_text) {
            Ok(value) => value,
            Err(_) if input_text.trim().is_empty() => Value::Object(Map::new()),
            Err(_) => Value::String(input_text.to_owned()),
        },
    }
}

/// The metadata `start` carries: when, which bot, which model.
fn start_metadata(message: &Message) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("createdAt".into(), json!(message.created_at_ms));
    if let Some(bot) = &message.bot_id {
        metadata.insert("bot".into(), json!(bot));
    }
    if let Some(model) = &message.model {
        metadata.insert("model".into(), json!(model));
    }
    metadata
}

/// The metadata the end carries: how the answer ended, its token counts, its failure.
fn finish_metadata(
    status: MessageStatus,
    usage: Option<&Usage>,
    error: Option<&str>,
) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("status".into(), json!(status.as_str()));
    if let Some(usage) = usage {
        let mut u = Map::new();
        u.insert("inputTokens".into(), json!(usage.input_tokens));
        u.insert("outputTokens".into(), json!(usage.output_tokens));
        u.insert(
            "totalTokens".into(),
            json!(usage.input_tokens.saturating_add(usage.output_tokens)),
        );
        if let Some(reasoning) = usage.reasoning_tokens {
            u.insert("reasoningTokens".into(), json!(reasoning));
        }
        metadata.insert("usage".into(), Value::Object(u));
    }
    if let Some(error) = error {
        metadata.insert("error".into(), json!(error));
    }
    metadata
}

/// The AI SDK's finish reason (the `ai` 6 set, which `ai` 7 accepts) for a provider's or
/// rill's reason.
pub fn finish_reason_of(status: MessageStatus, reason: Option<&str>) -> &'static str {
    match status {
        MessageStatus::Error | MessageStatus::Interrupted => return "error",
        MessageStatus::Stopped => return "other",
        MessageStatus::Complete | MessageStatus::Streaming => {}
    }
    match reason {
        None | Some("stop" | "end_turn" | "stop_sequence" | "eos") => "stop",
        Some("length" | "max_tokens" | "model_length") => "length",
        Some("tool_calls" | "tool_use" | "tool-calls" | "function_call") => "tool-calls",
        Some("content_filter" | "content-filter" | "refusal") => "content-filter",
        Some("error") => "error",
        Some(_) => "other",
    }
}

/// A stored message as the `UIMessage` the client assembles from [`UiStream`]: the same parts,
/// ids, states and metadata (for a finished answer, what `start` and `finish` merge into).
///
/// One case differs: text that starts while a tool call's arguments are still streaming (no
/// provider rill knows does that) stays in the call's step in the stream, where this gives it a
/// step of its own.
pub fn ui_message(message: &Message) -> Value {
    let mut ui = json!({
        "id": message.id,
        "role": message.role.as_str(),
        "parts": ui_parts(message.role, &message.content, &message.parts, false),
    });
    if message.role == Role::Assistant {
        let mut metadata = start_metadata(message);
        if message.status.is_final() {
            metadata.extend(finish_metadata(
                message.status,
                message.usage.as_ref(),
                message.error.as_deref(),
            ));
        }
        ui["metadata"] = Value::Object(metadata);
    }
    ui
}

/// The UI parts of a message. For a prompt (`prompt`), calls without a result are left out:
/// `convertToModelMessages` would send the model a call nobody answered.
fn ui_parts(role: Role, content: &str, parts: &[Part], prompt: bool) -> Vec<Value> {
    if role != Role::Assistant {
        let text = if parts.is_empty() {
            content.to_owned()
        } else {
            rill_core::chat::text_of(parts)
        };
        return vec![json!({"type": "text", "text": text})];
    }
    let mut ui = vec![json!({"type": "step-start"})];
    let mut after_tool = false;
    // A text, reasoning or source part after a tool call begins the next step (as in
    // `UiStream`).
    let next_step = |ui: &mut Vec<Value>, after_tool: &mut bool| {
        if std::mem::take(after_tool) {
            ui.push(json!({"type": "step-start"}));
        }
    };
    for (index, part) in parts.iter().enumerate() {
        match part {
            Part::Text { text } => {
                next_step(&mut ui, &mut after_tool);
                ui.push(json!({"type": "text", "text": text, "state": "done"}));
            }
            Part::Reasoning {
                redacted: Some(_), ..
            } => {}
            Part::Reasoning { text, .. } => {
                next_step(&mut ui, &mut after_tool);
                ui.push(json!({
                    "type": "reasoning", "id": format!("r{index}"), "text": text, "state": "done",
                }));
            }
            Part::ToolCall {
                id,
                name,
                input_text,
                input,
                output,
                error,
            } => {
                if prompt && output.is_none() && error.is_none() {
                    continue;
                }
                after_tool = true;
                let mut call = json!({
                    "type": format!("tool-{name}"),
                    "toolCallId": id,
                    "input": tool_input(input.as_ref(), input_text),
                });
                match (error, output) {
                    (Some(error), _) => {
                        call["state"] = json!("output-error");
                        call["errorText"] = json!(error);
                    }
                    (None, Some(output)) => {
                        call["state"] = json!("output-available");
                        call["output"] = output.clone();
                    }
                    (None, None) => call["state"] = json!("input-available"),
                }
                ui.push(call);
            }
            Part::Source { url, title } => {
                next_step(&mut ui, &mut after_tool);
                let mut source =
                    json!({"type": "source-url", "sourceId": format!("s{index}"), "url": url});
                if let Some(title) = title {
                    source["title"] = json!(title);
                }
                ui.push(source);
            }
        }
    }
    ui
}

// ---- inbound: an app's own route ----------------------------------------------------------------

/// The body rill POSTs to an app's route that speaks the UI message stream: what
/// `DefaultChatTransport` sends (`id` = the chat id, `messages` = the history as UI messages,
/// `trigger`), so a route written for `useChat` takes it unchanged, plus `rill` (the id of the
/// answer being written, the bot's model, and its system prompt when it has one).
///
/// History messages get positional ids (`m0`, `m1`, ...): the prompt has no stored ids.
pub fn request_body(request: &CompletionRequest) -> Result<Vec<u8>, ProviderError> {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .enumerate()
        .map(|(n, m)| {
            json!({
                "id": format!("m{n}"),
                "role": m.role.as_str(),
                "parts": ui_parts(m.role, "", &m.parts, true),
            })
        })
        .collect();
    let mut rill = Map::new();
    if let Some(id) = &request.context.message_id {
        rill.insert("messageId".into(), json!(id));
    }
    rill.insert("model".into(), json!(request.model));
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        rill.insert("system".into(), json!(system));
    }
    let body = json!({
        "id": request.context.chat_id.as_deref().unwrap_or_default(),
        "messages": messages,
        "trigger": "submit-message",
        "rill": rill,
    });
    serde_json::to_vec(&body).map_err(|_| encode_error())
}

/// A tool call of the route's answer.
#[derive(Debug)]
struct Call {
    key: u32,
    /// Argument text was streamed (so the input is in it already).
    streamed: bool,
    ended: bool,
}

/// Reads the UI message chunks of an app's route into canonical events.
///
/// | chunk | canonical |
/// |---|---|
/// | `text-delta`, `reasoning-delta` | text, reasoning |
/// | `tool-input-start`, `tool-input-delta`, `tool-input-available` (alone, it is the whole call) | a tool call |
/// | `tool-input-error` | a tool call and its failure |
/// | `tool-output-available` (not `preliminary`), `tool-output-error`, `tool-output-denied` | the call's result |
/// | `source-url` | a source |
/// | `finish` (`finishReason`; `usage` from `messageMetadata.usage` when it is the SDK's `LanguageModelUsage`), or `[DONE]` without it | the finish |
/// | `error`, `abort` | the stream's error |
/// | `start`, steps, part starts and ends, `data-*`, metadata, files, unknown types | ignored |
///
/// Part boundaries come from kind changes (text after a tool call is a new part), so two text
/// parts in a row become one.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    calls: HashMap<String, Call>,
    next_key: u32,
}

impl ChunkDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn call_start(&mut self, id: &str, name: &str, out: &mut VecDeque<ProviderEvent>) -> u32 {
        if let Some(call) = self.calls.get(id) {
            return call.key;
        }
        let key = self.next_key;
        self.next_key = self.next_key.saturating_add(1);
        self.calls.insert(
            id.to_owned(),
            Call {
                key,
                streamed: false,
                ended: false,
            },
        );
        out.push_back(ProviderEvent::ToolCallStart {
            key,
            id: id.to_owned(),
            name: name.to_owned(),
        });
        key
    }

    /// The call's arguments are whole: `input` is what they parsed to.
    fn call_end(
        &mut self,
        id: &str,
        name: &str,
        input: Option<&Value>,
        out: &mut VecDeque<ProviderEvent>,
    ) {
        let key = self.call_start(id, name, out);
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.ended {
            return;
        }
        call.ended = true;
        if !call.streamed {
            let text = match input {
                None | Some(Value::Null) => String::new(),
                // A call that failed to parse carries its raw text.
                Some(Value::String(raw)) => raw.clone(),
                Some(value) => value.to_string(),
            };
            if !text.is_empty() {
                out.push_back(ProviderEvent::ToolCallInput { key, text });
            }
        }
        out.push_back(ProviderEvent::ToolCallEnd { key });
    }

    fn result(
        &mut self,
        id: &str,
        output: Option<Value>,
        error: Option<String>,
        out: &mut VecDeque<ProviderEvent>,
    ) {
        // A result for a call that was never announced has no part to land in.
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if !call.ended {
            call.ended = true;
            out.push_back(ProviderEvent::ToolCallEnd { key: call.key });
        }
        out.push_back(ProviderEvent::ToolResult {
            id: id.to_owned(),
            output,
            error,
        });
    }

    fn finish(
        &mut self,
        reason: Option<String>,
        usage: Option<Usage>,
        out: &mut VecDeque<ProviderEvent>,
    ) {
        out.push_back(ProviderEvent::Finish { reason, usage });
    }
}

fn str_of<'a>(chunk: &'a Value, key: &str) -> Option<&'a str> {
    chunk.get(key).and_then(Value::as_str)
}

/// Token counts from `messageMetadata.usage`, when an app puts the SDK's `LanguageModelUsage`
/// there (`inputTokens`, `outputTokens`, `reasoningTokens`; numbers or `{total}`).
fn usage_of(metadata: Option<&Value>) -> Option<Usage> {
    let usage = metadata?.get("usage")?;
    let count = |key: &str| -> Option<u64> {
        let v = usage.get(key)?;
        v.as_u64().or_else(|| v.get("total")?.as_u64())
    };
    Some(Usage {
        input_tokens: count("inputTokens")?,
        output_tokens: count("outputTokens")?,
        reasoning_tokens: count("reasoningTokens"),
    })
}

impl Decoder for ChunkDecoder {
    fn event(
        &mut self,
        _name: &str,
        data: &str,
        out: &mut VecDeque<ProviderEvent>,
    ) -> Result<bool, ProviderError> {
        if data.trim_ascii() == "[DONE]" {
            // The route ended without a `finish` (`sendFinish: false`): the answer is whole.
            self.finish(None, None, out);
            return Ok(true);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|_| malformed("UI message chunk"))?;
        let Some(kind) = str_of(&chunk, "type") else {
            return Err(malformed("UI message chunk"));
        };
        let text = |key: &str| str_of(&chunk, key).unwrap_or_default().to_owned();
        match kind {
            "text-delta" => {
                let delta = text("delta");
                if !delta.is_empty() {
                    out.push_back(ProviderEvent::Text(delta));
                }
            }
            "reasoning-delta" => {
                let delta = text("delta");
                if !delta.is_empty() {
                    out.push_back(ProviderEvent::Reasoning(delta));
                }
            }
            "tool-input-start" => {
                self.call_start(&text("toolCallId"), &text("toolName"), out);
            }
            "tool-input-delta" => {
                let id = text("toolCallId");
                let delta = text("inputTextDelta");
                if let Some(call) = self.calls.get_mut(&id)
                    && !delta.is_empty()
                    && !call.ended
                {
                    call.streamed = true;
                    out.push_back(ProviderEvent::ToolCallInput {
                        key: call.key,
                        text: delta,
                    });
                }
            }
            "tool-input-available" => {
                self.call_end(
                    &text("toolCallId"),
                    &text("toolName"),
                    chunk.get("input"),
                    out,
                );
            }
            "tool-input-error" => {
                let id = text("toolCallId");
                self.call_end(&id, &text("toolName"), chunk.get("input"), out);
                self.result(&id, None, Some(text("errorText")), out);
            }
            // A preliminary output (a tool that streams its progress) is not the result.
            "tool-output-available"
                if chunk.get("preliminary").and_then(Value::as_bool) != Some(true) =>
            {
                let output = chunk.get("output").cloned();
                self.result(&text("toolCallId"), output, None, out);
            }
            "tool-output-error" => {
                self.result(&text("toolCallId"), None, Some(text("errorText")), out);
            }
            "tool-output-denied" => {
                let error = "the tool call was denied".to_owned();
                self.result(&text("toolCallId"), None, Some(error), out);
            }
            "source-url" => out.push_back(ProviderEvent::Source {
                url: text("url"),
                title: str_of(&chunk, "title").map(str::to_owned),
            }),
            "finish" => {
                let reason = str_of(&chunk, "finishReason").map(str::to_owned);
                let usage = usage_of(chunk.get("messageMetadata"));
                self.finish(reason, usage, out);
                return Ok(true);
            }
            "error" => {
                return Err(ProviderError::new(
                    ProviderErrorKind::Upstream,
                    format!("the app's route failed mid-answer: {}", text("errorText")),
                ));
            }
            "abort" => {
                return Err(ProviderError::new(
                    ProviderErrorKind::Upstream,
                    "the app's route aborted the answer",
                ));
            }
            _ => {}
        }
        Ok(false)
    }

    fn eof(&mut self, _out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        // The SDK's server always ends with `finish` and `[DONE]`: without them the route
        // broke off.
        Err(ended_early())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::decode;
    use rill_chat::protocol::PartsWriter;
    use rill_core::PromptMessage;

    const ANSWER: &str = "a1";

    fn message(id: &str, role: Role, status: MessageStatus, parts: Vec<Part>) -> Message {
        Message {
            id: id.into(),
            chat_id: "c1".into(),
            seq: 0,
            role,
            content: rill_core::chat::text_of(&parts),
            parts,
            status,
            finish_reason: None,
            usage: None,
            error: None,
            bot_id: (role == Role::Assistant).then(|| "demo".into()),
            model: (role == Role::Assistant).then(|| "demo".into()),
            created_at_ms: 5,
            updated_at_ms: 5,
        }
    }

    /// The chat events of an exchange whose answer streams `events`, as the engine publishes
    /// them: the question, the placeholder, the parts, the closing of open parts, `completed`.
    fn exchange(events: Vec<ProviderEvent>, completed: ChatEvent) -> Vec<ChatEvent> {
        let question = message(
            "q1",
            Role::User,
            MessageStatus::Complete,
            vec![Part::text("hi")],
        );
        let placeholder = message(ANSWER, Role::Assistant, MessageStatus::Streaming, vec![]);
        let mut out = vec![
            ChatEvent::Created(question),
            ChatEvent::Created(placeholder),
        ];
        let mut writer = PartsWriter::new(ANSWER);
        for event in events {
            writer.push(event, &mut out);
        }
        writer.finish(&mut out);
        out.push(completed);
        out
    }

    fn completed(status: MessageStatus, reason: &str, error: Option<&str>) -> ChatEvent {
        ChatEvent::Completed {
            message_id: ANSWER.into(),
            status,
            finish_reason: Some(reason.into()),
            usage: (status == MessageStatus::Complete).then_some(Usage {
                input_tokens: 3,
                output_tokens: 7,
                reasoning_tokens: Some(2),
            }),
            error: error.map(str::to_owned),
        }
    }

    /// Runs the encoder over `events`; the bytes, and whether it ended the stream after the
    /// last one (and not before).
    fn encode(encoder: &mut UiStream, events: &[ChatEvent]) -> (String, bool) {
        let mut out = Vec::new();
        let mut ended = false;
        for event in events {
            assert!(!ended, "the stream ended before {}", event.name());
            ended = encoder.event(event.name(), &event.data(), Some("id"), &mut out) == Flow::End;
        }
        (String::from_utf8(out).unwrap(), ended)
    }

    fn weather_answer() -> Vec<ProviderEvent> {
        use ProviderEvent::*;
        vec![
            Reasoning("Think ".into()),
            Reasoning("more".into()),
            ToolCallStart {
                key: 0,
                id: "call_1".into(),
                name: "get_weather".into(),
            },
            ToolCallInput {
                key: 0,
                text: "{\"city\":".into(),
            },
            ToolCallInput {
                key: 0,
                text: "\"Seoul\"}".into(),
            },
            ToolCallEnd { key: 0 },
            ToolResult {
                id: "call_1".into(),
                output: Some(json!({"temp": 21})),
                error: None,
            },
            Source {
                url: "https://example.com/w".into(),
                title: Some("W".into()),
            },
            Text("Hello".into()),
            Text(" \"world\"\n".into()),
            Finish {
                reason: Some("stop".into()),
                usage: None,
            },
        ]
    }

    const WEATHER_STREAM: &str = r#"data: {"type":"start","messageId":"a1","messageMetadata":{"bot":"demo","createdAt":5,"model":"demo"}}

data: {"type":"start-step"}

data: {"type":"reasoning-start","id":"r0"}

data: {"type":"reasoning-delta","id":"r0","delta":"Think "}

data: {"type":"reasoning-delta","id":"r0","delta":"more"}

data: {"type":"reasoning-end","id":"r0"}

data: {"type":"tool-input-start","toolCallId":"call_1","toolName":"get_weather"}

data: {"type":"tool-input-delta","toolCallId":"call_1","inputTextDelta":"{\"city\":"}

data: {"type":"tool-input-delta","toolCallId":"call_1","inputTextDelta":"\"Seoul\"}"}

data: {"type":"tool-input-available","toolCallId":"call_1","toolName":"get_weather","input":{"city":"Seoul"}}

data: {"type":"tool-output-available","toolCallId":"call_1","output":{"temp":21}}

data: {"type":"finish-step"}

data: {"type":"start-step"}

data: {"type":"source-url","sourceId":"s2","url":"https://example.com/w","title":"W"}

data: {"type":"text-start","id":"t3"}

data: {"type":"text-delta","id":"t3","delta":"Hello"}

data: {"type":"text-delta","id":"t3","delta":" \"world\"\n"}

data: {"type":"text-end","id":"t3"}

data: {"type":"finish-step"}

data: {"type":"finish","finishReason":"stop","messageMetadata":{"status":"complete","usage":{"inputTokens":3,"outputTokens":7,"reasoningTokens":2,"totalTokens":10}}}

data: [DONE]

"#;

    #[test]
    fn a_whole_answer_with_reasoning_a_tool_a_source_and_text() {
        let events = exchange(
            weather_answer(),
            completed(MessageStatus::Complete, "stop", None),
        );
        let (bytes, ended) = encode(&mut UiStream::new(ANSWER), &events);
        assert!(ended);
        assert_eq!(bytes, WEATHER_STREAM);
    }

    /// A stream that joins mid-answer (a snapshot, then what follows it) gives the client what
    /// the whole stream would: the same chunks, only with the snapshot's text in one delta.
    #[test]
    fn a_snapshot_then_live_events_never_repeats_a_part() {
        let events = exchange(
            weather_answer(),
            completed(MessageStatus::Complete, "stop", None),
        );
        // Cut after the first text delta: apply what came before to the placeholder.
        let cut = events
            .iter()
            .position(|e| {
                matches!(
                    e,
                    ChatEvent::Delta {
                        kind: DeltaKind::Text,
                        ..
                    }
                )
            })
            .unwrap()
            + 1;
        let mut state = message(ANSWER, Role::Assistant, MessageStatus::Streaming, vec![]);
        for event in &events[..cut] {
            rill_chat::protocol::apply(&mut state, event).unwrap();
        }
        let mut joined = vec![ChatEvent::Snapshot(state)];
        joined.extend_from_slice(&events[cut..]);
        let (bytes, ended) = encode(&mut UiStream::new(ANSWER), &joined);
        assert!(ended);
        let expected = WEATHER_STREAM
            .replace(
                "data: {\"type\":\"reasoning-delta\",\"id\":\"r0\",\"delta\":\"Think \"}\n\ndata: {\"type\":\"reasoning-delta\",\"id\":\"r0\",\"delta\":\"more\"}",
                "data: {\"type\":\"reasoning-delta\",\"id\":\"r0\",\"delta\":\"Think more\"}",
            )
            .replace(
                "data: {\"type\":\"tool-input-delta\",\"toolCallId\":\"call_1\",\"inputTextDelta\":\"{\\\"city\\\":\"}\n\ndata: {\"type\":\"tool-input-delta\",\"toolCallId\":\"call_1\",\"inputTextDelta\":\"\\\"Seoul\\\"}\"}",
                "data: {\"type\":\"tool-input-delta\",\"toolCallId\":\"call_1\",\"inputTextDelta\":\"{\\\"city\\\":\\\"Seoul\\\"}\"}",
            );
        assert_eq!(bytes, expected);
    }

    /// An exchange the log no longer has: the question, the answer's snapshot (final), its
    /// completion. The client gets the whole answer, closed, as the live stream would end it.
    #[test]
    fn a_finished_answer_from_its_snapshot() {
        let mut answer = message(ANSWER, Role::Assistant, MessageStatus::Streaming, vec![]);
        let events = exchange(
            weather_answer(),
            completed(MessageStatus::Complete, "stop", None),
        );
        for event in &events {
            rill_chat::protocol::apply(&mut answer, event).unwrap();
        }
        let question = message(
            "q1",
            Role::User,
            MessageStatus::Complete,
            vec![Part::text("hi")],
        );
        let prelude = vec![
            ChatEvent::Created(question),
            ChatEvent::Snapshot(answer),
            events.last().unwrap().clone(),
        ];
        let (bytes, ended) = encode(&mut UiStream::new(ANSWER), &prelude);
        assert!(ended);
        let (live, _) = encode(&mut UiStream::new(ANSWER), &events);
        let whole = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.is_empty() && !l.contains("-delta"))
                .map(str::to_owned)
                .collect()
        };
        // The same chunks but the deltas, which the snapshot gives one per part.
        assert_eq!(whole(&bytes), whole(&live));
        assert!(bytes.contains(r#"{"type":"text-delta","id":"t3","delta":"Hello \"world\"\n"}"#));
    }

    /// A result that arrives while the call's arguments still stream completes the call first:
    /// the client's part must not go back to `input-available` after its output.
    #[test]
    fn a_result_before_the_end_of_its_arguments() {
        let events = vec![
            ChatEvent::Created(message(
                ANSWER,
                Role::Assistant,
                MessageStatus::Streaming,
                vec![],
            )),
            ChatEvent::PartStarted {
                message_id: ANSWER.into(),
                part: 0,
                value: Part::ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    input_text: String::new(),
                    input: None,
                    output: None,
                    error: None,
                },
            },
            ChatEvent::Delta {
                message_id: ANSWER.into(),
                part: 0,
                kind: DeltaKind::ToolInput,
                text: "{\"a\":1}".into(),
            },
            ChatEvent::ToolResult {
                message_id: ANSWER.into(),
                part: 0,
                output: Some(json!(2)),
                error: None,
            },
            ChatEvent::PartDone {
                message_id: ANSWER.into(),
                part: 0,
                signature: None,
                input: Some(json!({"a": 1})),
            },
        ];
        let (bytes, _) = encode(&mut UiStream::new(ANSWER), &events);
        let types: Vec<&str> = bytes
            .lines()
            .filter_map(|l| l.split("\"type\":\"").nth(1))
            .filter_map(|t| t.split('"').next())
            .collect();
        assert_eq!(
            types,
            [
                "start",
                "start-step",
                "tool-input-start",
                "tool-input-delta",
                "tool-input-available",
                "tool-output-available"
            ]
        );
        assert!(bytes.contains(r#""input":{"a":1}"#));
    }

    /// The client's rules, as strict as the strictest major (`ai` 6): assembles a message from
    /// chunks, refusing what the real client refuses (an unknown type, a second `start`, a
    /// delta or end without its start, a part started twice, an output without its call, a
    /// text or reasoning id used across `finish-step`).
    #[derive(Default)]
    struct Client {
        id: Option<String>,
        metadata: Map<String, Value>,
        parts: Vec<Value>,
        open: HashMap<String, usize>,
        partial_calls: HashMap<String, usize>,
        done: bool,
    }

    impl Client {
        fn read(bytes: &str) -> Result<Value, String> {
            let mut client = Client::default();
            for event in bytes.split("\n\n").filter(|e| !e.is_empty()) {
                let data = event
                    .strip_prefix("data: ")
                    .ok_or(format!("not data: {event}"))?;
                if client.done {
                    return Err(format!("after [DONE]: {data}"));
                }
                if data == "[DONE]" {
                    client.done = true;
                    continue;
                }
                client.chunk(&serde_json::from_str(data).map_err(|e| e.to_string())?)?;
            }
            if !client.done {
                return Err("no [DONE]".into());
            }
            Ok(json!({
                "id": client.id, "role": "assistant", "metadata": client.metadata, "parts": client.parts,
            }))
        }

        fn step_start(&self) -> usize {
            self.parts
                .iter()
                .rposition(|p| p["type"] == "step-start")
                .map_or(0, |i| i + 1)
        }

        fn chunk(&mut self, c: &Value) -> Result<(), String> {
            let kind = c["type"].as_str().ok_or("no type")?;
            let id = c["id"].as_str().unwrap_or_default().to_owned();
            let call = c["toolCallId"].as_str().unwrap_or_default().to_owned();
            let merge = |metadata: &mut Map<String, Value>, v: &Value| {
                if let Some(m) = v.as_object() {
                    metadata.extend(m.clone());
                }
            };
            match kind {
                "start" => {
                    if self.id.is_some() {
                        return Err("a second start".into());
                    }
                    self.id = Some(c["messageId"].as_str().ok_or("no messageId")?.to_owned());
                    merge(&mut self.metadata, &c["messageMetadata"]);
                }
                "start-step" => self.parts.push(json!({"type": "step-start"})),
                "finish-step" => self.open.clear(),
                "text-start" | "reasoning-start" => {
                    let key = format!("{kind}:{id}");
                    if self.open.contains_key(&key)
                        || self
                            .parts
                            .iter()
                            .any(|p| p["id"] == id && kind == "reasoning-start")
                    {
                        return Err(format!("{kind} {id} twice"));
                    }
                    self.open.insert(key, self.parts.len());
                    self.parts.push(if kind == "text-start" {
                        json!({"type": "text", "text": "", "state": "streaming"})
                    } else {
                        json!({"type": "reasoning", "id": id, "text": "", "state": "streaming"})
                    });
                }
                "text-delta" | "text-end" | "reasoning-delta" | "reasoning-end" => {
                    let start =
                        format!("{}-start:{id}", kind.split('-').next().unwrap_or_default());
                    let &index = self
                        .open
                        .get(&start)
                        .ok_or(format!("{kind} without start: {id}"))?;
                    let part = &mut self.parts[index];
                    if kind.ends_with("-end") {
                        part["state"] = json!("done");
                        self.open.remove(&start);
                    } else {
                        let text = format!(
                            "{}{}",
                            part["text"].as_str().unwrap_or_default(),
                            c["delta"].as_str().ok_or("no delta")?
                        );
                        part["text"] = json!(text);
                    }
                }
                "tool-input-start" | "tool-input-available" => {
                    let step = self.step_start();
                    let found = self.parts[step..]
                        .iter()
                        .position(|p| p["toolCallId"] == call)
                        .map(|i| i + step);
                    let index = found.unwrap_or_else(|| {
                        self.parts.push(json!({"type": format!("tool-{}", c["toolName"].as_str().unwrap_or_default()), "toolCallId": call}));
                        self.parts.len() - 1
                    });
                    let part = self.parts[index].as_object_mut().ok_or("tool part")?;
                    if kind == "tool-input-start" {
                        part.insert("state".into(), json!("input-streaming"));
                        self.partial_calls.insert(call, index);
                    } else {
                        part.insert("state".into(), json!("input-available"));
                        part.insert("input".into(), c.get("input").ok_or("no input")?.clone());
                        self.partial_calls.remove(&call);
                    }
                }
                "tool-input-delta" => {
                    self.partial_calls
                        .get(&call)
                        .ok_or(format!("tool-input-delta without start: {call}"))?;
                }
                "tool-output-available" | "tool-output-error" => {
                    let index = self
                        .parts
                        .iter()
                        .rposition(|p| p["toolCallId"] == call)
                        .ok_or(format!("no tool call {call}"))?;
                    let part = self.parts[index].as_object_mut().ok_or("tool part")?;
                    if kind == "tool-output-available" {
                        part.insert("state".into(), json!("output-available"));
                        part.insert("output".into(), c.get("output").ok_or("no output")?.clone());
                    } else {
                        part.insert("state".into(), json!("output-error"));
                        part.insert("errorText".into(), c["errorText"].clone());
                    }
                }
                "source-url" => {
                    let mut source =
                        json!({"type": "source-url", "sourceId": c["sourceId"], "url": c["url"]});
                    if let Some(title) = c.get("title") {
                        source["title"] = title.clone();
                    }
                    self.parts.push(source);
                }
                "finish" | "message-metadata" => merge(&mut self.metadata, &c["messageMetadata"]),
                "error" | "abort" => {}
                other => return Err(format!("unknown chunk type {other}")),
            }
            Ok(())
        }
    }

    /// Every way a client can meet an answer (from its first event, or joining at any event
    /// with a snapshot) assembles into the stored message, under the client's strict rules.
    #[test]
    fn every_join_point_assembles_into_the_stored_message() {
        use ProviderEvent::*;
        let call = |key: u32, id: &str| ToolCallStart {
            key,
            id: id.into(),
            name: "f".into(),
        };
        let input = |key: u32, text: &str| ToolCallInput {
            key,
            text: text.into(),
        };
        let result = |id: &str, error: Option<&str>| ToolResult {
            id: id.into(),
            output: error.is_none().then(|| json!({"ok": id})),
            error: error.map(str::to_owned),
        };
        let scenarios = vec![
            (
                weather_answer(),
                completed(MessageStatus::Complete, "stop", None),
            ),
            (
                vec![Text("Hel".into()), Text("lo".into())],
                completed(MessageStatus::Stopped, "stopped", None),
            ),
            (
                vec![
                    RedactedReasoning("opaque".into()),
                    Reasoning("hm".into()),
                    ReasoningSignature("sig".into()),
                    call(0, "a"),
                    call(1, "b"),
                    input(0, "{\"x\":"),
                    input(1, "not json"),
                    input(0, "1}"),
                    ToolCallEnd { key: 0 },
                    ToolCallEnd { key: 1 },
                    result("a", None),
                    result("b", Some("boom")),
                    Text("after".into()),
                    Source {
                        url: "https://example.com".into(),
                        title: None,
                    },
                    Text("more".into()),
                ],
                completed(MessageStatus::Complete, "tool_calls", None),
            ),
            (
                vec![Reasoning("r".into()), call(0, "c"), input(0, "{\"y\"")],
                completed(MessageStatus::Error, "error", Some("upstream broke")),
            ),
        ];
        for (n, (answer_events, end)) in scenarios.into_iter().enumerate() {
            let events = exchange(answer_events, end);
            let mut stored = message(ANSWER, Role::Assistant, MessageStatus::Streaming, vec![]);
            for event in &events {
                rill_chat::protocol::apply(&mut stored, event).unwrap();
            }
            let expected = ui_message(&stored);
            // Joining at event k: the answer as it stood after events[..k], then the rest.
            for k in 1..events.len() {
                let stream = if k == 1 {
                    events.clone()
                } else {
                    let mut state =
                        message(ANSWER, Role::Assistant, MessageStatus::Streaming, vec![]);
                    for event in &events[..k] {
                        rill_chat::protocol::apply(&mut state, event).unwrap();
                    }
                    let mut joined = vec![ChatEvent::Snapshot(state)];
                    joined.extend_from_slice(&events[k..]);
                    joined
                };
                let (bytes, ended) = encode(&mut UiStream::new(ANSWER), &stream);
                assert!(ended, "scenario {n}, join at {k}");
                let assembled = Client::read(&bytes)
                    .unwrap_or_else(|e| panic!("scenario {n}, join at {k}: {e}\n{bytes}"));
                assert_eq!(assembled, expected, "scenario {n}, join at {k}");
            }
        }
    }

    #[test]
    fn stopped_failed_and_interrupted_answers() {
        let text = vec![ProviderEvent::Text("Hel".into())];
        let (stopped, _) = encode(
            &mut UiStream::new(ANSWER),
            &exchange(
                text.clone(),
                completed(MessageStatus::Stopped, "stopped", None),
            ),
        );
        assert!(stopped.ends_with(
            "data: {\"type\":\"text-end\",\"id\":\"t0\"}\n\n\
             data: {\"type\":\"finish-step\"}\n\n\
             data: {\"type\":\"abort\",\"reason\":\"stopped\"}\n\n\
             data: {\"type\":\"finish\",\"messageMetadata\":{\"status\":\"stopped\"}}\n\n\
             data: [DONE]\n\n"
        ));
        let (failed, _) = encode(
            &mut UiStream::new(ANSWER),
            &exchange(
                text.clone(),
                completed(MessageStatus::Error, "error", Some("upstream broke")),
            ),
        );
        assert!(failed.ends_with(
            "data: {\"type\":\"finish-step\"}\n\n\
             data: {\"type\":\"message-metadata\",\"messageMetadata\":{\"error\":\"upstream broke\",\"status\":\"error\"}}\n\n\
             data: {\"type\":\"error\",\"errorText\":\"upstream broke\"}\n\n\
             data: {\"type\":\"finish\",\"finishReason\":\"error\"}\n\n\
             data: [DONE]\n\n"
        ));
        let (interrupted, _) = encode(
            &mut UiStream::new(ANSWER),
            &exchange(
                text,
                completed(MessageStatus::Interrupted, "interrupted", None),
            ),
        );
        assert!(interrupted.contains(
            "{\"type\":\"error\",\"errorText\":\"the answer was interrupted before it was complete\"}"
        ));
    }

    /// The stream's own end (`error` without a message id, `reset`, `chat.deleted`) closes
    /// what is open and tells the client; events of other messages are not ours.
    #[test]
    fn stream_level_ends_and_other_messages() {
        let mut encoder = UiStream::new(ANSWER);
        let mut events = exchange(
            vec![ProviderEvent::Text("Hi".into())],
            completed(MessageStatus::Complete, "stop", None),
        );
        events.truncate(4); // question, placeholder, part 0 started, its delta
        events.push(ChatEvent::Delta {
            message_id: "other".into(),
            part: 0,
            kind: DeltaKind::Text,
            text: "not ours".into(),
        });
        events.push(ChatEvent::Error {
            code: "broker_unavailable".into(),
            message: "the event broker is unavailable; reconnect later".into(),
            message_id: None,
            reconnect: None,
        });
        let (bytes, ended) = encode(&mut encoder, &events);
        assert!(ended);
        assert!(!bytes.contains("not ours"));
        assert!(bytes.ends_with(
            "data: {\"type\":\"text-delta\",\"id\":\"t0\",\"delta\":\"Hi\"}\n\n\
             data: {\"type\":\"text-end\",\"id\":\"t0\"}\n\n\
             data: {\"type\":\"finish-step\"}\n\n\
             data: {\"type\":\"error\",\"errorText\":\"the event broker is unavailable; reconnect later\"}\n\n\
             data: [DONE]\n\n"
        ));
        let mut out = Vec::new();
        let mut encoder = UiStream::new(ANSWER);
        let reset = ChatEvent::Reset {
            topic: "_chat/c1".into(),
            reason: "expired".into(),
        };
        assert_eq!(
            encoder.event(reset.name(), &reset.data(), None, &mut out),
            Flow::End
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("data: {\"type\":\"error\"")
        );
    }

    /// Redacted reasoning is never shown; a call whose arguments are not JSON shows their text;
    /// a failed tool shows its error.
    #[test]
    fn hidden_parts_raw_arguments_and_tool_errors() {
        use ProviderEvent::*;
        let events = exchange(
            vec![
                RedactedReasoning("opaque".into()),
                ToolCallStart {
                    key: 0,
                    id: "c".into(),
                    name: "f".into(),
                },
                ToolCallInput {
                    key: 0,
                    text: "not json".into(),
                },
                ToolCallEnd { key: 0 },
                ToolResult {
                    id: "c".into(),
                    output: None,
                    error: Some("boom".into()),
                },
                Text("ok".into()),
            ],
            completed(MessageStatus::Complete, "tool_use", None),
        );
        let (bytes, _) = encode(&mut UiStream::new(ANSWER), &events);
        assert!(!bytes.contains("opaque"));
        assert!(bytes.contains(
            "{\"type\":\"tool-input-available\",\"toolCallId\":\"c\",\"toolName\":\"f\",\"input\":\"not json\"}"
        ));
        assert!(bytes.contains(
            "{\"type\":\"tool-output-error\",\"toolCallId\":\"c\",\"errorText\":\"boom\"}"
        ));
        assert!(bytes.contains("{\"type\":\"text-start\",\"id\":\"t2\"}"));
        assert!(bytes.contains("\"finishReason\":\"tool-calls\""));
    }

    /// The stored message is what the client assembles from the stream of the same answer
    /// (checked against the real client in tests/ai-sdk).
    #[test]
    fn stored_message_as_ui_message() {
        let mut answer = message(ANSWER, Role::Assistant, MessageStatus::Streaming, vec![]);
        for event in exchange(
            weather_answer(),
            completed(MessageStatus::Complete, "stop", None),
        ) {
            rill_chat::protocol::apply(&mut answer, &event).unwrap();
        }
        assert_eq!(
            ui_message(&answer),
            json!({
                "id": "a1",
                "role": "assistant",
                "metadata": {
                    "bot": "demo", "createdAt": 5, "model": "demo", "status": "complete",
                    "usage": {"inputTokens": 3, "outputTokens": 7, "reasoningTokens": 2, "totalTokens": 10},
                },
                "parts": [
                    {"type": "step-start"},
                    {"type": "reasoning", "id": "r0", "text": "Think more", "state": "done"},
                    {"type": "tool-get_weather", "toolCallId": "call_1", "state": "output-available",
                     "input": {"city": "Seoul"}, "output": {"temp": 21}},
                    {"type": "step-start"},
                    {"type": "source-url", "sourceId": "s2", "url": "https://example.com/w", "title": "W"},
                    {"type": "text", "text": "Hello \"world\"\n", "state": "done"},
                ],
            })
        );
        let question = message(
            "q1",
            Role::User,
            MessageStatus::Complete,
            vec![Part::text("hi")],
        );
        assert_eq!(
            ui_message(&question),
            json!({"id": "q1", "role": "user", "parts": [{"type": "text", "text": "hi"}]})
        );
    }

    #[test]
    fn request_body_is_what_default_chat_transport_sends() {
        let request = CompletionRequest {
            model: "app".into(),
            system: Some("Be brief.".into()),
            messages: vec![
                PromptMessage::text(Role::User, "Weather?"),
                PromptMessage {
                    role: Role::Assistant,
                    parts: vec![
                        Part::Reasoning {
                            text: "hm".into(),
                            signature: None,
                            redacted: None,
                        },
                        Part::ToolCall {
                            id: "call-1".into(),
                            name: "weather".into(),
                            input_text: "{\"city\":\"Paris\"}".into(),
                            input: Some(json!({"city": "Paris"})),
                            output: Some(json!({"tempC": 21})),
                            error: None,
                        },
                        // Never answered (stopped mid-call): not sent.
                        Part::ToolCall {
                            id: "call-2".into(),
                            name: "weather".into(),
                            input_text: "{\"ci".into(),
                            input: None,
                            output: None,
                            error: None,
                        },
                        Part::text("Sunny."),
                    ],
                },
                PromptMessage::text(Role::User, "Thanks"),
            ],
            context: rill_core::RequestContext {
                user_id: Some("u1".into()),
                chat_id: Some("c1".into()),
                message_id: Some("a2".into()),
            },
            ..CompletionRequest::default()
        };
        let body: Value = serde_json::from_slice(&request_body(&request).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "id": "c1",
                "trigger": "submit-message",
                "rill": {"messageId": "a2", "model": "app", "system": "Be brief."},
                "messages": [
                    {"id": "m0", "role": "user", "parts": [{"type": "text", "text": "Weather?"}]},
                    {"id": "m1", "role": "assistant", "parts": [
                        {"type": "step-start"},
                        {"type": "reasoning", "id": "r0", "text": "hm", "state": "done"},
                        {"type": "tool-weather", "toolCallId": "call-1", "state": "output-available",
                         "input": {"city": "Paris"}, "output": {"tempC": 21}},
                        {"type": "step-start"},
                        {"type": "text", "text": "Sunny.", "state": "done"},
                    ]},
                    {"id": "m2", "role": "user", "parts": [{"type": "text", "text": "Thanks"}]},
                ],
            })
        );
    }

    /// What `streamText(...).toUIMessageStreamResponse()` answered for a reasoning, text and
    /// tool scenario (captured from `ai` 6.0.326 and 7.0.173, byte-identical).
    const SDK_STREAM: &[&str] = &[
        r#"{"type":"start","messageMetadata":{"createdAt":0},"messageId":"msg-3"}"#,
        r#"{"type":"start-step"}"#,
        r#"{"type":"reasoning-start","id":"r1"}"#,
        r#"{"type":"reasoning-delta","id":"r1","delta":"The user wants the weather. "}"#,
        r#"{"type":"reasoning-delta","id":"r1","delta":"I will call the tool."}"#,
        r#"{"type":"reasoning-end","id":"r1"}"#,
        r#"{"type":"text-start","id":"t1"}"#,
        r#"{"type":"text-delta","id":"t1","delta":"Let me check "}"#,
        r#"{"type":"text-delta","id":"t1","delta":"the weather."}"#,
        r#"{"type":"text-end","id":"t1"}"#,
        r#"{"type":"tool-input-start","toolCallId":"call-1","toolName":"weather"}"#,
        r#"{"type":"tool-input-delta","toolCallId":"call-1","inputTextDelta":"{\"city\":"}"#,
        r#"{"type":"tool-input-delta","toolCallId":"call-1","inputTextDelta":"\"Paris\"}"}"#,
        r#"{"type":"tool-input-available","toolCallId":"call-1","toolName":"weather","input":{"city":"Paris"}}"#,
        r#"{"type":"tool-output-available","toolCallId":"call-1","output":{"city":"Paris","forecast":"sunny","tempC":21}}"#,
        r#"{"type":"finish-step"}"#,
        r#"{"type":"start-step"}"#,
        r#"{"type":"text-start","id":"t2"}"#,
        r#"{"type":"text-delta","id":"t2","delta":"It is sunny "}"#,
        r#"{"type":"text-delta","id":"t2","delta":"in Paris."}"#,
        r#"{"type":"text-end","id":"t2"}"#,
        r#"{"type":"finish-step"}"#,
        r#"{"type":"finish","finishReason":"stop","messageMetadata":{"usage":{"inputTokens":20,"outputTokens":40,"totalTokens":60}}}"#,
        "[DONE]",
    ];

    fn run(chunks: &[&str]) -> (Vec<ProviderEvent>, Option<ProviderError>) {
        let events: Vec<(&str, &str)> = chunks.iter().map(|d| ("", *d)).collect();
        decode(ChunkDecoder::new(), &events)
    }

    #[test]
    fn decodes_what_stream_text_answers() {
        use ProviderEvent::*;
        let (events, error) = run(SDK_STREAM);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                Reasoning("The user wants the weather. ".into()),
                Reasoning("I will call the tool.".into()),
                Text("Let me check ".into()),
                Text("the weather.".into()),
                ToolCallStart {
                    key: 0,
                    id: "call-1".into(),
                    name: "weather".into()
                },
                ToolCallInput {
                    key: 0,
                    text: "{\"city\":".into()
                },
                ToolCallInput {
                    key: 0,
                    text: "\"Paris\"}".into()
                },
                ToolCallEnd { key: 0 },
                ToolResult {
                    id: "call-1".into(),
                    output: Some(json!({"city": "Paris", "forecast": "sunny", "tempC": 21})),
                    error: None,
                },
                Text("It is sunny ".into()),
                Text("in Paris.".into()),
                Finish {
                    reason: Some("stop".into()),
                    usage: Some(Usage {
                        input_tokens: 20,
                        output_tokens: 40,
                        reasoning_tokens: None
                    }),
                },
            ]
        );
    }

    /// Decoding an app's stream, storing it, and encoding it again gives the client the same
    /// parts the app's route would have (its ids aside).
    #[test]
    fn an_apps_stream_round_trips_to_the_same_ui_message() {
        let (events, _) = run(SDK_STREAM);
        let mut answer = message(ANSWER, Role::Assistant, MessageStatus::Streaming, vec![]);
        for event in exchange(events, completed(MessageStatus::Complete, "stop", None)) {
            rill_chat::protocol::apply(&mut answer, &event).unwrap();
        }
        assert_eq!(
            ui_message(&answer)["parts"],
            json!([
                {"type": "step-start"},
                {"type": "reasoning", "id": "r0", "text": "The user wants the weather. I will call the tool.", "state": "done"},
                {"type": "text", "text": "Let me check the weather.", "state": "done"},
                {"type": "tool-weather", "toolCallId": "call-1", "state": "output-available",
                 "input": {"city": "Paris"}, "output": {"city": "Paris", "forecast": "sunny", "tempC": 21}},
                {"type": "step-start"},
                {"type": "text", "text": "It is sunny in Paris.", "state": "done"},
            ])
        );
    }

    #[test]
    fn calls_without_deltas_errors_sources_and_ends() {
        use ProviderEvent::*;
        let (events, error) = run(&[
            r#"{"type":"tool-input-available","toolCallId":"a","toolName":"f","input":{"x":1}}"#,
            r#"{"type":"tool-output-available","toolCallId":"a","output":"partial","preliminary":true}"#,
            r#"{"type":"tool-output-available","toolCallId":"a","output":"done"}"#,
            r#"{"type":"tool-input-error","toolCallId":"b","toolName":"g","input":"{bad","errorText":"invalid input"}"#,
            r#"{"type":"tool-output-error","toolCallId":"nobody","errorText":"no such call"}"#,
            r#"{"type":"source-url","sourceId":"s","url":"https://example.com","title":"Ex"}"#,
            r#"{"type":"data-progress","data":{"pct":50}}"#,
            r#"{"type":"some-future-chunk"}"#,
            r#"{"type":"text-delta","id":"t","delta":""}"#,
            "[DONE]",
        ]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                ToolCallStart {
                    key: 0,
                    id: "a".into(),
                    name: "f".into()
                },
                ToolCallInput {
                    key: 0,
                    text: "{\"x\":1}".into()
                },
                ToolCallEnd { key: 0 },
                ToolResult {
                    id: "a".into(),
                    output: Some(json!("done")),
                    error: None
                },
                ToolCallStart {
                    key: 1,
                    id: "b".into(),
                    name: "g".into()
                },
                ToolCallInput {
                    key: 1,
                    text: "{bad".into()
                },
                ToolCallEnd { key: 1 },
                ToolResult {
                    id: "b".into(),
                    output: None,
                    error: Some("invalid input".into())
                },
                Source {
                    url: "https://example.com".into(),
                    title: Some("Ex".into())
                },
                Finish {
                    reason: None,
                    usage: None
                },
            ]
        );
    }

    #[test]
    fn errors_aborts_and_broken_streams() {
        let (events, error) = run(&[
            r#"{"type":"start"}"#,
            r#"{"type":"text-start","id":"t1"}"#,
            r#"{"type":"text-delta","id":"t1","delta":"partial "}"#,
            r#"{"type":"error","errorText":"An error occurred."}"#,
            r#"{"type":"finish","finishReason":"error"}"#,
        ]);
        assert_eq!(events, vec![ProviderEvent::Text("partial ".into())]);
        let error = error.unwrap();
        assert_eq!(error.kind, ProviderErrorKind::Upstream);
        assert!(error.message.contains("An error occurred."));

        let (_, error) = run(&[r#"{"type":"abort"}"#]);
        assert_eq!(error.unwrap().kind, ProviderErrorKind::Upstream);
        let (_, error) = run(&[r#"{"type":"text-delta","id":"t","delta":"x"}"#]);
        assert_eq!(error.unwrap(), ended_early());
        let (_, error) = run(&["{not json"]);
        assert_eq!(error.unwrap().kind, ProviderErrorKind::Protocol);
        let (_, error) = run(&[r#"{"no":"type"}"#]);
        assert_eq!(error.unwrap().kind, ProviderErrorKind::Protocol);
    }

    #[test]
    fn finish_reasons_are_the_sdk_set() {
        let complete = MessageStatus::Complete;
        for (reason, expected) in [
            (None, "stop"),
            (Some("stop"), "stop"),
            (Some("end_turn"), "stop"),
            (Some("length"), "length"),
            (Some("max_tokens"), "length"),
            (Some("tool_calls"), "tool-calls"),
            (Some("tool_use"), "tool-calls"),
            (Some("tool-calls"), "tool-calls"),
            (Some("content_filter"), "content-filter"),
            (Some("pause_turn"), "other"),
        ] {
            assert_eq!(finish_reason_of(complete, reason), expected, "{reason:?}");
        }
        assert_eq!(
            finish_reason_of(MessageStatus::Error, Some("stop")),
            "error"
        );
    }
}
