//! OpenAI Chat Completions, as OpenAI and the servers that copy its API speak it (Ollama,
//! vLLM, llama.cpp, LM Studio, OpenRouter, LiteLLM, DeepSeek).
//!
//! Upstream side: [`request_body`] (the canonical prompt as `messages`, with `tool_calls` and
//! `tool` messages) and [`ChunkDecoder`] (chunks into canonical events). Servers name the same
//! things differently; the decoder understands each:
//!
//! | canonical | fields |
//! |---|---|
//! | text | `delta.content`; `delta.refusal` (a refusal is the answer) |
//! | reasoning | `delta.reasoning_details[]` (OpenRouter: `reasoning.text` with `signature`, `reasoning.summary`, `reasoning.encrypted`) when present, else `delta.reasoning_content` (DeepSeek, older vLLM), else `delta.reasoning` (vLLM >= 0.11, Ollama, OpenRouter) |
//! | tool calls | `delta.tool_calls[]` fragments by `index`: the first with `id` and `function.name`, later ones only `function.arguments`; a new `id` at a used index is a new call (Ollama numbers parallel calls 0, 0, ...) |
//! | end | `finish_reason` (`stop`, `length`, `tool_calls`, ...), then `[DONE]`; a last chunk with `choices: []` or `null` carries `usage` (`completion_tokens_details.reasoning_tokens`) |

use std::collections::{HashMap, VecDeque};

use rill_core::chat::{Part, Role, Usage};
use rill_core::{CompletionRequest, ProviderError, ProviderEvent, ToolChoice};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Decoder, encode_error, ended_early, malformed, tool_result_text, upstream_error};

/// The request body for `POST {base}/chat/completions` with `stream: true`. The request's
/// model, system prompt and sampling settings are used as given (the provider has filled in its
/// bot's defaults).
pub fn request_body(request: &CompletionRequest) -> Result<Vec<u8>, ProviderError> {
    let mut messages: Vec<Value> = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        match message.role {
            Role::System => messages.push(json!({"role": "system", "content": message.content()})),
            Role::User => messages.push(json!({"role": "user", "content": message.content()})),
            Role::Assistant => assistant_messages(&message.parts, &mut messages),
        }
    }
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "stream": true,
        // Asks for a last chunk with the token counts (OpenAI, vLLM, llama.cpp, OpenRouter...).
        "stream_options": {"include_usage": true},
    });
    let object = body.as_object_mut().ok_or_else(encode_error)?;
    if let Some(t) = request.temperature {
        object.insert("temperature".into(), json!(t));
    }
    if let Some(max) = request.max_tokens {
        object.insert("max_tokens".into(), json!(max));
    }
    if !request.stop.is_empty() {
        object.insert("stop".into(), json!(request.stop));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut function = json!({"name": t.name, "parameters": t.parameters});
                if let (Some(d), Some(f)) = (&t.description, function.as_object_mut()) {
                    f.insert("description".into(), json!(d));
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        object.insert("tools".into(), json!(tools));
    }
    if let Some(choice) = &request.tool_choice {
        object.insert("tool_choice".into(), tool_choice(choice));
    }
    serde_json::to_vec(&body).map_err(|_| encode_error())
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

/// An assistant turn in OpenAI's shape: its text and its tool calls, then one `tool` message
/// per result. Reasoning is not sent back (servers that produce it do not want it again), nor
/// are calls without a result (the API refuses a call that is not answered).
fn assistant_messages(parts: &[Part], out: &mut Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut results = Vec::new();
    for part in parts {
        match part {
            Part::Text { text: t } => text.push_str(t),
            Part::ToolCall {
                id,
                name,
                input_text,
                input,
                output,
                error,
            } => {
                let Some(result) = tool_result_text(output.as_ref(), error.as_deref()) else {
                    continue;
                };
                let arguments = match input {
                    Some(input) => input.to_string(),
                    None => input_text.clone(),
                };
                calls.push(json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }));
                results.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
            }
            Part::Reasoning { .. } | Part::Source { .. } => {}
        }
    }
    if calls.is_empty() {
        out.push(json!({"role": "assistant", "content": text}));
        return;
    }
    let content = if text.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    out.push(json!({"role": "assistant", "content": content, "tool_calls": calls}));
    out.extend(results);
}

/// One `data:` chunk. Unknown fields are ignored; every field is optional because servers
/// differ in what they send.
#[derive(Deserialize)]
struct Chunk {
    /// `[]` or `null` in the last chunk of `include_usage`.
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<ChoiceDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChoiceDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    /// A string on vLLM, Ollama and OpenRouter; other shapes are ignored.
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    reasoning_details: Option<Vec<ReasoningDetail>>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallFragment>>,
}

