//! Test helpers shared by the server's integration tests: a [`TestServer`] on 127.0.0.1:0 and an
//! [`SseStream`] reader that parses a response with `rill_sse::Parser`.
//!
//! Use from a test file with `mod support;`.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rill_server::{AppState, Config};
use rill_sse::{Item, OwnedEvent, Parser};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest any helper waits for one thing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server on 127.0.0.1:0 with the whole app.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub client: reqwest::Client,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server with the default configuration.
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    /// A server with `config` (its `listen` is replaced by the bound port; a short grace).
    pub async fn with_config(config: Config) -> Self {
        Self::with_state(config, AppState::new).await
    }

    /// A server whose state `make` builds (e.g. over another hub, or with extra parts).
    pub async fn with_state(
        mut config: Config,
        make: impl FnOnce(Arc<Config>, CancellationToken) -> AppState,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        config.listen = addr;
        config.shutdown_grace = Duration::from_secs(5);
        let state = make(Arc::new(config), CancellationToken::new());
        let task = tokio::spawn(rill_server::serve(listener, state.clone()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        TestServer {
            addr,
            state,
            client,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Publishes `data` to `topic` (event name `message` unless given); returns the event id.
    pub async fn publish(&self, topic: &str, event: Option<&str>, data: Value) -> String {
        let mut body = serde_json::json!({ "data": data });
        if let Some(event) = event {
            body["event"] = Value::from(event);
        }
        let response = self
            .client
            .post(self.url(&format!("/api/topics/{topic}/events")))
            .json(&body)
            .send()
            .await
            .expect("publish request");
        let status = response.status();
        let body: Value = response.json().await.expect("publish answer is JSON");
        assert_eq!(status, 201, "publish to {topic}: {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Opens `GET /api/events` for `topics`, optionally resuming from `last_event_id` (header).
    pub async fn subscribe(&self, topics: &[&str], last_event_id: Option<&str>) -> SseStream {
        let query: String = topics
            .iter()
            .map(|t| format!("topic={t}"))
            .collect::<Vec<_>>()
            .join("&");
        let mut request = self.client.get(self.url(&format!("/api/events?{query}")));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("subscribe request");
        assert_eq!(response.status(), 200, "subscribe to {topics:?}");
        SseStream::new(response)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Fires shutdown and waits (bounded) for the server to stop.
    pub async fn stop(mut self) {
        self.state.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let joined = tokio::time::timeout(Duration::from_secs(20), task).await;
            joined
                .expect("the server stopped within the bound")
                .expect("serve task")
                .expect("serve ok");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// What a stream yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event(OwnedEvent),
    Retry(u64),
    Comment(String),
}

/// Reads an SSE response item by item.
pub struct SseStream {
    pub response: reqwest::Response,
    parser: Parser,
    items: VecDeque<SseItem>,
    /// The id of the last event returned by [`SseStream::next_event`] (not merely parsed).
    pub last_id: Option<String>,
}

impl SseStream {
    pub fn new(response: reqwest::Response) -> Self {
        SseStream {
            response,
            parser: Parser::new(),
            items: VecDeque::new(),
            last_id: None,
        }
    }

    /// The next item; `None` when the stream ended. Panics after [`WAIT`].
    pub async fn next_item(&mut self) -> Option<SseItem> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Some(item);
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("timed out waiting for the stream")
                .expect("stream read failed")?;
            let items = &mut self.items;
            self.parser.feed(&chunk, |item| {
                items.push_back(match item {
                    Item::Event(e) => SseItem::Event(OwnedEvent::from(e)),
                    Item::Retry(ms) => SseItem::Retry(ms),
                    Item::Comment(c) => SseItem::Comment(c.to_owned()),
                })
            });
        }
    }

    /// The next event, skipping comments and retry fields; `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<OwnedEvent> {
        loop {
            match self.next_item().await? {
                SseItem::Event(e) => {
                    if !e.id.is_empty() {
                        self.last_id = Some(e.id.clone());
                    }
                    return Some(e);
                }
                SseItem::Retry(_) | SseItem::Comment(_) => {}
            }
        }
    }

    /// Reads `n` events (panics if the stream ends first).
    pub async fn events(&mut self, n: usize) -> Vec<OwnedEvent> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.next_event().await.expect("the stream ended early"));
        }
        out
    }
}

/// The published JSON inside a topics-stream event's envelope, with its topic.
pub fn unwrap_envelope(event: &OwnedEvent) -> (String, Value) {
    let v: Value = serde_json::from_str(&event.data).expect("event data is JSON");
    (
        v["topic"].as_str().expect("envelope topic").to_owned(),
        v["data"].clone(),
    )
}
