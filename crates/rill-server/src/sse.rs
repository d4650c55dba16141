//! The SSE response shared by topic and chat streams: headers, the `retry:` hint, heartbeats,
//! and the ends (graceful shutdown, maximum duration, credential expiry) with a final event.
//!
//! The hub produces ready-made SSE chunks; this module is the transport around them. Every
//! stream ends when `AppState::shutdown` fires, after a final
//! `event: error` `{"code":"server_shutdown","reconnect":true}`: without that, axum's graceful
//! shutdown would wait forever for streams that never end (tokio-rs/axum#2673).
//!
//! **Only real events end with a blank line.** Popular clients dispatch on blank lines more
//! eagerly than the spec: `@microsoft/fetch-event-source` dispatches a message on *every* blank
//! line, and `httpx-sse` on any blank line after a `retry:` or once any event had an id. A
//! `retry: 3000` block, or a `: keep-alive` block, of its own would reach their applications as
//! an empty message (and `JSON.parse("")` throws). So the stream opens with the lines
//! `retry: 3000` and `: ok`, written at once (they flush the headers through any proxy) and with
//! no blank line: spec parsers apply `retry` at once, and the libraries above carry it along
//! into the first real event's dispatch. A heartbeat is the comment line `: keep-alive` without
//! a blank line: every parser ignores comment lines, and the next event's own blank line ends
//! its block. Both are written only between events, so each starts on a fresh line. This exact
//! layout was checked against fetch-event-source, `eventsource`, httpx-sse, requests-sse, both
//! OpenAI SDKs' decoders and Chromium's `EventSource` (see the client notes behind
//! `tests/sse_bytes.rs`).

use std::convert::Infallible;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use rill_hub::HubStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::limits::StreamSlot;
use crate::{AppState, Principal};

/// Why a stream ends on our side, as sent in the final event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Shutdown,
    MaxDuration,
    CredentialExpired,
}

/// A hub stream as a `Stream` of chunks.
pub(crate) fn hub_chunks(stream: HubStream) -> impl Stream<Item = Bytes> + Send + 'static {
    futures::stream::unfold(stream, |mut stream| async move {
        stream.next().await.map(|chunk| (chunk, stream))
    })
}

/// [`response`] with a slot already taken (the topics handler takes it before opening the hub
/// stream, so a refused subscriber never attaches).
pub(crate) fn respond(
    state: &AppState,
    principal: &Principal,
    slot: StreamSlot,
    chunks: impl Stream<Item = Bytes> + Send + 'static,
) -> Response {
    respond_closing(state, principal, slot, chunks, rill_closing)
}

/// How a stream's own end (shutdown, maximum duration, credential expiry) is told to the
/// client: `code`, `message`, whether to reconnect. A face whose client takes only its own
/// frames (the AI SDK's chunks) writes it its way.
pub(crate) type Closing = fn(code: &str, message: &str, reconnect: bool) -> Bytes;

/// rill's own: `event: error` with `{"code","message","reconnect"}`.
fn rill_closing(code: &str, message: &str, reconnect: bool) -> Bytes {
    let data =
        serde_json::json!({ "code": code, "message": message, "reconnect": reconnect }).to_string();
    let mut out = Vec::with_capacity(data.len() + 32);
    // No id: the client's Last-Event-ID stays that of the last event it really got.
    let _ = rill_sse::encode_event(&mut out, None, Some("error"), &data);
    Bytes::from(out)
}

