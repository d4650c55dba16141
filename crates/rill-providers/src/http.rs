//! The HTTP side shared by the OpenAI and Anthropic providers: the one connection pool, the
//! retries before the first token, and the SSE-reading stream with its first-token and idle
//! timeouts.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use rill_core::{CompletionStream, ProviderError, ProviderErrorKind, ProviderEvent};
use rill_dialects::Decoder;
use tokio::time::{Instant, timeout_at};

use crate::settings::ProviderSettings;

/// How much of an error body we read to find its message: error bodies are small, and a
/// misbehaving upstream must not make us buffer megabytes.
const ERROR_BODY_LIMIT: usize = 16 * 1024;
/// How much of an upstream's message we pass on to the user.
const MESSAGE_LIMIT: usize = 300;
/// How long we keep reading after the end of an answer to see the body end, so the connection
/// goes back to the pool instead of being closed.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(250);

/// The client every bot shares, one per connect timeout (a client-wide setting in reqwest).
/// A process has one [`ProviderSettings`], so in practice one pool: bots talking to the same
/// host reuse its connections.
pub(crate) fn shared_client(connect_timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    static CLIENTS: OnceLock<Mutex<Vec<(Duration, reqwest::Client)>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(|| Mutex::new(Vec::new()));
    // A poisoned lock only means another thread panicked while pushing: the list is intact.
    let mut clients = clients
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, client)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .user_agent(concat!("rill/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| {
            tracing::error!(error = %error, "Could not build the HTTP client for providers.");
            ProviderError::new(
                ProviderErrorKind::Config,
                "could not set up the HTTP client",
            )
        })?;
    clients.push((connect_timeout, client.clone()));
    Ok(client)
}

/// An API key. Its `Debug` prints no key, and [`ApiKey::redact`] scrubs it from upstream
/// messages before they reach a user or a log line.
#[derive(Clone)]
pub(crate) struct ApiKey(Arc<str>);

