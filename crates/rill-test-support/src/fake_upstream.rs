//! A fake LLM upstream for tests: a real HTTP server on 127.0.0.1 that speaks OpenAI chat
//! completions (`/v1/chat/completions`, also `/chat/completions`) and Anthropic Messages
//! (`/v1/messages`), streams scripted answers at a scripted pace, injects faults (error
//! statuses, 429 with `Retry-After`, a cut connection, a malformed chunk, an error object in the
//! stream, silence), records every request, and notices when a client closes its connection
//! mid-answer.
//!
//! ```no_run
//! # async fn demo() {
//! use rill_test_support::fake_upstream::{FakeUpstream, Reply};
//! let fake = FakeUpstream::start().await;
//! fake.push(Reply::status(500, "boom"));          // the first request fails,
//! fake.push(Reply::tokens(["Hel", "lo"]));        // the second streams "Hello".
//! // OpenAI-style bots take `fake.openai_base_url()`, Anthropic-style ones `fake.url()`.
//! # }
//! ```
//!
//! Replies are used in order, one per request; when none is queued the default reply (see
//! [`FakeUpstream::set_default`]) answers. Dropping the fake stops it, and panics if one of its
//! handlers panicked, so a broken fake cannot pass a test silently.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use futures::FutureExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Which API a request spoke, by its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `POST /v1/chat/completions` or `POST /chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub format: Format,
    pub path: String,
    pub headers: HeaderMap,
    /// The JSON body (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// A header as text, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How a streamed answer ends.
#[derive(Clone, Debug, PartialEq)]
enum End {
    /// The format's normal ending (finish reason, usage, `[DONE]` / `message_stop`).
    Complete,
    /// The connection is cut (the body errors) after the tokens.
    Drop,
    /// A chunk that is not JSON, then the body ends.
    Malformed,
    /// An error object inside the stream, then the body ends.
    Error(String),
    /// Nothing more is sent until the client goes away or the fake is dropped.
    Hang,
}

/// The scripted answer to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    kind: ReplyKind,
}

#[derive(Clone, Debug)]
enum ReplyKind {
    Status {
        status: u16,
        message: String,
        headers: Vec<(String, String)>,
    },
    Stream(StreamScript),
}

#[derive(Clone, Debug)]
struct StreamScript {
    tokens: Vec<String>,
    first_token_delay: Duration,
    token_interval: Duration,
    finish_reason: Option<String>,
    usage: Option<(u64, u64)>,
    end: End,
    /// Repeat the tokens this many times (for answers that go on until the client stops).
    repeat: usize,
    /// Send the body in pieces of at most this many bytes (cutting through UTF-8 characters).
    split_every: Option<usize>,
    /// A recorded body, frame by frame, sent instead of the tokens (whatever the format).
    recorded: Option<Vec<String>>,
}

