//! Liveness (`/healthz`) and readiness (`/readyz`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;
use crate::routes::Routes;

pub(crate) fn router() -> Routes {
    Routes::new()
        .route("/healthz", &["GET"], get(healthz))
        .route("/readyz", &["GET"], get(readyz))
}

/// `{"status":"ok"}` while the process runs.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    #[schema(example = "ok")]
    status: String,
}

/// What `/readyz` says: `ready`; `draining`; or `unavailable`, with which backend is not.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    /// `ready`, `draining` or `unavailable`.
    #[schema(pattern = "^(ready|draining|unavailable)$")]
    status: String,
    /// `ok` or `unreachable` (with `unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<String>,
    /// `ok` or `unreachable` (with `unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process runs.", body = Health)),
)]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the broker can serve (the in-process one always can; Redis when reachable) and,
/// with a chat engine, when its database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "The broker (and the database, with chats) can serve.",
         body = Readiness),
        (status = 503, description = "Draining (a rolling deploy), or a backend is unreachable.",
         body = Readiness),
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
