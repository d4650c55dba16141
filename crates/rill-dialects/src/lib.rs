//! One pure translator per wire dialect, around rill's canonical model (`rill_core::chat`,
//! `rill_core::ProviderEvent`, `rill_chat::protocol::ChatEvent`).
//!
//! Inbound, from upstreams: a [`Decoder`] per provider dialect turns the upstream's SSE events
//! into [`ProviderEvent`]s, and a request encoder turns a [`rill_core::CompletionRequest`] into
//! the upstream's request body. Outbound, to clients: a face's encoder turns chat events into
//! the frames its client library accepts. No dialect talks to another: everything goes through
//! the canonical types.
//!
//! **Invariant:** every translator is pure: bytes or events in, events or bytes out; no I/O,
//! no clock, no store. Each is tested with vectors (recorded upstream streams in, the exact
//! bytes a real client accepts out).
//!
//! | dialect | inbound (upstream → rill) | outbound (rill → client) |
//! |---|---|---|
//! | [`openai_chat`] | request body, chunk decoder | |
//! | [`anthropic`] | request body, event decoder | |
//! | [`ai_sdk`] | request body (UI messages), UI message chunk decoder | UI message stream encoder, stored message as `UIMessage` |
//! | [`openai_in`], [`openai_out`] | | the OpenAI face: Chat Completions and Responses request bodies in; chunks, Responses events and `Response` objects out |
//! | [`continuation`] | the answer so far as a prefill, per API | |

pub mod ai_sdk;
pub mod anthropic;
pub mod continuation;
pub mod openai_chat;
pub mod openai_in;
pub mod openai_out;

use std::collections::VecDeque;

use rill_core::{ProviderError, ProviderErrorKind, ProviderEvent};

/// Turns a provider's SSE events into [`ProviderEvent`]s.
pub trait Decoder: Send + 'static {
    /// One event of the stream. Pushes what it yields; returns `true` once the answer is
    /// complete (a `Finish` was pushed): later events are ignored.
    ///
    /// Error messages may quote the upstream; the caller scrubs secrets from them.
    fn event(
        &mut self,
        name: &str,
        data: &str,
        out: &mut VecDeque<ProviderEvent>,
    ) -> Result<bool, ProviderError>;

    /// The body ended before [`Decoder::event`] reported completion. Pushes a `Finish` (after
    /// whatever closes the answer) when the upstream had clearly finished (a server that
    /// forgets its end marker), else returns the error.
    fn eof(&mut self, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError>;
}

/// The message of an `error` member, object or string: `{"message","type"}` (OpenAI,
/// Anthropic) or a plain string (Ollama and some proxies).
pub fn error_object_message(error: &serde_json::Value) -> Option<String> {
    if let Some(text) = error.as_str() {
        return Some(text.to_owned());
    }
    let message = error.get("message").and_then(|m| m.as_str());
    let kind = error.get("type").and_then(|t| t.as_str());
    match (kind, message) {
        (Some(kind), Some(message)) => Some(format!("{message} ({kind})")),
        (None, Some(message)) => Some(message.to_owned()),
        (Some(kind), None) => Some(kind.to_owned()),
        (None, None) => None,
    }
}

/// The error of an upstream that sent an error object mid-answer.
pub(crate) fn upstream_error(error: &serde_json::Value) -> ProviderError {
    let detail = error_object_message(error)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    ProviderError::new(
        ProviderErrorKind::Upstream,
        format!("the upstream failed mid-answer{detail}"),
    )
}

/// The error of a stream that ended (cleanly, at the transport level) before the model said it
/// was done: the answer is incomplete.
pub fn ended_early() -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::Protocol,
        "the upstream stream ended before the answer was complete",
    )
}

pub(crate) fn malformed(what: &str) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::Protocol,
        format!("the upstream sent a malformed {what}"),
    )
}

pub(crate) fn encode_error() -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::Config,
        "the request could not be encoded",
    )
}

/// The text a tool's result is sent back as: a string as is, anything else as JSON; a failure
/// as its message.
pub(crate) fn tool_result_text(
    output: Option<&serde_json::Value>,
    error: Option<&str>,
) -> Option<String> {
    match (output, error) {
        (_, Some(error)) => Some(error.to_owned()),
        (Some(serde_json::Value::String(s)), None) => Some(s.clone()),
        (Some(value), None) => Some(value.to_string()),
        (None, None) => None,
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// Runs `decoder` over `events` (SSE event name, data) as the provider's reader would.
    pub(crate) fn decode(
        mut decoder: impl Decoder,
        events: &[(&str, &str)],
    ) -> (Vec<ProviderEvent>, Option<ProviderError>) {
        let mut out = VecDeque::new();
        for (name, data) in events {
            match decoder.event(name, data, &mut out) {
                Ok(true) => return (out.into(), None),
                Ok(false) => {}
                Err(e) => return (out.into(), Some(e)),
            }
        }
        match decoder.eof(&mut out) {
            Ok(()) => (out.into(), None),
            Err(e) => (out.into(), Some(e)),
        }
    }
}
