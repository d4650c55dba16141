//! Liveness (`/healthz`) and readiness (`/readyz`).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the broker can serve (the in-process one always can; Redis when reachable) and,
/// with a chat engine, when its database answers.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.draining.is_cancelled() {
        // At once, so the load balancer stops sending new work here.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        );
    }
    let broker = state.hub.broker().ready().await;
    let database = match &state.chat {
        Some(chat) => chat.store().ping().await.is_ok(),
        None => true,
    };
    if broker && database {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        let status = |ok: bool| if ok { "ok" } else { "unreachable" };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "unavailable", "broker": status(broker), "database": status(database) }),
            ),
        )
    }
}
