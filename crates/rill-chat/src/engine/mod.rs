//! The engine: its settings, its errors, and the state every part of it shares.
//!
//! The work is split by concern: `exchange.rs` starts answers (send, regenerate, repeated
//! requests), `generation.rs` runs one, `snapshot.rs` tells where a running one stands,
//! `recovery.rs` finishes those nobody runs any more, `plan.rs` plans the chat's streams,
//! `history_cache.rs` keeps the recent history of chats answered here.

mod exchange;
mod generation;
mod history_cache;
mod plan;
mod recovery;
mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rill_core::chat::Message;
use rill_core::{BotConfig, Broker, BrokerError, Provider, StoreError, Topic};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use exchange::{Answerable, AskOptions, Question, Sent, ToolOutput, validate_key};
pub use plan::{Plan, Resume};
pub use snapshot::Snapshot;

/// A bot: its configuration and the provider that answers for it.
#[derive(Clone)]
pub struct Bot {
    pub config: BotConfig,
    pub provider: Arc<dyn Provider>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

/// Tunables of the engine.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// How often the parts of a running generation are saved. Bounds what a crash loses.
    pub checkpoint_interval: Duration,
    /// How much history (in characters) goes with each request to the provider.
    pub history_budget_chars: usize,
    /// The longest user message accepted, in characters (Unicode scalar values).
    pub max_content_chars: usize,
    /// How long a generation's lease lasts without renewal; another instance declares it
    /// interrupted after that. Renewed every third of it.
    pub lease_ttl: Duration,
    /// This process's name in leases (random per start unless configured).
    pub instance_id: String,
    /// How long `stop` waits for the generation to write its final state.
    pub stop_wait: Duration,
    /// The most text (in bytes, roughly) of recent chat histories kept in memory, so that a
    /// chat's next question needs no history read before its first token; 0 keeps none. A
    /// kept history is used only while the database says it is current (another instance's
    /// change is never missed).
    pub history_cache_bytes: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            checkpoint_interval: Duration::from_millis(500),
            history_budget_chars: 24_000,
            max_content_chars: 32_000,
            lease_ttl: Duration::from_secs(15),
            instance_id: format!("rill-{:016x}", rand_u64()),
            stop_wait: Duration::from_secs(10),
            history_cache_bytes: 16 << 20,
        }
    }
}

/// What went wrong, for the HTTP layer to map to a status.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// No such chat for this user (or another user's): 404.
    #[error("no such chat")]
    NotFound,
    /// The chat's bot is not configured (anymore): 404 for creation, 409 for sending.
    #[error("no bot {0:?} is configured")]
    UnknownBot(String),
    /// A generation is already running in this chat: 409.
    #[error("a generation is already running in this chat")]
    Busy,
    /// Nothing to stop or retry, or a key reused for other content: 409/422 with `code`.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: &'static str,
    },
    /// The user's content (or key) is not acceptable: 400 (or 413 for `content_too_long`).
    #[error("{message}")]
    InvalidContent { code: &'static str, message: String },
    /// This instance is draining (shutting down): it starts no new answer; another one will.
    #[error("this instance is shutting down and starts no new answers")]
    Draining,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => ChatError::Busy,
            StoreError::NotFound => ChatError::NotFound,
            other => ChatError::Store(other),
        }
    }
}

/// The chat engine. Cheap to clone.
#[derive(Clone)]
pub struct ChatEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChatEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatEngine")
            .field("instance", &self.inner.settings.instance_id)
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn rill_core::Store>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) bots: Vec<Bot>,
    pub(crate) settings: EngineSettings,
    /// Generations running in this process, by chat id. A std mutex: held only for map
    /// operations, never across an await.
    pub(crate) running: Mutex<HashMap<String, Running>>,
    pub(crate) tracker: TaskTracker,
    /// Fires when the process shuts down: running generations end as `interrupted`.
    pub(crate) shutdown: CancellationToken,
    /// Fires when this instance hands its running generations over to the others (several
    /// instances): they release their leases and stop, writing nothing.
    pub(crate) hand_over: CancellationToken,
    /// Set once the instance drains: no new exchange starts, and the reaper takes nothing over.
    pub(crate) draining: std::sync::atomic::AtomicBool,
    pub(crate) history_cache: history_cache::HistoryCache,
}

/// A generation running in this process.
pub(crate) struct Running {
    pub(crate) message_id: String,
    pub(crate) cancel: CancellationToken,
    /// The message as it stands and the offset of the last event it includes; updated after
    /// each publish.
    pub(crate) progress: Arc<Mutex<Progress>>,
    /// Becomes `true` when the final state is written.
    pub(crate) done: watch::Receiver<bool>,
}

/// A running message and the topic offset of the last event applied to it.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) message: Message,
    pub(crate) offset: u64,
    /// Bumped on every change, so a checkpoint knows whether there is anything new to save.
    pub(crate) version: u64,
}

