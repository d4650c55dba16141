//! Helpers of the auth, CORS and HTTP/2 tests: a server on port 0 with probe routes that report
//! what the [`Principal`] extractor decided, and token minting.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use rill_core::Topic;
use rill_server::{ApiError, AppState, Config, Principal};

/// A 32-byte HS256 secret.
pub const SECRET: &str = "test-secret-test-secret-test-secret!";
/// Another one, for wrong-signature cases.
pub const OTHER_SECRET: &str = "another-secret-another-secret-another";
/// The ticket key, shared so tests can forge expired tickets.
pub const TICKET_SECRET: &str = "ticket-secret-ticket-secret-ticket-secret";

pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Fires shutdown and waits (bounded) for `serve` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let joined = tokio::time::timeout(Duration::from_secs(20), self.task).await;
        joined
            .expect("serve returned within the bound")
            .expect("serve task")
            .expect("serve ok");
    }
}

/// A server with `config` on 127.0.0.1:0, serving the whole app plus the probe routes.
pub async fn start(config: Config) -> Server {
    start_with(config, Router::new()).await
}

/// Same as [`start`], with extra routes (they get the same edge layers).
pub async fn start_with(config: Config, extra: Router<AppState>) -> Server {
    start_custom(config, extra, |state| state).await
}

/// Same as [`start_with`], with a state that `customize` finishes (e.g. a shared spent set).
pub async fn start_custom(
    mut config: Config,
    extra: Router<AppState>,
    customize: impl FnOnce(AppState) -> AppState,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    config.listen = addr;
    config.shutdown_grace = Duration::from_secs(5);
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let state = customize(AppState::new(config.clone(), shutdown.clone()));
    let probes = rill_server::edge_layers(probes().merge(extra).with_state(state.clone()), &config);
    let router = rill_server::app(state.clone()).merge(probes);
    let options = rill_server::ServeOptions::new(&config, state.connections.clone());
    let task = tokio::spawn(rill_server::serve_router(
        listener,
        router,
        shutdown.clone(),
        options,
    ));
    Server {
        addr,
        shutdown,
        task,
    }
}

pub fn jwt_hs256() -> Config {
    let key = rill_server::JwtKey::hs256(SECRET.as_bytes()).expect("key");
    Config {
        auth: rill_server::Auth::jwt(key, Some(TICKET_SECRET.as_bytes()), Duration::from_secs(30)),
        ..Config::default()
    }
}

fn probes() -> Router<AppState> {
    Router::new()
        .route("/probe/sub", get(probe_sub))
        .route("/probe/pub/{*topic}", post(probe_pub))
}

#[derive(Deserialize)]
struct SubQuery {
    topic: String,
}

fn report(principal: &Principal) -> Json<Value> {
    let expires_at = principal
        .expires_at
        .map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    Json(json!({ "user": &*principal.user, "expires_at": expires_at }))
}

/// What a subscribe handler does: authenticate, then check the topic.
async fn probe_sub(
    principal: Principal,
    Query(query): Query<SubQuery>,
) -> Result<Json<Value>, ApiError> {
    let topic = Topic::new(&query.topic)
        .map_err(|e| ApiError::bad_request("invalid_topic", e.to_string()))?;
    principal.check_subscribe(&topic)?;
    Ok(report(&principal))
}

/// What a publish handler does.
async fn probe_pub(
    principal: Principal,
    Path(topic): Path<String>,
    State(_): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let topic =
        Topic::new(&topic).map_err(|e| ApiError::bad_request("invalid_topic", e.to_string()))?;
    principal.check_publish(&topic)?;
    Ok(report(&principal))
}

/// An HS256 token for `sub` with these patterns, valid for an hour.
pub fn token(secret: &str, sub: &str, publish: &[&str], subscribe: &[&str]) -> String {
    let mut claims = rill_server::Claims::new(sub, Duration::from_secs(3600));
    claims.publish = publish.iter().map(|s| s.to_string()).collect();
    claims.subscribe = subscribe.iter().map(|s| s.to_string()).collect();
    rill_server::mint_hs256(secret.as_bytes(), &claims).expect("mint")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// The JSON error code of a response, asserting the status first.
pub async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status, "status");
    let body: Value = response.json().await.expect("JSON error body");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned()
}
