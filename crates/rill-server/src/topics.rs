//! The topics API: publish (`POST /api/topics/{topic}/events`) and subscribe
//! (`GET /api/events?topic=...`), documented in docs/api.md.
//!
//! Every check happens before anything is published or attached, so bad input never changes
//! state; every refusal is an [`ApiError`].

use std::borrow::Cow;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use bytes::Bytes;
use rill_core::broker::valid_event_name;
use rill_core::{NewEvent, Topic};
use rill_hub::{Hub, Start, StreamRequest};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::ApiQuery;
use crate::openapi::ErrorBody;
use crate::routes::Routes;
use crate::{ApiError, AppState, Principal, StreamPrincipal, sse};

/// Event names the topics API keeps for its own stream events.
const RESERVED_EVENT_NAMES: [&str; 2] = ["reset", "error"];

pub(crate) fn router() -> Routes {
    Routes::new()
        .route_as(
            "/api/topics/{*rest}",
            "/api/topics/{topic}/events",
            &["POST"],
            only(Method::POST, post(publish)),
        )
        .route("/api/events", &["GET"], only(Method::GET, get(subscribe)))
}

/// A route answering other methods with a JSON 405 (and the `Allow` header).
pub(crate) fn only(allow: Method, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.fallback(move || async move {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route only accepts {allow}"),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(allow.as_str()) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        response
    })
}

fn bad_topic(name: &str, error: rill_core::TopicError) -> ApiError {
    ApiError::bad_request("bad_topic", format!("invalid topic {name:?}: {error}"))
}

/// A topic for the public API: valid, and not reserved for rill's own streams.
fn public_topic(name: &str) -> Result<Topic, ApiError> {
    let topic = Topic::new(name).map_err(|e| bad_topic(name, e))?;
    if topic.is_reserved() {
        return Err(ApiError::bad_request(
            "reserved_topic",
            format!("topic {name:?} is reserved: names starting with '_' belong to rill"),
        ));
    }
    Ok(topic)
}

fn forbidden(what: &str, topic: &Topic) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("this credential may not {what} topic {topic:?}"),
    )
}

/// An event to publish.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"event": "order.created", "data": {"id": 42}}))]
pub(crate) struct PublishBody<'a> {
    /// The SSE event name: 1 to 64 visible ASCII characters; `message` when absent; `reset`
    /// and `error` are reserved.
    #[serde(default, borrow)]
    #[schema(value_type = Option<String>, pattern = "^[!-~]{1,64}$")]
    event: Option<Cow<'a, str>>,
    /// Any JSON (at most `max_event_size` bytes), delivered as sent.
    #[serde(borrow)]
    #[schema(value_type = serde_json::Value)]
    data: &'a RawValue,
}

/// A public topic name: 1 to 200 of `A-Z a-z 0-9 _ - . : @ /`, no leading, trailing or double
/// `/`; names starting with `_` belong to rill (`rill_core::Topic`).
#[derive(utoipa::ToSchema)]
#[schema(
    pattern = "^[A-Za-z0-9.:@-][A-Za-z0-9_.:@-]*(/[A-Za-z0-9_.:@-]+)*$",
    max_length = 200,
    example = "orders"
)]
#[allow(dead_code)] // Describes topic names; never built.
pub(crate) struct TopicName(String);

/// A published event's id (a `Last-Event-ID` for this topic).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Published {
    #[schema(example = "1bq4xkz9v0m3.8ocfez.1")]
    id: String,
}

/// `POST /api/topics/{topic}/events`.
#[utoipa::path(
    post,
    path = "/api/topics/{topic}/events",
    tag = "topics",
    summary = "Publish an event",
    params(("topic" = String, Path, pattern = "^[A-Za-z0-9.:@-][A-Za-z0-9_.:@-]*(/[A-Za-z0-9_.:@-]+)*$", max_length = 200,
            description = "The topic (it may contain `/`)")),
    request_body(content = PublishBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Published.", body = Published),
        (status = 400, description = "`bad_topic`, `reserved_topic`, `bad_event_name`, \
         `reserved_event_name`, `invalid_json`, `invalid_body`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token may not publish to this topic; \
         `cross_origin_forbidden`.", body = ErrorBody),
        (status = 404, description = "`not_found`: the path does not end in `/events`.", body = ErrorBody),
        (status = 413, description = "`event_too_large`, `body_too_large`.", body = ErrorBody),
    ),
)]
pub(crate) async fn publish(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(rest) = path.map_err(|e| {
        ApiError::bad_request("bad_topic", format!("invalid topic in the path: {e}"))
    })?;
    let Some(name) = rest.strip_suffix("/events") else {
        return Err(ApiError::not_found(
            "no such route; publish with POST /api/topics/{topic}/events",
        ));
    };
    let topic = public_topic(name)?;
    if !principal.may_publish(&topic) {
        return Err(forbidden("publish to", &topic));
    }

    crate::json::require_json(&headers)?;
    let limits = &state.config.streams;
    let body = crate::json::read_body(body, limits.max_body_size()).await?;
    let parsed: PublishBody<'_> = crate::json::parse_object(&body).map_err(|mut e| {
        if e.code == "invalid_body" {
            e.message = format!(
                "the body must be {{\"event\": \"<name>\", \"data\": <any JSON>}}: {}",
                e.message
            );
        }
        e
    })?;
    let event = parsed.event.as_deref().unwrap_or("message");
    if !valid_event_name(event) {
        return Err(ApiError::bad_request(
            "bad_event_name",
            format!("invalid event name {event:?}: 1 to 64 visible ASCII characters, no spaces"),
        ));
    }
    if RESERVED_EVENT_NAMES.contains(&event) {
        return Err(ApiError::bad_request(
            "reserved_event_name",
            format!("the event name {event:?} is reserved for rill"),
        ));
    }
    let data = parsed.data.get();
    if data.len() > limits.max_event_size {
        return Err(event_too_large(limits.max_event_size));
    }
    let data = compact_json(data);
    let new = NewEvent {
        name: event.into(),
        data,
    };
    let published = state
        .hub
        .publish(&topic, new)
        .await
        .map_err(ApiError::broker)?;
    let id = Hub::single_topic_id(&published.epoch, &topic, published.offset);
    Ok((StatusCode::CREATED, Json(Published { id })).into_response())
}

