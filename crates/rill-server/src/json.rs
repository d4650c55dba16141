//! Request input read at the edge: JSON bodies (`Content-Type` check, size limit, read timeout,
//! parse errors), query strings and path parameters, every rejection an [`ApiError`].
//!
//! axum's own `Json`, `Query`, `Path` and `Bytes` extractors reject with plain text; the
//! extractors here are the ones handlers use instead (the edge's `json_errors` layer turns any
//! plain-text rejection that slips through into JSON too, but with a generic code).

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{ApiError, AppState};

/// A JSON body of type `T`: 415 unless `Content-Type: application/json`, 413 past the
/// configured body size, 400 `invalid_json` for malformed JSON and `invalid_body` for JSON of
/// the wrong shape. Read before any state changes, so bad input never changes stored state.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        require_json(request.headers())?;
        let body = read_body(request.into_body(), state.config.streams.max_body_size()).await?;
        parse_object(&body).map(JsonBody)
    }
}

/// Parses a request body that must be a JSON object into `T`: `400 invalid_json` when it is not
/// JSON, `invalid_body` when it is JSON of another shape.
///
/// Every body of the API is an object, and this is checked before serde sees it: serde's
/// derived `Deserialize` also takes a struct from an array of its fields in order, so without
/// it `[null, null]` published an event and `["demo"]` created a chat.
pub(crate) fn parse_object<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let invalid_json = |e: serde_json::Error| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ApiError::bad_request("invalid_body", "the body must be a JSON object"),
                Err(e) => invalid_json(e),
            },
        );
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::bad_request("invalid_body", format!("unexpected body: {e}"))
        }
        _ => invalid_json(e),
    })
}

/// 415 unless the request says its body is JSON.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent with Content-Type: application/json",
        ))
    }
}

/// Reads the body, refusing it as soon as it exceeds `limit` bytes; `408 body_timeout` when the
/// connection's body-read timeout ran out first (`crate::listen`).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            let error = error.into_inner();
            match error.downcast_ref::<crate::listen::BodyTimeout>() {
                Some(timeout) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    timeout.to_string(),
                ),
                None => ApiError::bad_request("bad_body", "the request body could not be read"),
            }
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A query string deserialized into `T`, or `400 bad_query`.
///
/// The pattern for every route: `T` lists the parameters the route reads and does **not** use
/// `#[serde(deny_unknown_fields)]`, so unknown parameters (cache-busters such as `?_=1`,
/// tracking parameters) are ignored. Credentials never reach it: the edge lifts `access_token`
/// and `ticket` out of the query first. A parameter the route reads given twice is refused
/// (`bad_query`, "duplicate field"), since either choice could be the wrong one.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|e| {
                ApiError::bad_request(
                    "bad_query",
                    format!("invalid query string: {}", e.body_text()),
                )
            })
    }
}

/// Path parameters deserialized into `T`, or `400 bad_path` (e.g. `/api/chats/%FF`: not UTF-8).
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|e| {
                ApiError::bad_request("bad_path", format!("invalid path: {}", e.body_text()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a route's query: the parameters it reads, no `deny_unknown_fields`.
    #[derive(Debug, serde::Deserialize, PartialEq, Eq)]
    struct Page {
        before: Option<String>,
        limit: Option<String>,
    }

    async fn query(uri: &str) -> Result<Page, ApiError> {
        let (mut parts, ()) = axum::http::Request::builder()
            .uri(uri)
            .body(())
            .expect("request")
            .into_parts();
        ApiQuery::<Page>::from_request_parts(&mut parts, &())
            .await
            .map(|ApiQuery(page)| page)
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Shape {
        a: Option<String>,
    }

    #[test]
    fn a_body_is_a_json_object() {
        assert!(parse_object::<Shape>(br#" {"a": "x"}"#).is_ok());
        // serde alone takes a struct from an array of its fields.
        assert!(serde_json::from_slice::<Shape>(b"[null]").is_ok());
        for (body, code) in [
            (&b"[null]"[..], "invalid_body"),
            (b" [\"x\"]", "invalid_body"),
            (b"null", "invalid_body"),
            (b"1", "invalid_body"),
            (b"[1", "invalid_json"),
            (b"", "invalid_json"),
            (b"{", "invalid_json"),
            (br#"{"a": 1}"#, "invalid_body"),
        ] {
            let error = parse_object::<Shape>(body).expect_err("refused");
            assert_eq!((error.status.as_u16(), error.code), (400, code), "{body:?}");
        }
    }

    #[tokio::test]
    async fn unknown_query_parameters_are_ignored() {
        let page = query("/x?limit=5&_=1700000000&utm_source=mail")
            .await
            .expect("ok");
        assert_eq!(
            page,
            Page {
                before: None,
                limit: Some("5".into())
            }
        );
        let error = query("/x?limit=5&limit=6").await.expect_err("duplicate");
        assert_eq!((error.status.as_u16(), error.code), (400, "bad_query"));
    }

    #[tokio::test]
    async fn a_path_that_is_not_utf8_is_bad_path() {
        let app = axum::Router::new().route(
            "/chats/{id}",
            axum::routing::get(|ApiPath(id): ApiPath<String>| async move { id }),
        );
        let response = tower::ServiceExt::oneshot(
            app,
            axum::http::Request::builder()
                .uri("/chats/%FF")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
        assert_eq!(response.status(), 400);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["error"]["code"], "bad_path");
    }
}
