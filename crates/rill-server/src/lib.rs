//! The HTTP face of rill (axum): health, topics, chats, the AI SDK and OpenAI faces, auth, CORS, TLS/h2,
//! metrics, the page.
//!
//! **Invariant:** only this crate knows axum and hyper. It owns no domain logic: it validates
//! input, calls the hub, the chat engine and the store, and maps their errors to [`ApiError`].
//!
//! Entry points: [`app`] builds the router for a given [`AppState`] (tests bind it to port 0);
//! [`serve`] runs it on a listener until a shutdown token fires, then drains streams.

mod accept;
mod ai_sdk;
mod auth;
mod chats;
mod cors;
mod error;
mod h1_stream;
mod health;
mod json;
mod limits;
mod listen;
mod metrics;
mod openai;
mod openapi;
mod page;
mod routes;
pub(crate) mod sse;
mod stall;
mod tickets;
mod tls;
mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{
    Auth, AuthConfigError, Claims, JwtKey, MIN_SECRET_LEN, MintingPrincipal, Principal,
    StreamPrincipal, mint_hs256, redacted_path_and_query,
};
pub use cors::{CorsConfigError, Origin};
pub use error::ApiError;
pub use limits::{StreamConfig, StreamLimiter, StreamSlot};
pub use listen::{ConnectionConfig, ConnectionStats, ServeOptions, connection_cap, serve_router};
pub use rill_core::SpentSet;
pub use tickets::MemorySpentSet;
pub use tls::{TlsConfig, TlsConfigError};

/// Server settings, validated by the binary before any port is bound.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// How long graceful shutdown waits for in-flight requests after streams were told to go.
    pub shutdown_grace: Duration,
    /// Auth mode (`none` or `jwt`) and stream tickets.
    pub auth: Auth,
    /// Browser origins allowed by CORS, with credentials; empty: no CORS headers at all.
    pub cors_origins: Vec<Origin>,
    /// Serve TLS (h2 or HTTP/1.1 by ALPN) instead of plain HTTP/1.1 and h2c.
    pub tls: Option<TlsConfig>,
    /// Topic and chat streams: heartbeat, retry hint, limits, retention, queue bound.
    pub streams: StreamConfig,
    /// Client connections: read and idle timeouts, the open-sockets cap.
    pub connections: ConnectionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
            auth: Auth::none(),
            cors_origins: Vec::new(),
            tls: None,
            streams: StreamConfig::default(),
            connections: ConnectionConfig::default(),
        }
    }
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Fires on graceful shutdown: the server stops accepting connections and closes them.
    pub shutdown: CancellationToken,
    /// Fires when the instance starts draining (and with `shutdown`): every open stream ends,
    /// telling its client to reconnect (to another instance), and new streams and answers are
    /// refused with `503 draining`; `/readyz` answers 503.
    pub draining: CancellationToken,
    /// The broker and the stream sessions.
    pub hub: Arc<rill_hub::Hub>,
    /// Open-stream counters (total and per user).
    pub streams: Arc<StreamLimiter>,
    /// The chat engine; without one, the chat routes answer 503 (topics-only servers, tests).
    pub chat: Option<rill_chat::ChatEngine>,
    /// Where stream tickets are marked spent: in memory by default (single use per instance);
    /// a shared set (Redis) makes a ticket single-use across instances.
    pub spent_tickets: Arc<dyn SpentSet>,
    /// Open client connections, reported by the accept loop for `/metrics`.
    pub connections: Arc<ConnectionStats>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("hub", &self.hub)
            .field("streams", &self.streams)
            .field("chat", &self.chat)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// A state with the in-process broker (retention and queue bound from `config.streams`).
    pub fn new(config: Arc<Config>, shutdown: CancellationToken) -> Self {
        let broker = rill_hub::MemoryBroker::new(config.streams.retention);
        // Publishing and reading prune a topic; this frees topics nobody touches any more.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (broker, shutdown) = (Arc::downgrade(&broker), shutdown.clone());
            runtime.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = every.tick() => match broker.upgrade() {
                            Some(broker) => broker.sweep(),
                            None => return,
                        },
                    }
                }
            });
        }
        let hub = Arc::new(rill_hub::Hub::new(broker, config.streams.hub));
        Self::with_hub(config, shutdown, hub)
    }

    /// This state with a chat engine (built over this state's hub broker).
    pub fn with_chat(mut self, engine: rill_chat::ChatEngine) -> Self {
        self.chat = Some(engine);
        self
    }

    /// This state with `set` as the spent-ticket set (a shared one, e.g. on Redis, so a ticket
    /// opens one stream in the whole deployment).
    pub fn with_spent_tickets(mut self, set: Arc<dyn SpentSet>) -> Self {
        self.spent_tickets = set;
        self
    }

    /// The chat engine, or 503 when this server runs without one.
    pub(crate) fn chat(&self) -> Result<&rill_chat::ChatEngine, ApiError> {
        self.chat.as_ref().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "chat_disabled",
                "this server has no chat engine",
            )
        })
    }

    /// A state over a given hub (e.g. one on the Redis broker).
    pub fn with_hub(
        config: Arc<Config>,
        shutdown: CancellationToken,
        hub: Arc<rill_hub::Hub>,
    ) -> Self {
        let streams = StreamLimiter::new(&config.streams);
        AppState {
            config,
            draining: shutdown.child_token(),
            shutdown,
            hub,
            streams,
            chat: None,
            spent_tickets: Arc::new(MemorySpentSet::new()),
            connections: Arc::new(ConnectionStats::default()),
        }
    }
}

