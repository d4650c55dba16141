//! The one error type of the HTTP edge: a status, a machine-readable code and a message.
//!
//! Every handler returns `Result<_, ApiError>`; the body is always
//! `{"error":{"code":"...","message":"..."}}`. Internal details are logged, never sent.
//!
//! Handlers are not the only source of errors: axum's own extractors reject with plain text
//! (`Invalid URL`, `Failed to deserialize query string`, `Failed to buffer the request body`)
//! and its method router answers `405` with an empty body. [`json_errors`] is the edge layer that
//! rewrites every such response into the same JSON, so no route, present or future, can answer
//! an error in another shape.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rill_core::BrokerError;

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable, snake_case (documented in docs/api.md).
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// This instance is shutting down (a rolling deploy): `503 draining`, with `Retry-After: 1`
    /// so clients and load balancers go to another instance.
    pub fn draining() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this instance is shutting down; retry (another instance will answer)",
        )
    }

    /// A failure of ours: the details go to the log, the client gets a generic message.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    /// A failure of the broker (or another shared backend, such as the spent-ticket set): `503`
    /// with a fixed message. The error's own text (a Redis error, an address) goes to the log
    /// only: it describes our infrastructure, not the request.
    pub fn broker(error: BrokerError) -> Self {
        match error {
            BrokerError::Unavailable(detail) => {
                tracing::warn!(%detail, "the broker is unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker_unavailable",
                    "the event broker is unavailable; retry later",
                )
            }
            BrokerError::Limit(detail) => {
                tracing::warn!(%detail, "a broker limit refused a request");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker_limit",
                    "the event broker refused the request at one of its limits; retry later",
                )
            }
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        ApiError::broker(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if self.code == "draining" {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// The fallback for unknown routes.
pub(crate) async fn not_found_route() -> ApiError {
    ApiError::not_found("no such route")
}

/// The code of an error response that did not come from an [`ApiError`] (documented in
/// docs/api.md, "Errors of every route").
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "body_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// The longest text of a foreign rejection kept as the message; axum's are one short line.
const MAX_FOREIGN_MESSAGE: usize = 512;

/// Rewrites error responses that are not our JSON (axum's plain-text rejections, its empty
/// `405`) into the documented `{"error":{"code","message"}}`, keeping their status and headers
/// (`Allow` on a 405). Our own JSON errors and every success pass untouched.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        match parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
        {
            Some(allow) if !allow.is_empty() => {
                format!("this route does not accept this method; it accepts {allow}")
            }
            _ => "this route does not accept this method".to_owned(),
        }
    } else if status.is_server_error() {
        // Never a foreign 5xx text: it could describe our internals.
        status
            .canonical_reason()
            .unwrap_or("server error")
            .to_owned()
    } else {
        let text = axum::body::to_bytes(body, MAX_FOREIGN_MESSAGE * 4)
            .await
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
            .unwrap_or_default();
        if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("bad request")
                .to_owned()
        } else {
            truncate(text, MAX_FOREIGN_MESSAGE)
        }
    };
    let body = serde_json::json!({ "error": { "code": code_for(status), "message": message } });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(bytes))
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn mapped(response: Response) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = json_errors(response).await;
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.expect("body");
        let json = serde_json::from_slice(&bytes).expect("a JSON body");
        (parts.status, parts.headers, json)
    }

    #[tokio::test]
    async fn foreign_errors_become_json() {
        // axum's empty 405, with its Allow header.
        let response = Response::builder()
            .status(405)
            .header(header::ALLOW, "GET,HEAD")
            .body(Body::empty())
            .expect("response");
        let (status, headers, json) = mapped(response).await;
        assert_eq!(status, 405);
        assert_eq!(headers[header::ALLOW], "GET,HEAD");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(json["error"]["code"], "method_not_allowed");

        // A plain-text rejection keeps its text as the message.
        let response = (
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string: duplicate field `last_event_id`",
        )
            .into_response();
        let (status, _, json) = mapped(response).await;
        assert_eq!(status, 400);
        assert_eq!(json["error"]["code"], "bad_request");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("duplicate field"))
        );

        let response = (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Failed to buffer the request body",
        )
            .into_response();
        assert_eq!(mapped(response).await.2["error"]["code"], "body_too_large");

        // A foreign 5xx text is not sent.
        let response = (StatusCode::BAD_GATEWAY, "redis://10.0.0.7 refused").into_response();
        let (_, _, json) = mapped(response).await;
        assert_eq!(json["error"]["code"], "internal");
        assert!(!json.to_string().contains("redis"));
    }

    #[tokio::test]
    async fn our_errors_and_successes_pass_untouched() {
        let ours = ApiError::bad_request("bad_topic", "x").into_response();
        let (_, _, json) = mapped(ours).await;
        assert_eq!(json["error"]["code"], "bad_topic");
        let ok = json_errors((StatusCode::OK, "plain text answer").into_response()).await;
        assert_eq!(
            ok.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }

    #[test]
    fn broker_errors_never_carry_their_detail() {
        for error in [
            BrokerError::Unavailable("redis://secret-host:6379 connection refused".into()),
            BrokerError::Limit("redis OOM command not allowed".into()),
        ] {
            let api = ApiError::broker(error);
            assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(!api.message.contains("redis"), "{}", api.message);
        }
    }

    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(truncate("héllo".to_owned(), 2), "h");
        assert_eq!(truncate("abc".to_owned(), 5), "abc");
    }
}
