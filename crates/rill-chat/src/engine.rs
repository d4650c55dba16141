//! The engine: starting, running, stopping and recovering generations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rill_core::chat::{Message, MessageStatus, NewMessage, Outcome, Role, Usage};
use rill_core::{
    BotConfig, Broker, BrokerError, CompletionRequest, Event, NewEvent, Provider, ProviderError,
    ProviderEvent, Published, Sink, Store, StoreError, Topic,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events;
use crate::prompt::fit_history;

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
    /// How often the text of a running generation is saved. Bounds what a crash loses.
    pub checkpoint_interval: Duration,
    /// How much history (in characters) goes with each request to the provider.
    pub history_budget_chars: usize,
    /// The longest user message accepted, in characters.
    pub max_content_chars: usize,
    /// How long a generation's lease lasts without renewal; another instance declares it
    /// interrupted after that. Renewed every third of it.
    pub lease_ttl: Duration,
    /// This process's name in leases (random per start unless configured).
    pub instance_id: String,
    /// How long `stop` waits for the generation to write its final state.
    pub stop_wait: Duration,
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
    /// Nothing to stop or retry: 409 with `code`.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: &'static str,
    },
    /// The user's content is not acceptable: 400 (or 413 for `too_long`).
    #[error("{message}")]
    InvalidContent { code: &'static str, message: String },
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

/// A started exchange.
#[derive(Clone, Debug)]
pub struct Sent {
    pub user_message: Message,
    pub assistant_message: Message,
    /// Where the exchange's events start in the chat's topic: replaying after
    /// `published_before` (in `epoch`) yields exactly this exchange's events, and the next ones.
    pub published_before: Published,
}

/// The state of an in-progress message at a given offset of the chat's topic: what a stream
/// that cannot replay exactly sends as `snapshot`, continuing live strictly after `offset`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub message: Message,
    pub offset: u64,
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

struct Inner {
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    bots: Vec<Bot>,
    settings: EngineSettings,
    /// Generations running in this process, by chat id. A std mutex: held only for map
    /// operations, never across an await.
    running: Mutex<HashMap<String, Running>>,
    tracker: TaskTracker,
    /// Fires when the process shuts down: running generations end as `interrupted`.
    shutdown: CancellationToken,
}

struct Running {
    message: Message,
    cancel: CancellationToken,
    /// The text so far and the offset of the last delta it includes. Updated after each publish.
    progress: Arc<Mutex<Progress>>,
    /// Becomes `true` when the final state is written.
    done: watch::Receiver<bool>,
}

#[derive(Default)]
struct Progress {
    text: String,
    offset: u64,
}

/// How a generation ended, before it is written.
enum Ending {
    Complete {
        reason: Option<String>,
        usage: Option<Usage>,
    },
    Stopped,
    Interrupted,
    Failed(ProviderError),
}

impl ChatEngine {
    pub fn new(
        store: Arc<dyn Store>,
        broker: Arc<dyn Broker>,
        bots: Vec<Bot>,
        settings: EngineSettings,
    ) -> Self {
        ChatEngine {
            inner: Arc::new(Inner {
                store,
                broker,
                bots,
                settings,
                running: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    pub fn bots(&self) -> &[Bot] {
        &self.inner.bots
    }

    pub fn bot(&self, id: &str) -> Option<&Bot> {
        self.inner.bots.iter().find(|b| b.config.id == id)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
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

    /// Posts `content` as `user_id`'s message in `chat_id` and starts the answer.
    pub async fn send(
        &self,
        user_id: &str,
        chat_id: &str,
        content: &str,
    ) -> Result<Sent, ChatError> {
        self.validate_content(content)?;
        let chat = self
            .inner
            .store
            .get_chat(user_id, chat_id)
            .await?
            .ok_or(ChatError::NotFound)?;
        let bot = self
            .bot(&chat.bot_id)
            .cloned()
            .ok_or_else(|| ChatError::UnknownBot(chat.bot_id.clone()))?;
        if self.is_running(chat_id) {
            return Err(ChatError::Busy);
        }

        let user = NewMessage {
            chat_id: chat_id.to_owned(),
            role: Role::User,
            content: content.to_owned(),
            status: MessageStatus::Complete,
            bot_id: None,
            model: None,
        };
        let assistant = self.placeholder(chat_id, &bot);
        let (user_message, assistant_message) =
            self.inner.store.insert_exchange(user, assistant).await?;
        self.claim(&assistant_message).await;
        let title: String = content.trim().chars().take(80).collect();
        if let Err(error) = self.inner.store.set_title_if_empty(chat_id, &title).await {
            tracing::warn!(%error, chat_id, "cannot set the chat title");
        }

        let topic = Topic::for_chat(chat_id);
        let published = self
            .publish_or_fail(&topic, &assistant_message, events::created(&user_message))
            .await?;
        let published_before = Published {
            epoch: published.epoch,
            offset: published.offset - 1,
        };
        self.publish_or_fail(
            &topic,
            &assistant_message,
            events::created(&assistant_message),
        )
        .await?;
        let history = self.history(chat_id, None).await?;
        self.start(bot, assistant_message.clone(), history);
        Ok(Sent {
            user_message,
            assistant_message,
            published_before,
        })
    }

    /// Answers the last user message of `chat_id` again (after an error, a stop or an
    /// interruption), as a new assistant message.
    pub async fn regenerate(&self, user_id: &str, chat_id: &str) -> Result<Sent, ChatError> {
        let chat = self
            .inner
            .store
            .get_chat(user_id, chat_id)
            .await?
            .ok_or(ChatError::NotFound)?;
        let bot = self
            .bot(&chat.bot_id)
            .cloned()
            .ok_or_else(|| ChatError::UnknownBot(chat.bot_id.clone()))?;
        if self.is_running(chat_id) {
            return Err(ChatError::Busy);
        }
        let page = self.inner.store.list_messages(chat_id, None, 50).await?;
        let Some(question) = page
            .items
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .cloned()
        else {
            return Err(ChatError::Conflict {
                code: "nothing_to_answer",
                message: "there is no user message to answer",
            });
        };
        let assistant_message = self
            .inner
            .store
            .insert_message(self.placeholder(chat_id, &bot))
            .await?;
        self.claim(&assistant_message).await;
        let topic = Topic::for_chat(chat_id);
        let published = self
            .publish_or_fail(
                &topic,
                &assistant_message,
                events::created(&assistant_message),
            )
            .await?;
        let published_before = Published {
            epoch: published.epoch,
            offset: published.offset - 1,
        };
        // The history up to and including the question; later answers (the failed ones) are not
        // part of the conversation the model sees.
        let history = self.history(chat_id, Some(question.seq)).await?;
        self.start(bot, assistant_message.clone(), history);
        Ok(Sent {
            user_message: question,
            assistant_message,
            published_before,
        })
    }

    /// Stops the generation running in `chat_id` (on this instance, or on another through the
    /// broker) and returns the message as stored afterwards.
    pub async fn stop(&self, user_id: &str, chat_id: &str) -> Result<Message, ChatError> {
        self.inner
            .store
            .get_chat(user_id, chat_id)
            .await?
            .ok_or(ChatError::NotFound)?;
        let local = {
            let running = lock(&self.inner.running);
            running
                .get(chat_id)
                .map(|r| (r.message.id.clone(), r.cancel.clone(), r.done.clone()))
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
                let control = control_topic(chat_id);
                let stop = NewEvent {
                    name: Arc::from("stop"),
                    data: bytes::Bytes::from_static(b"{}"),
                };
                self.inner.broker.publish(&control, stop).await?;
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

    /// The in-progress message of `chat_id`, if any, as a snapshot consistent with an offset of
    /// the chat's topic. Exact for a generation of this process; for one running elsewhere it is
    /// rebuilt from the last checkpoint plus the deltas logged after it.
    pub async fn snapshot(&self, chat_id: &str) -> Result<Option<Snapshot>, ChatError> {
        {
            let running = lock(&self.inner.running);
            if let Some(r) = running.get(chat_id) {
                let progress = lock(&r.progress);
                let mut message = r.message.clone();
                message.content.clone_from(&progress.text);
                return Ok(Some(Snapshot {
                    message,
                    offset: progress.offset,
                }));
            }
        }
        let Some(message) = self.streaming_message(chat_id).await? else {
            return Ok(None);
        };
        Ok(Some(self.rebuild(message).await?))
    }

    /// A message running (or having run) elsewhere: its checkpointed text plus the deltas the
    /// broker logged after the checkpoint, and the offset of the last one.
    async fn rebuild(&self, message: Message) -> Result<Snapshot, ChatError> {
        let (mut message, mut offset) = self.checkpoint_of(message).await?;
        let topic = Topic::for_chat(&message.chat_id);
        // Bounded: a checkpoint is at most `checkpoint_interval` old, so few deltas follow it.
        for _ in 0..64 {
            let read = self.inner.broker.read(&topic, offset, 1024).await?;
            if read.first > offset + 1 {
                // The log no longer holds what follows the checkpoint: the best we have is the
                // checkpoint itself, at the offset right before what the log still has.
                break;
            }
            let Some(last) = read.events.last().map(|e| e.offset) else {
                break;
            };
            for event in &read.events {
                if &*event.name == events::DELTA {
                    if let Ok(d) = serde_json::from_slice::<events::DeltaData>(&event.data) {
                        if d.message_id == message.id {
                            message.content.push_str(&d.text);
                        }
                    }
                }
            }
            offset = last;
        }
        Ok(Snapshot { message, offset })
    }

    /// The message as last checkpointed, and the offset of the last delta its text includes.
    ///
    /// The store writes both in one statement but reads them in two queries, and the owner may
    /// checkpoint in between: the offset is read on both sides of the text, and the read is
    /// retried until they agree (offsets only grow from one checkpoint to the next, so equal
    /// offsets mean the text is that checkpoint's).
    async fn checkpoint_of(&self, mut message: Message) -> Result<(Message, u64), ChatError> {
        let store = &self.inner.store;
        // Bounded: checkpoints are `checkpoint_interval` apart, so a retry almost never repeats.
        for _ in 0..16 {
            let before = store.checkpoint_offset(&message.id).await?;
            let Some(current) = store.get_message(&message.id).await? else {
                return Err(ChatError::NotFound);
            };
            let after = store.checkpoint_offset(&message.id).await?;
            message = current;
            if before == after {
                return Ok((message, after.unwrap_or(0)));
            }
        }
        Err(ChatError::Store(rill_core::StoreError::Backend(
            "the checkpoint kept moving while it was read".to_owned(),
        )))
    }

    /// Marks generations nobody runs anymore as `interrupted`, keeping the text they published
    /// (the checkpoint plus the deltas still in the broker's log), and tells their chats. With
    /// `all`, every `streaming` message (start-up of a single instance: nothing can be
    /// running); otherwise those whose lease expired.
    pub async fn recover(&self, all: bool) -> Result<usize, ChatError> {
        let owner = (!all).then_some(self.inner.settings.instance_id.as_str());
        let orphans = self.inner.store.orphaned(now_ms(), owner).await?;
        let mut recovered = 0;
        for message in orphans {
            if self.is_running(&message.chat_id) {
                continue;
            }
            // Clients saw every delta the dead owner published, also those after its last
            // checkpoint: store that text (still in the broker's log) rather than the shorter
            // checkpoint, so the stored answer equals the streamed one. The checkpoint alone
            // when the log cannot be read (the in-process broker after a restart has no log).
            let content = match self.rebuild(message.clone()).await {
                Ok(rebuilt) => rebuilt.message.content,
                Err(error) => {
                    tracing::warn!(%error, message_id = %message.id, "cannot read the logged deltas; keeping the checkpoint");
                    message.content.clone()
                }
            };
            let outcome = Outcome {
                status: MessageStatus::Interrupted,
                content,
                finish_reason: Some("interrupted".to_owned()),
                usage: None,
                error: None,
            };
            if self.inner.store.finish(&message.id, &outcome).await? {
                recovered += 1;
                tracing::info!(message_id = %message.id, chat_id = %message.chat_id, "marked an orphaned generation interrupted");
                let event = events::completed(
                    &message.id,
                    MessageStatus::Interrupted,
                    Some("interrupted"),
                    None,
                    None,
                );
                if let Err(error) = self
                    .inner
                    .broker
                    .publish(&Topic::for_chat(&message.chat_id), event)
                    .await
                {
                    tracing::warn!(%error, "cannot announce an interrupted generation");
                }
            }
        }
        Ok(recovered)
    }

    /// Runs [`ChatEngine::recover`] every `every` until shutdown (for several instances).
    pub fn spawn_reaper(&self, every: Duration) {
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(error) = engine.recover(false).await {
                            tracing::warn!(%error, "lease reaper failed; retrying");
                        }
                    }
                }
            }
        });
    }

    /// Ends every running generation as `interrupted` (text saved, completion published) and
    /// waits for them, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("generations did not finish within the shutdown grace period");
        }
    }

    /// Whether a generation of `chat_id` runs in this process.
    pub fn is_running(&self, chat_id: &str) -> bool {
        lock(&self.inner.running).contains_key(chat_id)
    }

    fn validate_content(&self, content: &str) -> Result<(), ChatError> {
        if content.trim().is_empty() {
            return Err(ChatError::InvalidContent {
                code: "empty_content",
                message: "content is empty".into(),
            });
        }
        let max = self.inner.settings.max_content_chars;
        if content.chars().count() > max {
            return Err(ChatError::InvalidContent {
                code: "content_too_long",
                message: format!("content is longer than {max} characters"),
            });
        }
        Ok(())
    }

    fn placeholder(&self, chat_id: &str, bot: &Bot) -> NewMessage {
        NewMessage {
            chat_id: chat_id.to_owned(),
            role: Role::Assistant,
            content: String::new(),
            status: MessageStatus::Streaming,
            bot_id: Some(bot.config.id.clone()),
            model: Some(bot.config.model.clone()),
        }
    }

    async fn claim(&self, message: &Message) {
        let until = now_ms() + duration_ms(self.inner.settings.lease_ttl);
        if let Err(error) = self
            .inner
            .store
            .renew_lease(&message.id, &self.inner.settings.instance_id, until)
            .await
        {
            tracing::warn!(%error, message_id = %message.id, "cannot take the generation's lease");
        }
    }

    /// Publishes an event of the exchange; if the broker is down, the placeholder is finished
    /// as `error` so the chat is not left busy.
    async fn publish_or_fail(
        &self,
        topic: &Topic,
        placeholder: &Message,
        event: NewEvent,
    ) -> Result<Published, ChatError> {
        match self.inner.broker.publish(topic, event).await {
            Ok(p) => Ok(p),
            Err(error) => {
                let outcome = Outcome {
                    status: MessageStatus::Error,
                    content: String::new(),
                    finish_reason: Some("error".to_owned()),
                    usage: None,
                    error: Some("the event broker is unavailable".to_owned()),
                };
                if let Err(e) = self.inner.store.finish(&placeholder.id, &outcome).await {
                    tracing::warn!(error = %e, "cannot finish a placeholder after a broker failure");
                }
                Err(ChatError::Broker(error))
            }
        }
    }

    /// The chat's history for the prompt, oldest first, up to (and including) `up_to_seq`.
    async fn history(
        &self,
        chat_id: &str,
        up_to_seq: Option<i64>,
    ) -> Result<Vec<Message>, ChatError> {
        let budget = self.inner.settings.history_budget_chars;
        let mut before = up_to_seq.map(|s| rill_core::chat::PageCursor(s + 1));
        let mut newest_first: Vec<Message> = Vec::new();
        let mut chars = 0usize;
        // Bounded: at most 20 pages of 50, and stop as soon as the budget is reached.
        for _ in 0..20 {
            let page = self.inner.store.list_messages(chat_id, before, 50).await?;
            for m in page.items.into_iter().rev() {
                chars += m.content.chars().count();
                newest_first.push(m);
            }
            match page.next_before {
                Some(cursor) if chars < budget => {
                    before = rill_core::chat::PageCursor::parse(&cursor)
                }
                _ => break,
            }
            if before.is_none() {
                break;
            }
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    async fn streaming_message(&self, chat_id: &str) -> Result<Option<Message>, ChatError> {
        // The streaming message is among the newest: one page is enough.
        let page = self.inner.store.list_messages(chat_id, None, 20).await?;
        Ok(page
            .items
            .into_iter()
            .rev()
            .find(|m| m.status == MessageStatus::Streaming))
    }

    fn start(&self, bot: Bot, message: Message, history: Vec<Message>) {
        let request = CompletionRequest {
            model: bot.config.model.clone(),
            system: bot.config.system_prompt.clone(),
            messages: fit_history(&history, self.inner.settings.history_budget_chars),
            temperature: bot.config.temperature,
            max_tokens: bot.config.max_tokens,
        };
        let cancel = CancellationToken::new();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let (done_tx, done_rx) = watch::channel(false);
        lock(&self.inner.running).insert(
            message.chat_id.clone(),
            Running {
                message: message.clone(),
                cancel: cancel.clone(),
                progress: progress.clone(),
                done: done_rx,
            },
        );
        let inner = self.inner.clone();
        // A root span: the generation outlives the request that started it.
        let span = tracing::info_span!(parent: None, "generation", chat_id = %message.chat_id, message_id = %message.id);
        self.inner.tracker.spawn(tracing::Instrument::instrument(
            async move {
                let chat_id = message.chat_id.clone();
                let generation = Generation {
                    inner: inner.clone(),
                    provider: bot.provider,
                    message,
                    cancel,
                    progress,
                };
                generation.run(request).await;
                lock(&inner.running).remove(&chat_id);
                let _ = done_tx.send(true);
            },
            span,
        ));
    }
}

/// One running generation.
struct Generation {
    inner: Arc<Inner>,
    provider: Arc<dyn Provider>,
    message: Message,
    cancel: CancellationToken,
    progress: Arc<Mutex<Progress>>,
}

/// Cancels a generation when a `stop` arrives on its control topic (from any instance).
struct StopSink(CancellationToken);

impl Sink for StopSink {
    fn deliver(&self, _event: &Arc<Event>) {
        self.0.cancel();
    }
    fn interrupted(&self) {}
}

impl Generation {
    async fn run(self, request: CompletionRequest) {
        let chat_id = self.message.chat_id.clone();
        let topic = Topic::for_chat(&chat_id);
        let _stop_listener = match self
            .inner
            .broker
            .attach(
                &control_topic(&chat_id),
                Arc::new(StopSink(self.cancel.clone())),
            )
            .await
        {
            Ok(a) => Some(a),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for remote stop requests");
                None
            }
        };
        let ending = self.stream(&topic, request).await;
        self.finish(&topic, ending).await;
    }

    /// Pumps the provider's stream into the topic until it ends, fails, or is stopped.
    async fn stream(&self, topic: &Topic, request: CompletionRequest) -> Ending {
        let shutdown = self.inner.shutdown.clone();
        let mut stream = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Ending::Stopped,
            () = shutdown.cancelled() => return Ending::Interrupted,
            started = self.provider.stream(request) => match started {
                Ok(s) => s,
                Err(error) => return Ending::Failed(error),
            },
        };
        let mut checkpoint = tokio::time::interval(self.inner.settings.checkpoint_interval);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lease = tokio::time::interval(self.inner.settings.lease_ttl / 3);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved_len = 0usize;
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Ending::Stopped,
                () = shutdown.cancelled() => return Ending::Interrupted,
                _ = checkpoint.tick() => self.checkpoint(&mut saved_len).await,
                _ = lease.tick() => {
                    let until = now_ms() + duration_ms(self.inner.settings.lease_ttl);
                    match self.inner.store.renew_lease(&self.message.id, &self.inner.settings.instance_id, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Another instance found the lease expired (we could not reach the
                            // database for a while) and finished the message: whatever we add
                            // now would follow its `message.completed`. Stop here.
                            tracing::warn!("the message was finished elsewhere after our lease expired; stopping");
                            return Ending::Interrupted;
                        }
                        Err(error) => tracing::warn!(%error, "cannot renew the generation's lease"),
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(ProviderEvent::Delta(text))) => {
                        if text.is_empty() {
                            continue;
                        }
                        match self.publish_delta(topic, &text).await {
                            Ok(offset) => {
                                let mut p = lock(&self.progress);
                                p.text.push_str(&text);
                                p.offset = offset;
                            }
                            Err(error) => {
                                // The text cannot reach anyone: keep it in the store and end.
                                lock(&self.progress).text.push_str(&text);
                                return Ending::Failed(ProviderError::new(
                                    rill_core::ProviderErrorKind::Protocol,
                                    format!("the event broker failed mid-stream: {error}"),
                                ));
                            }
                        }
                    }
                    Some(Ok(ProviderEvent::Finish { reason, usage })) => return Ending::Complete { reason, usage },
                    Some(Err(error)) => return Ending::Failed(error),
                    None => {
                        return Ending::Failed(ProviderError::new(
                            rill_core::ProviderErrorKind::Protocol,
                            "the model's stream ended without finishing",
                        ));
                    }
                },
            }
        }
    }

    /// Publishes a delta, retrying briefly: a lost delta would be a silent hole in every
    /// client's text, so after the retries the generation ends instead.
    async fn publish_delta(&self, topic: &Topic, text: &str) -> Result<u64, BrokerError> {
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            match self
                .inner
                .broker
                .publish(topic, events::delta(&self.message.id, text))
                .await
            {
                Ok(p) => return Ok(p.offset),
                Err(error) if attempt >= 4 => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, attempt, "publishing a delta failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }

    async fn checkpoint(&self, saved_len: &mut usize) {
        let (text, offset) = {
            let p = lock(&self.progress);
            if p.text.len() == *saved_len {
                return;
            }
            (p.text.clone(), p.offset)
        };
        match self
            .inner
            .store
            .checkpoint(&self.message.id, &text, offset)
            .await
        {
            Ok(()) => *saved_len = text.len(),
            Err(error) => tracing::warn!(%error, "checkpoint failed; will retry"),
        }
    }

    async fn finish(&self, topic: &Topic, ending: Ending) {
        let content = std::mem::take(&mut lock(&self.progress).text);
        let (status, finish_reason, usage, error) = match ending {
            Ending::Complete { reason, usage } => (
                MessageStatus::Complete,
                reason.or(Some("stop".into())),
                usage,
                None,
            ),
            Ending::Stopped => (
                MessageStatus::Stopped,
                Some("stopped".to_owned()),
                None,
                None,
            ),
            Ending::Interrupted => (
                MessageStatus::Interrupted,
                Some("interrupted".to_owned()),
                None,
                None,
            ),
            Ending::Failed(e) => (
                MessageStatus::Error,
                Some("error".to_owned()),
                None,
                Some(e),
            ),
        };
        tracing::info!(status = %status, chars = content.chars().count(), "generation ended");
        let outcome = Outcome {
            status,
            content,
            finish_reason: finish_reason.clone(),
            usage,
            error: error.as_ref().map(|e| e.message.clone()),
        };
        // The final state must land: retry the store a few times before giving up (the lease
        // reaper of another instance, or the next start-up, then marks it interrupted).
        let mut written = false;
        for attempt in 0..5u32 {
            match self.inner.store.finish(&self.message.id, &outcome).await {
                Ok(w) => {
                    written = w;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "cannot store the final state; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        if !written {
            return;
        }
        if let Some(e) = &error {
            let event = events::error(e.kind.as_str(), &e.message, &self.message.id);
            if let Err(error) = self.inner.broker.publish(topic, event).await {
                tracing::warn!(%error, "cannot publish the error event");
            }
        }
        let event = events::completed(
            &self.message.id,
            status,
            finish_reason.as_deref(),
            usage,
            error.as_ref().map(|e| e.message.as_str()),
        );
        if let Err(error) = self.inner.broker.publish(topic, event).await {
            tracing::warn!(%error, "cannot publish the completion event");
        }
    }
}

/// The topic on which `stop` requests for a chat travel between instances.
fn control_topic(chat_id: &str) -> Topic {
    Topic::for_chat(&format!("{chat_id}/control"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic while holding it; the data (a map, a string) stays usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process: enough for an instance name.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms() as u64);
    h.finish()
}
