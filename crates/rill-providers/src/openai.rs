//! OpenAI-compatible chat completions (`POST {base}/chat/completions`, `stream: true`): OpenAI
//! itself and the servers that copy its API (Ollama, vLLM, llama.cpp, LM Studio, OpenRouter,
//! LiteLLM).

use std::collections::VecDeque;

use rill_core::chat::{Role, Usage};
use rill_core::{
    CompletionRequest, CompletionStream, Provider, ProviderError, ProviderErrorKind, ProviderEvent,
};
use serde::{Deserialize, Serialize};

use crate::BotDefaults;
use crate::http::{ApiKey, Decoder, Upstream, error_object_message, read_stream, scrub};

/// The base URL when a bot sets none.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// A bot on an OpenAI-compatible API.
#[derive(Debug)]
pub struct OpenAiProvider {
    upstream: Upstream,
    defaults: BotDefaults,
}

impl OpenAiProvider {
    pub(crate) fn new(upstream: Upstream, defaults: BotDefaults) -> Self {
        OpenAiProvider { upstream, defaults }
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<ChatMessage<'a>>,
    stream: bool,
    /// Asks for a last chunk with the token counts (OpenAI, vLLM, llama.cpp, OpenRouter...).
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

pub(crate) fn request_body(
    request: &CompletionRequest,
    defaults: &BotDefaults,
) -> Result<Vec<u8>, ProviderError> {
    let system = request.system.as_deref().or(defaults.system.as_deref());
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = system.filter(|s| !s.is_empty()) {
        messages.push(ChatMessage {
            role: Role::System.as_str(),
            content: system,
        });
    }
    messages.extend(request.messages.iter().map(|m| ChatMessage {
        role: m.role.as_str(),
        content: &m.content,
    }));
    let body = ChatRequest {
        model: defaults.model(&request.model),
        messages,
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        temperature: request.temperature.or(defaults.temperature),
        max_tokens: request.max_tokens.or(defaults.max_tokens),
    };
    serde_json::to_vec(&body).map_err(|_| {
        ProviderError::new(
            ProviderErrorKind::Config,
            "the request could not be encoded",
        )
    })
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let body = request_body(&request, &self.defaults)?;
        let (response, started) = self.upstream.open(body).await?;
        Ok(read_stream(
            &self.upstream,
            response,
            started,
            ChunkDecoder::new(self.upstream.key.clone()),
        ))
    }
}

/// One `data:` chunk. Unknown fields are ignored; every field is optional because servers
/// differ in what they send.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
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

#[derive(Deserialize)]
struct ChoiceDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// Decodes the chunks of one answer: deltas as they come, the finish reason and usage kept
/// for the `Finish` at `[DONE]`.
pub(crate) struct ChunkDecoder {
    finish_reason: Option<String>,
    usage: Option<Usage>,
    key: Option<ApiKey>,
}

impl ChunkDecoder {
    pub(crate) fn new(key: Option<ApiKey>) -> Self {
        ChunkDecoder {
            finish_reason: None,
            usage: None,
            key,
        }
    }

    fn finish(&mut self) -> ProviderEvent {
        ProviderEvent::Finish {
            reason: self.finish_reason.take(),
            usage: self.usage.take(),
        }
    }

    fn upstream_error(&self, error: &serde_json::Value) -> ProviderError {
        let detail = error_object_message(error)
            .map(|m| format!(": {}", scrub(&m, self.key.as_ref())))
            .unwrap_or_default();
        ProviderError::new(
            ProviderErrorKind::Upstream,
            format!("the upstream failed mid-answer{detail}"),
        )
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
            out.push_back(self.finish());
            return Ok(true);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::Protocol,
                "the upstream sent a malformed chunk",
            )
        })?;
        if let Some(error) = &chunk.error {
            return Err(self.upstream_error(error));
        }
        if name == "error" {
            return Err(self.upstream_error(&serde_json::Value::Null));
        }
        // We never ask for `n` > 1: only the first choice is the answer.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice
                .delta
                .and_then(|d| d.content)
                .filter(|t| !t.is_empty())
            {
                out.push_back(ProviderEvent::Delta(text));
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(Usage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
            });
        }
        Ok(false)
    }

    fn eof(&mut self) -> Result<ProviderEvent, ProviderError> {
        // Some servers end the body without `[DONE]`; a finish reason says the answer is whole.
        if self.finish_reason.is_some() {
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
        let mut decoder = ChunkDecoder::new(Some(ApiKey::new("sk-k".into())));
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
    fn deltas_finish_reason_and_usage() {
        let (events, error) = decode(&[
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
                ProviderEvent::Delta("Hel".into()),
                ProviderEvent::Delta("lo 👋".into()),
                ProviderEvent::Finish {
                    reason: Some("stop".into()),
                    usage: Some(Usage {
                        input_tokens: 9,
                        output_tokens: 2
                    }),
                },
            ]
        );
    }

    #[test]
    fn end_without_done_is_whole_only_with_a_finish_reason() {
        let (events, error) =
            decode(&[r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"length"}]}"#]);
        assert_eq!(error, None);
        assert!(
            matches!(&events[1], ProviderEvent::Finish { reason: Some(r), usage: None } if r == "length")
        );
        let (events, error) = decode(&[r#"{"choices":[{"delta":{"content":"a"}}]}"#]);
        assert_eq!(events, vec![ProviderEvent::Delta("a".into())]);
        assert_eq!(error.map(|e| e.kind), Some(ProviderErrorKind::Protocol));
    }

    #[test]
    fn error_object_and_malformed_chunk() {
        let (events, error) = decode(&[
            r#"{"choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"error":{"message":"overloaded, key sk-k","type":"server_error"}}"#,
        ]);
        assert_eq!(events.len(), 1);
        let error = error.unwrap();
        assert_eq!(error.kind, ProviderErrorKind::Upstream);
        assert!(error.message.contains("overloaded"));
        assert!(!error.message.contains("sk-k"));
        let (_, error) = decode(&[r#"{"choices":[{"delta":{"content":"#]);
        assert_eq!(error.map(|e| e.kind), Some(ProviderErrorKind::Protocol));
    }

    #[test]
    fn body_has_system_first_and_bot_defaults() {
        let defaults = BotDefaults {
            model: "m".into(),
            system: Some("be brief".into()),
            temperature: Some(0.5),
            max_tokens: None,
        };
        let request = CompletionRequest {
            model: String::new(),
            system: None,
            messages: vec![PromptMessage {
                role: Role::User,
                content: "hi".into(),
            }],
            temperature: None,
            max_tokens: Some(10),
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&request, &defaults).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.5,
                "max_tokens": 10,
            })
        );
    }
}
