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

/// Ready when the broker can serve (the in-process one always can; Redis when reachable).
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.hub.broker().ready().await {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "broker": "unreachable" })),
        )
    }
}