impl Reply {
    /// A normal streamed answer made of these tokens, sent as fast as possible.
    pub fn tokens<I, S>(tokens: I) -> Reply
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Reply {
            kind: ReplyKind::Stream(StreamScript {
                tokens: tokens.into_iter().map(Into::into).collect(),
                first_token_delay: Duration::ZERO,
                token_interval: Duration::ZERO,
                finish_reason: None,
                usage: None,
                end: End::Complete,
                repeat: 1,
                split_every: None,
                recorded: None,
            }),
        }
    }

    /// A recorded upstream body (SSE, as a provider sent it), replayed frame by frame (with
    /// `token_interval` between frames), whatever the request's format: for the shapes of
    /// streams the token scripts cannot make (reasoning, tool calls, citations).
    pub fn recorded(body: &str) -> Reply {
        let mut frames = Vec::new();
        let mut rest = body;
        while let Some(end) = rest.find("\n\n") {
            frames.push(rest[..end + 2].to_owned());
            rest = &rest[end + 2..];
        }
        if !rest.trim().is_empty() {
            frames.push(rest.to_owned());
        }
        Reply::tokens(Vec::<String>::new()).with(|s| s.recorded = Some(frames))
    }

    /// An answer that goes on for a long time (`token` every `interval`, up to 100 000 times):
    /// for stop and disconnect tests.
    pub fn endless(token: &str, interval: Duration) -> Reply {
        Reply::tokens([token])
            .token_interval(interval)
            .repeat(100_000)
    }

    /// An error status before any stream, with the format's error body.
    pub fn status(status: u16, message: &str) -> Reply {
        Reply {
            kind: ReplyKind::Status {
                status,
                message: message.to_owned(),
                headers: Vec::new(),
            },
        }
    }

    /// `429 Too Many Requests` with this `Retry-After` value (seconds or an HTTP date).
    pub fn rate_limited(retry_after: &str) -> Reply {
        Reply::status(429, "Rate limit reached, slow down").header("retry-after", retry_after)
    }

    /// Adds a header to a status reply (ignored on streamed answers).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let ReplyKind::Status { headers, .. } = &mut self.kind {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    fn script(&mut self) -> Option<&mut StreamScript> {
        match &mut self.kind {
            ReplyKind::Stream(script) => Some(script),
            ReplyKind::Status { .. } => None,
        }
    }

    fn with(mut self, f: impl FnOnce(&mut StreamScript)) -> Reply {
        if let Some(script) = self.script() {
            f(script);
        }
        self
    }

    /// Waits this long after the headers (and the opening frame) before the first token.
    pub fn first_token_delay(self, delay: Duration) -> Reply {
        self.with(|s| s.first_token_delay = delay)
    }

    /// Waits this long between tokens.
    pub fn token_interval(self, interval: Duration) -> Reply {
        self.with(|s| s.token_interval = interval)
    }

    /// The finish reason sent (default: `stop` for OpenAI, `end_turn` for Anthropic).
    pub fn finish_reason(self, reason: &str) -> Reply {
        self.with(|s| s.finish_reason = Some(reason.to_owned()))
    }

    /// The usage sent (default: 12 input tokens, one output token per token sent).
    pub fn usage(self, input_tokens: u64, output_tokens: u64) -> Reply {
        self.with(|s| s.usage = Some((input_tokens, output_tokens)))
    }

    /// Sends the tokens `times` times over.
    pub fn repeat(self, times: usize) -> Reply {
        self.with(|s| s.repeat = times.max(1))
    }

    /// Sends the body in pieces of at most `bytes` bytes, so frames and UTF-8 characters are cut.
    pub fn split_every(self, bytes: usize) -> Reply {
        self.with(|s| s.split_every = Some(bytes.max(1)))
    }

    /// After the tokens, cuts the connection instead of finishing.
    pub fn then_drop(self) -> Reply {
        self.with(|s| s.end = End::Drop)
    }

    /// After the tokens, sends a chunk that is not JSON, then ends the body.
    pub fn then_malformed(self) -> Reply {
        self.with(|s| s.end = End::Malformed)
    }

    /// After the tokens, sends an error object inside the stream, then ends the body.
    pub fn then_error(self, message: &str) -> Reply {
        self.with(|s| s.end = End::Error(message.to_owned()))
    }

    /// After the tokens, sends nothing more until the client leaves (idle timeout tests).
    pub fn then_hang(self) -> Reply {
        self.with(|s| s.end = End::Hang)
    }
}

/// What the handlers share.
#[derive(Debug)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// The number of requests received, to wait on.
    request_count: watch::Sender<usize>,
    /// The number of answers whose client closed the connection before the answer's end.
    disconnects: watch::Sender<usize>,
    panicked: AtomicBool,
    shutdown: CancellationToken,
}