/// OpenRouter's structured reasoning.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum ReasoningDetail {
    #[serde(rename = "reasoning.text")]
    Text {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        signature: Option<String>,
    },
    #[serde(rename = "reasoning.summary")]
    Summary {
        #[serde(default)]
        summary: Option<String>,
    },
    #[serde(rename = "reasoning.encrypted")]
    Encrypted {
        #[serde(default)]
        data: Option<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ToolCallFragment {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionFragment>,
}

#[derive(Deserialize, Default)]
struct FunctionFragment {
    #[serde(default)]
    name: Option<String>,
    /// A string as OpenAI specifies; a few servers send an object (the whole arguments).
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// A tool call being assembled from fragments.
#[derive(Debug)]
struct Call {
    key: u32,
    id: String,
    name: String,
    /// Arguments that arrived before the name (sent once the call starts).
    pending: String,
    started: bool,
}

/// Decodes the chunks of one answer: events as they come, the finish reason and usage kept
/// for the `Finish` at `[DONE]`.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    finish_reason: Option<String>,
    usage: Option<Usage>,
    /// Calls by the server's `index`; a new `id` at an index replaces the call there.
    calls: HashMap<u32, Call>,
    next_key: u32,
    /// Keys of started calls not yet ended, in start order.
    open_keys: Vec<u32>,
}

impl ChunkDecoder {
    pub fn new() -> Self {
        ChunkDecoder::default()
    }

    fn finish(&mut self, out: &mut VecDeque<ProviderEvent>) {
        self.end_calls(out);
        out.push_back(ProviderEvent::Finish {
            reason: self.finish_reason.take(),
            usage: self.usage.take(),
        });
    }

    /// Starts calls still waiting for a name, and ends every open call.
    fn end_calls(&mut self, out: &mut VecDeque<ProviderEvent>) {
        let mut waiting: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, c)| !c.started)
            .map(|(i, _)| *i)
            .collect();
        waiting.sort_unstable();
        for index in waiting {
            if let Some(call) = self.calls.get_mut(&index) {
                start(call, &mut self.open_keys, out);
            }
        }
        self.calls.clear();
        for key in self.open_keys.drain(..) {
            out.push_back(ProviderEvent::ToolCallEnd { key });
        }
    }

    fn tool_fragment(&mut self, fragment: ToolCallFragment, out: &mut VecDeque<ProviderEvent>) {
        let function = fragment.function.unwrap_or_default();
        let new_call = match (&fragment.id, self.calls.get(&fragment.index)) {
            (Some(id), Some(call)) => !id.is_empty() && *id != call.id,
            (_, None) => true,
            (None, Some(_)) => false,
        };
        if new_call {
            if let Some(earlier) = self.calls.remove(&fragment.index)
                && earlier.started
            {
                self.open_keys.retain(|k| *k != earlier.key);
                out.push_back(ProviderEvent::ToolCallEnd { key: earlier.key });
            }
            let key = self.next_key;
            self.next_key = self.next_key.saturating_add(1);
            let id = fragment
                .id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{key}"));
            self.calls.insert(
                fragment.index,
                Call {
                    key,
                    id,
                    name: String::new(),
                    pending: String::new(),
                    started: false,
                },
            );
        }
        let Some(call) = self.calls.get_mut(&fragment.index) else {
            return;
        };
        if let Some(name) = function.name.filter(|n| !n.is_empty())
            && !call.started
        {
            call.name = name;
        }
        let arguments = match function.arguments {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        if call.started {
            if !arguments.is_empty() {
                out.push_back(ProviderEvent::ToolCallInput {
                    key: call.key,
                    text: arguments,
                });
            }
        } else {
            call.pending.push_str(&arguments);
            if !call.name.is_empty() {
                start(call, &mut self.open_keys, out);
            }
        }
    }

    fn reasoning(delta: &mut ChoiceDelta, out: &mut VecDeque<ProviderEvent>) {
        if let Some(details) = delta.reasoning_details.take().filter(|d| !d.is_empty()) {
            for detail in details {
                match detail {
                    ReasoningDetail::Text { text, signature } => {
                        if let Some(text) = text.filter(|t| !t.is_empty()) {
                            out.push_back(ProviderEvent::Reasoning(text));
                        }
                        if let Some(signature) = signature.filter(|s| !s.is_empty()) {
                            out.push_back(ProviderEvent::ReasoningSignature(signature));
                        }
                    }
                    ReasoningDetail::Summary { summary } => {
                        if let Some(text) = summary.filter(|t| !t.is_empty()) {
                            out.push_back(ProviderEvent::Reasoning(text));
                        }
                    }
                    ReasoningDetail::Encrypted { data } => {
                        if let Some(data) = data.filter(|d| !d.is_empty()) {
                            out.push_back(ProviderEvent::RedactedReasoning(data));
                        }
                    }
                    ReasoningDetail::Other => {}
                }
            }
            return;
        }
        let text = match (delta.reasoning_content.take(), delta.reasoning.take()) {
            (Some(text), _) if !text.is_empty() => Some(text),
            (_, Some(Value::String(text))) => Some(text),
            _ => None,
        };
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            out.push_back(ProviderEvent::Reasoning(text));
        }
    }
}

