//! The accept loop: plain TCP (HTTP/1.1, and h2c with prior knowledge) or TLS (h2 or HTTP/1.1 by
//! ALPN), with bounded connections and graceful shutdown bounded by a grace period.
//!
//! Written here rather than using `axum::serve` because axum cannot serve TLS; one loop for both
//! keeps shutdown behaviour identical. hyper-util's `auto` builder reads the first bytes of a
//! plain connection and serves HTTP/2 when they are the h2 preface (prior knowledge).
//!
//! **Every socket is bounded in time and in number** ([`ConnectionConfig`]), because neither
//! hyper nor hyper-util bounds what a client that sends nothing costs:
//!
//! - *Before the first request* (the TLS handshake, the version sniffing of the `auto` builder,
//!   the first head) a connection has `header_read_timeout`; hyper-util would wait forever for a
//!   socket that sends nothing.
//! - *Between requests* it has `idle_timeout`: when no request is in flight for that long it is
//!   closed gracefully (HTTP/2: GOAWAY). An open event stream is a request in flight, so streams
//!   are never cut by this. On HTTP/1.1 the next request's head must arrive within it too.
//! - *A request body* must arrive whole within `body_read_timeout` of its head ([`TimedBody`]),
//!   else the handler reading it answers `408 body_timeout` and the connection closes; hyper has
//!   no such timeout, so one byte every few seconds kept a socket forever.
//! - *Open sockets* are capped: the loop stops accepting at `max_open_connections`, lowered to
//!   keep headroom below the process's open-files limit (`RLIMIT_NOFILE`) for the database,
//!   Redis, upstream model requests and the listener itself ([`connection_cap`]). Running out of
//!   descriptors is what made `accept` fail in a loop and `/healthz` stop answering; at the cap,
//!   new connections wait in the kernel's backlog until a socket closes.
//! - Errors of `accept` are logged at most once a second, with the count of those suppressed.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::TlsConfig;
use crate::h1_stream;
use crate::stall::StallGuard;

/// HTTP/2 pings on idle connections, so dead peers (a closed laptop) free their streams.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Bounds of every client connection (validated by the binary; see docs/configuration.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// From accept to the first request's complete head (TLS handshake included).
    pub header_read_timeout: Duration,
    /// From a request's head to the end of its body.
    pub body_read_timeout: Duration,
    /// With no request in flight (HTTP/1.1 keep-alive, HTTP/2 without streams), a connection is
    /// closed after this long.
    pub idle_timeout: Duration,
    /// Open client sockets (streams or not); lowered at start to keep headroom below the
    /// open-files limit.
    pub max_open_connections: usize,
    /// Serve the first event-stream request of a plain HTTP/1.1 connection outside hyper
    /// ([`crate::h1_stream`]): an idle stream then holds no HTTP buffers. Off: hyper serves
    /// every request.
    pub sse_fast_path: bool,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            // Room for `max_connections` (10,000) streams and the requests around them.
            max_open_connections: 20_000,
            sse_fast_path: true,
        }
    }
}

/// Open client connections, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicUsize,
    limit: AtomicUsize,
}

impl ConnectionStats {
    /// Client sockets open now (handshaking, idle or serving).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The cap in force (0 before the accept loop starts).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }
}

/// What [`serve_router`] needs besides the listener, the router and the shutdown token.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// How long graceful shutdown waits for connections after streams were told to go.
    pub grace: Duration,
    /// Serve TLS (h2 or HTTP/1.1 by ALPN) instead of plain HTTP/1.1 and h2c.
    pub tls: Option<TlsConfig>,
    /// A connection whose writes make no progress this long is closed.
    pub write_stall: Duration,
    pub connections: ConnectionConfig,
    /// Where the loop reports open connections (the state's, so `/metrics` sees them).
    pub stats: Arc<ConnectionStats>,
}

