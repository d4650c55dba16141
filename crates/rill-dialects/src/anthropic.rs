//! Anthropic Messages (`POST {base}/v1/messages`, `stream: true`).
//!
//! Upstream side: [`request_body`] and [`EventDecoder`]. The content blocks of an answer map to
//! canonical events:
//!
//! | block / delta | canonical |
//! |---|---|
//! | `text`, `text_delta` | text |
//! | `thinking`, `thinking_delta`; `signature_delta` (overwrites) | reasoning, its signature |
//! | `redacted_thinking` | opaque reasoning (kept, sent back, never shown) |
//! | `tool_use` with `input_json_delta` fragments (the first may be empty), whole at `content_block_stop` | a tool call |
//! | `citations_delta` with a `url` (web search results) | a source |
//! | `ping` (anywhere), unknown events and block types | ignored |
//! | `error` (mid-stream) | the stream's error |
//! | `message_start` / `message_delta` usage (cumulative output), `stop_reason` | the finish |

use std::collections::{HashSet, VecDeque};

use rill_core::chat::{Part, Role, Usage};
use rill_core::{CompletionRequest, ProviderError, ProviderEvent, ToolChoice};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Decoder, encode_error, ended_early, malformed, tool_result_text, upstream_error};

/// The `max_tokens` sent when neither the request nor the bot sets one (the API requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The request body. History rules of the API, applied here: the system prompt apart from the
/// turns (system-role messages join it); the conversation starts with the user; turns
/// alternate (consecutive turns of one role are joined); tool results go back as `tool_result`
/// blocks in the next user turn; thinking blocks (with their signatures) go back before a tool
/// use, as the API requires, and are left out elsewhere.
pub fn request_body(request: &CompletionRequest) -> Result<Vec<u8>, ProviderError> {
    let mut system: Vec<String> = request
        .system
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    };
    for message in &request.messages {
        match message.role {
            Role::System => system.push(message.content()),
            Role::User => push("user", vec![text_block(&message.content())]),
            Role::Assistant => {
                let (blocks, results) = assistant_blocks(&message.parts);
                push("assistant", blocks);
                push("user", results);
            }
        }
    }
    // The conversation must start with the user (a history cut to a budget may start with an
    // answer).
    while turns.first().is_some_and(|(role, _)| *role == "assistant") {
        turns.remove(0);
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": simplify(content)}))
        .collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
        "stream": true,
    });
    let object = body.as_object_mut().ok_or_else(encode_error)?;
    if !system.is_empty() {
        object.insert("system".into(), json!(system.join("\n\n")));
    }
    if let Some(t) = request.temperature {
        object.insert("temperature".into(), json!(t));
    }
    if !request.stop.is_empty() {
        object.insert("stop_sequences".into(), json!(request.stop));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut tool = json!({"name": t.name, "input_schema": t.parameters});
                if let (Some(d), Some(o)) = (&t.description, tool.as_object_mut()) {
                    o.insert("description".into(), json!(d));
                }
                tool
            })
            .collect();
        object.insert("tools".into(), json!(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        };
        object.insert("tool_choice".into(), choice);
    }
    serde_json::to_vec(&body).map_err(|_| encode_error())
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// A turn of only text blocks is sent as a plain string, as most clients do.
fn simplify(blocks: Vec<Value>) -> Value {
    if blocks.iter().all(|b| b["type"] == "text") {
        let text: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
        return json!(text.join("\n\n"));
    }
    json!(blocks)
}

/// An assistant message's blocks, and the `tool_result` blocks of the user turn after it.
fn assistant_blocks(parts: &[Part]) -> (Vec<Value>, Vec<Value>) {
    let uses_tools = parts.iter().any(|p| {
        matches!(p, Part::ToolCall { output, error, .. } if output.is_some() || error.is_some())
    });
    let mut blocks = Vec::new();
    let mut results = Vec::new();
    for part in parts {
        match part {
            Part::Text { text } if !text.is_empty() => blocks.push(text_block(text)),
            Part::Reasoning {
                text,
                signature: Some(signature),
                redacted: None,
            } if uses_tools => blocks.push(json!({
                "type": "thinking", "thinking": text, "signature": signature,
            })),
            Part::Reasoning {
                redacted: Some(data),
                ..
            } if uses_tools => blocks.push(json!({"type": "redacted_thinking", "data": data})),
            Part::ToolCall {
                id,
                name,
                input_text,
                input,
                output,
                error,
            } => {
                // A call without a result cannot go back: the API wants every tool_use answered.
                let Some(result) = tool_result_text(output.as_ref(), error.as_deref()) else {
                    continue;
                };
                let input = input
                    .clone()
                    .or_else(|| serde_json::from_str(input_text).ok())
                    .unwrap_or_else(|| json!({}));
                blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                let mut block =
                    json!({"type": "tool_result", "tool_use_id": id, "content": result});
                if error.is_some()
                    && let Some(o) = block.as_object_mut()
                {
                    o.insert("is_error".into(), json!(true));
                }
                results.push(block);
            }
            _ => {}
        }
    }
    (blocks, results)
}