/// Locks a mutex, ignoring poisoning: a panic is recorded separately and reported on drop.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The running fake. See the module docs.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    /// Starts the fake on 127.0.0.1, port 0. Its default reply streams "Hello from the fake
    /// upstream."
    ///
    /// # Panics
    ///
    /// When no port can be bound (a broken test machine).
    pub async fn start() -> FakeUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake upstream");
        let addr = listener
            .local_addr()
            .expect("local address of the fake upstream");
        let shared = Arc::new(Shared {
            replies: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::tokens([
                "Hello",
                " from",
                " the",
                " fake",
                " upstream.",
            ])),
            requests: Mutex::new(Vec::new()),
            request_count: watch::channel(0).0,
            disconnects: watch::channel(0).0,
            panicked: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(shared.clone());
        let shutdown = shared.shutdown.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "The fake upstream stopped.");
            }
        });
        FakeUpstream {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`: the base URL of an Anthropic-style bot.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: the base URL of an OpenAI-style bot.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues the reply to the next request not yet answered.
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.replies).push_back(reply);
    }

    /// The reply used when none is queued.
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.shared.default) = reply;
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The number of requests so far.
    pub fn request_count(&self) -> usize {
        *self.shared.request_count.borrow()
    }

    /// How many answers were cut short by their client closing the connection.
    pub fn disconnects(&self) -> usize {
        *self.shared.disconnects.borrow()
    }

    /// Waits until `count` requests arrived; false if `within` ran out first.
    pub async fn wait_for_requests(&self, count: usize, within: Duration) -> bool {
        let mut rx = self.shared.request_count.subscribe();
        tokio::time::timeout(within, rx.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until a client closed its connection before the end of an answer (the total
    /// reaches `count`); false if `within` ran out first.
    pub async fn wait_for_disconnects(&self, count: usize, within: Duration) -> bool {
        let mut rx = self.shared.disconnects.subscribe();
        tokio::time::timeout(within, rx.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.server.abort();
        if self.shared.panicked.load(Ordering::SeqCst) && !std::thread::panicking() {
            panic!("the fake upstream panicked while handling a request (see the output above)");
        }
    }
}

/// A URL on 127.0.0.1 where nothing listens: connecting is refused.
///
/// # Panics
///
/// When no port can be bound (a broken test machine).
pub fn closed_port_url() -> String {
    // Bind to get a free port, then close it. Another process could take the port in between,
    // but the kernel hands out ephemeral ports in sequence, so that is very unlikely.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    format!("http://{addr}")
}

async fn openai(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(shared, Format::OpenAi, request).await
}

async fn anthropic(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(shared, Format::Anthropic, request).await
}

/// Runs the handler, recording a panic instead of letting it vanish with the connection task.
async fn handle(shared: Arc<Shared>, format: Format, request: Request) -> Response {
    let outcome = std::panic::AssertUnwindSafe(respond(shared.clone(), format, request))
        .catch_unwind()
        .await;
    outcome.unwrap_or_else(|_| {
        shared.panicked.store(true, Ordering::SeqCst);
        plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the fake upstream panicked",
        )
    })
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

async fn respond(shared: Arc<Shared>, format: Format, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return plain(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    lock(&shared.requests).push(RecordedRequest {
        format,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body: body.clone(),
    });
    shared.request_count.send_modify(|n| *n += 1);

    let reply = lock(&shared.replies)
        .pop_front()
        .unwrap_or_else(|| lock(&shared.default).clone());
    match reply.kind {
        ReplyKind::Status {
            status,
            message,
            headers,
        } => status_response(format, status, &message, &headers),
        ReplyKind::Stream(script) => stream_response(shared, format, &body, script),
    }
}

fn status_response(
    format: Format,
    status: u16,
    message: &str,
    headers: &[(String, String)],
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match (format, status.as_u16()) {
        (Format::OpenAi, 429) => "rate_limit_exceeded",
        (Format::OpenAi, 400..=499) => "invalid_request_error",
        (Format::OpenAi, _) => "server_error",
        (Format::Anthropic, 429) => "rate_limit_error",
        (Format::Anthropic, 401) => "authentication_error",
        (Format::Anthropic, 400..=499) => "invalid_request_error",
        (Format::Anthropic, _) => "api_error",
    };
    let body = match format {
        Format::OpenAi => json!({"error": {"message": message, "type": kind, "code": null}}),
        Format::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    };
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            out.insert(name, value);
        }
    }
    response
}

type Chunk = Result<Bytes, std::io::Error>;

/// Streams the script from a task, through a channel: the task sees the channel close when
/// hyper drops the body, which is how we notice that the client went away.
fn stream_response(
    shared: Arc<Shared>,
    format: Format,
    request: &Value,
    script: StreamScript,
) -> Response {
    let (tx, rx) = mpsc::channel::<Chunk>(16);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let writer = Writer {
        tx,
        split_every: script.split_every,
        shutdown: shared.shutdown.clone(),
    };
    let task_shared = shared.clone();
    let task = tokio::spawn(async move {
        let finished = run_script(&writer, format, &model, include_usage, &script).await;
        if finished.is_err() && !writer.shutdown.is_cancelled() {
            task_shared.disconnects.send_modify(|n| *n += 1);
        }
    });
    // A panic inside the script task must fail the test too.
    tokio::spawn(async move {
        if task.await.is_err_and(|e| e.is_panic()) {
            shared.panicked.store(true, Ordering::SeqCst);
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// The client left (or the fake is shutting down) before the script's end.
#[derive(Debug)]
struct Gone;

struct Writer {
    tx: mpsc::Sender<Chunk>,
    split_every: Option<usize>,
    shutdown: CancellationToken,
}

impl Writer {
    async fn frame(&self, event: Option<&str>, data: &str) -> Result<(), Gone> {
        let mut out = Vec::with_capacity(data.len() + 32);
        // Event names and data here are ours: encoding cannot fail; if it did, send raw data.
        if rill_sse::encode_event(&mut out, None, event, data).is_err() {
            out = format!("data: {data}\n\n").into_bytes();
        }
        self.raw(out).await
    }

    async fn raw(&self, bytes: Vec<u8>) -> Result<(), Gone> {
        let bytes = Bytes::from(bytes);
        let step = self.split_every.unwrap_or(bytes.len().max(1));
        let mut start = 0;
        while start < bytes.len() {
            let end = (start + step).min(bytes.len());
            self.send(Ok(bytes.slice(start..end))).await?;
            start = end;
        }
        Ok(())
    }

    async fn send(&self, chunk: Chunk) -> Result<(), Gone> {
        tokio::select! {
            sent = self.tx.send(chunk) => sent.map_err(|_| Gone),
            () = self.shutdown.cancelled() => Err(Gone),
        }
    }

    /// Waits, noticing meanwhile if the client left.
    async fn pause(&self, duration: Duration) -> Result<(), Gone> {
        if duration.is_zero() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            () = self.tx.closed() => Err(Gone),
            () = self.shutdown.cancelled() => Err(Gone),
        }
    }
}

async fn run_script(
    w: &Writer,
    format: Format,
    model: &str,
    include_usage: bool,
    s: &StreamScript,
) -> Result<(), Gone> {
    if let Some(frames) = &s.recorded {
        for (i, frame) in frames.iter().enumerate() {
            if i > 0 {
                w.pause(s.token_interval).await?;
            }
            w.raw(frame.clone().into_bytes()).await?;
        }
        return match &s.end {
            End::Hang => {
                tokio::select! {
                    () = w.tx.closed() => Err(Gone),
                    () = w.shutdown.cancelled() => Err(Gone),
                }
            }
            _ => Ok(()),
        };
    }
    let sent = s.tokens.len() * s.repeat;
    let (input_tokens, output_tokens) = s.usage.unwrap_or((12, sent as u64));
    let openai_chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    };
    let anthropic_delta = |text: &str| {
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
            .to_string()
    };

    // The opening frames come at once, as real APIs send them with the headers.
    match format {
        Format::OpenAi => {
            let first = openai_chunk(json!({"role": "assistant", "content": ""}), None);
            w.frame(None, &first).await?;
        }
        Format::Anthropic => {
            let start = json!({
                "type": "message_start",
                "message": {"id": "msg_fake", "type": "message", "role": "assistant", "content": [],
                            "model": model, "stop_reason": null, "stop_sequence": null,
                            "usage": {"input_tokens": input_tokens, "output_tokens": 1}},
            });
            w.frame(Some("message_start"), &start.to_string()).await?;
            let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
            w.frame(Some("content_block_start"), &block.to_string())
                .await?;
            w.frame(Some("ping"), r#"{"type": "ping"}"#).await?;
        }
    }

    w.pause(s.first_token_delay).await?;
    let mut first = true;
    for _ in 0..s.repeat {
        for token in &s.tokens {
            if !first {
                w.pause(s.token_interval).await?;
            }
            first = false;
            match format {
                Format::OpenAi => {
                    let chunk = openai_chunk(json!({"content": token}), None);
                    w.frame(None, &chunk).await?;
                }
                Format::Anthropic => {
                    w.frame(Some("content_block_delta"), &anthropic_delta(token))
                        .await?;
                }
            }
        }
    }

    match &s.end {
        End::Complete => match format {
            Format::OpenAi => {
                let reason = s.finish_reason.as_deref().unwrap_or("stop");
                w.frame(None, &openai_chunk(json!({}), Some(reason)))
                    .await?;
                if include_usage {
                    let usage = json!({
                        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                        "model": model, "choices": [],
                        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                                  "total_tokens": input_tokens + output_tokens},
                    });
                    w.frame(None, &usage.to_string()).await?;
                }
                w.frame(None, "[DONE]").await?;
            }
            Format::Anthropic => {
                let reason = s.finish_reason.as_deref().unwrap_or("end_turn");
                w.frame(
                    Some("content_block_stop"),
                    r#"{"type":"content_block_stop","index":0}"#,
                )
                .await?;
                let delta = json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": null},
                    "usage": {"output_tokens": output_tokens},
                });
                w.frame(Some("message_delta"), &delta.to_string()).await?;
                w.frame(Some("message_stop"), r#"{"type":"message_stop"}"#)
                    .await?;
            }
        },
        End::Drop => {
            // hyper discards what it has not written yet when a body fails: let it take and
            // flush the tokens first (it flushes whenever the body has nothing ready), so the
            // client sees the text and then the cut.
            for _ in 0..1000 {
                if w.tx.capacity() == w.tx.max_capacity() {
                    break;
                }
                w.pause(Duration::from_millis(1)).await?;
            }
            w.pause(Duration::from_millis(50)).await?;
            w.send(Err(std::io::Error::other(
                "the fake upstream cuts the connection",
            )))
            .await?;
        }
        End::Malformed => match format {
            Format::OpenAi => {
                w.raw(
                    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"oops\"\n\n"
                        .to_vec(),
                )
                .await?;
            }
            Format::Anthropic => {
                w.raw(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":\n\n".to_vec())
                    .await?;
            }
        },
        End::Error(message) => match format {
            Format::OpenAi => {
                let error =
                    json!({"error": {"message": message, "type": "server_error", "code": null}});
                w.frame(None, &error.to_string()).await?;
            }
            Format::Anthropic => {
                let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": message}});
                w.frame(Some("error"), &error.to_string()).await?;
            }
        },
        End::Hang => {
            tokio::select! {
                () = w.tx.closed() => return Err(Gone),
                () = w.shutdown.cancelled() => return Err(Gone),
            }
        }
    }
    Ok(())
}
