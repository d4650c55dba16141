//! The accept loop: plain TCP (HTTP/1.1, and h2c with prior knowledge) or TLS (h2 or HTTP/1.1 by
//! ALPN), with graceful shutdown bounded by a grace period.
//!
//! Written here rather than using `axum::serve` because axum cannot serve TLS; one loop for both
//! keeps shutdown behaviour identical. hyper-util's `auto` builder reads the first bytes of a
//! plain connection and serves HTTP/2 when they are the h2 preface (prior knowledge).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::TlsConfig;
use crate::stall::StallGuard;

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on idle connections, so dead peers (a closed laptop) free their streams.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown` fires, then stops
/// accepting, asks every connection to finish (HTTP/2 GOAWAY; streams end on `shutdown`
/// themselves) and waits at most `grace` for them.
///
/// A connection whose writes stay blocked for `write_stall` (a peer that stopped reading) is
/// closed.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
    tls: Option<TlsConfig>,
    write_stall: Duration,
) -> std::io::Result<()> {
    let acceptor = tls.map(|tls| TlsAcceptor::from(tls.server_config()));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small SSE frames must leave at once, not wait for Nagle.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        // Taken before the handshake, so shutdown also waits for connections still handshaking.
        let watcher = graceful.watcher();
        let router = router.clone();
        let tcp = StallGuard::new(tcp, write_stall);
        match &acceptor {
            None => {
                tokio::spawn(serve_connection(tcp, peer, router, watcher));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => serve_connection(tls, peer, router, watcher).await,
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::debug!("every connection finished"),
        Err(_) => tracing::warn!(
            grace_secs = grace.as_secs_f64(),
            "graceful shutdown timed out; closing the remaining connections"
        ),
    }
    Ok(())
}

async fn serve_connection<IO>(io: IO, peer: SocketAddr, router: Router, watcher: Watcher)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The smallest read buffer hyper allows: an idle event stream keeps its buffer for its whole
    // life, and hyper's default lets it grow to 16 KiB. Measured with `rill bench connections
    // -n 5000`: 21.1 KiB of server memory per idle connection before, 14.0 KiB after. It also
    // caps a request head at 8 KiB (larger ones get 431), like nginx's default.
    builder.http1().timer(TokioTimer::new()).max_buf_size(8192);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}