/// [`respond`] with the stream's own end written by `closing`.
pub(crate) fn respond_closing(
    state: &AppState,
    principal: &Principal,
    slot: StreamSlot,
    chunks: impl Stream<Item = Bytes> + Send + 'static,
    closing: Closing,
) -> Response {
    let config = &state.config.streams;
    let now = Instant::now();
    let mut deadline: Option<(Instant, End)> = config
        .max_stream_duration
        .map(|d| (now + d, End::MaxDuration));
    if let Some(expires_at) = principal.expires_at {
        let left = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if deadline.is_none_or(|(at, _)| now + left < at) {
            deadline = Some((now + left, End::CredentialExpired));
        }
    }
    let heartbeat = config.heartbeat.max(Duration::from_millis(1));
    let transport = Transport {
        chunks: Box::pin(chunks),
        shutdown: Box::pin(state.draining.clone().cancelled_owned()),
        heartbeat,
        beat: Box::pin(tokio::time::sleep_until(now + heartbeat)),
        last_write: now,
        deadline: deadline.map(|(at, why)| (Box::pin(tokio::time::sleep_until(at)), why)),
        retry_ms: config.retry.as_millis() as u64,
        started: false,
        done: false,
        closing,
        _slot: slot,
    };
    let body = futures::stream::unfold(transport, |mut t| async move {
        let chunk = t.next().await?;
        Some((Ok::<_, Infallible>(chunk), t))
    });
    let mut response = Body::from_stream(body).into_response();
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The comment line after the opening `retry:` line: tells a person reading the stream (curl)
/// that it is open; no blank line, like every line that is not an event's.
const OPENING_COMMENT: &[u8] = b": ok\n";

/// The heartbeat: a comment line and no blank line, so no client dispatches anything for it.
pub(crate) const HEARTBEAT: &[u8] = b": keep-alive\n";

/// The `Last-Event-ID` of a stream request: the header, else `?last_event_id=` (`query`), else
/// none; an empty value counts as none (`EventSource` only sends a non-empty one).
///
/// The header wins: `EventSource` keeps the URL it was opened with and sends the newest id in
/// the header when it reconnects. A header that is not valid UTF-8 is not ignored: it is passed
/// on (lossily decoded) so the stream answers it like any id it cannot use, with `reset`
/// (`unknown_id`) for topics, or a snapshot for chats, instead of silently starting live.
pub(crate) fn last_event_id(
    headers: &axum::http::HeaderMap,
    query: Option<String>,
) -> Option<String> {
    let header = headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|v| !v.is_empty());
    header.or(query).filter(|v| !v.is_empty())
}

// The shutdown wait and the timers are created once per stream and polled in place: a fresh
// `cancelled()` per chunk would lock the token shared by every stream, twice per write.
struct Transport {
    chunks: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    heartbeat: Duration,
    /// Fires at the earliest `heartbeat` after the last write: when it fires it is moved to
    /// `last_write + heartbeat` if something was written since (a timer reset per write would
    /// cost a lock on the timer wheel for every delivery), else a heartbeat goes out.
    beat: Pin<Box<Sleep>>,
    last_write: Instant,
    deadline: Option<(Pin<Box<Sleep>>, End)>,
    retry_ms: u64,
    started: bool,
    done: bool,
    closing: Closing,
    /// Counts this stream against the limits until the body is dropped.
    _slot: StreamSlot,
}

impl Transport {
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.started {
            // The retry hint first, at once: it also flushes the headers through any proxy. No
            // blank line: see the module docs.
            self.started = true;
            let mut out = Vec::with_capacity(24);
            rill_sse::encode_retry(&mut out, self.retry_ms);
            out.extend_from_slice(OPENING_COMMENT);
            return Some(Bytes::from(out));
        }
        loop {
            let Transport {
                chunks,
                shutdown,
                beat,
                deadline,
                ..
            } = self;
            let until_deadline = async {
                match deadline {
                    Some((sleep, why)) => {
                        sleep.as_mut().await;
                        *why
                    }
                    None => std::future::pending().await,
                }
            };
            let (chunk, end) = tokio::select! {
                biased;
                () = shutdown.as_mut() => (None, Some(End::Shutdown)),
                why = until_deadline => (None, Some(why)),
                chunk = chunks.next() => match chunk {
                    Some(chunk) => (Some(chunk), None),
                    None => return None,
                },
                () = beat.as_mut() => (None, None),
            };
            if let Some(why) = end {
                return Some(self.finish(why));
            }
            let now = Instant::now();
            if chunk.is_some() {
                self.last_write = now;
                return chunk;
            }
            // The beat fired: a heartbeat if nothing was written for `heartbeat`, else wait
            // until that is so.
            let due = self.last_write + self.heartbeat;
            if now >= due {
                self.last_write = now;
                self.beat.as_mut().reset(now + self.heartbeat);
                return Some(Bytes::from_static(HEARTBEAT));
            }
            self.beat.as_mut().reset(due);
        }
    }

    fn finish(&mut self, why: End) -> Bytes {
        self.done = true;
        let (code, message, reconnect) = match why {
            End::Shutdown => (
                "server_shutdown",
                "the server is shutting down; reconnect to resume",
                true,
            ),
            End::MaxDuration => (
                "stream_duration",
                "the stream reached its maximum duration; reconnect to resume",
                true,
            ),
            End::CredentialExpired => (
                "credential_expired",
                "the credential of this stream expired; renew it and reconnect",
                false,
            ),
        };
        (self.closing)(code, message, reconnect)
    }
}
