//! OpenAI's request bodies, as a client of rill's OpenAI face sends them, into the canonical
//! model: `POST /v1/chat/completions` ([`ChatCompletionRequest::parse`]) and
//! `POST /v1/responses` ([`ResponsesRequest::parse`]).
//!
//! Parsed by hand from a `serde_json::Value` rather than with derived types, so that every
//! refusal names the exact field (`messages[2].content[0].type`), as OpenAI's own 400s do in
//! `param`: a client learns what to change. Fields rill cannot honour are refused, never
//! silently dropped when they change the answer (`n` > 1, `logprobs`, structured outputs,
//! images); fields that only tune it (`top_p`, `seed`, `user`, `metadata`, ...) are accepted and
//! ignored (docs/openai.md lists both).

use rill_core::chat::{Part, Role};
use rill_core::{PromptMessage, ToolChoice, ToolSpec};
use serde_json::{Map, Value};

/// A refused request: OpenAI's `invalid_request_error`, naming the field in `param`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRequest {
    /// The field, as OpenAI names it (`messages[0].role`); `None` for the body itself.
    pub param: Option<String>,
    pub message: String,
    /// OpenAI's `code` when it has one for the case (`missing_required_parameter`...).
    pub code: Option<&'static str>,
}

impl InvalidRequest {
    fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidRequest {
            param: Some(param.into()),
            message: message.into(),
            code: None,
        }
    }

    fn missing(param: &str) -> Self {
        InvalidRequest {
            param: Some(param.to_owned()),
            message: format!("Missing required parameter: '{param}'."),
            code: Some("missing_required_parameter"),
        }
    }

    fn wrong_type(param: &str, expected: &str, got: &Value) -> Self {
        InvalidRequest {
            param: Some(param.to_owned()),
            message: format!(
                "Invalid type for '{param}': expected {expected}, but got {}.",
                type_name(got)
            ),
            code: Some("invalid_type"),
        }
    }

    fn unsupported(param: &str, why: &str) -> Self {
        InvalidRequest {
            param: Some(param.to_owned()),
            message: format!("'{param}' is not supported by rill: {why}"),
            code: Some("unsupported_parameter"),
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sampling and tool settings shared by both APIs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub tools: Vec<ToolSpec>,
    pub tool_choice: Option<ToolChoice>,
}

/// A `POST /v1/chat/completions` body.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatCompletionRequest {
    /// The bot id.
    pub model: String,
    /// The leading `system`/`developer` messages, joined: they replace the bot's prompt.
    pub system: Option<String>,
    /// The conversation (later system messages stay in place), ending with the new turn.
    pub messages: Vec<PromptMessage>,
    pub stream: bool,
    pub include_usage: bool,
    pub sampling: Sampling,
}

/// A `POST /v1/responses` body.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponsesRequest {
    pub model: String,
    /// The new user message's text (the user items of `input`, joined); may be empty when
    /// `tool_results` carries the turn.
    pub content: String,
    /// `instructions`, with any `system`/`developer` items of `input`.
    pub instructions: Option<String>,
    /// `function_call_output` items: results of the previous response's calls.
    pub tool_results: Vec<(String, String)>,
    pub previous_response_id: Option<String>,
    pub stream: bool,
    pub background: bool,
    pub sampling: Sampling,
}

/// Chat Completions fields accepted and ignored (they tune sampling or bookkeeping rill does
/// not do).
pub const IGNORED_CHAT: &[&str] = &[
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "metadata",
    "store",
    "parallel_tool_calls",
    "reasoning_effort",
    "service_tier",
    "logit_bias",
    "prompt_cache_key",
    "safety_identifier",
    "verbosity",
    "top_logprobs",
];

/// Responses fields accepted and ignored.
pub const IGNORED_RESPONSES: &[&str] = &[
    "top_p",
    "user",
    "metadata",
    "parallel_tool_calls",
    "reasoning",
    "service_tier",
    "truncation",
    "include",
    "prompt_cache_key",
    "safety_identifier",
    "top_logprobs",
    "max_tool_calls",
];

