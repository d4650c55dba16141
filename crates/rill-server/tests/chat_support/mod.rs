//! The chat test harness: a server with a chat engine on a temporary SQLite file and bots that
//! talk to a fake upstream, and helpers to read chat streams. Shared by the chat test files.
#![allow(dead_code, unreachable_pub)] // Each test file uses a part of it.

pub(crate) mod held_store;

use std::sync::Arc;
use std::time::Duration;

use rill_chat::{Bot, ChatEngine, EngineSettings};
use rill_core::{BotConfig, ProviderKind, Store};
use rill_providers::ProviderSettings;
use rill_server::{AppState, Config};
use rill_test_support::fake_upstream::{FakeUpstream, closed_port_url};
use serde_json::{Value, json};

use crate::support::{SseStream, TestServer, WAIT};

/// A server with a chat engine on a temporary SQLite file, and bots that talk to `fake`.
pub(crate) struct ChatServer {
    pub(crate) server: TestServer,
    /// The database's URL: [`ChatServer::another_instance`] shares it.
    database: String,
    /// The first instance keeps the database's folder.
    _dir: Option<tempfile::TempDir>,
}

pub(crate) fn bot(id: &str, provider: ProviderKind, base_url: Option<String>) -> BotConfig {
    BotConfig {
        id: id.to_owned(),
        name: id.to_owned(),
        description: String::new(),
        provider,
        base_url,
        api_key_env: None,
        model: "test-model".to_owned(),
        system_prompt: Some("Be brief.".to_owned()),
        temperature: None,
        max_tokens: Some(256),
        continuation: None,
    }
}

impl ChatServer {
    pub(crate) async fn start(fake: &FakeUpstream) -> Self {
        Self::with_config(fake, Config::default()).await
    }

    pub(crate) async fn with_config(fake: &FakeUpstream, config: Config) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());
        let store = rill_store::connect(&url).await.expect("store");
        Self::on_store(fake, config, store, url, Some(dir)).await
    }

    /// A second instance on this one's database (with its own in-process broker): what one
    /// stores, the other reads, as instances sharing PostgreSQL do.
    pub(crate) async fn another_instance(&self, fake: &FakeUpstream) -> Self {
        self.another_instance_with(fake, |store| store).await
    }

    /// [`ChatServer::another_instance`], its store wrapped by `wrap`.
    pub(crate) async fn another_instance_with(
        &self,
        fake: &FakeUpstream,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Self {
        let store = rill_store::connect(&self.database).await.expect("store");
        let url = self.database.clone();
        Self::on_store(fake, Config::default(), wrap(store), url, None).await
    }

    async fn on_store(
        fake: &FakeUpstream,
        config: Config,
        store: Arc<dyn Store>,
        url: String,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        let settings = ProviderSettings {
            connect_timeout: Duration::from_secs(2),
            first_token_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_millis(700),
            max_attempts: std::num::NonZeroU32::new(2).expect("2 > 0"),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            demo_first_token_delay: Duration::ZERO,
            demo_tokens_per_second: 0,
        };
        let env = |_: &str| None;
        let configs = vec![
            bot("demo", ProviderKind::Demo, None),
            bot("openai", ProviderKind::Openai, Some(fake.openai_base_url())),
            bot("anthropic", ProviderKind::Anthropic, Some(fake.url())),
            bot("refused", ProviderKind::Openai, Some(closed_port_url())),
        ];
        let bots: Vec<Bot> = configs
            .into_iter()
            .map(|config| {
                let provider =
                    rill_providers::build_provider(&config, &env, &settings).expect("provider");
                Bot { config, provider }
            })
            .collect();
        let engine_settings = EngineSettings {
            checkpoint_interval: Duration::from_millis(50),
            ..EngineSettings::default()
        };
        let server = TestServer::with_state(config, move |config, shutdown| {
            let state = AppState::new(config, shutdown);
            let engine = ChatEngine::new(store, state.hub.broker().clone(), bots, engine_settings);
            state.with_chat(engine)
        })
        .await;
        ChatServer {
            server,
            database: url,
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.server.client
    }

    pub(crate) async fn create_chat(&self, bot: &str) -> String {
        let response = self
            .client()
            .post(self.url("/api/chats"))
            .json(&json!({ "bot": bot }))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 201);
        let chat: Value = response.json().await.expect("json");
        chat["id"].as_str().expect("id").to_owned()
    }

    /// Sends `content` in the 202 style; returns the answer's message id.
    pub(crate) async fn send(&self, chat: &str, content: &str) -> String {
        let response = self
            .client()
            .post(self.url(&format!("/api/chats/{chat}/messages")))
            .json(&json!({ "content": content }))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let body: Value = response.json().await.expect("json");
        body["assistant_message"]["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// Sends `content` asking for the answer as `accept`; returns the raw response.
    pub(crate) async fn post_accepting(
        &self,
        chat: &str,
        accept: &str,
        content: &str,
    ) -> reqwest::Response {
        self.client()
            .post(self.url(&format!("/api/chats/{chat}/messages")))
            .header("accept", accept)
            .json(&json!({ "content": content }))
            .send()
            .await
            .expect("post")
    }

    pub(crate) async fn messages(&self, chat: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut before: Option<String> = None;
        for _ in 0..100 {
            let mut url = format!("/api/chats/{chat}/messages?limit=100");
            if let Some(b) = &before {
                url.push_str(&format!("&before={b}"));
            }
            let page: Value = self
                .client()
                .get(self.url(&url))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            let mut items = page["messages"].as_array().expect("messages").clone();
            items.extend(all);
            all = items;
            match page["next_before"].as_str() {
                Some(b) => before = Some(b.to_owned()),
                None => break,
            }
        }
        all
    }

    pub(crate) async fn message(&self, chat: &str, id: &str) -> Value {
        self.messages(chat)
            .await
            .into_iter()
            .find(|m| m["id"] == id)
            .expect("message stored")
    }

    /// Waits until the message is no longer `streaming`, and returns it.
    pub(crate) async fn final_message(&self, chat: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = self.message(chat, id).await;
            if m["status"] != "streaming" {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "message {id} still streaming"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn events(&self, chat: &str, last_event_id: Option<&str>) -> SseStream {
        let mut request = self
            .client()
            .get(self.url(&format!("/api/chats/{chat}/events")));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("events");
        assert_eq!(response.status(), 200);
        SseStream::new(response)
    }
}

pub(crate) fn data(event: &rill_sse::OwnedEvent) -> Value {
    serde_json::from_str(&event.data).expect("event data is JSON")
}

/// Reads a chat stream until the `message.completed` of `message_id`; returns every event.
pub(crate) async fn until_completed(
    stream: &mut SseStream,
    message_id: &str,
) -> Vec<rill_sse::OwnedEvent> {
    let mut seen = Vec::new();
    loop {
        let event = stream
            .next_event()
            .await
            .expect("stream ended before message.completed");
        let done = event.event == "message.completed" && data(&event)["message_id"] == message_id;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

pub(crate) fn delta_text(events: &[rill_sse::OwnedEvent], message_id: &str) -> String {
    events
        .iter()
        .filter(|e| e.event == "message.delta")
        .map(data)
        .filter(|d| d["message_id"] == message_id)
        .map(|d| d["text"].as_str().expect("text").to_owned())
        .collect()
}
