//! `GET /metrics`: the hub's and the chat engine's counters in the Prometheus text exposition format.
//!
//! Rendered by hand from the hub's atomics: a handful of lines, read at scrape time, so the
//! hot paths only ever touch relaxed atomics (no registry, no labels to hash per event).

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::routes::Routes;

pub(crate) fn router() -> Routes {
    Routes::new().route(
        "/metrics",
        &["GET"],
        crate::topics::only(Method::GET, get(metrics)),
    )
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "The hub's counters in the Prometheus text exposition format (docs/api.md \
                   lists them).",
    responses((status = 200, description = "The metrics.",
               content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)),
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let m = state.hub.metrics().snapshot();
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "rill_open_streams",
        "gauge",
        "Open topic and chat streams.",
        m.open_streams,
    );
    metric(
        "rill_events_published_total",
        "counter",
        "Events published.",
        m.events_published,
    );
    metric(
        "rill_events_delivered_total",
        "counter",
        "Live events written to streams (one per event per stream).",
        m.events_delivered,
    );
    metric(
        "rill_events_replayed_total",
        "counter",
        "Events written to streams from the log (resume, gap filling).",
        m.events_replayed,
    );
    metric(
        "rill_resets_total",
        "counter",
        "reset events sent (missed events no longer retained, or an id not ours).",
        m.resets,
    );
    metric(
        "rill_slow_consumers_dropped_total",
        "counter",
        "Subscribers dropped because their queue was full.",
        m.slow_consumers_dropped,
    );
    metric(
        "rill_queued_events",
        "gauge",
        "Live events waiting in connection queues.",
        m.queued_events,
    );
    metric(
        "rill_queued_bytes",
        "gauge",
        "Data bytes of the live events waiting in connection queues.",
        m.queued_bytes,
    );
    let open = state.streams.open_streams() as u64;
    metric(
        "rill_stream_slots",
        "gauge",
        "Streams counted against the connection limits.",
        open,
    );
    metric(
        "rill_open_connections",
        "gauge",
        "Open client connections (streams, requests, idle keep-alive, handshaking).",
        state.connections.open() as u64,
    );
    metric(
        "rill_connection_limit",
        "gauge",
        "The open-connections cap in force (max_open_connections, lowered below the open-files limit).",
        state.connections.limit() as u64,
    );
    if let Some(engine) = &state.chat {
        let (hits, misses) = engine.history_cache_counts();
        metric(
            "rill_chat_history_cache_hits_total",
            "counter",
            "Questions whose history came from memory (no history read before the first token).",
            hits,
        );
        metric(
            "rill_chat_history_cache_misses_total",
            "counter",
            "Questions whose history was read from the database (first in a chat here, changed elsewhere, evicted).",
            misses,
        );
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