/// The events we read; others (new ones included, as Anthropic's versioning policy asks) are
/// ignored.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u32,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u32,
        delta: ContentDelta,
    },
    ContentBlockStop {
        #[serde(default)]
        index: u32,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<EventUsage>,
    },
    MessageStop,
    Error {
        #[serde(default)]
        error: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: Option<EventUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentDelta {
    TextDelta {
        text: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    CitationsDelta {
        citation: Citation,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Citation {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    document_title: Option<String>,
}

#[derive(Deserialize, Default)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct EventUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// Decodes the events of one answer.
#[derive(Debug, Default)]
pub struct EventDecoder {
    stop_reason: Option<String>,
    usage: Option<Usage>,
    /// Tool-use blocks by their content-block index (the call's key).
    tool_blocks: HashSet<u32>,
}

impl EventDecoder {
    pub fn new() -> Self {
        EventDecoder::default()
    }

    fn add_usage(&mut self, usage: Option<EventUsage>) {
        let Some(usage) = usage else { return };
        let current = self.usage.get_or_insert_with(Usage::default);
        if let Some(input) = usage.input_tokens {
            current.input_tokens = input;
        }
        // `message_delta` carries the cumulative output count.
        if let Some(output) = usage.output_tokens {
            current.output_tokens = output;
        }
    }

    fn finish(&mut self, out: &mut VecDeque<ProviderEvent>) {
        let mut open: Vec<u32> = self.tool_blocks.drain().collect();
        open.sort_unstable();
        for key in open {
            out.push_back(ProviderEvent::ToolCallEnd { key });
        }
        out.push_back(ProviderEvent::Finish {
            reason: self.stop_reason.take(),
            usage: self.usage.take(),
        });
    }
}

impl Decoder for EventDecoder {
    fn event(
        &mut self,
        _name: &str,
        data: &str,
        out: &mut VecDeque<ProviderEvent>,
    ) -> Result<bool, ProviderError> {
        // The `type` inside the data repeats the SSE event name; reading it covers proxies
        // that drop the `event:` lines.
        let event: StreamEvent = serde_json::from_str(data).map_err(|_| malformed("event"))?;
        match event {
            StreamEvent::MessageStart { message } => self.add_usage(message.usage),
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ContentBlock::Text { text } => {
                    if !text.is_empty() {
                        out.push_back(ProviderEvent::Text(text));
                    }
                }
                ContentBlock::Thinking {
                    thinking,
                    signature,
                } => {
                    if !thinking.is_empty() {
                        out.push_back(ProviderEvent::Reasoning(thinking));
                    }
                    if !signature.is_empty() {
                        out.push_back(ProviderEvent::ReasoningSignature(signature));
                    }
                }
                ContentBlock::RedactedThinking { data } => {
                    out.push_back(ProviderEvent::RedactedReasoning(data));
                }
                ContentBlock::ToolUse { id, name, input } => {
                    self.tool_blocks.insert(index);
                    out.push_back(ProviderEvent::ToolCallStart {
                        key: index,
                        id,
                        name,
                    });
                    // Streams give `{}` here and the arguments as fragments; a whole input
                    // (a proxy that does not stream it) goes as one fragment.
                    if input.as_object().is_some_and(|o| !o.is_empty()) {
                        out.push_back(ProviderEvent::ToolCallInput {
                            key: index,
                            text: input.to_string(),
                        });
                    }
                }
                ContentBlock::Other => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                ContentDelta::TextDelta { text } => {
                    if !text.is_empty() {
                        out.push_back(ProviderEvent::Text(text));
                    }
                }
                ContentDelta::ThinkingDelta { thinking } => {
                    if !thinking.is_empty() {
                        out.push_back(ProviderEvent::Reasoning(thinking));
                    }
                }
                ContentDelta::SignatureDelta { signature } => {
                    out.push_back(ProviderEvent::ReasoningSignature(signature));
                }
                ContentDelta::InputJsonDelta { partial_json } => {
                    if self.tool_blocks.contains(&index) && !partial_json.is_empty() {
                        out.push_back(ProviderEvent::ToolCallInput {
                            key: index,
                            text: partial_json,
                        });
                    }
                }
                ContentDelta::CitationsDelta { citation } => {
                    if let Some(url) = citation.url.filter(|u| !u.is_empty()) {
                        out.push_back(ProviderEvent::Source {
                            url,
                            title: citation.title.or(citation.document_title),
                        });
                    }
                }
                ContentDelta::Other => {}
            },
            StreamEvent::ContentBlockStop { index } => {
                if self.tool_blocks.remove(&index) {
                    out.push_back(ProviderEvent::ToolCallEnd { key: index });
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                self.add_usage(usage);
            }
            StreamEvent::MessageStop => {
                self.finish(out);
                return Ok(true);
            }
            StreamEvent::Error { error } => return Err(upstream_error(&error)),
            StreamEvent::Other => {}
        }
        Ok(false)
    }

    fn eof(&mut self, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        if self.stop_reason.is_some() {
            self.finish(out);
            Ok(())
        } else {
            Err(ended_early())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::decode;
    use ProviderEvent::*;
    use rill_core::PromptMessage;

    fn run(events: &[&str]) -> (Vec<ProviderEvent>, Option<ProviderError>) {
        let events: Vec<(&str, &str)> = events.iter().map(|d| ("message", *d)).collect();
        decode(EventDecoder::new(), &events)
    }

    #[test]
    fn thinking_signature_tool_use_citations_ping_and_usage() {
        let (events, error) = run(&[
            r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me"}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" think."}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"opaque"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"안녕"}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"citations_delta","citation":{"type":"web_search_result_location","url":"https://ex.com","title":"Ex","cited_text":"x"}}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"citations_delta","citation":{"type":"char_location","cited_text":"y","document_title":"Doc"}}}"#,
            r#"{"type":"content_block_stop","index":2}"#,
            r#"{"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Se"}}"#,
            r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"oul\"}"}}"#,
            r#"{"type":"content_block_stop","index":3}"#,
            r#"{"type":"content_block_start","index":4,"content_block":{"type":"server_tool_use","id":"x","name":"web_search","input":{}}}"#,
            r#"{"type":"some_future_event","x":1}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            r#"{"type":"message_stop"}"#,
        ]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                Reasoning("Let me".into()),
                Reasoning(" think.".into()),
                ReasoningSignature("EqQB".into()),
                RedactedReasoning("opaque".into()),
                Text("안녕".into()),
                Source {
                    url: "https://ex.com".into(),
                    title: Some("Ex".into())
                },
                ToolCallStart {
                    key: 3,
                    id: "toolu_1".into(),
                    name: "weather".into()
                },
                ToolCallInput {
                    key: 3,
                    text: "{\"city\": \"Se".into()
                },
                ToolCallInput {
                    key: 3,
                    text: "oul\"}".into()
                },
                ToolCallEnd { key: 3 },
                Finish {
                    reason: Some("tool_use".into()),
                    usage: Some(Usage {
                        input_tokens: 25,
                        output_tokens: 15,
                        reasoning_tokens: None,
                    }),
                },
            ]
        );
    }

    #[test]
    fn error_event_and_early_end() {
        let (events, error) = run(&[
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ]);
        assert_eq!(events.len(), 1);
        let error = error.unwrap();
        assert_eq!(error.kind, rill_core::ProviderErrorKind::Upstream);
        assert!(error.message.contains("Overloaded"));
        let (_, error) = run(&[
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
        ]);
        assert_eq!(
            error.map(|e| e.kind),
            Some(rill_core::ProviderErrorKind::Protocol)
        );
    }

    #[test]
    fn body_lifts_system_alternates_turns_and_round_trips_tool_use() {
        let m = |role, content: &str| PromptMessage::text(role, content);
        let request = CompletionRequest {
            model: "claude".into(),
            system: Some("sys".into()),
            messages: vec![
                m(Role::Assistant, "cut-off answer"),
                m(Role::User, "a"),
                m(Role::User, "b"),
                m(Role::System, "extra"),
                PromptMessage {
                    role: Role::Assistant,
                    parts: vec![
                        Part::Reasoning {
                            text: "I should look it up.".into(),
                            signature: Some("sig".into()),
                            redacted: None,
                        },
                        Part::text("Looking."),
                        Part::ToolCall {
                            id: "toolu_1".into(),
                            name: "weather".into(),
                            input_text: "{\"city\":\"Seoul\"}".into(),
                            input: Some(json!({"city": "Seoul"})),
                            output: Some(json!("21C")),
                            error: None,
                        },
                    ],
                },
                PromptMessage {
                    role: Role::Assistant,
                    parts: vec![
                        Part::Reasoning {
                            text: "no tools here: not sent".into(),
                            signature: Some("sig2".into()),
                            redacted: None,
                        },
                        Part::text("It is 21C."),
                    ],
                },
                m(Role::User, "d"),
            ],
            stop: vec!["END".into()],
            ..CompletionRequest::default()
        };
        let body: Value = serde_json::from_slice(&request_body(&request).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "system": "sys\n\nextra",
                "messages": [
                    {"role": "user", "content": "a\n\nb"},
                    {"role": "assistant", "content": [
                        {"type": "thinking", "thinking": "I should look it up.", "signature": "sig"},
                        {"type": "text", "text": "Looking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Seoul"}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C"},
                    ]},
                    {"role": "assistant", "content": "It is 21C."},
                    {"role": "user", "content": "d"},
                ],
                "stream": true,
                "stop_sequences": ["END"],
            })
        );
    }
}