fn object(body: &Value) -> Result<&Map<String, Value>, InvalidRequest> {
    body.as_object().ok_or_else(|| InvalidRequest {
        param: None,
        message: format!(
            "The request body must be a JSON object, not {}.",
            type_name(body)
        ),
        code: None,
    })
}

fn required_string(o: &Map<String, Value>, name: &str) -> Result<String, InvalidRequest> {
    match o.get(name) {
        None | Some(Value::Null) => Err(InvalidRequest::missing(name)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(InvalidRequest::new(name, format!("'{name}' is empty."))),
        Some(other) => Err(InvalidRequest::wrong_type(name, "a string", other)),
    }
}

fn optional_bool(o: &Map<String, Value>, name: &str) -> Result<Option<bool>, InvalidRequest> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(InvalidRequest::wrong_type(name, "a boolean", other)),
    }
}

fn optional_string(o: &Map<String, Value>, name: &str) -> Result<Option<String>, InvalidRequest> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(InvalidRequest::wrong_type(name, "a string", other)),
    }
}

/// A positive token count that fits a `u32`.
fn optional_count(o: &Map<String, Value>, name: &str) -> Result<Option<u32>, InvalidRequest> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(InvalidRequest::new(
                name,
                format!("'{name}' must be an integer from 1 to {}.", u32::MAX),
            )),
        },
        Some(other) => Err(InvalidRequest::wrong_type(name, "an integer", other)),
    }
}

fn temperature(o: &Map<String, Value>) -> Result<Option<f32>, InvalidRequest> {
    match o.get("temperature") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            #[allow(clippy::cast_possible_truncation)] // In 0..=2: exact enough as f32.
            Some(t) if (0.0..=2.0).contains(&t) => Ok(Some(t as f32)),
            _ => Err(InvalidRequest::new(
                "temperature",
                "'temperature' must be a number from 0 to 2.",
            )),
        },
        Some(other) => Err(InvalidRequest::wrong_type("temperature", "a number", other)),
    }
}

fn stop(o: &Map<String, Value>) -> Result<Vec<String>, InvalidRequest> {
    match o.get("stop") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => {
            if items.len() > 4 {
                return Err(InvalidRequest::new(
                    "stop",
                    "'stop' has at most 4 sequences.",
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, s)| match s {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(InvalidRequest::wrong_type(
                        &format!("stop[{i}]"),
                        "a string",
                        other,
                    )),
                })
                .collect()
        }
        Some(other) => Err(InvalidRequest::wrong_type(
            "stop",
            "a string or an array of strings",
            other,
        )),
    }
}

/// A tool: `{"type":"function","function":{...}}` (Chat Completions, `nested`) or
/// `{"type":"function","name":...}` (Responses).
fn tool(value: &Value, param: &str, nested: bool) -> Result<ToolSpec, InvalidRequest> {
    let o = value
        .as_object()
        .ok_or_else(|| InvalidRequest::wrong_type(param, "an object", value))?;
    match o.get("type") {
        Some(Value::String(t)) if t == "function" => {}
        Some(Value::String(t)) => {
            return Err(InvalidRequest::unsupported(
                &format!("{param}.type"),
                &format!("only function tools are (not {t:?}); rill runs no tools itself"),
            ));
        }
        _ => return Err(InvalidRequest::missing(&format!("{param}.type"))),
    }
    let (f, prefix) = if nested {
        let f = o
            .get("function")
            .ok_or_else(|| InvalidRequest::missing(&format!("{param}.function")))?;
        let f = f.as_object().ok_or_else(|| {
            InvalidRequest::wrong_type(&format!("{param}.function"), "an object", f)
        })?;
        (f, format!("{param}.function"))
    } else {
        (o, param.to_owned())
    };
    let name = required_string(f, "name").map_err(|e| prefixed(e, &prefix))?;
    let description = optional_string(f, "description").map_err(|e| prefixed(e, &prefix))?;
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(other) => {
            return Err(InvalidRequest::wrong_type(
                &format!("{prefix}.parameters"),
                "an object",
                other,
            ));
        }
    };
    Ok(ToolSpec {
        name,
        description,
        parameters,
    })
}

