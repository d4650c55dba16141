//! The reconnecting SSE client: one request (GET, or POST with a body) turned into a `Stream` of
//! events that survives dropped connections, like the browser's `EventSource` plus `fetch`.
//!
//! One attempt: send the request with `Accept: text/event-stream`, `Cache-Control: no-cache` and
//! (once an event carried an id) `Last-Event-ID`; a 200 with an event-stream content type is read
//! chunk by chunk through [`rill_sse::Parser`]; anything else is either retried (see
//! [`RetryPolicy`]) or fails the stream with a typed [`Error`].

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use reqwest::{Method, Response, StatusCode};
use rill_sse::{Item, OwnedEvent, Parser};
use url::Url;

use crate::error::{ApiError, Error};
use crate::policy::{RetryPolicy, StatusAction, classify};

/// The largest error body read to find rill's `{"error":...}` in it; the rest is not read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What an [`EventStream`] yields besides errors.
///
/// Only `Event` comes by default; comments and connection state changes come when asked for
/// with [`SseRequest::comments`] and [`SseRequest::state_changes`] (a "curl for SSE" prints them).
#[derive(Debug)]
#[non_exhaustive]
pub enum SseItem<E = OwnedEvent> {
    /// A dispatched event.
    Event(E),
    /// A comment line (`: keep-alive`), without the colon and one leading space.
    Comment(String),
    /// A connection is open: a 200 with an event-stream content type, at `url` (after redirects).
    Open { url: Url },
    /// The connection failed or ended; the client will try again after `delay`.
    Reconnecting {
        /// Why: [`Error::Disconnected`], a transport error, a retried status...
        error: Error,
        /// How long the client waits before the next attempt.
        delay: Duration,
        /// The consecutive failed attempts so far (1 for the first reconnect).
        attempt: u32,
    },
}

impl<E> SseItem<E> {
    /// Turns the event payload into another type, keeping the other items.
    pub fn map_event<F>(self, f: impl FnOnce(E) -> F) -> SseItem<F> {
        match self {
            SseItem::Event(event) => SseItem::Event(f(event)),
            SseItem::Comment(text) => SseItem::Comment(text),
            SseItem::Open { url } => SseItem::Open { url },
            SseItem::Reconnecting {
                error,
                delay,
                attempt,
            } => SseItem::Reconnecting {
                error,
                delay,
                attempt,
            },
        }
    }

    /// Like [`SseItem::map_event`], with a conversion that can fail.
    pub fn try_map_event<F>(
        self,
        f: impl FnOnce(E) -> Result<F, Error>,
    ) -> Result<SseItem<F>, Error> {
        Ok(match self {
            SseItem::Event(event) => SseItem::Event(f(event)?),
            SseItem::Comment(text) => SseItem::Comment(text),
            SseItem::Open { url } => SseItem::Open { url },
            SseItem::Reconnecting {
                error,
                delay,
                attempt,
            } => SseItem::Reconnecting {
                error,
                delay,
                attempt,
            },
        })
    }
}

/// A request for an event stream: build it, then call [`SseRequest::stream`].
///
/// ```no_run
/// # async fn example() -> Result<(), rill_client::Error> {
/// use futures::StreamExt;
/// use rill_client::{SseItem, SseRequest};
///
/// let http = reqwest::Client::new();
/// let url = "http://127.0.0.1:8080/api/events?topic=news".parse().expect("a valid URL");
/// let mut events = SseRequest::get(http, url).last_event_id("42").stream();
/// while let Some(item) = events.next().await {
///     if let SseItem::Event(event) = item? {
///         println!("{} {} {}", event.id, event.event, event.data);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SseRequest {
    http: reqwest::Client,
    method: Method,
    url: Url,
    headers: HeaderMap,
    /// `Bytes`, so every reconnect re-sends it without copying.
    body: Option<Bytes>,
    last_event_id: String,
    policy: RetryPolicy,
    read_timeout: Option<Duration>,
    comments: bool,
    state_changes: bool,
}

impl fmt::Debug for SseRequest {
    // By hand: header values may hold tokens, which must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .field("policy", &self.policy)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl SseRequest {
    /// A request with `method` to `url`, sent with `http` (which follows redirects by default).
    pub fn new(http: reqwest::Client, method: Method, url: Url) -> Self {
        SseRequest {
            http,
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            last_event_id: String::new(),
            policy: RetryPolicy::default(),
            read_timeout: None,
            comments: false,
            state_changes: false,
        }
    }

    /// A GET request.
    pub fn get(http: reqwest::Client, url: Url) -> Self {
        Self::new(http, Method::GET, url)
    }

    /// A POST request with `body`, re-sent on every reconnect.
    pub fn post(http: reqwest::Client, url: Url, body: impl Into<Bytes>) -> Self {
        Self::new(http, Method::POST, url).body(body)
    }

