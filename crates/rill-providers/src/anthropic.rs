//! Anthropic Messages (`POST {base}/v1/messages`, `stream: true`): text deltas of content
//! blocks, the stop reason and usage from `message_start`/`message_delta`.

use std::collections::VecDeque;

use rill_core::chat::{Role, Usage};
use rill_core::{
    CompletionRequest, CompletionStream, Provider, ProviderError, ProviderErrorKind, ProviderEvent,
};
use serde::{Deserialize, Serialize};

use crate::BotDefaults;
use crate::http::{ApiKey, Decoder, Upstream, error_object_message, read_stream, scrub};
use crate::settings::DEFAULT_ANTHROPIC_MAX_TOKENS;

/// The base URL when a bot sets none (the path `/v1/messages` is appended).
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The API version we speak, sent as `anthropic-version`.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A bot on the Anthropic Messages API.
#[derive(Debug)]
pub struct AnthropicProvider {
    upstream: Upstream,
    defaults: BotDefaults,
}

impl AnthropicProvider {
    pub(crate) fn new(upstream: Upstream, defaults: BotDefaults) -> Self {
        AnthropicProvider { upstream, defaults }
    }
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Message>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

#[derive(Serialize)]
struct Message {
    role: &'static str,
    content: String,
}

pub(crate) fn request_body(
    request: &CompletionRequest,
    defaults: &BotDefaults,
) -> Result<Vec<u8>, ProviderError> {
    // The API takes the system prompt apart from the turns: system-role messages of the
    // history join it.
    let mut system: Vec<&str> = request
        .system
        .as_deref()
        .or(defaults.system.as_deref())
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect();
    let mut messages: Vec<Message> = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let role = match message.role {
            Role::System => {
                system.push(&message.content);
                continue;
            }
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        // The conversation must start with the user (a history cut to a budget may start with
        // an answer), and turns alternate: consecutive turns of one role are joined.
        if messages.is_empty() && role == "assistant" {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => {
                last.content.push_str("\n\n");
                last.content.push_str(&message.content);
            }
            _ => messages.push(Message {
                role,
                content: message.content.clone(),
            }),
        }
    }
    let body = MessagesRequest {
        model: defaults.model(&request.model),
        max_tokens: request
            .max_tokens
            .or(defaults.max_tokens)
            .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        stream: true,
        temperature: request.temperature.or(defaults.temperature),
    };
    serde_json::to_vec(&body).map_err(|_| {
        ProviderError::new(
            ProviderErrorKind::Config,
            "the request could not be encoded",
        )
    })
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let body = request_body(&request, &self.defaults)?;
        let (response, started) = self.upstream.open(body).await?;
        Ok(read_stream(
            &self.upstream,
            response,
            started,
            EventDecoder::new(self.upstream.key.clone()),
        ))
    }
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
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        delta: ContentDelta,
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
        error: serde_json::Value,
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
struct ContentBlock {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentDelta {
    TextDelta {
        text: String,
    },
    /// Tool input, thinking, citations: not part of the text answer.
    #[serde(other)]
    Other,
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
pub(crate) struct EventDecoder {
    stop_reason: Option<String>,
    usage: Option<Usage>,
    key: Option<ApiKey>,
}

impl EventDecoder {
    pub(crate) fn new(key: Option<ApiKey>) -> Self {
        EventDecoder {
            stop_reason: None,
            usage: None,
            key,
        }
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

    fn finish(&mut self) -> ProviderEvent {
        ProviderEvent::Finish {
            reason: self.stop_reason.take(),
            usage: self.usage.take(),
        }
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
        let event: StreamEvent = serde_json::from_str(data).map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::Protocol,
                "the upstream sent a malformed event",
            )
        })?;
        match event {
            StreamEvent::MessageStart { message } => self.add_usage(message.usage),
            StreamEvent::ContentBlockStart { content_block } => {
                if let Some(text) = content_block.text.filter(|t| !t.is_empty()) {
                    out.push_back(ProviderEvent::Delta(text));
                }
            }
            StreamEvent::ContentBlockDelta {
                delta: ContentDelta::TextDelta { text },
            } => {
                if !text.is_empty() {
                    out.push_back(ProviderEvent::Delta(text));
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                self.add_usage(usage);
            }
            StreamEvent::MessageStop => {
                out.push_back(self.finish());
                return Ok(true);
            }
            StreamEvent::Error { error } => {
                let detail = error_object_message(&error)
                    .map(|m| format!(": {}", scrub(&m, self.key.as_ref())))
                    .unwrap_or_default();
                return Err(ProviderError::new(
                    ProviderErrorKind::Upstream,
                    format!("the upstream failed mid-answer{detail}"),
                ));
            }
            StreamEvent::ContentBlockDelta {
                delta: ContentDelta::Other,
            }
            | StreamEvent::Other => {}
        }
        Ok(false)
    }

    fn eof(&mut self) -> Result<ProviderEvent, ProviderError> {
        if self.stop_reason.is_some() {
            Ok(self.finish())
        } else {
            Err(crate::http::ended_early())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::PromptMessage;

    fn decode(events: &[&str]) -> (Vec<ProviderEvent>, Option<ProviderError>) {
        let mut decoder = EventDecoder::new(None);
        let mut out = VecDeque::new();
        for data in events {
            match decoder.event("message", data, &mut out) {
                Ok(true) => return (out.into(), None),
                Ok(false) => {}
                Err(e) => return (out.into(), Some(e)),
            }
        }
        match decoder.eof() {
            Ok(e) => out.push_back(e),
            Err(e) => return (out.into(), Some(e)),
        }
        (out.into(), None)
    }

    #[test]
    fn a_whole_answer() {
        let (events, error) = decode(&[
            r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"안녕"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            r#"{"type":"message_stop"}"#,
        ]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                ProviderEvent::Delta("안녕".into()),
                ProviderEvent::Delta("!".into()),
                ProviderEvent::Finish {
                    reason: Some("end_turn".into()),
                    usage: Some(Usage {
                        input_tokens: 25,
                        output_tokens: 15
                    }),
                },
            ]
        );
    }

    #[test]
    fn error_event_and_early_end() {
        let (events, error) = decode(&[
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ]);
        assert_eq!(events.len(), 1);
        let error = error.unwrap();
        assert_eq!(error.kind, ProviderErrorKind::Upstream);
        assert!(error.message.contains("Overloaded"));
        let (_, error) = decode(&[
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
        ]);
        assert_eq!(error.map(|e| e.kind), Some(ProviderErrorKind::Protocol));
    }

    #[test]
    fn body_lifts_system_and_alternates_turns() {
        let defaults = BotDefaults {
            model: "claude".into(),
            system: Some("sys".into()),
            temperature: None,
            max_tokens: None,
        };
        let m = |role, content: &str| PromptMessage {
            role,
            content: content.into(),
        };
        let request = CompletionRequest {
            model: String::new(),
            system: None,
            messages: vec![
                m(Role::Assistant, "cut-off answer"),
                m(Role::User, "a"),
                m(Role::User, "b"),
                m(Role::System, "extra"),
                m(Role::Assistant, "c"),
                m(Role::User, "d"),
            ],
            temperature: None,
            max_tokens: None,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&request, &defaults).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "claude",
                "max_tokens": DEFAULT_ANTHROPIC_MAX_TOKENS,
                "system": "sys\n\nextra",
                "messages": [
                    {"role": "user", "content": "a\n\nb"},
                    {"role": "assistant", "content": "c"},
                    {"role": "user", "content": "d"},
                ],
                "stream": true,
            })
        );
    }
}