fn prefixed(mut error: InvalidRequest, prefix: &str) -> InvalidRequest {
    if let Some(param) = &error.param {
        let full = format!("{prefix}.{param}");
        error.message = error
            .message
            .replace(&format!("'{param}'"), &format!("'{full}'"));
        error.param = Some(full);
    }
    error
}

fn tools(o: &Map<String, Value>, nested: bool) -> Result<Vec<ToolSpec>, InvalidRequest> {
    match o.get("tools") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, &format!("tools[{i}]"), nested))
            .collect(),
        Some(other) => Err(InvalidRequest::wrong_type("tools", "an array", other)),
    }
}

fn tool_choice(o: &Map<String, Value>, nested: bool) -> Result<Option<ToolChoice>, InvalidRequest> {
    let invalid = || {
        InvalidRequest::new(
            "tool_choice",
            "'tool_choice' must be \"none\", \"auto\", \"required\" or a function to call.",
        )
    };
    match o.get("tool_choice") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok(Some(ToolChoice::None)),
            "auto" => Ok(Some(ToolChoice::Auto)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(invalid()),
        },
        Some(Value::Object(c)) => {
            if c.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid());
            }
            let name = if nested {
                c.get("function").and_then(|f| f.get("name"))
            } else {
                c.get("name")
            };
            match name.and_then(Value::as_str) {
                Some(name) if !name.is_empty() => Ok(Some(ToolChoice::Tool(name.to_owned()))),
                _ => Err(invalid()),
            }
        }
        Some(_) => Err(invalid()),
    }
}

/// The text of a `content` (a string, or an array of text parts whose types are `kinds`).
fn content_text(value: &Value, param: &str, kinds: &[&str]) -> Result<String, InvalidRequest> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                let here = format!("{param}[{i}]");
                let o = part
                    .as_object()
                    .ok_or_else(|| InvalidRequest::wrong_type(&here, "an object", part))?;
                match o.get("type").and_then(Value::as_str) {
                    Some(t) if kinds.contains(&t) => {
                        text.push_str(&required_string(o, "text").or_else(|e| {
                            // An empty text part is allowed.
                            match o.get("text") {
                                Some(Value::String(s)) => Ok(s.clone()),
                                _ => Err(prefixed(e, &here)),
                            }
                        })?);
                    }
                    Some(t) => {
                        return Err(InvalidRequest::unsupported(
                            &format!("{here}.type"),
                            &format!("only text content is (not {t:?})"),
                        ));
                    }
                    None => return Err(InvalidRequest::missing(&format!("{here}.type"))),
                }
            }
            Ok(text)
        }
        other => Err(InvalidRequest::wrong_type(
            param,
            "a string or an array of content parts",
            other,
        )),
    }
}

fn refuse_present(o: &Map<String, Value>, name: &str, why: &str) -> Result<(), InvalidRequest> {
    match o.get(name) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        Some(_) => Err(InvalidRequest::unsupported(name, why)),
    }
}

