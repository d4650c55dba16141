//! CORS over real HTTP: an allowed origin gets its preflight and credentials, any other origin
//! gets no CORS header at all, and without a list there are none.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; expect() messages would only repeat the line"
)]

mod edge_support;

use edge_support::{client, start};
use rill_server::{Config, Origin};

const ALLOWED: &str = "https://app.example.com";

fn with_origins() -> Config {
    Config {
        cors_origins: vec![
            Origin::parse(ALLOWED).unwrap(),
            Origin::parse("http://localhost:3000").unwrap(),
        ],
        ..Config::default()
    }
}

fn list(headers: &reqwest::header::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| {
            v.to_str()
                .unwrap()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn preflight(server: &edge_support::Server, origin: &str) -> reqwest::Response {
    client()
        .request(
            reqwest::Method::OPTIONS,
            server.url("/api/topics/news/events"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization,last-event-id",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn preflight_for_an_allowed_origin() {
    let server = start(with_origins()).await;
    let response = preflight(&server, ALLOWED).await;
    assert!(response.status().is_success(), "{}", response.status());
    let h = response.headers();
    assert_eq!(
        h["access-control-allow-origin"], ALLOWED,
        "the origin is echoed, never `*`"
    );
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(list(h, "access-control-allow-methods").contains(&"post".to_owned()));
    let allowed = list(h, "access-control-allow-headers");
    for header in ["content-type", "authorization", "last-event-id"] {
        assert!(
            allowed.contains(&header.to_owned()),
            "{header} in {allowed:?}"
        );
    }
    assert!(list(h, "vary").contains(&"origin".to_owned()));

    // The actual request (a publish) carries the same headers.
    let response = client()
        .post(server.url("/api/topics/news/events"))
        .header("origin", ALLOWED)
        .json(&serde_json::json!({ "data": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["access-control-allow-origin"], ALLOWED);
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );
    assert!(list(response.headers(), "vary").contains(&"origin".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn no_cors_headers_for_other_origins() {
    let server = start(with_origins()).await;
    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil.net",
        "http://app.example.com",
        "null",
    ] {
        let response = preflight(&server, origin).await;
        for name in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-allow-headers",
        ] {
            assert!(response.headers().get(name).is_none(), "{origin}: {name}");
        }
        let response = client()
            .get(server.url("/healthz"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{origin}"
        );
    }
    server.stop().await;

    // Without a list, not even the allowed origin gets a header.
    let server = start(Config::default()).await;
    let response = preflight(&server, ALLOWED).await;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let response = client()
        .get(server.url("/healthz"))
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    server.stop().await;
}