impl ChatEngine {
    pub fn new(
        store: Arc<dyn rill_core::Store>,
        broker: Arc<dyn Broker>,
        bots: Vec<Bot>,
        settings: EngineSettings,
    ) -> Self {
        let history_cache = history_cache::HistoryCache::new(
            settings.history_cache_bytes,
            settings.history_budget_chars,
        );
        ChatEngine {
            inner: Arc::new(Inner {
                store,
                broker,
                bots,
                settings,
                history_cache,
                running: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                hand_over: CancellationToken::new(),
                draining: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn bots(&self) -> &[Bot] {
        &self.inner.bots
    }

    pub fn bot(&self, id: &str) -> Option<&Bot> {
        self.inner.bots.iter().find(|b| b.config.id == id)
    }

    pub fn store(&self) -> &Arc<dyn rill_core::Store> {
        &self.inner.store
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// Questions whose history came from memory, and questions whose history was read from the
    /// store, since the start (`rill_chat_history_cache_*_total`).
    pub fn history_cache_counts(&self) -> (u64, u64) {
        self.inner.history_cache.counts()
    }

    /// Creates a chat with `bot_id` for `user_id`.
    pub async fn create_chat(
        &self,
        user_id: &str,
        bot_id: &str,
    ) -> Result<rill_core::chat::Chat, ChatError> {
        if self.bot(bot_id).is_none() {
            return Err(ChatError::UnknownBot(bot_id.to_owned()));
        }
        Ok(self.inner.store.create_chat(user_id, bot_id).await?)
    }

    /// `user_id`'s chat, or [`ChatError::NotFound`].
    pub async fn chat(
        &self,
        user_id: &str,
        chat_id: &str,
    ) -> Result<rill_core::chat::Chat, ChatError> {
        self.inner
            .store
            .get_chat(user_id, chat_id)
            .await?
            .ok_or(ChatError::NotFound)
    }

    /// Deletes a chat: its running generation is stopped first, and its open streams end (a
    /// `chat.deleted` event on its topic, seen by every instance).
    pub async fn delete_chat(&self, user_id: &str, chat_id: &str) -> Result<(), ChatError> {
        self.chat(user_id, chat_id).await?;
        match self.stop(user_id, chat_id).await {
            Ok(_) | Err(ChatError::Conflict { .. }) => {}
            Err(error) => return Err(error),
        }
        if !self.inner.store.delete_chat(user_id, chat_id).await? {
            return Err(ChatError::NotFound);
        }
        self.inner.history_cache.forget(chat_id);
        let event = crate::protocol::ChatEvent::ChatDeleted {
            chat_id: chat_id.to_owned(),
        };
        if let Err(error) = self
            .inner
            .broker
            .publish(&Topic::for_chat(chat_id), event.to_new_event())
            .await
        {
            tracing::warn!(%error, chat_id, "cannot tell the streams of a deleted chat to end");
        }
        Ok(())
    }

    /// Stops the generation running in `chat_id` (on this instance, or on another through the
    /// broker) and returns the message as stored afterwards.
    pub async fn stop(&self, user_id: &str, chat_id: &str) -> Result<Message, ChatError> {
        self.chat(user_id, chat_id).await?;
        let local = {
            let running = lock(&self.inner.running);
            running
                .get(chat_id)
                .map(|r| (r.message_id.clone(), r.cancel.clone(), r.done.clone()))
        };
        let wait = self.inner.settings.stop_wait;
        let message_id = match local {
            Some((message_id, cancel, mut done)) => {
                cancel.cancel();
                let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
                message_id
            }
            None => {
                // Maybe another instance runs it: find the streaming message, ask its owner.
                let Some(streaming) = self.streaming_message(chat_id).await? else {
                    return Err(ChatError::Conflict {
                        code: "not_generating",
                        message: "no generation is running in this chat",
                    });
                };
                let stop = rill_core::NewEvent {
                    name: Arc::from("stop"),
                    data: bytes::Bytes::from_static(b"{}"),
                };
                self.inner
                    .broker
                    .publish(&control_topic(chat_id), stop)
                    .await?;
                let deadline = tokio::time::Instant::now() + wait;
                while tokio::time::Instant::now() < deadline {
                    match self.inner.store.get_message(&streaming.id).await? {
                        Some(m) if m.status.is_final() => break,
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                streaming.id
            }
        };
        self.inner
            .store
            .get_message(&message_id)
            .await?
            .ok_or(ChatError::NotFound)
    }

    /// Stops taking new work: exchanges are refused ([`ChatError::Draining`]) and the reaper
    /// takes nothing over; running generations go on. The first step of a rolling deploy.
    pub fn start_draining(&self) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`ChatEngine::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many generations run in this process.
    pub fn running(&self) -> usize {
        lock(&self.inner.running).len()
    }

    /// Waits until no generation runs here, at most `timeout`; returns how many still run.
    pub async fn drain(&self, timeout: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.running();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Hands every running generation over to the other instances: each stops, saves what it
    /// has and releases its lease, writing no end, so another instance's reaper continues it
    /// at once. Waits for them, at most `grace`. For several instances sharing a broker.
    pub async fn hand_over(&self, grace: std::time::Duration) {
        self.start_draining();
        self.inner.hand_over.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("generations did not hand over within the grace period");
        }
    }

    /// Whether a generation of `chat_id` runs in this process.
    pub fn is_running(&self, chat_id: &str) -> bool {
        lock(&self.inner.running).contains_key(chat_id)
    }

    /// The chat's `streaming` message, if any (running here or elsewhere).
    pub(crate) async fn streaming_message(
        &self,
        chat_id: &str,
    ) -> Result<Option<Message>, ChatError> {
        // The streaming message is among the newest: one page is enough.
        let page = self.inner.store.list_messages(chat_id, None, 20).await?;
        Ok(page
            .items
            .into_iter()
            .rev()
            .find(|m| m.status == rill_core::chat::MessageStatus::Streaming))
    }

    /// The chat's newest assistant message, if any.
    pub(crate) async fn latest_answer(&self, chat_id: &str) -> Result<Option<Message>, ChatError> {
        let page = self.inner.store.list_messages(chat_id, None, 20).await?;
        Ok(page
            .items
            .into_iter()
            .rev()
            .find(|m| m.role == rill_core::chat::Role::Assistant))
    }
}

/// The topic on which `stop` requests for a chat travel between instances.
pub fn control_topic(chat_id: &str) -> Topic {
    Topic::for_chat(&format!("{chat_id}/control"))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic while holding it; the data (a map, a message) stays usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process: enough for an instance name.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.finish()
}