impl ChatCompletionRequest {
    /// Parses a body; refuses what rill cannot honour, naming the field.
    pub fn parse(body: &Value) -> Result<Self, InvalidRequest> {
        let o = object(body)?;
        let model = required_string(o, "model")?;
        match o.get("n") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
            Some(_) => {
                return Err(InvalidRequest::unsupported(
                    "n",
                    "one choice per request (n = 1)",
                ));
            }
        }
        refuse_present(
            o,
            "logprobs",
            "no provider behind rill reports log probabilities",
        )?;
        refuse_present(o, "audio", "only text answers are")?;
        refuse_present(o, "prediction", "predicted outputs are not")?;
        refuse_present(
            o,
            "functions",
            "use 'tools' (the deprecated 'functions' is not)",
        )?;
        if let Some(modalities) = o.get("modalities").and_then(Value::as_array)
            && modalities.iter().any(|m| m.as_str() != Some("text"))
        {
            return Err(InvalidRequest::unsupported(
                "modalities",
                "only text answers are",
            ));
        }
        if let Some(format) = o.get("response_format").filter(|f| !f.is_null())
            && format.get("type").and_then(Value::as_str) != Some("text")
        {
            return Err(InvalidRequest::unsupported(
                "response_format",
                "structured outputs are not (only {\"type\":\"text\"})",
            ));
        }
        let stream = optional_bool(o, "stream")?.unwrap_or(false);
        let include_usage = match o.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(so)) => match so.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(InvalidRequest::wrong_type(
                        "stream_options.include_usage",
                        "a boolean",
                        other,
                    ));
                }
            },
            Some(other) => {
                return Err(InvalidRequest::wrong_type(
                    "stream_options",
                    "an object",
                    other,
                ));
            }
        };
        let max_tokens = match optional_count(o, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => optional_count(o, "max_tokens")?,
        };
        let sampling = Sampling {
            temperature: temperature(o)?,
            max_tokens,
            stop: stop(o)?,
            tools: tools(o, true)?,
            tool_choice: tool_choice(o, true)?,
        };
        let (system, messages) = chat_messages(o)?;
        Ok(ChatCompletionRequest {
            model,
            system,
            messages,
            stream,
            include_usage,
            sampling,
        })
    }
}

fn chat_messages(
    o: &Map<String, Value>,
) -> Result<(Option<String>, Vec<PromptMessage>), InvalidRequest> {
    let items = match o.get("messages") {
        None | Some(Value::Null) => return Err(InvalidRequest::missing("messages")),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(InvalidRequest::wrong_type("messages", "an array", other)),
    };
    if items.is_empty() {
        return Err(InvalidRequest::new(
            "messages",
            "'messages' must contain at least one message.",
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<PromptMessage> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let param = format!("messages[{i}]");
        let m = item
            .as_object()
            .ok_or_else(|| InvalidRequest::wrong_type(&param, "an object", item))?;
        let role = match m.get("role") {
            Some(Value::String(r)) => r.as_str(),
            None | Some(Value::Null) => {
                return Err(InvalidRequest::missing(&format!("{param}.role")));
            }
            Some(other) => {
                return Err(InvalidRequest::wrong_type(
                    &format!("{param}.role"),
                    "a string",
                    other,
                ));
            }
        };
        let content_param = format!("{param}.content");
        let content = match m.get("content") {
            None | Some(Value::Null) => None,
            Some(c) => Some(content_text(c, &content_param, &["text", "refusal"])?),
        };
        match role {
            "system" | "developer" => {
                let text = content.ok_or_else(|| InvalidRequest::missing(&content_param))?;
                if messages.is_empty() {
                    system.push(text);
                } else {
                    messages.push(PromptMessage::text(Role::System, text));
                }
            }
            "user" => {
                let text = content.ok_or_else(|| InvalidRequest::missing(&content_param))?;
                messages.push(PromptMessage::text(Role::User, text));
            }
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
                    let calls = calls.as_array().ok_or_else(|| {
                        InvalidRequest::wrong_type(
                            &format!("{param}.tool_calls"),
                            "an array",
                            calls,
                        )
                    })?;
                    for (j, call) in calls.iter().enumerate() {
                        parts.push(tool_call(call, &format!("{param}.tool_calls[{j}]"))?);
                    }
                }
                let text = content.unwrap_or_default();
                if !text.is_empty() {
                    parts.insert(0, Part::text(text));
                }
                if parts.is_empty() {
                    return Err(InvalidRequest::missing(&content_param));
                }
                messages.push(PromptMessage {
                    role: Role::Assistant,
                    parts,
                });
            }
            "tool" => {
                let call_id =
                    required_string(m, "tool_call_id").map_err(|e| prefixed(e, &param))?;
                let text = content.ok_or_else(|| InvalidRequest::missing(&content_param))?;
                attach_result(&mut messages, &call_id, text).ok_or_else(|| {
                    InvalidRequest::new(
                        format!("{param}.tool_call_id"),
                        format!(
                            "'{param}.tool_call_id' names no tool call of an earlier assistant message."
                        ),
                    )
                })?;
            }
            "function" => {
                return Err(InvalidRequest::unsupported(
                    &format!("{param}.role"),
                    "use 'tool' messages (the deprecated 'function' role is not)",
                ));
            }
            other => {
                return Err(InvalidRequest::new(
                    format!("{param}.role"),
                    format!(
                        "Invalid value for '{param}.role': {other:?} is not one of system, developer, user, assistant, tool."
                    ),
                ));
            }
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, messages))
}