impl ApiKey {
    pub(crate) fn new(key: String) -> Self {
        ApiKey(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// A header value that hyper and reqwest will never print.
    pub(crate) fn header(
        &self,
        prefix: &str,
        env_name: &str,
    ) -> Result<HeaderValue, ProviderError> {
        let mut value =
            HeaderValue::try_from(format!("{prefix}{}", self.expose())).map_err(|_| {
                ProviderError::new(
                    ProviderErrorKind::Config,
                    format!("the API key in {env_name} is not a valid HTTP header value"),
                )
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Removes the key (if any) from text that came from the upstream, and shortens it.
pub(crate) fn scrub(text: &str, key: Option<&ApiKey>) -> String {
    let mut text = match key {
        Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "[redacted]"),
        _ => text.to_owned(),
    };
    if text.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// One upstream endpoint with its auth headers: the part of a provider that talks HTTP.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    pub(crate) client: reqwest::Client,
    pub(crate) settings: ProviderSettings,
    pub(crate) url: reqwest::Url,
    /// Auth and version headers, built once; auth values are marked sensitive.
    pub(crate) headers: HeaderMap,
    pub(crate) key: Option<ApiKey>,
    /// For log lines: which bot this is (never the URL, which may carry credentials).
    pub(crate) bot: Arc<str>,
}

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
struct Failure {
    error: ProviderError,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl Upstream {
    /// Sends the request, retrying connection errors, 429 and 5xx with backoff, until a 2xx
    /// answer arrives. Returns it with the instant its attempt started (the first-token clock).
    pub(crate) async fn open(
        &self,
        body: Vec<u8>,
    ) -> Result<(reqwest::Response, Instant), ProviderError> {
        self.open_with(body, HeaderMap::new()).await
    }

    /// [`Upstream::open`] with headers of this request only (a signed identity) added to the
    /// endpoint's own.
    pub(crate) async fn open_with(
        &self,
        body: Vec<u8>,
        extra: HeaderMap,
    ) -> Result<(reqwest::Response, Instant), ProviderError> {
        // Shared, not copied, by every attempt.
        let body = bytes::Bytes::from(body);
        let max = self.settings.max_attempts.get();
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let deadline = started + self.settings.first_token_timeout;
            let request = self
                .client
                .post(self.url.clone())
                .headers(self.headers.clone())
                .headers(extra.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .body(body.clone());
            let failure = match timeout_at(deadline, request.send()).await {
                Err(_) => Failure {
                    error: ProviderError::new(
                        ProviderErrorKind::Timeout,
                        format!(
                            "the upstream did not answer within {} s",
                            self.settings.first_token_timeout.as_secs_f32()
                        ),
                    ),
                    // A model that is slow to start will be as slow the next time: retrying
                    // would only multiply the user's wait.
                    retryable: false,
                    retry_after: None,
                },
                Ok(Ok(response)) if response.status().is_success() => {
                    return Ok((response, started));
                }
                Ok(Ok(response)) => self.status_failure(response, deadline).await,
                Ok(Err(error)) => self.send_failure(error.without_url()),
            };
            if !failure.retryable || attempt >= max {
                let mut error = failure.error;
                if failure.retryable {
                    error.message = format!("{} (after {attempt} attempts)", error.message);
                }
                tracing::warn!(bot = %self.bot, attempt, kind = %error.kind, message = %error.message, "Upstream request failed.");
                return Err(error);
            }
            let delay = retry_delay(&self.settings, attempt, failure.retry_after, |max| {
                rand::random_range(0..=max)
            });
            tracing::info!(
                bot = %self.bot,
                attempt,
                kind = %failure.error.kind,
                delay_ms = delay.as_millis() as u64,
                "Upstream request failed before the first token; retrying."
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// `error` comes `without_url`: the URL may carry credentials (some gateways take a key
    /// as a query parameter), so it stays out of logs.
    fn send_failure(&self, error: reqwest::Error) -> Failure {
        tracing::debug!(bot = %self.bot, error = %ErrorChain(&error), "Upstream send failed.");
        let (kind, message, retryable) = if error.is_builder() {
            (
                ProviderErrorKind::Config,
                "the request to the upstream could not be built",
                false,
            )
        } else if error.is_timeout() {
            (
                ProviderErrorKind::Timeout,
                "connecting to the upstream timed out",
                true,
            )
        } else if error.is_connect() {
            (
                ProviderErrorKind::Connect,
                "could not connect to the upstream",
                true,
            )
        } else {
            (
                ProviderErrorKind::Connect,
                "the connection to the upstream failed before it answered",
                true,
            )
        };
        Failure {
            error: ProviderError::new(kind, message),
            retryable,
            retry_after: None,
        }
    }

    async fn status_failure(&self, mut response: reqwest::Response, deadline: Instant) -> Failure {
        let status = response.status();
        let retry_after = parse_retry_after(response.headers(), SystemTime::now());
        // The body explains the error; read a bounded amount of it, within the same deadline.
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_LIMIT {
            match timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let detail = error_message(&body)
            .map(|m| format!(": {}", scrub(&m, self.key.as_ref())))
            .unwrap_or_default();
        let (kind, what, retryable) = if status == StatusCode::TOO_MANY_REQUESTS {
            (
                ProviderErrorKind::RateLimited,
                "the upstream is rate limiting",
                true,
            )
        } else if status.is_server_error() {
            (
                ProviderErrorKind::Unavailable,
                "the upstream is unavailable",
                true,
            )
        } else {
            (
                ProviderErrorKind::Rejected,
                "the upstream rejected the request",
                false,
            )
        };
        Failure {
            error: ProviderError::new(kind, format!("{what} ({status}){detail}")),
            retryable,
            retry_after,
        }
    }
}

/// Displays a reqwest error (taken `without_url`) and its sources, for a log line.
struct ErrorChain<'a>(&'a reqwest::Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(self.0);
        write!(f, "{}", self.0)?;
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

/// The message of an error body: `{"error": {"message": ...}}` (OpenAI and Anthropic alike) or
/// `{"error": "..."}` (Ollama and some proxies).
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    rill_dialects::error_object_message(value.get("error")?)
}

/// `Retry-After` as delay seconds or an HTTP date, or OpenAI's `retry-after-ms`.
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait after failed attempt number `attempt` (1-based): the upstream's `Retry-After` when
/// it gave one, else exponential backoff with "equal jitter" (half fixed, half random, so
/// clients that failed together do not retry together); both capped by `backoff_max`.
/// `jitter(max)` returns a number in `0..=max`.
pub(crate) fn retry_delay(
    settings: &ProviderSettings,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: impl FnOnce(u64) -> u64,
) -> Duration {
    if let Some(after) = retry_after {
        return after.min(settings.backoff_max);
    }
    let exponent = attempt.saturating_sub(1).min(20);
    let full = settings
        .backoff_base
        .saturating_mul(1 << exponent)
        .min(settings.backoff_max);
    let half = full / 2;
    let half_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(jitter(half_ms).min(half_ms))
}

/// Reads the body of a successful answer. Holds the response and nothing else: no task is
/// spawned, so dropping the stream drops the response, which closes the upstream connection.
struct Reader<D> {
    response: Option<reqwest::Response>,
    parser: rill_sse::Parser,
    decoder: D,
    queue: VecDeque<ProviderEvent>,
    failure: Option<ProviderError>,
    /// When the next token is due: first-token deadline, then the idle deadline.
    deadline: Instant,
    idle: Duration,
    got_token: bool,
    complete: bool,
    bot: Arc<str>,
    /// Scrubbed from upstream text in errors.
    key: Option<ApiKey>,
}

/// The stream of a successful response.
pub(crate) fn read_stream<D: Decoder>(
    upstream: &Upstream,
    response: reqwest::Response,
    started: Instant,
    decoder: D,
) -> CompletionStream {
    let reader = Reader {
        response: Some(response),
        parser: rill_sse::Parser::new(),
        decoder,
        queue: VecDeque::new(),
        failure: None,
        deadline: started + upstream.settings.first_token_timeout,
        idle: upstream.settings.idle_timeout,
        got_token: false,
        complete: false,
        bot: upstream.bot.clone(),
        key: upstream.key.clone(),
    };
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next().await?;
        Some((item, reader))
    }))
}

impl<D: Decoder> Reader<D> {
    async fn next(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                if matches!(event, ProviderEvent::Finish { .. }) {
                    self.drain().await;
                }
                return Some(Ok(event));
            }
            if let Some(mut error) = self.failure.take() {
                // Decoders quote the upstream, which may echo a key.
                error.message = scrub(&error.message, self.key.as_ref());
                tracing::warn!(bot = %self.bot, kind = %error.kind, message = %error.message, got_token = self.got_token, "Upstream stream failed.");
                self.response = None;
                return Some(Err(error));
            }
            let response = self.response.as_mut()?;
            match timeout_at(self.deadline, response.chunk()).await {
                Err(_) => {
                    let message = if self.got_token {
                        format!(
                            "no token from the upstream for {} s",
                            self.idle.as_secs_f32()
                        )
                    } else {
                        "no first token from the upstream in time".to_owned()
                    };
                    self.failure = Some(ProviderError::new(ProviderErrorKind::Timeout, message));
                }
                Ok(Err(error)) => {
                    let error = error.without_url();
                    tracing::debug!(bot = %self.bot, error = %ErrorChain(&error), "Upstream body failed.");
                    self.failure = Some(ProviderError::new(
                        ProviderErrorKind::Protocol,
                        "the upstream stream broke off",
                    ));
                }
                Ok(Ok(None)) => {
                    self.response = None;
                    if !self.complete {
                        if let Err(error) = self.decoder.eof(&mut self.queue) {
                            self.failure = Some(error);
                        }
                        self.complete = true;
                    }
                }
                Ok(Ok(Some(chunk))) => self.feed(&chunk),
            }
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.complete || self.failure.is_some() {
            return;
        }
        let before = self.queue.len();
        let Reader {
            parser,
            decoder,
            queue,
            failure,
            complete,
            ..
        } = self;
        parser.feed(chunk, |item| {
            let rill_sse::Item::Event(event) = item else {
                return;
            };
            if *complete || failure.is_some() {
                return;
            }
            match decoder.event(event.event, event.data, queue) {
                Ok(done) => *complete = done,
                Err(error) => *failure = Some(error),
            }
        });
        if self.queue.len() > before {
            // Idle is measured between tokens: only something the model wrote resets the
            // clock (not a keep-alive or a usage report).
            let tokens = self
                .queue
                .iter()
                .skip(before)
                .any(|e| !matches!(e, ProviderEvent::Finish { .. }));
            if tokens {
                self.got_token = true;
                self.deadline = Instant::now() + self.idle;
            }
        }
    }

    /// Reads the rest of a complete answer's body (usually just its end) so the connection
    /// can be reused; gives up quickly, dropping the connection, if the upstream lingers.
    async fn drain(&mut self) {
        let Some(mut response) = self.response.take() else {
            return;
        };
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut budget = ERROR_BODY_LIMIT;
        while let Ok(Ok(Some(chunk))) = timeout_at(deadline, response.chunk()).await {
            budget = budget.saturating_sub(chunk.len());
            if budget == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProviderSettings {
        ProviderSettings {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..ProviderSettings::default()
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let s = settings();
        assert_eq!(retry_delay(&s, 1, None, |_| 0), Duration::from_millis(50));
        assert_eq!(
            retry_delay(&s, 1, None, |max| max),
            Duration::from_millis(100)
        );
        assert_eq!(retry_delay(&s, 2, None, |_| 0), Duration::from_millis(100));
        assert_eq!(
            retry_delay(&s, 3, None, |max| max),
            Duration::from_millis(400)
        );
        assert_eq!(retry_delay(&s, 9, None, |max| max), Duration::from_secs(1));
        assert_eq!(
            retry_delay(&s, 40, None, |_| u64::MAX),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let s = settings();
        let short = Some(Duration::from_millis(300));
        assert_eq!(retry_delay(&s, 1, short, |_| 0), Duration::from_millis(300));
        let long = Some(Duration::from_secs(120));
        assert_eq!(retry_delay(&s, 1, long, |_| 0), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_parses_seconds_dates_and_ms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(parse_retry_after(&headers, now), None);
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(42));
        headers.insert("retry-after", HeaderValue::try_from(date).unwrap());
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_secs(42))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        headers.insert("retry-after", HeaderValue::try_from(past).unwrap());
        assert_eq!(parse_retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers, now), None);
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn error_bodies_of_every_shape() {
        let openai = br#"{"error":{"message":"Bad key","type":"invalid_request_error"}}"#;
        assert_eq!(
            error_message(openai).as_deref(),
            Some("Bad key (invalid_request_error)")
        );
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            error_message(anthropic).as_deref(),
            Some("Overloaded (overloaded_error)")
        );
        assert_eq!(
            error_message(br#"{"error":"model 'x' not found"}"#).as_deref(),
            Some("model 'x' not found")
        );
        assert_eq!(error_message(b"<html>502</html>"), None);
    }

    #[test]
    fn scrub_removes_the_key_and_shortens() {
        let key = ApiKey::new("sk-secret-123".into());
        assert_eq!(
            scrub("bad key sk-secret-123 given", Some(&key)),
            "bad key [redacted] given"
        );
        let long = "한".repeat(400);
        let short = scrub(&long, None);
        assert!(short.len() <= MESSAGE_LIMIT + '…'.len_utf8());
        assert!(short.ends_with('…'));
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    }
}