impl ServeOptions {
    /// The options of `config`, reporting into `stats`.
    pub fn new(config: &crate::Config, stats: Arc<ConnectionStats>) -> Self {
        ServeOptions {
            grace: config.shutdown_grace,
            tls: config.tls.clone(),
            write_stall: config.streams.write_stall_timeout,
            connections: config.connections.clone(),
            stats,
        }
    }
}

/// The open-sockets cap for a configured maximum and the process's soft open-files limit
/// (`None`: unknown or unlimited): a reserve of an eighth of the limit, at least 64, is kept for
/// everything that is not a client socket (listener, database and Redis pools, upstream model
/// requests, files, the runtime's own descriptors). Never below 1.
pub fn connection_cap(configured: usize, open_files_limit: Option<u64>) -> usize {
    let Some(limit) = open_files_limit else {
        return configured.max(1);
    };
    let reserve = (limit / 8).max(64);
    let usable = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    configured.min(usable).max(1)
}

/// The soft `RLIMIT_NOFILE` of this process, `None` when unlimited or unknown.
fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::getrlimit(rlimit::Resource::NOFILE) {
            Ok((soft, _)) if soft != rlimit::INFINITY => Some(soft),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "cannot read the open-files limit");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Serves `router` on `listener` (over TLS when `options.tls` is set) until `shutdown` fires,