fn event_too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "event_too_large",
        format!("the event data is larger than {max} bytes"),
    )
}

/// Removes the whitespace outside strings of valid JSON when it has line breaks, so every event
/// is one `data:` line. Written by hand: re-serialising through `serde_json::Value` would
/// reorder keys and could change numbers; this keeps the published text otherwise as sent.
fn compact_json(json: &str) -> Bytes {
    if !json.bytes().any(|b| b == b'\n' || b == b'\r') {
        return Bytes::copy_from_slice(json.as_bytes());
    }
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    Bytes::from(out)
}

/// `GET /api/events?topic=a&topic=b[&last_event_id=...]`.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "topics",
    summary = "Subscribe to topics (SSE)",
    description = "The topics' events as `text/event-stream`, live or resumed exactly after \
                   `Last-Event-ID`; `reset` when that is impossible. The stream stays open.",
    params(
        ("topic" = Vec<TopicName>, Query, style = Form, explode, min_items = 1, description = "The topics (1 to `max_topics`, 32 by default; repeat the parameter)."),
        ("last_event_id" = Option<String>, Query, description = "Resume after this id (the header wins)."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this id."),
    ),
    security(("bearer" = []), ("cookie" = []), ("access_token" = []), ("ticket" = [])),
    responses(
        (status = 200, description = "The event stream.", content(("text/event-stream"))),
        (status = 400, description = "`missing_topic`, `bad_topic`, `reserved_topic`, \
         `too_many_topics`, `bad_query`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the credential may not subscribe to a topic.", body = ErrorBody),
        (status = 429, description = "`too_many_user_streams`: the user has as many streams open as allowed.", body = ErrorBody),
        (status = 503, description = "`too_many_streams`, `draining`, `broker_unavailable`.", body = ErrorBody),
    ),
)]
pub(crate) async fn subscribe(
    State(state): State<AppState>,
    StreamPrincipal(principal): StreamPrincipal,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let mut topics = Vec::new();
    let mut query_id = None;
    for (key, value) in params {
        match key.as_str() {
            "topic" => topics.push(public_topic(&value)?),
            "last_event_id" => query_id = Some(value),
            // Anything else is ignored so that clients may add cache-busters (credentials never
            // get here: the edge lifts them out of the query).
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(ApiError::bad_request(
            "missing_topic",
            "name at least one topic: /api/events?topic=<name>",
        ));
    }
    topics.sort();
    topics.dedup();
    let limits = &state.config.streams;
    if topics.len() > limits.max_topics {
        return Err(ApiError::bad_request(
            "too_many_topics",
            format!(
                "{} topics requested; a stream may carry at most {}",
                topics.len(),
                limits.max_topics
            ),
        ));
    }
    if let Some(topic) = topics.iter().find(|t| !principal.may_subscribe(t)) {
        return Err(forbidden("subscribe to", topic));
    }
    // The header wins over the query parameter; an id that is not UTF-8 still gives `reset`.
    let start = match sse::last_event_id(&headers, query_id) {
        Some(id) => Start::LastEventId(id),
        None => Start::Live,
    };
    let slot = state.streams.acquire(&principal.user)?;
    let stream = state
        .hub
        .open(StreamRequest::topics(topics, start))
        .await
        .map_err(ApiError::broker)?;
    Ok(sse::respond(
        &state,
        &principal,
        slot,
        sse::hub_chunks(stream),
    ))
}

#[cfg(test)]
mod tests {
    use super::compact_json;

    #[test]
    fn compacts_only_outside_strings() {
        assert_eq!(
            &compact_json("{\"a\": 1}")[..],
            b"{\"a\": 1}",
            "single-line JSON is kept as sent"
        );
        assert_eq!(
            &compact_json("{\n \"a b\": \"x \\\" \\n y\",\r\n \"c\": [1, 2]\n}")[..],
            b"{\"a b\":\"x \\\" \\n y\",\"c\":[1,2]}"
        );
    }
}
