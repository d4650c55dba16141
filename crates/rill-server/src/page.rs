//! The chat page: `GET /` and `GET /assets/{name}`, served from files embedded in the binary.
//!
//! The page is plain ES modules and hand-written CSS (no build step), so building and running
//! rill needs no Node. Every response carries a strict Content-Security-Policy (no inline script,
//! no eval, nothing from other origins) and an `ETag`; with `Cache-Control: no-cache` browsers
//! revalidate each load and get a `304` when nothing changed, so a new binary is picked up at
//! once without hashed file names.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ApiError;
use crate::routes::Routes;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file of the page. `index.html` is also served at `/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../assets/index.html"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "rill.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/rill.js"),
    },
    Asset {
        name: "markdown.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/markdown.js"),
    },
    Asset {
        name: "streams.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/streams.js"),
    },
    Asset {
        name: "stream-worker.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/stream-worker.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/favicon.svg"),
    },
];

/// No inline script or style, no eval, same origin only. `worker-src` covers the SharedWorker
/// that holds the tabs' one event stream; `frame-ancestors` stops clickjacking.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; worker-src 'self'; manifest-src 'self'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// The `ETag` of each asset (same order as [`ASSETS`]), computed once. FNV-1a of the bytes: not
/// a security measure, only "did this file change", and stable across runs of one build.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let hash = asset.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            HeaderValue::from_str(&format!("\"{hash:016x}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
        .collect()
});

pub(crate) fn router() -> Routes {
    Routes::new()
        .route("/", &["GET"], get(index))
        .route("/assets/{name}", &["GET"], get(asset))
}

#[utoipa::path(
    get,
    path = "/",
    tag = "page",
    summary = "The chat page",
    params(("If-None-Match" = Option<String>, Header, description = "An `ETag` of the page: `304` when it did not change.")),
    responses(
        (status = 200, description = "The page.", content_type = "text/html; charset=utf-8", body = String),
        (status = 304, description = "Not modified."),
    ),
)]
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers).unwrap_or_else(|e| e.into_response())
}

#[utoipa::path(
    get,
    path = "/assets/{name}",
    tag = "page",
    summary = "A file of the chat page",
    params(
        ("name" = String, Path, description = "`app.js`, `style.css`, `favicon.svg`, ..."),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` of the file: `304` when it did not change."),
    ),
    responses(
        (status = 200, description = "The file.", content(
            (String = "text/javascript; charset=utf-8"),
            (String = "text/css; charset=utf-8"),
            (String = "text/html; charset=utf-8"),
            (String = "image/svg+xml"),
        )),
        (status = 304, description = "Not modified."),
        (status = 404, description = "`not_found`: no such asset.", body = crate::openapi::ErrorBody),
    ),
)]
pub(crate) async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers).unwrap_or_else(|e| e.into_response())
}

fn serve(name: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    let index = ASSETS
        .iter()
        .position(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found("no such asset"))?;
    let asset = &ASSETS[index];
    let etag = ETAGS
        .get(index)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("\"0\""));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim().trim_start_matches("W/").as_bytes() == etag.as_bytes())
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_and_a_revalidating_etag() {
        for asset in ASSETS {
            let response =
                serve(asset.name, &HeaderMap::new()).unwrap_or_else(|e| e.into_response());
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            assert_eq!(response.headers()[header::CONTENT_TYPE], asset.content_type);
            assert!(
                response.headers()[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .is_ok_and(|v| !v.contains("unsafe"))
            );
            let etag = response.headers()[header::ETAG].clone();
            let mut again = HeaderMap::new();
            again.insert(header::IF_NONE_MATCH, etag);
            let response = serve(asset.name, &again).unwrap_or_else(|e| e.into_response());
            assert_eq!(
                response.status(),
                StatusCode::NOT_MODIFIED,
                "{}",
                asset.name
            );
        }
        let missing =
            serve("../Cargo.toml", &HeaderMap::new()).unwrap_or_else(|e| e.into_response());
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap_or_default();
        assert!(html.contains("<script type=\"module\" src=\"/assets/app.js\"></script>"));
        assert_eq!(
            html.matches("<script").count(),
            1,
            "only the one external module"
        );
        assert!(!html.contains("style=") && !html.contains("<style"));
        // No inline event handler attribute (` onclick=`...).
        let handler = html.match_indices(" on").any(|(at, _)| {
            let name: String = html[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            !name.is_empty() && html[at + 3 + name.len()..].starts_with('=')
        });
        assert!(!handler, "no inline event handlers");
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let js = std::str::from_utf8(asset.body).unwrap_or_default();
            assert!(
                !js.contains("innerHTML") && !js.contains("eval(") && !js.contains("new Function"),
                "{}",
                asset.name
            );
        }
    }
}