fn start(call: &mut Call, open_keys: &mut Vec<u32>, out: &mut VecDeque<ProviderEvent>) {
    call.started = true;
    open_keys.push(call.key);
    out.push_back(ProviderEvent::ToolCallStart {
        key: call.key,
        id: call.id.clone(),
        name: call.name.clone(),
    });
    if !call.pending.is_empty() {
        out.push_back(ProviderEvent::ToolCallInput {
            key: call.key,
            text: std::mem::take(&mut call.pending),
        });
    }
}

impl Decoder for ChunkDecoder {
    fn event(
        &mut self,
        name: &str,
        data: &str,
        out: &mut VecDeque<ProviderEvent>,
    ) -> Result<bool, ProviderError> {
        if data.trim_ascii() == "[DONE]" {
            self.finish(out);
            return Ok(true);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|_| malformed("chunk"))?;
        if let Some(error) = &chunk.error {
            return Err(upstream_error(error));
        }
        if name == "error" {
            return Err(upstream_error(&Value::Null));
        }
        // We never ask for `n` > 1: only the first choice is the answer.
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index != 0 {
                continue;
            }
            if let Some(mut delta) = choice.delta {
                Self::reasoning(&mut delta, out);
                for text in [delta.refusal.take(), delta.content.take()]
                    .into_iter()
                    .flatten()
                {
                    if !text.is_empty() {
                        out.push_back(ProviderEvent::Text(text));
                    }
                }
                for fragment in delta.tool_calls.take().unwrap_or_default() {
                    self.tool_fragment(fragment, out);
                }
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
                // The arguments are whole once the model says why it stopped.
                self.end_calls(out);
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(Usage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
                reasoning_tokens: usage
                    .completion_tokens_details
                    .and_then(|d| d.reasoning_tokens),
            });
        }
        Ok(false)
    }

    fn eof(&mut self, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        // Some servers end the body without `[DONE]`; a finish reason says the answer is whole.
        if self.finish_reason.is_some() {
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
    use rill_core::ToolSpec;

    fn run(events: &[&str]) -> (Vec<ProviderEvent>, Option<ProviderError>) {
        let events: Vec<(&str, &str)> = events.iter().map(|d| ("message", *d)).collect();
        decode(ChunkDecoder::new(), &events)
    }

    #[test]
    fn text_finish_reason_and_usage() {
        let (events, error) = run(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo 👋"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
            "[DONE]",
        ]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                Text("Hel".into()),
                Text("lo 👋".into()),
                Finish {
                    reason: Some("stop".into()),
                    usage: Some(Usage {
                        input_tokens: 9,
                        output_tokens: 2,
                        reasoning_tokens: None,
                    }),
                },
            ]
        );
    }

    #[test]
    fn every_naming_of_reasoning() {
        // DeepSeek / older vLLM, with the usage chunk's `choices: null`.
        let (events, _) = run(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"Think"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hi","reasoning_content":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":null,"usage":{"prompt_tokens":1,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":3}}}"#,
            "[DONE]",
        ]);
        assert_eq!(events[0], Reasoning("Think".into()));
        assert_eq!(events[1], Text("Hi".into()));
        assert!(matches!(
            &events[2],
            Finish {
                usage: Some(Usage {
                    reasoning_tokens: Some(3),
                    ..
                }),
                ..
            }
        ));
        // vLLM >= 0.11, Ollama: `reasoning`.
        let (events, _) = run(&[
            r#"{"choices":[{"index":0,"delta":{"reasoning":"Hmm"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Ok"},"finish_reason":"stop"}]}"#,
        ]);
        assert_eq!(events[..2], [Reasoning("Hmm".into()), Text("Ok".into())]);
        // OpenRouter: `reasoning_details` wins over the `reasoning` it repeats.
        let (events, _) = run(&[
            r#"{"choices":[{"index":0,"delta":{"reasoning":"A","reasoning_details":[{"type":"reasoning.text","text":"A","format":"anthropic-claude-v1","index":0}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_details":[{"type":"reasoning.text","signature":"sig","index":0}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_details":[{"type":"reasoning.summary","summary":"S"},{"type":"reasoning.encrypted","data":"enc"}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"refusal":"No."},"finish_reason":"stop"}]}"#,
        ]);
        assert_eq!(
            events[..5],
            [
                Reasoning("A".into()),
                ReasoningSignature("sig".into()),
                Reasoning("S".into()),
                RedactedReasoning("enc".into()),
                Text("No.".into()),
            ]
        );
    }

    #[test]
    fn parallel_tool_calls_by_index_and_by_reused_index() {
        // OpenAI: indexes 0 and 1, fragments after the first carry only arguments.
        let (events, error) = run(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Seoul\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"time","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                ToolCallStart {
                    key: 0,
                    id: "call_a".into(),
                    name: "weather".into()
                },
                ToolCallInput {
                    key: 0,
                    text: "{\"city\":".into()
                },
                ToolCallInput {
                    key: 0,
                    text: "\"Seoul\"}".into()
                },
                ToolCallStart {
                    key: 1,
                    id: "call_b".into(),
                    name: "time".into()
                },
                ToolCallInput {
                    key: 1,
                    text: "{}".into()
                },
                ToolCallEnd { key: 0 },
                ToolCallEnd { key: 1 },
                Finish {
                    reason: Some("tool_calls".into()),
                    usage: None
                },
            ]
        );
        // Ollama: every call at index 0, each whole in one chunk, with its own id.
        let (events, _) = run(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"call_1","index":0,"type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"call_2","index":0,"type":"function","function":{"name":"g","arguments":"{\"y\":2}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ]);
        assert_eq!(
            events,
            vec![
                ToolCallStart {
                    key: 0,
                    id: "call_1".into(),
                    name: "f".into()
                },
                ToolCallInput {
                    key: 0,
                    text: "{\"x\":1}".into()
                },
                ToolCallEnd { key: 0 },
                ToolCallStart {
                    key: 1,
                    id: "call_2".into(),
                    name: "g".into()
                },
                ToolCallInput {
                    key: 1,
                    text: "{\"y\":2}".into()
                },
                ToolCallEnd { key: 1 },
                Finish {
                    reason: Some("tool_calls".into()),
                    usage: None
                },
            ]
        );
    }

    #[test]
    fn end_without_done_is_whole_only_with_a_finish_reason() {
        let (events, error) =
            run(&[r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"length"}]}"#]);
        assert_eq!(error, None);
        assert!(matches!(&events[1], Finish { reason: Some(r), usage: None } if r == "length"));
        let (events, error) = run(&[r#"{"choices":[{"delta":{"content":"a"}}]}"#]);
        assert_eq!(events, vec![Text("a".into())]);
        assert_eq!(
            error.map(|e| e.kind),
            Some(rill_core::ProviderErrorKind::Protocol)
        );
    }

    #[test]
    fn error_object_and_malformed_chunk() {
        let (events, error) = run(&[
            r#"{"choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        ]);
        assert_eq!(events.len(), 1);
        let error = error.unwrap();
        assert_eq!(error.kind, rill_core::ProviderErrorKind::Upstream);
        assert!(error.message.contains("overloaded"));
        let (_, error) = run(&[r#"{"choices":[{"delta":{"content":"#]);
        assert_eq!(
            error.map(|e| e.kind),
            Some(rill_core::ProviderErrorKind::Protocol)
        );
    }

    #[test]
    fn body_round_trips_tool_calls_and_results() {
        let request = CompletionRequest {
            model: "m".into(),
            system: Some("be brief".into()),
            messages: vec![
                PromptMessage::text(Role::User, "weather?"),
                PromptMessage {
                    role: Role::Assistant,
                    parts: vec![
                        Part::Reasoning {
                            text: "think".into(),
                            signature: None,
                            redacted: None,
                        },
                        Part::ToolCall {
                            id: "call_a".into(),
                            name: "weather".into(),
                            input_text: "{\"city\":\"Seoul\"}".into(),
                            input: Some(json!({"city": "Seoul"})),
                            output: Some(json!({"temp": 21})),
                            error: None,
                        },
                        Part::ToolCall {
                            id: "call_b".into(),
                            name: "unanswered".into(),
                            input_text: "{}".into(),
                            input: Some(json!({})),
                            output: None,
                            error: None,
                        },
                        Part::text("It is 21."),
                    ],
                },
                PromptMessage::text(Role::User, "thanks"),
            ],
            temperature: Some(0.5),
            max_tokens: Some(10),
            stop: vec!["END".into()],
            tools: vec![ToolSpec {
                name: "weather".into(),
                description: Some("Weather of a city".into()),
                parameters: json!({"type": "object"}),
            }],
            tool_choice: Some(ToolChoice::Required),
            ..CompletionRequest::default()
        };
        let body: Value = serde_json::from_slice(&request_body(&request).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": "It is 21.", "tool_calls": [
                        {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Seoul\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp\":21}"},
                    {"role": "user", "content": "thanks"},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.5,
                "max_tokens": 10,
                "stop": ["END"],
                "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather of a city", "parameters": {"type": "object"}}}],
                "tool_choice": "required",
            })
        );
    }
}
