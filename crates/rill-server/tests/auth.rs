//! The auth matrix over real HTTP: mode none, JWT (HS256, RS256, ES256) from header, cookie and
//! query, expired, wrongly signed and subject-less tokens, forbidden topics, and stream tickets
//! (single use, per-user bounds, single use across instances through a shared spent set).

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; expect() messages would only repeat the line"
)]

mod edge_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use edge_support::{
    OTHER_SECRET, SECRET, TICKET_SECRET, client, error_code, jwt_hs256, start, start_custom, token,
};
use rill_server::{Auth, Config, JwtKey, MemorySpentSet};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn mode_none_lets_everyone_in() {
    let server = start(Config::default()).await;
    let http = client();
    let body: Value = http
        .get(server.url("/probe/sub?topic=a"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({ "user": "anonymous", "expires_at": null }));
    let response = http
        .post(server.url("/probe/pub/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Tickets work too (as the anonymous user), so clients need no mode switch.
    let response = http
        .post(server.url("/api/stream-tickets"))
        .json(&json!({ "topics": ["a"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn jwt_header_cookie_and_query() {
    let server = start(jwt_hs256()).await;
    let http = client();
    let good = token(SECRET, "alice", &["news/*"], &["news/*", "prices"]);

    // No credential at all: 401 with WWW-Authenticate.
    let response = http
        .get(server.url("/probe/sub?topic=prices"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(response, 401).await, "unauthorized");

    // Header.
    let response = http
        .get(server.url("/probe/sub?topic=prices"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"], "alice");
    let expires_at = body["expires_at"].as_u64().unwrap();
    assert!(
        expires_at > now() + 3000 && expires_at <= now() + 3600,
        "expires_at comes from exp"
    );

    // Cookie, among others.
    let cookie = format!("theme=dark; rill_token={good}; x=y");
    let response = http
        .get(server.url("/probe/sub?topic=news/1"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Query parameter.
    let response = http
        .get(server.url(&format!("/probe/sub?topic=news/eu&access_token={good}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Publish: allowed under news/*, forbidden elsewhere, with the documented 403.
    let response = http
        .post(server.url("/probe/pub/news/1"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = http
        .post(server.url("/probe/pub/prices"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 403).await, "forbidden");

    // Forbidden topic to subscribe: `news/*` does not cover `news` itself nor `newsroom`.
    for topic in ["secret", "news", "newsroom"] {
        let response = http
            .get(server.url(&format!("/probe/sub?topic={topic}")))
            .bearer_auth(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(response, 403).await, "forbidden", "{topic}");
    }
    server.stop().await;
}

#[tokio::test]
async fn jwt_rejections() {
    let server = start(jwt_hs256()).await;
    let http = client();
    let probe = server.url("/probe/sub?topic=a");

    let wrong_signature = token(OTHER_SECRET, "mallory", &["*"], &["*"]);
    let response = http
        .get(&probe)
        .bearer_auth(&wrong_signature)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(response, 401).await, "invalid_token");

    let mut claims = rill_server::Claims::new("alice", Duration::ZERO);
    claims.exp = now() - 10;
    claims.subscribe = vec!["*".into()];
    let expired = rill_server::mint_hs256(SECRET.as_bytes(), &claims).unwrap();
    let response = http.get(&probe).bearer_auth(&expired).send().await.unwrap();
    assert_eq!(error_code(response, 401).await, "token_expired");
    let response = http
        .get(format!("{probe}&access_token={expired}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "token_expired");

    // Not a JWT, not Bearer, a token without exp, one signed with `none`, one whose user is
    // empty (or blank).
    let no_exp = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "alice", "subscribe": ["*"] }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let unsigned =
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OSwic3Vic2NyaWJlIjpbIioiXX0.";
    let empty_sub = token(SECRET, "", &["*"], &["*"]);
    let blank_sub = token(SECRET, "  ", &["*"], &["*"]);
    for bad in [
        "garbage",
        no_exp.as_str(),
        unsigned,
        empty_sub.as_str(),
        blank_sub.as_str(),
    ] {
        let response = http.get(&probe).bearer_auth(bad).send().await.unwrap();
        assert_eq!(error_code(response, 401).await, "invalid_token", "{bad}");
    }
    let response = http
        .get(&probe)
        .header("authorization", "Basic YWxpY2U6cHc=")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "invalid_token");

    // A bad header is not rescued by a good cookie: the first credential found decides.
    let good = token(SECRET, "alice", &[], &["*"]);
    let response = http
        .get(&probe)
        .bearer_auth("garbage")
        .header("cookie", format!("rill_token={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "invalid_token");
    server.stop().await;
}

/// Signs `claims` with a private key from tests/data.
fn sign_pem(algorithm: Algorithm, private_pem: &str, sub: &str) -> String {
    let pem = std::fs::read(format!(
        "{}/tests/data/{private_pem}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let claims = json!({ "sub": sub, "exp": now() + 600, "subscribe": ["a"], "publish": [] });
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).unwrap()
}

#[tokio::test]
async fn rs256_and_es256_public_keys() {
    let data = format!("{}/tests/data", env!("CARGO_MANIFEST_DIR"));
    for (algorithm, name) in [(Algorithm::RS256, "rs256"), (Algorithm::ES256, "es256")] {
        let public = std::fs::read(format!("{data}/{name}-public.pem")).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => JwtKey::rs256_pem(&public).unwrap(),
            _ => JwtKey::es256_pem(&public).unwrap(),
        };
        let server = start(Config {
            auth: Auth::jwt(key, None, Duration::from_secs(30)),
            ..Config::default()
        })
        .await;
        let http = client();
        let good = sign_pem(algorithm, &format!("{name}-private.pem"), "bob");
        let response = http
            .get(server.url("/probe/sub?topic=a"))
            .bearer_auth(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let response = http
            .get(server.url("/probe/sub?topic=b"))
            .bearer_auth(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(response, 403).await, "forbidden", "{name}");
        // An HS256 token (even with a valid-looking signature) is refused: the algorithm is pinned.
        let hs = token(SECRET, "bob", &[], &["a"]);
        let response = http
            .get(server.url("/probe/sub?topic=a"))
            .bearer_auth(&hs)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(response, 401).await, "invalid_token", "{name}");
        // The other algorithm's key does not verify.
        let other = if name == "rs256" {
            sign_pem(Algorithm::ES256, "es256-private.pem", "bob")
        } else {
            sign_pem(Algorithm::RS256, "rs256-private.pem", "bob")
        };
        let response = http
            .get(server.url("/probe/sub?topic=a"))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(response, 401).await, "invalid_token", "{name}");
        server.stop().await;
    }
    assert!(JwtKey::rs256_pem(b"not a key").is_err());
    assert!(JwtKey::hs256(b"short").is_err());
}

async fn ticket(
    http: &reqwest::Client,
    server: &edge_support::Server,
    token: &str,
    topics: &[&str],
) -> reqwest::Response {
    http.post(server.url("/api/stream-tickets"))
        .bearer_auth(token)
        .json(&json!({ "topics": topics }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn stream_tickets() {
    let server = start(jwt_hs256()).await;
    let http = client();
    let alice = token(SECRET, "alice", &[], &["news/*", "prices"]);

    let response = ticket(&http, &server, &alice, &["news/1", "prices"]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 30);
    let t = body["ticket"].as_str().unwrap().to_owned();

    // The ticket is for a GET stream opening only: a POST ignores it (and does not spend it).
    let response = http
        .post(server.url(&format!("/probe/pub/news/1?ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "unauthorized");

    // Any route but the stream it opens: not a credential there, and not spent.
    for path in [
        format!("/probe/sub?topic=news/1&ticket={t}"),
        format!("/api/chats?ticket={t}"),
        format!("/metrics?ticket={t}&access_token="),
    ] {
        let response = http.get(server.url(&path)).send().await.unwrap();
        if path.starts_with("/metrics") {
            assert_eq!(response.status(), 200, "metrics needs no credential");
        } else {
            assert_eq!(error_code(response, 401).await, "unauthorized", "{path}");
        }
    }
    // Another topic than the ticket's, on its route: 403 (this spends the ticket).
    let response = http
        .get(server.url(&format!("/api/events?topic=news/2&ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 403).await, "forbidden");
    // Used twice.
    let response = http
        .get(server.url(&format!("/api/events?topic=news/1&ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "ticket_used");

    // A fresh ticket opens its stream once.
    let t: Value = ticket(&http, &server, &alice, &["prices"])
        .await
        .json()
        .await
        .unwrap();
    let t = t["ticket"].as_str().unwrap().to_owned();
    let response = http
        .get(server.url(&format!("/api/events?topic=prices&ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    let response = http
        .get(server.url(&format!("/api/events?topic=prices&ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "ticket_used");

    // Expired (forged with the shared ticket key, so no test waits for a clock).
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "alice", "exp": now() - 5, "topics": ["prices"], "jti": "abc" }),
        &EncodingKey::from_secret(TICKET_SECRET.as_bytes()),
    )
    .unwrap();
    let response = http
        .get(server.url(&format!("/api/events?topic=prices&ticket={expired}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "ticket_expired");
    // Forged with another key, or an access token passed as a ticket.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "alice", "exp": now() + 30, "topics": ["prices"], "jti": "abc" }),
        &EncodingKey::from_secret(OTHER_SECRET.as_bytes()),
    )
    .unwrap();
    for bad in [forged.as_str(), alice.as_str(), "garbage"] {
        let response = http
            .get(server.url(&format!("/api/events?topic=prices&ticket={bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(response, 401).await, "invalid_ticket");
    }

    // Minting: only for topics the caller may subscribe to, only with a header or cookie.
    assert_eq!(
        error_code(
            ticket(&http, &server, &alice, &["prices", "secret"]).await,
            403
        )
        .await,
        "forbidden"
    );
    let response = http
        .post(server.url(&format!("/api/stream-tickets?access_token={alice}")))
        .json(&json!({ "topics": ["prices"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "unauthorized");
    let response = http
        .post(server.url("/api/stream-tickets"))
        .header("cookie", format!("rill_token={alice}"))
        .json(&json!({ "topics": ["prices"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Bad bodies.
    assert_eq!(
        error_code(ticket(&http, &server, &alice, &[]).await, 400).await,
        "invalid_topics"
    );
    assert_eq!(
        error_code(ticket(&http, &server, &alice, &["a b"]).await, 400).await,
        "invalid_topic"
    );
    // A reserved topic could open no stream (chats have their own ticket route).
    let root = token(SECRET, "root", &[], &["*"]);
    assert_eq!(
        error_code(ticket(&http, &server, &root, &["_chat/1"]).await, 400).await,
        "reserved_topic"
    );
    let response = http
        .post(server.url("/api/stream-tickets"))
        .bearer_auth(&alice)
        .body("{\"topics\":[\"prices\"]}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 415).await, "unsupported_media_type");
    let response = http
        .post(server.url("/api/stream-tickets"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{\"topics\":")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 400).await, "invalid_json");
    server.stop().await;
}

/// Reads an SSE response to its end (bounded) and returns its events as (name, data).
async fn read_to_end(mut response: reqwest::Response) -> Vec<(String, String)> {
    let mut parser = rill_sse::Parser::new();
    let mut events = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(15), response.chunk())
        .await
        .expect("the stream ended in time")
        .unwrap()
    {
        parser.feed(&chunk, |item| {
            if let rill_sse::Item::Event(e) = item {
                events.push((e.event.to_string(), e.data.to_string()));
            }
        });
    }
    events
}

#[tokio::test]
async fn streams_close_when_the_credential_expires() {
    let server = start(jwt_hs256()).await;
    let http = client();
    let mut claims = rill_server::Claims::new("alice", Duration::from_secs(2));
    claims.subscribe = vec!["a".into()];
    let short = rill_server::mint_hs256(SECRET.as_bytes(), &claims).unwrap();
    let t: Value = ticket(&http, &server, &short, &["a"])
        .await
        .json()
        .await
        .unwrap();
    let t = t["ticket"].as_str().unwrap().to_owned();

    let by_token = http
        .get(server.url("/api/events?topic=a"))
        .bearer_auth(&short)
        .send()
        .await
        .unwrap();
    let by_ticket = http
        .get(server.url(&format!("/api/events?topic=a&ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (by_token.status().as_u16(), by_ticket.status().as_u16()),
        (200, 200)
    );
    for events in [read_to_end(by_token).await, read_to_end(by_ticket).await] {
        let (name, data) = events.last().expect("a final event");
        assert_eq!(name, "error");
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(data["code"], "credential_expired");
    }
    server.stop().await;
}

/// The matrix above runs on probe routes; this checks the topics API itself enforces it.
#[tokio::test]
async fn topics_api_enforces_tokens_and_tickets() {
    let server = start(jwt_hs256()).await;
    let http = client();
    let writer = token(SECRET, "writer", &["news/*"], &[]);
    let reader = token(SECRET, "reader", &[], &["news/*"]);
    let publish = |token: Option<&str>, topic: &str| {
        let mut request = http
            .post(server.url(&format!("/api/topics/{topic}/events")))
            .json(&json!({ "data": { "topic": topic } }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        error_code(publish(None, "news/1").await.unwrap(), 401).await,
        "unauthorized"
    );
    assert_eq!(
        error_code(publish(Some(&reader), "news/1").await.unwrap(), 403).await,
        "forbidden"
    );
    assert_eq!(
        error_code(publish(Some(&writer), "sports/1").await.unwrap(), 403).await,
        "forbidden"
    );
    let response = http
        .get(server.url("/api/events?topic=news/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "unauthorized");
    let response = http
        .get(server.url("/api/events?topic=news/1&topic=sports"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 403).await, "forbidden");

    // A ticket opens the stream, which then carries what the writer publishes.
    let t: Value = ticket(&http, &server, &reader, &["news/1"])
        .await
        .json()
        .await
        .unwrap();
    let t = t["ticket"].as_str().unwrap().to_owned();
    let mut stream = http
        .get(server.url(&format!("/api/events?topic=news/1&ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        publish(Some(&writer), "news/1").await.unwrap().status(),
        201
    );
    let mut parser = rill_sse::Parser::new();
    let mut data = None;
    while data.is_none() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        parser.feed(&chunk, |item| {
            if let rill_sse::Item::Event(e) = item {
                data = Some(e.data.to_string());
            }
        });
    }
    let envelope: Value = serde_json::from_str(&data.unwrap()).unwrap();
    assert_eq!(envelope["data"], json!({ "topic": "news/1" }));
    let response = http
        .get(server.url(&format!("/api/events?topic=news/1&ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "ticket_used");
    drop(stream);
    server.stop().await;
}

/// A server whose users may each hold `limit` unexpired tickets.
fn ticket_limit(limit: usize) -> Config {
    let key = JwtKey::hs256(SECRET.as_bytes()).unwrap();
    Config {
        auth: Auth::jwt_with_ticket_limit(
            key,
            Some(TICKET_SECRET.as_bytes()),
            Duration::from_secs(30),
            limit,
        ),
        ..Config::default()
    }
}

async fn ticket_for(http: &reqwest::Client, server: &edge_support::Server, token: &str) -> String {
    let response = ticket(http, server, token, &["a"]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["ticket"].as_str().unwrap().to_owned()
}

/// One user flooding tickets reaches their own bound (429), never anyone else's: issuing on one
/// instance, and spending tickets issued elsewhere (so the spent set holds a bounded share of
/// each user).
#[tokio::test]
async fn a_ticket_flood_costs_only_its_user() {
    let issuer = start(ticket_limit(1000)).await;
    let server = start(ticket_limit(5)).await;
    let http = client();
    let alice = token(SECRET, "alice", &[], &["a"]);
    let bob = token(SECRET, "bob", &[], &["a"]);

    // Issuing: alice's sixth ticket is refused, to her only.
    for _ in 0..5 {
        ticket_for(&http, &server, &alice).await;
    }
    let refused = ticket(&http, &server, &alice, &["a"]).await;
    assert_eq!(error_code(refused, 429).await, "too_many_tickets");
    let bobs = ticket_for(&http, &server, &bob).await;

    // Spending: tickets issued by another instance (same ticket key) are bounded per user too.
    let mut opened = Vec::new();
    for i in 0..6 {
        let t = ticket_for(&http, &issuer, &alice).await;
        let response = http
            .get(server.url(&format!("/api/events?topic=a&ticket={t}")))
            .send()
            .await
            .unwrap();
        if i < 5 {
            assert_eq!(response.status(), 200, "ticket {i}");
            opened.push(response);
        } else {
            assert_eq!(error_code(response, 429).await, "too_many_tickets");
        }
    }
    // Bob is not affected: his ticket opens his stream.
    let response = http
        .get(server.url(&format!("/api/events?topic=a&ticket={bobs}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop((opened, response));
    issuer.stop().await;
    server.stop().await;
}

/// With a shared spent set (what Redis gives a deployment), a ticket opens one stream across
/// instances, not one per instance.
#[tokio::test]
async fn a_shared_spent_set_makes_tickets_single_use_across_instances() {
    let shared = std::sync::Arc::new(MemorySpentSet::new());
    let one = {
        let shared = shared.clone();
        start_custom(jwt_hs256(), axum::Router::new(), move |state| {
            state.with_spent_tickets(shared)
        })
        .await
    };
    let two = {
        let shared = shared.clone();
        start_custom(jwt_hs256(), axum::Router::new(), move |state| {
            state.with_spent_tickets(shared)
        })
        .await
    };
    let http = client();
    let alice = token(SECRET, "alice", &[], &["a"]);
    let t = ticket_for(&http, &one, &alice).await;
    let first = http
        .get(one.url(&format!("/api/events?topic=a&ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let again = http
        .get(two.url(&format!("/api/events?topic=a&ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(again, 401).await, "ticket_used");
    assert_eq!(shared.len(), 1);
    drop(first);
    one.stop().await;
    two.stop().await;
}