impl AppState {
    /// Starts draining (a rolling deploy): open streams end, telling their clients to
    /// reconnect; new streams and answers get `503 draining`; `/readyz` answers 503. Requests
    /// for history and the like are still served until the server stops.
    pub fn start_draining(&self) {
        self.streams.start_draining();
        if let Some(chat) = &self.chat {
            chat.start_draining();
        }
        self.draining.cancel();
    }
}

/// The whole router.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    // Every route comes from the route table (`routes`), which the OpenAPI tests check.
    let router = api_routes()
        .into_router()
        .fallback(error::not_found_route)
        .with_state(state);
    edge_layers(router, &config)
}

/// Every route of the API, as one table (see `routes`).
pub(crate) fn api_routes() -> routes::Routes {
    routes::Routes::new()
        .merge(health::router())
        .merge(page::router())
        .merge(topics::router())
        .merge(chats::router())
        .merge(ai_sdk::router())
        .merge(openai::router())
        .merge(metrics::router())
        .merge(tickets::router())
        .merge(openapi::router())
}

/// What wraps every route, outermost first: CORS (so preflights are answered before anything
/// else runs), the request trace (credentials redacted), `WWW-Authenticate` on 401s, the lifting
/// of query-string credentials out of the URI, the cross-origin guard of state-changing
/// requests, and innermost the rewriting of any non-JSON error into the documented JSON.
pub fn edge_layers(router: Router, config: &Config) -> Router {
    let trace = tower_http::trace::TraceLayer::new_for_http().make_span_with(
        |request: &axum::http::Request<_>| {
            // Never the raw URI: `access_token` and `ticket` travel in the query string.
            tracing::info_span!(
                "request",
                method = %request.method(),
                uri = %auth::redacted_path_and_query(request.uri()),
                version = ?request.version(),
            )
        },
    );
    let router = router
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            cors::trusted(&config.cors_origins),
            cors::cross_origin_guard,
        ))
        .layer(axum::middleware::map_request(auth::lift_query_credentials))
        .layer(axum::middleware::map_response(auth::www_authenticate))
        .layer(trace);
    cors::apply(router, &config.cors_origins)
}

/// Serves `app` on `listener` until `state.shutdown` fires, then waits (at most the configured
/// grace period) for connections to finish.
/// Plain TCP serves HTTP/1.1 and h2c (prior knowledge); with `config.tls`, TLS negotiates h2 or
/// HTTP/1.1 by ALPN.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let options = ServeOptions::new(&state.config, state.connections.clone());
    serve_router(listener, app(state), shutdown, options).await
}