fn tool_call(call: &Value, param: &str) -> Result<Part, InvalidRequest> {
    let c = call
        .as_object()
        .ok_or_else(|| InvalidRequest::wrong_type(param, "an object", call))?;
    let id = required_string(c, "id").map_err(|e| prefixed(e, param))?;
    let f = c
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| InvalidRequest::missing(&format!("{param}.function")))?;
    let fparam = format!("{param}.function");
    let name = required_string(f, "name").map_err(|e| prefixed(e, &fparam))?;
    let input_text = optional_string(f, "arguments")
        .map_err(|e| prefixed(e, &fparam))?
        .unwrap_or_default();
    Ok(Part::ToolCall {
        id,
        name,
        input: serde_json::from_str(&input_text).ok(),
        input_text,
        output: None,
        error: None,
    })
}

/// Records `text` as the output of the call `call_id` in the latest assistant message that has
/// it. `None` when no message has it.
fn attach_result(messages: &mut [PromptMessage], call_id: &str, text: String) -> Option<()> {
    for message in messages.iter_mut().rev() {
        if message.role != Role::Assistant {
            continue;
        }
        for part in &mut message.parts {
            if let Part::ToolCall { id, output, .. } = part
                && id == call_id
            {
                *output = Some(Value::String(text));
                return Some(());
            }
        }
    }
    None
}

