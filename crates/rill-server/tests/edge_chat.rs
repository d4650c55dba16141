//! The edge in front of the chat routes, over real HTTP with the offline demo bot: a chat's
//! ticket opens that chat's stream and nothing else, cross-site requests change nothing,
//! `?access_token=` works on every GET route, and every error of every route is the documented
//! JSON.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; expect() messages would only repeat the line"
)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rill_chat::{Bot, ChatEngine, EngineSettings};
use rill_core::{BotConfig, ProviderKind};
use rill_providers::ProviderSettings;
use rill_server::{AppState, Auth, Config, JwtKey, Origin};
use serde_json::{Value, json};
use support::{TestServer, WAIT};

const SECRET: &[u8] = b"edge-chat-secret-edge-chat-secret-0123";
const ALLOWED: &str = "https://app.example.com";

/// A server with a chat engine (the demo bot, slow enough that a generation can be stopped) on
/// a temporary SQLite file, auth `jwt`, and one allowed CORS origin.
struct ChatServer {
    server: TestServer,
    _dir: tempfile::TempDir,
}

impl ChatServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());
        let store = rill_store::connect(&url).await.unwrap();
        let settings = ProviderSettings {
            demo_first_token_delay: Duration::ZERO,
            demo_tokens_per_second: 20,
            ..ProviderSettings::default()
        };
        let config = BotConfig {
            id: "demo".to_owned(),
            name: "demo".to_owned(),
            description: String::new(),
            provider: ProviderKind::Demo,
            base_url: None,
            api_key_env: None,
            model: "demo".to_owned(),
            system_prompt: None,
            temperature: None,
            max_tokens: None,
            continuation: None,
        };
        let provider = rill_providers::build_provider(&config, &|_| None, &settings).unwrap();
        let bots = vec![Bot { config, provider }];
        let server_config = Config {
            auth: Auth::jwt(
                JwtKey::hs256(SECRET).unwrap(),
                None,
                Duration::from_secs(30),
            ),
            cors_origins: vec![Origin::parse(ALLOWED).unwrap()],
            ..Config::default()
        };
        let server = TestServer::with_state(server_config, move |config, shutdown| {
            let state = AppState::new(config, shutdown);
            let engine = ChatEngine::new(
                store,
                state.hub.broker().clone(),
                bots,
                EngineSettings::default(),
            );
            state.with_chat(engine)
        })
        .await;
        ChatServer { server, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    fn http(&self) -> &reqwest::Client {
        &self.server.client
    }

    async fn create_chat(&self, token: &str) -> String {
        let response = self
            .http()
            .post(self.url("/api/chats"))
            .bearer_auth(token)
            .json(&json!({ "bot": "demo" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let chat: Value = response.json().await.unwrap();
        chat["id"].as_str().unwrap().to_owned()
    }

    async fn ticket(&self, token: &str, chat: &str) -> String {
        let response = self
            .http()
            .post(self.url(&format!("/api/chats/{chat}/ticket")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["ticket"].as_str().unwrap().to_owned()
    }

    /// Sends a message (202 style); returns the answer's id.
    async fn send(&self, token: &str, chat: &str) -> String {
        let response = self
            .http()
            .post(self.url(&format!("/api/chats/{chat}/messages")))
            .bearer_auth(token)
            .json(&json!({ "content": "tell me a long story" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        body["assistant_message"]["id"].as_str().unwrap().to_owned()
    }

    async fn generating(&self, token: &str, chat: &str) -> Value {
        let chat: Value = self
            .http()
            .get(self.url(&format!("/api/chats/{chat}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        chat["generating"].clone()
    }
}

fn token(user: &str) -> String {
    let mut claims = rill_server::Claims::new(user, Duration::from_secs(600));
    claims.subscribe = vec!["t".to_owned()];
    rill_server::mint_hs256(SECRET, &claims).unwrap()
}

async fn code(response: reqwest::Response, status: u16) -> String {
    let url = response.url().clone();
    assert_eq!(response.status().as_u16(), status, "{url}");
    let body: Value = response.json().await.unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_chat_ticket_opens_that_chat_stream_and_nothing_else() {
    let server = ChatServer::start().await;
    let alice = token("alice");
    let (one, two) = (
        server.create_chat(&alice).await,
        server.create_chat(&alice).await,
    );
    let t = server.ticket(&alice, &one).await;
    for path in [
        format!("/api/chats/{two}"),
        format!("/api/chats/{one}"),
        format!("/api/chats/{one}/messages"),
        format!("/api/chats/{two}/events"),
        "/api/chats".to_owned(),
        "/api/bots".to_owned(),
    ] {
        let response = server
            .http()
            .get(server.url(&format!("{path}?ticket={t}")))
            .send()
            .await
            .unwrap();
        assert_eq!(code(response, 401).await, "unauthorized", "{path}");
    }
    // Those refusals did not spend it: it still opens its own stream, once.
    let url = server.url(&format!("/api/chats/{one}/events?ticket={t}"));
    let stream = server.http().get(&url).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let again = server.http().get(&url).send().await.unwrap();
    assert_eq!(code(again, 401).await, "ticket_used");
    drop(stream);
    server.server.stop().await;
}

#[tokio::test]
async fn a_cross_site_form_cannot_stop_or_regenerate() {
    let server = ChatServer::start().await;
    let alice = token("alice");
    let chat = server.create_chat(&alice).await;
    let answer = server.send(&alice, &chat).await;
    assert_eq!(server.generating(&alice, &chat).await, answer.as_str());

    // What a hostile page's <form method=post> sends: the cookie, its own Origin.
    let cross_site = |path: &str| {
        server
            .http()
            .post(server.url(&format!("/api/chats/{chat}/{path}")))
            .header("cookie", format!("rill_token={alice}"))
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("x=1")
    };
    for path in ["stop", "regenerate", "messages"] {
        let response = cross_site(path).send().await.unwrap();
        assert_eq!(
            code(response, 403).await,
            "cross_origin_forbidden",
            "{path}"
        );
    }
    // An older browser without Fetch metadata: Origin against Host.
    let response = server
        .http()
        .post(server.url(&format!("/api/chats/{chat}/stop")))
        .header("cookie", format!("rill_token={alice}"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(code(response, 403).await, "cross_origin_forbidden");
    let response = server
        .http()
        .delete(server.url(&format!("/api/chats/{chat}")))
        .header("cookie", format!("rill_token={alice}"))
        .header("sec-fetch-site", "same-site")
        .send()
        .await
        .unwrap();
    assert_eq!(code(response, 403).await, "cross_origin_forbidden");
    assert_eq!(
        server.generating(&alice, &chat).await,
        answer.as_str(),
        "the answer is still generating"
    );

    // The page itself (same origin) and an allowed origin may.
    let own_origin = format!("http://{}", server.server.addr);
    let response = server
        .http()
        .post(server.url(&format!("/api/chats/{chat}/stop")))
        .header("cookie", format!("rill_token={alice}"))
        .header("origin", &own_origin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = server
        .http()
        .post(server.url("/api/chats"))
        .header("cookie", format!("rill_token={alice}"))
        .header("origin", ALLOWED)
        .header("sec-fetch-site", "cross-site")
        .json(&json!({ "bot": "demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.server.stop().await;
}

#[tokio::test]
async fn access_token_works_on_every_get_route() {
    let server = ChatServer::start().await;
    let alice = token("alice");
    let chat = server.create_chat(&alice).await;
    for path in [
        "/api/bots".to_owned(),
        "/api/chats".to_owned(),
        "/api/chats?limit=5".to_owned(),
        format!("/api/chats/{chat}"),
        format!("/api/chats/{chat}/messages"),
        format!("/api/chats/{chat}/messages?limit=5"),
        format!("/api/chats/{chat}/events"),
        "/api/events?topic=t".to_owned(),
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let response = server
            .http()
            .get(server.url(&format!("{path}{sep}access_token={alice}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    server.server.stop().await;
}

/// Every error code docs/api.md lists (in backticks in a table's code column).
fn documented_codes() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let mut codes = BTreeSet::new();
    for line in doc
        .lines()
        .filter(|l| l.starts_with("| 4") || l.starts_with("| 5"))
    {
        let cells: Vec<&str> = line.split('|').collect();
        let Some(cell) = cells.get(2) else { continue };
        for code in cell.split('`').skip(1).step_by(2) {
            codes.insert(code.to_owned());
        }
    }
    codes
}

#[tokio::test]
async fn every_error_is_documented_json() {
    let server = ChatServer::start().await;
    let alice = token("alice");
    let chat = server.create_chat(&alice).await;
    let documented = documented_codes();
    assert!(documented.contains("method_not_allowed"), "{documented:?}");
    let http = server.http();
    let huge = "x".repeat(3 << 20);
    let requests: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (http.put(server.url("/api/chats")), 405),
        (
            http.get(server.url(&format!("/api/chats/{chat}/stop"))),
            405,
        ),
        (
            http.get(server.url(&format!("/api/chats/{chat}/regenerate"))),
            405,
        ),
        (http.post(server.url("/healthz")), 405),
        (http.delete(server.url("/metrics")), 405),
        (http.get(server.url("/api/stream-tickets")), 405),
        (http.patch(server.url("/api/topics/t/events")), 405),
        (http.get(server.url("/api/chats/%FF")), 400),
        (
            http.get(server.url(&format!(
                "/api/chats/{chat}/events?last_event_id=a&last_event_id=b"
            ))),
            400,
        ),
        (
            http.post(server.url("/api/stream-tickets"))
                .header("content-type", "application/json")
                .body(huge.clone()),
            413,
        ),
        (
            http.post(server.url(&format!("/api/chats/{chat}/messages")))
                .header("content-type", "application/json")
                .body(huge),
            413,
        ),
        (http.get(server.url("/nope")), 404),
    ];
    for (request, status) in requests {
        let response = request.bearer_auth(&alice).send().await.unwrap();
        let url = response.url().clone();
        assert_eq!(response.status().as_u16(), status, "{url}");
        if status == 405 {
            let allow = response.headers().get("allow").map(|v| v.to_str().unwrap());
            assert!(
                allow.is_some_and(|a| !a.is_empty()),
                "{url}: Allow {allow:?}"
            );
        }
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{url}"
        );
        let body: Value = response.json().await.unwrap();
        let code = body["error"]["code"].as_str().unwrap();
        assert!(
            documented.contains(code),
            "{url}: `{code}` is not in docs/api.md"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{url}: {body}"
        );
    }
    let _ = WAIT;
    server.server.stop().await;
}
