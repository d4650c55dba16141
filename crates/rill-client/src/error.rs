//! The one error type of the client crate: what went wrong talking to an SSE endpoint or to rill.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

/// An error of the client. Connection-level errors end an [`EventStream`](crate::EventStream);
/// the ones it recovers from by reconnecting are only reported in
/// [`SseItem::Reconnecting`](crate::SseItem::Reconnecting).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered a status the client does not retry (or a non-SSE call failed).
    #[error("the server answered {status}{}", api_suffix(.api.as_ref()))]
    Status {
        status: StatusCode,
        /// The `{"error":{"code","message"}}` body, when the server sent one (rill does).
        api: Option<ApiError>,
    },
    /// A 200 answer whose `Content-Type` is not `text/event-stream`.
    #[error("the response is not an event stream (Content-Type: {})", content_type.as_deref().unwrap_or("none"))]
    ContentType { content_type: Option<String> },
    /// Connecting, sending or reading failed (refused, reset, TLS, a redirect loop...).
    #[error("HTTP transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// Nothing arrived for this long: the connection is taken for dead.
    #[error("nothing received for {0:?}; the connection is taken for dead")]
    ReadTimeout(Duration),
    /// The server ended a 200 stream (clients reconnect after it).
    #[error("the server ended the stream")]
    Disconnected,
    /// The reconnect policy's limit of consecutive failed attempts was reached.
    #[error("gave up after {attempts} failed attempts; the last: {last}")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        last: Box<Error>,
    },
    /// The request could not be built (a bad URL, header name or value).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server's answer (an event or a JSON body) is not what the API promises.
    #[error("cannot decode the server's answer: {0}")]
    Decode(#[source] serde_json::Error),
}

fn api_suffix(api: Option<&ApiError>) -> String {
    match api {
        Some(api) => format!(": {} ({})", api.message, api.code),
        None => String::new(),
    }
}

/// The JSON error body of rill's HTTP API: `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// Stable and machine-readable, e.g. `invalid_topic`, `unauthorized`.
    pub code: String,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// Reads an error body; `None` when it is not rill's error shape.
    pub(crate) fn from_body(body: &[u8]) -> Option<ApiError> {
        #[derive(Deserialize)]
        struct Wrapper {
            error: ApiError,
        }
        serde_json::from_slice::<Wrapper>(body)
            .ok()
            .map(|w| w.error)
    }
}

impl Error {
    /// The HTTP status, for [`Error::Status`] (also inside [`Error::RetriesExhausted`]).
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::RetriesExhausted { last, .. } => last.status(),
            Error::Transport(error) => error.status(),
            _ => None,
        }
    }

    /// The machine-readable code of rill's JSON error body, when there was one.
    pub fn api_code(&self) -> Option<&str> {
        self.api().map(|api| api.code.as_str())
    }

    /// Rill's JSON error body, when there was one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Status { api, .. } => api.as_ref(),
            Error::RetriesExhausted { last, .. } => last.api(),
            _ => None,
        }
    }

    /// A short, stable name of the kind of error, for machine-readable output (`rill sub --json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Status { .. } => "status",
            Error::ContentType { .. } => "content_type",
            Error::Transport(_) => "transport",
            Error::ReadTimeout(_) => "read_timeout",
            Error::Disconnected => "disconnected",
            Error::RetriesExhausted { .. } => "retries_exhausted",
            Error::InvalidRequest(_) => "invalid_request",
            Error::Decode(_) => "decode",
        }
    }
}
