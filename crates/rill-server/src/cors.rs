//! CORS: an allowlist of origins that may call rill from a browser, with credentials; and the
//! cross-site request check that keeps every other origin from changing anything.
//!
//! An allowed origin is echoed in `Access-Control-Allow-Origin` with
//! `Access-Control-Allow-Credentials: true` and `Vary: Origin`; preflights for POST with
//! `Content-Type: application/json`, `Authorization` and `Last-Event-ID` succeed. Any other origin
//! gets no CORS header at all, so the browser refuses it. An empty list adds no CORS layer.
//!
//! CORS only stops a foreign page from *reading* answers: a cross-site `<form>` POST (or a
//! `fetch` in `no-cors` mode) is still sent, with the `rill_token` cookie. [`cross_origin_guard`]
//! refuses every state-changing request (any method but GET, HEAD, OPTIONS) that a browser sent
//! from another origin than the server's own or an allowed one, before any handler runs, so it
//! covers every route, including routes added later. It follows the Fetch metadata a browser
//! attaches (`Sec-Fetch-Site`, then `Origin` against `Host`), the same rule as Go's
//! `net/http.CrossOriginProtection`; a request with neither header is not from a browser (curl,
//! SDKs, servers) and carries no ambient cookie risk, so it passes.

use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

/// The origins, besides the server's own, whose state-changing requests are accepted.
pub(crate) type TrustedOrigins = Arc<[HeaderValue]>;

/// The allowlist as [`TrustedOrigins`] for [`cross_origin_guard`].
pub(crate) fn trusted(origins: &[Origin]) -> TrustedOrigins {
    origins.iter().map(|o| o.0.clone()).collect()
}

/// Refuses a state-changing request sent by a browser from a foreign origin: `403
/// cross_origin_forbidden` (see the module docs for the rule).
pub(crate) async fn cross_origin_guard(
    State(trusted): State<TrustedOrigins>,
    request: Request,
    next: Next,
) -> Response {
    if cross_origin_allowed(request.method(), request.headers(), request.uri(), &trusted) {
        next.run(request).await
    } else {
        crate::ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin_forbidden",
            "this request was sent by a page of another origin, which may not change anything \
             here; list that origin in `cors_origins` to allow it",
        )
        .into_response()
    }
}

/// Whether a request may go on (see the module docs).
fn cross_origin_allowed(
    method: &Method,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    trusted: &[HeaderValue],
) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let origin = headers.get(header::ORIGIN);
    if origin.is_some_and(|o| trusted.contains(o)) {
        return true;
    }
    match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        // `none`: typed in the address bar or a bookmark, not sent by any page.
        Some(b"same-origin" | b"none") => return true,
        // `same-site` is still another origin (a sibling subdomain may be another tenant).
        Some(_) => return false,
        None => {}
    }
    let Some(origin) = origin else {
        // Neither header: not a browser, or one too old to send them; a browser sends `Origin`
        // with every cross-origin POST since 2020.
        return true;
    };
    // No Fetch metadata (an older browser): `Origin` must name this very host.
    let host = uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| headers.get(header::HOST).map(HeaderValue::as_bytes));
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host.as_bytes());
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
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

    #[track_caller]
    fn check(method: Method, headers: &[(&str, &str)], expected: bool) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let trusted = [HeaderValue::from_static("https://app.example.com")];
        let uri: axum::http::Uri = "/api/chats/1/stop".parse().expect("uri");
        assert_eq!(
            cross_origin_allowed(&method, &map, &uri, &trusted),
            expected,
            "{method} {headers:?}"
        );
    }

    #[test]
    fn cross_origin_rule() {
        let post = || Method::POST;
        let host = ("host", "rill.example.com:8080");
        // Safe methods always pass.
        check(
            Method::GET,
            &[("origin", "https://evil.example"), host],
            true,
        );
        check(Method::OPTIONS, &[("sec-fetch-site", "cross-site")], true);
        // Not a browser.
        check(post(), &[host], true);
        // Fetch metadata first.
        check(post(), &[("sec-fetch-site", "same-origin"), host], true);
        check(post(), &[("sec-fetch-site", "none"), host], true);
        check(post(), &[("sec-fetch-site", "cross-site"), host], false);
        check(post(), &[("sec-fetch-site", "same-site"), host], false);
        check(
            Method::DELETE,
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
            false,
        );
        // An allowed origin passes whatever the metadata says.
        check(
            post(),
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://app.example.com"),
            ],
            true,
        );
        // No metadata: Origin against Host.
        check(
            post(),
            &[("origin", "http://rill.example.com:8080"), host],
            true,
        );
        check(
            post(),
            &[("origin", "http://RILL.example.com:8080"), host],
            true,
        );
        check(post(), &[("origin", "https://evil.example"), host], false);
        check(
            post(),
            &[("origin", "http://rill.example.com"), host],
            false,
        );
        check(post(), &[("origin", "null"), host], false);
        check(post(), &[("origin", "https://evil.example")], false);
    }

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