/// then stops accepting, asks every connection to finish (HTTP/2 GOAWAY; streams end on
/// `shutdown` themselves) and waits at most `options.grace` for them; connections still open
/// then are closed.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> io::Result<()> {
    let acceptor = options
        .tls
        .as_ref()
        .map(|tls| TlsAcceptor::from(tls.server_config()));
    let limits = Arc::new(options.connections.clone());
    let cap = connection_cap(limits.max_open_connections, open_files_limit());
    if cap < limits.max_open_connections {
        tracing::warn!(
            cap,
            configured = limits.max_open_connections,
            "the open-files limit allows fewer connections than `max_open_connections`; raise \
             it (ulimit -n) to serve more"
        );
    }
    options.stats.limit.store(cap, Ordering::Relaxed);
    let permits = Arc::new(Semaphore::new(cap));
    let tracker = TaskTracker::new();
    // Fired when the grace period ran out: connections still open are dropped.
    let force = CancellationToken::new();
    let mut accept_log = LogLimiter::new(Duration::from_secs(1));
    let mut cap_log = LogLimiter::new(Duration::from_secs(10));
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(suppressed) = cap_log.allow(Instant::now()) {
                    tracing::warn!(
                        cap,
                        suppressed,
                        "at the open-connections cap; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if let Some(suppressed) = accept_log.allow(Instant::now()) {
                        tracing::warn!(%error, suppressed, "cannot accept a connection");
                    }
                    if is_resource_exhaustion(&error) {
                        // Out of descriptors or memory: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        // Small SSE frames must leave at once, not wait for Nagle.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        let accepted_at = Instant::now();
        let tcp = StallGuard::new(tcp, options.write_stall);
        let counted = Counted::new(options.stats.clone(), permit);
        let conn = Conn {
            peer,
            router: router.clone(),
            limits: limits.clone(),
            shutdown: shutdown.clone(),
            force: force.clone(),
        };
        match &acceptor {
            None => {
                tracker.spawn(async move {
                    let _counted = counted;
                    conn.serve_plain(tcp, accepted_at).await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tracker.spawn(async move {
                    let _counted = counted;
                    let deadline = accepted_at + conn.limits.header_read_timeout;
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp));
                    let tls = tokio::select! {
                        () = conn.shutdown.cancelled() => return,
                        tls = handshake => tls,
                    };
                    match tls {
                        Ok(Ok(tls)) => conn.serve(tls, accepted_at, false).await,
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tracker.close();
    match tokio::time::timeout(options.grace, tracker.wait()).await {
        Ok(()) => tracing::debug!("every connection finished"),
        Err(_) => {
            tracing::warn!(
                grace_secs = options.grace.as_secs_f64(),
                "graceful shutdown timed out; closing the remaining connections"
            );
            force.cancel();
        }
    }
    Ok(())
}

/// Errors of `accept` that another immediate `accept` would meet again.
fn is_resource_exhaustion(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOMEM (the same numbers on every Unix): raw values, since
    // `io::ErrorKind` has no kind for the first two.
    matches!(error.raw_os_error(), Some(24 | 23 | 12)) || error.kind() == io::ErrorKind::OutOfMemory
}

/// Counts a connection (its permit and the open gauge) until dropped.
struct Counted {
    stats: Arc<ConnectionStats>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Counted {
    fn new(stats: Arc<ConnectionStats>, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Counted {
            stats,
            _permit: permit,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// At most one log line per `every`, counting the ones it held back.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be written now (`n` were held back since the last one), else
    /// `None` (and this one is counted).
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Requests in flight on one connection, and whether it served any: what its idle timer
/// watches. An atomic and one `Notify` (not a `watch` channel, which carries eight): it lives as
/// long as every idle stream's connection.
#[derive(Debug, Default)]
struct Activity {
    in_flight: AtomicUsize,
    served: AtomicBool,
    /// Woken when a request starts or the last one in flight ends.
    changed: Notify,
}

/// One accepted connection and what serving it needs.
struct Conn {
    peer: SocketAddr,
    router: Router,
    limits: Arc<ConnectionConfig>,
    shutdown: CancellationToken,
    force: CancellationToken,
}

impl Conn {
    /// A plain-TCP connection: its first request is read here, and an event stream is served
    /// by [`h1_stream`] (see there why); everything else, and whatever follows, by hyper.
    async fn serve_plain<IO>(self, mut io: IO, accepted_at: Instant)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if !self.limits.sse_fast_path {
            return Box::pin(self.serve(io, accepted_at, false)).await;
        }
        let deadline = accepted_at + self.limits.header_read_timeout;
        let head = tokio::select! {
            () = self.shutdown.cancelled() => return,
            head = tokio::time::timeout_at(deadline, h1_stream::read_head(&mut io, self.peer)) => head,
        };
        let (request, rest) = match head {
            Ok(Ok(h1_stream::Head::Stream { request, rest })) => (request, rest),
            Ok(Ok(h1_stream::Head::Other(read))) => {
                // Boxed, here, above and below: hyper's connection is large (about 3 KiB),
                // and an idle stream's task should not carry its space.
                let io = h1_stream::Prefixed::new(io, read);
                return Box::pin(self.serve(io, accepted_at, false)).await;
            }
            Ok(Ok(h1_stream::Head::Closed)) => return,
            Ok(Err(error)) => {
                tracing::debug!(%error, peer = %self.peer, "cannot read a request head");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "no request head in time");
                return;
            }
        };
        let after =
            h1_stream::answer(&mut io, request, rest, self.router.clone(), &self.force).await;
        if let h1_stream::After::KeepAlive { rest } = after
            && !self.shutdown.is_cancelled()
        {
            let io = h1_stream::Prefixed::new(io, rest);
            Box::pin(self.serve(io, accepted_at, true)).await;
        }
    }

    /// Serves the connection with hyper; `served`: a request was already answered on it (so
    /// the idle timeout applies, not the first head's).
    async fn serve<IO>(self, io: IO, accepted_at: Instant, served: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            peer,
            router,
            limits,
            shutdown,
            force,
        } = self;
        let activity = Arc::new(Activity::default());
        activity.served.store(served, Ordering::Release);
        let watched = activity.clone();
        let body_timeout = limits.body_read_timeout;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(activity.clone());
            request.extensions_mut().insert(ConnectInfo(peer));
            let request =
                request.map(|body| axum::body::Body::new(TimedBody::new(body, body_timeout)));
            let response = router.clone().oneshot(request);
            async move {
                let response = response.await?;
                // The request counts as in flight until its response body is done (an event
                // stream: until it ends), so the idle timer never cuts a stream.
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The smallest read buffer hyper allows: an idle event stream keeps its buffer for its
        // whole life, and hyper's default lets it grow to 16 KiB. Measured with `rill bench
        // connections -n 5000`: 21.1 KiB of server memory per idle connection before, 14.0 KiB
        // after. It also caps a request head at 8 KiB (larger ones get 431), like nginx's default.
        // hyper's own head timer is off: it starts as soon as a connection is idle, so it would
        // be a second, shorter idle timeout; the idle timer below covers slow heads too.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None::<Duration>)
            .max_buf_size(8192);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEP_ALIVE);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let first_deadline = accepted_at + limits.header_read_timeout;
        let mut closing = false;
        let mut idle_closing = false;
        let result = loop {
            let idle = idle(&watched, first_deadline, limits.idle_timeout);
            // One wait at a time, so an idle stream's task carries one: until the connection is
            // asked to close, the shutdown; after, the end of the grace period.
            let stop = if closing {
                force.cancelled()
            } else {
                shutdown.cancelled()
            };
            tokio::select! {
                result = connection.as_mut() => break result,
                () = stop => {
                    if closing {
                        break Ok(());
                    }
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = idle => {
                    if idle_closing {
                        // Asked to close and still idle a whole period later: drop it.
                        break Ok(());
                    }
                    idle_closing = true;
                    if !closing {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
    }
}

/// Resolves when the connection has had no request in flight for its limit: until
/// `first_deadline` before any request, then `idle_timeout` after the last one ended.
async fn idle(activity: &Activity, first_deadline: Instant, idle_timeout: Duration) {
    loop {
        // Registered before the state is read, so a change in between is not missed.
        let changed = activity.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if activity.in_flight.load(Ordering::Acquire) > 0 {
            changed.await;
            continue;
        }
        let deadline = if activity.served.load(Ordering::Acquire) {
            Instant::now() + idle_timeout
        } else {
            first_deadline
        };
        // Boxed: the timer exists only while the connection is idle, and an open stream's
        // connection (never idle) should not carry its space.
        let sleep = Box::pin(tokio::time::sleep_until(deadline));
        tokio::select! {
            () = sleep => return,
            () = changed => {}
        }
    }
}

/// Marks one request in flight until dropped (with its response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.served.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_waiters();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in flight.
struct TrackedBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The error a request body gives when it did not arrive in time (`json::read_body` answers it
/// with `408 body_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs_f64())]
pub(crate) struct BodyTimeout(Duration);

/// A request body that fails with [`BodyTimeout`] once `limit` has passed since the head.
struct TimedBody {
    inner: Incoming,
    limit: Duration,
    deadline: Instant,
    /// Created on the first read that has to wait: most bodies (none, or one small JSON) never
    /// need a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        TimedBody {
            inner,
            limit,
            deadline: Instant::now() + limit,
            sleep: None,
            timed_out: false,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.timed_out = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_headroom_below_the_open_files_limit() {
        assert_eq!(connection_cap(20_000, None), 20_000);
        // 1024 (a common default): an eighth, 128, is kept.
        assert_eq!(connection_cap(20_000, Some(1024)), 896);
        // A small limit keeps at least 64.
        assert_eq!(connection_cap(20_000, Some(256)), 192);
        // A large limit: the configured maximum rules.
        assert_eq!(connection_cap(20_000, Some(1 << 20)), 20_000);
        assert_eq!(connection_cap(100, Some(1 << 20)), 100);
        // Never zero, even with an absurd limit.
        assert_eq!(connection_cap(20_000, Some(10)), 1);
        assert_eq!(connection_cap(0, None), 1);
    }

    #[test]
    fn log_limiter_writes_once_per_period_and_counts_the_rest() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(1));
        assert_eq!(limiter.allow(start), Some(0));
        for i in 1..=9 {
            assert_eq!(limiter.allow(start + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(limiter.allow(start + Duration::from_millis(1000)), Some(9));
        assert_eq!(limiter.allow(start + Duration::from_millis(1500)), None);
        assert_eq!(limiter.allow(start + Duration::from_millis(2500)), Some(1));
    }

    #[test]
    fn resource_exhaustion_errors_back_off() {
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(24)));
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(23)));
        assert!(!is_resource_exhaustion(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
    }
}
