//! CORS: an allowlist of origins that may call rill from a browser, with credentials.
//!
//! An allowed origin is echoed in `Access-Control-Allow-Origin` with
//! `Access-Control-Allow-Credentials: true` and `Vary: Origin`; preflights for POST with
//! `Content-Type: application/json`, `Authorization` and `Last-Event-ID` succeed. Any other origin
//! gets no CORS header at all, so the browser refuses it. An empty list adds no layer.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Why an origin in `cors_origins` is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CorsConfigError {
    #[error("`*` is not allowed: with credentials, browsers need the exact origins listed")]
    Wildcard,
    #[error(
        "{0:?} is not an origin: expected scheme://host[:port], with no path, e.g. https://app.example.com"
    )]
    NotAnOrigin(String),
}

/// One allowed browser origin, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin(HeaderValue);

impl Origin {
    /// Validates one configured origin (`https://app.example.com`, `http://localhost:3000`).
    pub fn parse(origin: &str) -> Result<Self, CorsConfigError> {
        parse_origin(origin).map(Origin)
    }
}

fn parse_origin(origin: &str) -> Result<HeaderValue, CorsConfigError> {
    if origin == "*" {
        return Err(CorsConfigError::Wildcard);
    }
    let bad = || CorsConfigError::NotAnOrigin(origin.to_owned());
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    let host_ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !matches!(scheme, "http" | "https") || !host_ok {
        return Err(bad());
    }
    HeaderValue::from_str(origin).map_err(|_| bad())
}

/// `router` with CORS for `origins`; unchanged when the list is empty.
pub(crate) fn apply(router: Router, origins: &[Origin]) -> Router {
    match layer(origins) {
        // The strip runs on the way out after the CORS layer (it wraps it).
        Some(cors) => router
            .layer(cors)
            .layer(axum::middleware::map_response(strip_unallowed)),
        None => router,
    }
}

/// tower-http's layer still sends `Access-Control-Allow-Credentials` (and, on preflights, the
/// allowed methods and headers) to origins it refuses; without an allowed origin none of them
/// means anything, so a refused origin gets no CORS header at all.
async fn strip_unallowed(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        for name in [
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(name);
        }
    }
    response
}

/// The CORS layer for `origins`, or `None` when the list is empty.
fn layer(origins: &[Origin]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().map(|o| o.0.clone())))
            .allow_credentials(true)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("last-event-id"),
            ])
            // Browsers cap this (Chromium at 2 hours); 10 minutes keeps config changes visible soon.
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(parse_origin("https://app.example.com").is_ok());
        assert!(parse_origin("http://localhost:3000").is_ok());
        assert!(parse_origin("http://[::1]:3000").is_ok());
        assert!(matches!(parse_origin("*"), Err(CorsConfigError::Wildcard)));
        assert!(parse_origin("app.example.com").is_err());
        assert!(parse_origin("https://app.example.com/").is_err());
        assert!(parse_origin("ftp://x").is_err());
        assert!(parse_origin("https://").is_err());
    }
}