    /// Sets the method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a header sent with every attempt (an `Accept` of yours replaces the default one).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Adds a header given as text, e.g. from a command line.
    pub fn try_header(self, name: &str, value: &str) -> Result<Self, Error> {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| Error::InvalidRequest(format!("header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|e| Error::InvalidRequest(format!("value of header {name}: {e}")))?;
        Ok(self.header(name, value))
    }

    /// Sets the request body, re-sent on every reconnect.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Resumes after this event id: sent as `Last-Event-ID` from the first attempt on, and
    /// carried by events without an `id` field until one comes.
    pub fn last_event_id(mut self, id: impl Into<String>) -> Self {
        self.last_event_id = id.into();
        self
    }

    /// Sets the reconnect policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Takes a connection for dead when nothing (not even a heartbeat comment) arrives for this
    /// long, and reconnects. Off by default; set it to a few heartbeat intervals.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// Yields comment lines as [`SseItem::Comment`].
    pub fn comments(mut self, yes: bool) -> Self {
        self.comments = yes;
        self
    }

    /// Yields [`SseItem::Open`] and [`SseItem::Reconnecting`].
    pub fn state_changes(mut self, yes: bool) -> Self {
        self.state_changes = yes;
        self
    }

    /// The URL of the first attempt.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Starts streaming. Nothing is sent until the stream is first polled; dropping the stream
    /// closes the connection and cancels any pending reconnect.
    pub fn stream(self) -> EventStream {
        let parser = Parser::with_last_event_id(&self.last_event_id);
        let connection = Connection {
            retry: self.policy.initial_delay,
            request: self,
            parser,
            body: None,
            pending: VecDeque::new(),
            next_delay: None,
            failures: 0,
            finished: false,
        };
        let inner = futures::stream::unfold(connection, |mut connection| async move {
            let item = connection.next().await?;
            Some((item, connection))
        });
        EventStream {
            inner: Box::pin(inner),
        }
    }
}

/// The events of an [`SseRequest`]: `Ok` items until the stream ends, or one `Err` (a fatal
/// status, a wrong content type, retries exhausted...) after which it ends.
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = Result<SseItem, Error>> + Send>>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Result<SseItem, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Why an attempt failed, and whether to try again.
enum Failure {
    Retry {
        error: Error,
        retry_after: Option<Duration>,
    },
    Fatal(Error),
}

/// The state behind an [`EventStream`].
struct Connection {
    request: SseRequest,
    /// One parser for the whole life of the stream: [`Parser::reset`] between connections keeps
    /// the last event id and drops a half-received event, as the spec wants.
    parser: Parser,
    /// The open response body, if connected.
    body: Option<Body>,
    /// Items parsed from the last chunk and not yet handed out.
    pending: VecDeque<SseItem>,
    /// The base of the backoff: the server's last `retry:`, else the policy's initial delay.
    retry: Duration,
    /// The wait before the next attempt, set when one failed.
    next_delay: Option<Duration>,
    /// Consecutive failed attempts since the last event.
    failures: u32,
    finished: bool,
}

impl Connection {
    async fn next(&mut self) -> Option<Result<SseItem, Error>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if self.finished {
                return None;
            }
            let Some(body) = self.body.as_mut() else {
                if let Some(delay) = self.next_delay.take() {
                    tokio::time::sleep(delay).await;
                }
                match connect(&self.request, self.parser.last_event_id()).await {
                    Ok((body, url)) => {
                        self.parser.reset();
                        self.body = Some(body);
                        if self.request.state_changes {
                            self.pending.push_back(SseItem::Open { url });
                        }
                    }
                    Err(Failure::Fatal(error)) => return Some(Err(self.finish(error))),
                    Err(Failure::Retry { error, retry_after }) => {
                        if let Err(error) = self.schedule(error, retry_after) {
                            return Some(Err(self.finish(error)));
                        }
                    }
                }
                continue;
            };
            let chunk = match self.request.read_timeout {
                Some(limit) => match tokio::time::timeout(limit, body.next()).await {
                    Ok(chunk) => chunk.map(|chunk| chunk.map_err(transport)),
                    Err(_) => Some(Err(Error::ReadTimeout(limit))),
                },
                None => body.next().await.map(|chunk| chunk.map_err(transport)),
            };
            let reason = match chunk {
                Some(Ok(bytes)) => {
                    self.feed(&bytes);
                    continue;
                }
                Some(Err(error)) => error,
                None => Error::Disconnected,
            };
            tracing::debug!(host = self.request.url.host_str(), path = self.request.url.path(), error = %reason, "the event stream ended; reconnecting");
            self.body = None;
            if let Err(error) = self.schedule(reason, None) {
                return Some(Err(self.finish(error)));
            }
        }
    }

    fn finish(&mut self, error: Error) -> Error {
        self.finished = true;
        self.body = None;
        error
    }