impl ResponsesRequest {
    /// Parses a body; refuses what rill cannot honour, naming the field.
    pub fn parse(body: &Value) -> Result<Self, InvalidRequest> {
        let o = object(body)?;
        let model = required_string(o, "model")?;
        let stream = optional_bool(o, "stream")?.unwrap_or(false);
        let background = optional_bool(o, "background")?.unwrap_or(false);
        if optional_bool(o, "store")? == Some(false) {
            return Err(InvalidRequest::unsupported(
                "store",
                "every response is stored (it runs as a rill chat); leave 'store' out or true",
            ));
        }
        refuse_present(o, "conversation", "continue with 'previous_response_id'")?;
        refuse_present(o, "prompt", "prompt templates are not")?;
        if let Some(text) = o.get("text").filter(|t| !t.is_null()) {
            let format = text.get("format").and_then(|f| f.get("type"));
            if format.is_some_and(|t| t.as_str() != Some("text")) {
                return Err(InvalidRequest::unsupported(
                    "text.format",
                    "structured outputs are not (only {\"type\":\"text\"})",
                ));
            }
        }
        let previous_response_id = optional_string(o, "previous_response_id")?;
        let mut instructions = optional_string(o, "instructions")?.filter(|s| !s.is_empty());
        let mut content: Vec<String> = Vec::new();
        let mut tool_results = Vec::new();
        match o.get("input") {
            None | Some(Value::Null) => return Err(InvalidRequest::missing("input")),
            Some(Value::String(s)) => content.push(s.clone()),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let param = format!("input[{i}]");
                    let it = item
                        .as_object()
                        .ok_or_else(|| InvalidRequest::wrong_type(&param, "an object", item))?;
                    let kind = it.get("type").and_then(Value::as_str).unwrap_or("message");
                    match kind {
                        "message" => {
                            let role = it
                                .get("role")
                                .and_then(Value::as_str)
                                .ok_or_else(|| InvalidRequest::missing(&format!("{param}.role")))?;
                            let c = it.get("content").ok_or_else(|| {
                                InvalidRequest::missing(&format!("{param}.content"))
                            })?;
                            let text = content_text(
                                c,
                                &format!("{param}.content"),
                                &["input_text", "output_text", "text"],
                            )?;
                            match role {
                                "user" => content.push(text),
                                "system" | "developer" => {
                                    instructions = Some(match instructions.take() {
                                        Some(before) => format!("{before}\n\n{text}"),
                                        None => text,
                                    });
                                }
                                "assistant" => {
                                    return Err(InvalidRequest::unsupported(
                                        &format!("{param}.role"),
                                        "earlier answers come from the stored conversation: \
                                         continue it with 'previous_response_id'",
                                    ));
                                }
                                other => {
                                    return Err(InvalidRequest::new(
                                        format!("{param}.role"),
                                        format!("Invalid value for '{param}.role': {other:?}."),
                                    ));
                                }
                            }
                        }
                        "function_call_output" => {
                            let call_id =
                                required_string(it, "call_id").map_err(|e| prefixed(e, &param))?;
                            let output = match it.get("output") {
                                Some(Value::String(s)) => s.clone(),
                                Some(c @ Value::Array(_)) => {
                                    content_text(c, &format!("{param}.output"), &["input_text"])?
                                }
                                None | Some(Value::Null) => {
                                    return Err(InvalidRequest::missing(&format!(
                                        "{param}.output"
                                    )));
                                }
                                Some(other) => {
                                    return Err(InvalidRequest::wrong_type(
                                        &format!("{param}.output"),
                                        "a string",
                                        other,
                                    ));
                                }
                            };
                            tool_results.push((call_id, output));
                        }
                        other => {
                            return Err(InvalidRequest::unsupported(
                                &format!("{param}.type"),
                                &format!(
                                    "input items are messages and function_call_output (not {other:?}); \
                                     earlier items come from 'previous_response_id'"
                                ),
                            ));
                        }
                    }
                }
            }
            Some(other) => {
                return Err(InvalidRequest::wrong_type(
                    "input",
                    "a string or an array of input items",
                    other,
                ));
            }
        }
        let content = content.join("\n\n");
        if content.trim().is_empty() && tool_results.is_empty() {
            return Err(InvalidRequest::new(
                "input",
                "'input' has no user text and no function_call_output: there is nothing to answer.",
            ));
        }
        if !tool_results.is_empty() && previous_response_id.is_none() {
            return Err(InvalidRequest::new(
                "previous_response_id",
                "function_call_output items answer the calls of a previous response: \
                 'previous_response_id' must name it.",
            ));
        }
        let sampling = Sampling {
            temperature: temperature(o)?,
            max_tokens: optional_count(o, "max_output_tokens")?,
            stop: Vec::new(),
            tools: tools(o, false)?,
            tool_choice: tool_choice(o, false)?,
        };
        Ok(ResponsesRequest {
            model,
            content,
            instructions,
            tool_results,
            previous_response_id,
            stream,
            background,
            sampling,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(body: Value) -> InvalidRequest {
        ChatCompletionRequest::parse(&body).expect_err("refused")
    }

    #[test]
    fn chat_request_into_the_canonical_prompt() {
        let body = json!({
            "model": "demo",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "in Paris?"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "system", "content": "Answer in French."}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_completion_tokens": 50,
            "temperature": 0.5,
            "stop": "END",
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "top_p": 0.9,
            "seed": 1
        });
        let request = ChatCompletionRequest::parse(&body).expect("valid");
        assert_eq!(request.model, "demo");
        assert_eq!(request.system.as_deref(), Some("Be brief."));
        assert!(request.stream && request.include_usage);
        assert_eq!(request.sampling.max_tokens, Some(50));
        assert_eq!(request.sampling.temperature, Some(0.5));
        assert_eq!(request.sampling.stop, vec!["END".to_owned()]);
        assert_eq!(request.sampling.tools[0].name, "get_weather");
        assert_eq!(
            request.sampling.tool_choice,
            Some(ToolChoice::Tool("get_weather".into()))
        );
        assert_eq!(
            request.messages,
            vec![
                PromptMessage::text(Role::User, "weather in Paris?"),
                PromptMessage {
                    role: Role::Assistant,
                    parts: vec![Part::ToolCall {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        input_text: "{\"city\":\"Paris\"}".into(),
                        input: Some(json!({"city": "Paris"})),
                        output: Some(json!("sunny")),
                        error: None,
                    }],
                },
                PromptMessage::text(Role::System, "Answer in French."),
            ]
        );
    }

    #[test]
    fn chat_refusals_name_the_field() {
        let cases = [
            (
                json!({"messages": []}),
                "model",
                Some("missing_required_parameter"),
            ),
            (
                json!({"model": 3, "messages": []}),
                "model",
                Some("invalid_type"),
            ),
            (
                json!({"model": "demo"}),
                "messages",
                Some("missing_required_parameter"),
            ),
            (
                json!({"model": "demo", "messages": "hi"}),
                "messages",
                Some("invalid_type"),
            ),
            (json!({"model": "demo", "messages": []}), "messages", None),
            (
                json!({"model": "demo", "messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
                Some("invalid_type"),
            ),
            (
                json!({"model": "demo", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
                "messages[0].content[0].type",
                Some("unsupported_parameter"),
            ),
            (
                json!({"model": "demo", "messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
                None,
            ),
            (
                json!({"model": "demo", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
                "messages[0].tool_call_id",
                None,
            ),
            (
                json!({"model": "demo", "messages": [{"role": "user", "content": "x"}], "n": 2}),
                "n",
                Some("unsupported_parameter"),
            ),
            (
                json!({"model": "demo", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
                "stream",
                Some("invalid_type"),
            ),
            (
                json!({"model": "demo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
                "max_tokens",
                None,
            ),
            (
                json!({"model": "demo", "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
                "temperature",
                None,
            ),
            (
                json!({"model": "demo", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]}),
                "tools[0].type",
                Some("unsupported_parameter"),
            ),
            (
                json!({"model": "demo", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}),
                "response_format",
                Some("unsupported_parameter"),
            ),
        ];
        for (body, param, code) in cases {
            let error = refused(body.clone());
            assert_eq!(error.param.as_deref(), Some(param), "{body}");
            assert_eq!(error.code, code, "{body}");
            assert!(error.message.contains(param), "{body}: {}", error.message);
        }
        assert_eq!(refused(json!([1])).param, None);
    }

    #[test]
    fn responses_request_into_a_question() {
        let body = json!({
            "model": "demo",
            "input": [
                {"role": "developer", "content": "Be brief."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}
            ],
            "instructions": "You are rill.",
            "background": true,
            "stream": true,
            "max_output_tokens": 20,
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "get_weather"}
        });
        let request = ResponsesRequest::parse(&body).expect("valid");
        assert_eq!(request.content, "Hello");
        assert_eq!(
            request.instructions.as_deref(),
            Some("You are rill.\n\nBe brief.")
        );
        assert!(request.background && request.stream);
        assert_eq!(request.sampling.max_tokens, Some(20));
        assert_eq!(request.sampling.tools[0].name, "get_weather");
        let simple = ResponsesRequest::parse(&json!({"model": "demo", "input": "Hi"})).expect("ok");
        assert_eq!(simple.content, "Hi");
        assert!(!simple.background && !simple.stream);
    }

    #[test]
    fn responses_refusals_name_the_field() {
        let cases = [
            (json!({"input": "x"}), "model"),
            (json!({"model": "demo"}), "input"),
            (json!({"model": "demo", "input": 4}), "input"),
            (
                json!({"model": "demo", "input": "x", "background": "yes"}),
                "background",
            ),
            (
                json!({"model": "demo", "input": "x", "store": false}),
                "store",
            ),
            (
                json!({"model": "demo", "input": [{"role": "assistant", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"model": "demo", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}),
                "previous_response_id",
            ),
            (
                json!({"model": "demo", "input": [{"type": "input_image"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "demo", "input": "x", "tools": [{"type": "web_search_preview"}]}),
                "tools[0].type",
            ),
            (json!({"model": "demo", "input": "   "}), "input"),
        ];
        for (body, param) in cases {
            let error = ResponsesRequest::parse(&body).expect_err("refused");
            assert_eq!(error.param.as_deref(), Some(param), "{body}");
        }
    }
}