    /// Counts a failed attempt and sets the wait before the next one, or gives up.
    fn schedule(&mut self, error: Error, retry_after: Option<Duration>) -> Result<(), Error> {
        self.failures = self.failures.saturating_add(1);
        let policy = &self.request.policy;
        if policy.max_retries.is_some_and(|max| self.failures > max) {
            return Err(Error::RetriesExhausted {
                attempts: self.failures,
                last: Box::new(error),
            });
        }
        let mut delay = policy.delay(self.retry, self.failures, fastrand::f64());
        if let Some(retry_after) = retry_after {
            delay = delay.max(retry_after.min(policy.max_delay));
        }
        self.next_delay = Some(delay);
        if self.request.state_changes {
            self.pending.push_back(SseItem::Reconnecting {
                error,
                delay,
                attempt: self.failures,
            });
        }
        Ok(())
    }

    fn feed(&mut self, bytes: &[u8]) {
        let Connection {
            parser,
            pending,
            request,
            retry,
            failures,
            ..
        } = self;
        parser.feed(bytes, |item| match item {
            Item::Event(event) => {
                // A stream that delivers is healthy: the next drop starts the backoff afresh.
                *failures = 0;
                pending.push_back(SseItem::Event(OwnedEvent::from(event)));
            }
            Item::Retry(ms) => *retry = Duration::from_millis(ms),
            Item::Comment(text) => {
                if request.comments {
                    pending.push_back(SseItem::Comment(text.to_owned()));
                }
            }
        });
    }
}

/// One attempt: send, check the status and the content type. A free function borrowing only
/// what it needs, so the future stays `Send` (the open body stream is not `Sync`).
async fn connect(request: &SseRequest, last_event_id: &str) -> Result<(Body, Url), Failure> {
    let mut builder = request
        .http
        .request(request.method.clone(), request.url.clone());
    builder = builder.headers(request.headers.clone());
    if !request.headers.contains_key(ACCEPT) {
        builder = builder.header(ACCEPT, HeaderValue::from_static("text/event-stream"));
    }
    builder = builder.header(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if !last_event_id.is_empty() {
        // Ids are UTF-8 without CR/LF (the parser guarantees it); `from_bytes` takes non-ASCII
        // bytes as they are, which is what browsers send.
        match HeaderValue::from_bytes(last_event_id.as_bytes()) {
            Ok(value) => builder = builder.header("last-event-id", value),
            Err(_) => {
                tracing::warn!("the last event id cannot be sent as a header; resuming without it")
            }
        }
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let sent = match request.read_timeout {
        Some(limit) => match tokio::time::timeout(limit, builder.send()).await {
            Ok(sent) => sent,
            Err(_) => {
                return Err(Failure::Retry {
                    error: Error::ReadTimeout(limit),
                    retry_after: None,
                });
            }
        },
        None => builder.send().await,
    };
    let response = sent.map_err(transport_failure)?;
    let status = response.status();
    if status == StatusCode::OK {
        let content_type = response.headers().get(CONTENT_TYPE);
        if !content_type.is_some_and(is_event_stream) {
            let content_type =
                content_type.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return Err(Failure::Fatal(Error::ContentType { content_type }));
        }
        let url = response.url().clone();
        return Ok((Box::pin(response.bytes_stream()), url));
    }
    let retry_after = retry_after(response.headers());
    match classify(status, retry_after.is_some()) {
        StatusAction::Retry => Err(Failure::Retry {
            error: Error::Status { status, api: None },
            retry_after,
        }),
        StatusAction::Stop => Err(Failure::Fatal(status_error(response).await)),
    }
}

fn transport_failure(error: reqwest::Error) -> Failure {
    // A redirect loop or a request that cannot be built fails the same way every time.
    if error.is_redirect() || error.is_builder() {
        Failure::Fatal(transport(error))
    } else {
        Failure::Retry {
            error: transport(error),
            retry_after: None,
        }
    }
}

/// Wraps a reqwest error, without the URL's query: clients that cannot send headers put tokens
/// there (`?access_token=`), and error messages end up in logs.
pub(crate) fn transport(mut error: reqwest::Error) -> Error {
    if let Some(url) = error.url_mut() {
        url.set_query(None);
    }
    Error::Transport(error)
}

/// `text/event-stream`, with or without parameters (`;charset=...`, a trailing `;`), any case.
pub(crate) fn is_event_stream(value: &HeaderValue) -> bool {
    let essence = value
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

/// `Retry-After` in seconds (the HTTP-date form is rare on these answers and ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Builds the error for a status that is not retried, with rill's JSON error body if present.
pub(crate) async fn status_error(mut response: Response) -> Error {
    let status = response.status();
    let mut body = Vec::new();
    // Read at most MAX_ERROR_BODY bytes: an error page is no reason to buffer a whole stream.
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    Error::Status {
        status,
        api: ApiError::from_body(&body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_content_types() {
        for (value, ok) in [
            ("text/event-stream", true),
            ("text/event-stream;", true),
            ("text/event-stream; charset=utf-8", true),
            ("TEXT/Event-Stream ;charset=windows-1252", true),
            ("text/x-bogus", false),
            ("x bogus", false),
            ("text/event-streams", false),
            ("", false),
        ] {
            assert_eq!(
                is_event_stream(&HeaderValue::from_static(value)),
                ok,
                "{value:?}"
            );
        }
    }

    #[test]
    fn retry_after_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 3 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
