//! Starting an answer: a new message (`send`), the last question again (`regenerate`), and a
//! repeated request that finds the first one's exchange (an `Idempotency-Key` seen before).
//! Both kinds of start share one path.

use std::sync::{Arc, Mutex};

use rill_core::chat::{
    Chat, HistoryRevision, Lease, Message, MessageStatus, NewMessage, Outcome, PageCursor, Part,
    Role,
};
use rill_core::{
    CompletionRequest, Published, RequestContext, StoreError, ToolChoice, ToolSpec, Topic,
};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::generation::Generation;
use super::history_cache::Seed;
use super::{Bot, ChatEngine, ChatError, Progress, Running, duration_ms, lock, now_ms};
use crate::prompt::{Step, Walk, fit_history};
use crate::protocol::ChatEvent;

/// The longest client key (`Idempotency-Key`).
pub(crate) const MAX_CLIENT_KEY_LEN: usize = 255;

/// How much storing an exchange (a question and its answer's placeholder: two rows) moves the
/// chat's [`rill_core::chat::HistoryRevision`]; the store's tests hold it to that.
const EXCHANGE_CHANGES: i64 = 2;

/// An exchange: the question and its answer.
#[derive(Clone, Debug)]
pub struct Sent {
    pub user_message: Message,
    pub assistant_message: Message,
    /// Where the exchange's events start in the chat's topic: replaying after this position
    /// yields exactly this exchange's events (the question's `message.created`, for a new
    /// message; the answer's, for a regenerated one), and the next ones. `None` when unknown
    /// (a repeated request whose exchange was started before positions were recorded).
    pub start: Option<Published>,
    /// `true` when this is the exchange of an earlier request with the same key: nothing new
    /// was stored or started.
    pub repeated: bool,
}

/// Per-request settings a face passes through to the provider (OpenAI's `instructions`,
/// `tools`, `temperature`...). Not stored: they apply to this answer only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AskOptions {
    /// Replaces the bot's system prompt.
    pub system: Option<String>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub tools: Vec<ToolSpec>,
    pub tool_choice: Option<ToolChoice>,
}

/// The result of a tool the model called in its latest answer, supplied by the client.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutput {
    /// The call's id (`call_...`), as the answer's tool-call part has it.
    pub call_id: String,
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// A question in full: what [`ChatEngine::ask`] answers.
#[derive(Clone, Debug, Default)]
pub struct Question {
    /// The user's message; may be empty when `tool_results` carries the turn.
    pub content: String,
    /// The client's key for the message (`Idempotency-Key`, an AI SDK message id).
    pub key: Option<String>,
    pub options: AskOptions,
    /// Results of the latest answer's tool calls, recorded on it before answering.
    pub tool_results: Vec<ToolOutput>,
}

/// A chat checked for an answer ([`ChatEngine::check_can_answer`]): the user's own, with a
/// configured bot. Answering through it ([`ChatEngine::ask_in`],
/// [`ChatEngine::regenerate_in`]) does not read the chat again: one read fewer before the
/// first token.
#[derive(Clone, Debug)]
pub struct Answerable {
    chat: Chat,
    bot: Bot,
}

/// What an exchange answers.
enum Ask<'a> {
    /// A new question.
    New(&'a Question),
    /// The last user message, again.
    Again,
}

impl ChatEngine {
    /// Posts `content` as `user_id`'s message in `chat_id` and starts the answer. With a
    /// `key` the chat has seen before (a retried request), returns that request's exchange
    /// instead, unchanged ([`Sent::repeated`]); the same key with other content is refused.
    pub async fn send(
        &self,
        user_id: &str,
        chat_id: &str,
        content: &str,
        key: Option<&str>,
    ) -> Result<Sent, ChatError> {
        let question = Question {
            content: content.to_owned(),
            key: key.map(str::to_owned),
            ..Question::default()
        };
        self.ask(user_id, chat_id, &question).await
    }

    /// [`ChatEngine::send`] in full: with per-request options, and results of the latest
    /// answer's tool calls (recorded on that answer before the new one starts). With results
    /// and no content, no user message is stored: the answer continues the conversation.
    pub async fn ask(
        &self,
        user_id: &str,
        chat_id: &str,
        question: &Question,
    ) -> Result<Sent, ChatError> {
        let chat = self.check_can_answer(user_id, chat_id).await?;
        self.ask_in(&chat, question).await
    }

    /// [`ChatEngine::ask`] in a chat checked already.
    pub async fn ask_in(&self, chat: &Answerable, question: &Question) -> Result<Sent, ChatError> {
        // Tool results alone are a turn; otherwise the words must be acceptable.
        let results_only = question.content.is_empty() && !question.tool_results.is_empty();
        if !results_only {
            self.validate_content(&question.content)?;
        }
        if let Some(key) = &question.key {
            validate_key(key)?;
        }
        self.start_exchange(chat, Ask::New(question)).await
    }

    /// Creates a chat with an id the client chose (1 to 128 characters of ASCII letters,
    /// digits and `-_.~`). An id that exists already is refused (`chat_id_taken`).
    pub async fn create_chat_with_id(
        &self,
        user_id: &str,
        chat_id: &str,
        bot_id: &str,
    ) -> Result<rill_core::chat::Chat, ChatError> {
        let valid = !chat_id.is_empty()
            && chat_id.len() <= 128
            && chat_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
        if !valid {
            return Err(ChatError::InvalidContent {
                code: "invalid_chat_id",
                message: "a chat id is 1 to 128 ASCII letters, digits, '-', '_', '.' or '~'".into(),
            });
        }
        if self.bot(bot_id).is_none() {
            return Err(ChatError::UnknownBot(bot_id.to_owned()));
        }
        match self
            .inner
            .store
            .create_chat_with_id(user_id, bot_id, chat_id)
            .await
        {
            Ok(chat) => Ok(chat),
            Err(StoreError::DuplicateKey) => Err(ChatError::Conflict {
                code: "chat_id_taken",
                message: "a chat with this id exists already",
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// The exchange that produced assistant message `message_id` of one of `user_id`'s chats:
    /// its question, the answer as stored now, and where its events start in the log.
    pub async fn exchange_of(&self, user_id: &str, message_id: &str) -> Result<Sent, ChatError> {
        let answer = self
            .inner
            .store
            .get_message(message_id)
            .await?
            .filter(|m| m.role == Role::Assistant)
            .ok_or(ChatError::NotFound)?;
        self.chat(user_id, &answer.chat_id).await?;
        let before = self
            .inner
            .store
            .list_messages(&answer.chat_id, Some(PageCursor(answer.seq)), 50)
            .await?;
        let question = before
            .items
            .into_iter()
            .rev()
            .find(|m| m.role == Role::User)
            .ok_or(ChatError::NotFound)?;
        let start = self
            .inner
            .store
            .exchange_start(&answer.id)
            .await?
            .map(|(epoch, offset)| Published { epoch, offset });
        Ok(Sent {
            user_message: question,
            assistant_message: answer,
            start,
            repeated: false,
        })
    }

    /// Answers the last user message of `chat_id` again (after an error, a stop or an
    /// interruption), as a new assistant message.
    pub async fn regenerate(&self, user_id: &str, chat_id: &str) -> Result<Sent, ChatError> {
        let chat = self.check_can_answer(user_id, chat_id).await?;
        self.regenerate_in(&chat).await
    }

    /// [`ChatEngine::regenerate`] in a chat checked already.
    pub async fn regenerate_in(&self, chat: &Answerable) -> Result<Sent, ChatError> {
        self.start_exchange(chat, Ask::Again).await
    }

    /// Checks what a request could change before it changes anything: the chat is
    /// `user_id`'s and its bot exists. The HTTP layer calls it before taking a stream slot,
    /// then answers through what it returns.
    pub async fn check_can_answer(
        &self,
        user_id: &str,
        chat_id: &str,
    ) -> Result<Answerable, ChatError> {
        let chat = self.chat(user_id, chat_id).await?;
        self.answerable(user_id, chat)
    }

    /// [`ChatEngine::check_can_answer`] for a chat the caller has read already (or just
    /// created).
    pub fn answerable(&self, user_id: &str, chat: Chat) -> Result<Answerable, ChatError> {
        if chat.user_id != user_id {
            return Err(ChatError::NotFound);
        }
        let bot = self
            .bot(&chat.bot_id)
            .cloned()
            .ok_or_else(|| ChatError::UnknownBot(chat.bot_id.clone()))?;
        Ok(Answerable { chat, bot })
    }

    async fn start_exchange(&self, checked: &Answerable, ask: Ask<'_>) -> Result<Sent, ChatError> {
        if self.is_draining() {
            return Err(ChatError::Draining);
        }
        let Answerable { chat, bot } = checked;
        let (chat_id, user_id, bot) = (chat.id.as_str(), chat.user_id.as_str(), bot.clone());
        if let Ask::New(Question {
            content,
            key: Some(key),
            ..
        }) = ask
            && let Some(sent) = self.repeated(chat_id, key, content).await?
        {
            return Ok(sent);
        }
        if self.is_running(chat_id) {
            return Err(ChatError::Busy);
        }
        let options = match ask {
            Ask::New(question) => {
                if !question.tool_results.is_empty() {
                    self.record_tool_results(chat_id, &question.tool_results)
                        .await?;
                }
                question.options.clone()
            }
            Ask::Again => AskOptions::default(),
        };

        // The placeholder carries the generation's lease: no write of its own before the
        // first token.
        let placeholder = self.placeholder(chat_id, &bot);
        // Words and no tool results: the only exchange whose history the cache serves and
        // keeps (recording tool results just now changed the chat's revision).
        let plain_question = matches!(
            ask,
            Ask::New(q) if !q.content.is_empty() && q.tool_results.is_empty()
        );
        // The question, the answer's placeholder, whether the question is new, and how much
        // of the history the model sees (a regeneration stops at its question: the answers
        // after it are the ones being replaced).
        // `earlier`: for a new question (and only then), the history before it, read while it
        // is stored.
        let (question, answer, up_to, earlier) = match ask {
            Ask::New(Question { content, key, .. }) if !content.is_empty() => {
                let user = NewMessage {
                    chat_id: chat_id.to_owned(),
                    role: Role::User,
                    content: content.clone(),
                    status: MessageStatus::Complete,
                    bot_id: None,
                    model: None,
                    client_key: key.clone(),
                    lease: None,
                };
                // The history before the question: from memory when this instance knows it at
                // the revision the chat was read at. Otherwise it is read while the question is
                // stored (on two connections of a pool): one wait fewer before the first token.
                // Nothing else can add to the chat meanwhile (one exchange at a time).
                let cached = if plain_question {
                    self.inner.history_cache.get(chat_id, chat.history_revision)
                } else {
                    None
                };
                let (inserted, earlier) = match cached {
                    Some(history) => (
                        self.inner.store.insert_exchange(user, placeholder).await,
                        Ok(history),
                    ),
                    None => {
                        tokio::join!(
                            self.inner.store.insert_exchange(user, placeholder),
                            self.history(chat_id, None)
                        )
                    }
                };
                match inserted {
                    Ok((question, answer)) => (question, answer, None, Some(earlier)),
                    // Two requests with one key raced: the other one's insert won.
                    Err(StoreError::DuplicateKey) => {
                        let key = key.as_deref().unwrap_or_default();
                        return match self.repeated(chat_id, key, content).await? {
                            Some(sent) => Ok(sent),
                            None => Err(ChatError::Busy),
                        };
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            // Tool results without words: the answer goes on from them, with the whole
            // history (the call and its result included).
            Ask::New(_) => {
                let question = self.last_question(chat_id).await?;
                let answer = self.inner.store.insert_message(placeholder).await?;
                (question, answer, None, None)
            }
            Ask::Again => {
                let question = self.last_question(chat_id).await?;
                let answer = self.inner.store.insert_message(placeholder).await?;
                let up_to = Some(question.seq);
                (question, answer, up_to, None)
            }
        };
        let new_question = earlier.is_some();
        // Only a chat without a title gets one (its first question): a write saved on every
        // later exchange, before the first token.
        if new_question && chat.title.is_none() {
            let title: String = question.content.trim().chars().take(80).collect();
            if let Err(error) = self.inner.store.set_title_if_empty(chat_id, &title).await {
                tracing::warn!(%error, chat_id, "cannot set the chat title");
            }
        }

        // The exchange's events: the question (if new), then the answer's placeholder. The
        // answer's progress starts at the placeholder's offset, so a stream that joins now
        // starts there, not at the start of the chat.
        let topic = Topic::for_chat(chat_id);
        let first = if new_question {
            Some(
                self.publish_or_fail(&topic, &answer, ChatEvent::Created(question.clone()))
                    .await?,
            )
        } else {
            None
        };
        let created = self
            .publish_or_fail(&topic, &answer, ChatEvent::Created(answer.clone()))
            .await?;
        let first = first.unwrap_or_else(|| created.clone());
        let start = Published {
            epoch: first.epoch,
            offset: first.offset.saturating_sub(1),
        };
        self.record_exchange_start(&answer.id, &start);
        // Whether this instance can keep the history once the answer is written: the exchange
        // is a plain question, and the history has no other answer still being written.
        let mut keep = plain_question && self.inner.history_cache.enabled();
        let history = match earlier {
            Some(earlier) => {
                let mut history = earlier?;
                // The insert succeeded, so no other answer is streaming now; one that was when
                // the history was read (finishing on another instance at that moment) is read
                // again, so the model sees its final text.
                if history
                    .iter()
                    .any(|m| m.status == MessageStatus::Streaming && m.id != answer.id)
                {
                    history = self.history(chat_id, None).await?;
                    keep = false;
                }
                // A read that ran after the insert has the question (and the answer's
                // placeholder, which no model is sent) already.
                history.retain(|m| m.id != answer.id);
                if !history.iter().any(|m| m.id == question.id) {
                    history.push(question.clone());
                }
                history
            }
            None => self.history(chat_id, up_to).await?,
        };
        // Counted from the revision read before the history: a change by anyone else since
        // then makes the chat's revision come out higher, and the kept history unused.
        let keep_at = keep.then(|| chat.history_revision.after(EXCHANGE_CHANGES));
        self.start(
            bot,
            answer.clone(),
            created.offset,
            history,
            user_id,
            options,
            keep_at,
        );
        Ok(Sent {
            user_message: question,
            assistant_message: answer,
            start: Some(start),
            repeated: false,
        })
    }

    /// Records where an exchange starts in the log, in the background: a repeated request
    /// replays from there. Until it lands (a few hundred microseconds), one finds no start
    /// and rebuilds the answer's state instead ([`Sent::start`] `None`), which is as exact;
    /// awaiting it would put a write before the first token.
    fn record_exchange_start(&self, message_id: &str, start: &Published) {
        let store = self.inner.store.clone();
        let (message_id, start) = (message_id.to_owned(), start.clone());
        self.inner.tracker.spawn(async move {
            if let Err(error) = store
                .set_exchange_start(&message_id, &start.epoch, start.offset)
                .await
            {
                tracing::warn!(%error, %message_id, "cannot record where the exchange starts");
            }
        });
    }

    /// The chat's last user message (what a regeneration answers again).
    async fn last_question(&self, chat_id: &str) -> Result<Message, ChatError> {
        let page = self.inner.store.list_messages(chat_id, None, 50).await?;
        page.items
            .into_iter()
            .rev()
            .find(|m| m.role == Role::User)
            .ok_or(ChatError::Conflict {
                code: "nothing_to_answer",
                message: "there is no user message to answer",
            })
    }

    /// Records the results of the latest answer's tool calls on it.
    async fn record_tool_results(
        &self,
        chat_id: &str,
        results: &[ToolOutput],
    ) -> Result<(), ChatError> {
        let unknown = || ChatError::InvalidContent {
            code: "unknown_tool_call",
            message: "a tool result names no tool call of the latest answer".into(),
        };
        let mut answer = self.latest_answer(chat_id).await?.ok_or_else(unknown)?;
        for result in results {
            let call = answer.parts.iter_mut().find_map(|p| match p {
                Part::ToolCall {
                    id, output, error, ..
                } if *id == result.call_id => Some((output, error)),
                _ => None,
            });
            let Some((output, error)) = call else {
                return Err(unknown());
            };
            output.clone_from(&result.output);
            error.clone_from(&result.error);
        }
        if !self
            .inner
            .store
            .set_parts(&answer.id, &answer.content, &answer.parts)
            .await?
        {
            return Err(ChatError::Busy);
        }
        Ok(())
    }

    /// The exchange of an earlier request with `key`, if the chat has one.
    async fn repeated(
        &self,
        chat_id: &str,
        key: &str,
        content: &str,
    ) -> Result<Option<Sent>, ChatError> {
        let Some((question, answer)) = self.inner.store.find_by_client_key(chat_id, key).await?
        else {
            return Ok(None);
        };
        if question.content != content {
            return Err(ChatError::Conflict {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used for a different message",
            });
        }
        let Some(answer) = answer else {
            // The question exists without its answer only between the two inserts of another
            // request (one transaction, so never visible): treat as still being written.
            return Err(ChatError::Busy);
        };
        let start = self
            .inner
            .store
            .exchange_start(&answer.id)
            .await?
            .map(|(epoch, offset)| Published { epoch, offset });
        Ok(Some(Sent {
            user_message: question,
            assistant_message: answer,
            start,
            repeated: true,
        }))
    }

    fn validate_content(&self, content: &str) -> Result<(), ChatError> {
        if content.trim().is_empty() {
            return Err(ChatError::InvalidContent {
                code: "empty_content",
                message: "content is empty".into(),
            });
        }
        if content.contains('\0') {
            // PostgreSQL cannot store it in text; refuse it the same way on every store.
            return Err(ChatError::InvalidContent {
                code: "invalid_content",
                message: "content contains a NUL character".into(),
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
            client_key: None,
            // The generation renews it every third of its time.
            lease: Some(Lease {
                owner: self.inner.settings.instance_id.clone(),
                until_ms: now_ms().saturating_add(duration_ms(self.inner.settings.lease_ttl)),
            }),
        }
    }

    /// Publishes an event of the exchange; if the broker is down, the placeholder is finished
    /// as `error` so the chat is not left busy.
    async fn publish_or_fail(
        &self,
        topic: &Topic,
        placeholder: &Message,
        event: ChatEvent,
    ) -> Result<Published, ChatError> {
        match self.inner.broker.publish(topic, event.to_new_event()).await {
            Ok(p) => Ok(p),
            Err(error) => {
                let outcome = Outcome {
                    status: MessageStatus::Error,
                    content: String::new(),
                    parts: Vec::new(),
                    finish_reason: Some("error".to_owned()),
                    usage: None,
                    error: Some("the event broker is unavailable".to_owned()),
                };
                let owner = Some(self.inner.settings.instance_id.as_str());
                if let Err(e) = self
                    .inner
                    .store
                    .finish(&placeholder.id, owner, &outcome)
                    .await
                {
                    tracing::warn!(error = %e, "cannot finish a placeholder after a broker failure");
                }
                Err(ChatError::Broker(error))
            }
        }
    }

    /// The chat's history for the prompt, oldest first, up to (and including) `up_to_seq`.
    pub(crate) async fn history(
        &self,
        chat_id: &str,
        up_to_seq: Option<i64>,
    ) -> Result<Vec<Message>, ChatError> {
        // Read back until the model's budget is spent: `fit_history` stops there, and no older
        // message is ever sent again (the history cache keeps the same cut).
        let mut walk = Walk::new(self.inner.settings.history_budget_chars);
        let mut before = up_to_seq.map(|s| PageCursor(s.saturating_add(1)));
        let mut newest_first: Vec<Message> = Vec::new();
        // Bounded: at most 20 pages of 50.
        'pages: for _ in 0..20 {
            let page = self.inner.store.list_messages(chat_id, before, 50).await?;
            for m in page.items.into_iter().rev() {
                let stop = walk.step(&m) == Step::Stop;
                newest_first.push(m);
                if stop {
                    break 'pages;
                }
            }
            before = page.next_before.as_deref().and_then(PageCursor::parse);
            if before.is_none() {
                break;
            }
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Spawns the generation of `message`, whose `message.created` is at `offset`.
    /// With `keep_at`, the history goes to the history cache with the answer, as the chat's
    /// history at that revision once the answer is written.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        bot: Bot,
        message: Message,
        offset: u64,
        history: Vec<Message>,
        user: &str,
        options: AskOptions,
        keep_at: Option<HistoryRevision>,
    ) {
        let request = self.request(&bot, &message, &history, Some(user), options);
        let seed = keep_at.map(|revision| Seed {
            revision,
            messages: history,
        });
        self.spawn(bot, message, offset, request, seed);
    }

    /// What the bot is asked for `message`, given the history before it.
    pub(crate) fn request(
        &self,
        bot: &Bot,
        message: &Message,
        history: &[Message],
        user: Option<&str>,
        options: AskOptions,
    ) -> CompletionRequest {
        CompletionRequest {
            model: bot.config.model.clone(),
            system: options.system.or_else(|| bot.config.system_prompt.clone()),
            messages: fit_history(history, self.inner.settings.history_budget_chars),
            temperature: options.temperature.or(bot.config.temperature),
            max_tokens: options.max_tokens.or(bot.config.max_tokens),
            stop: options.stop,
            tools: options.tools,
            tool_choice: options.tool_choice,
            context: RequestContext {
                user_id: user.map(str::to_owned),
                chat_id: Some(message.chat_id.clone()),
                message_id: Some(message.id.clone()),
            },
            prefill: Vec::new(),
        }
    }

    /// Runs the generation of `message` (as it stands: a placeholder, or the parts of an answer
    /// being continued) from topic offset `offset`, asking `request`. A `seed` goes to the
    /// history cache with the answer once it is written.
    pub(crate) fn spawn(
        &self,
        bot: Bot,
        message: Message,
        offset: u64,
        request: CompletionRequest,
        seed: Option<Seed>,
    ) {
        let cancel = CancellationToken::new();
        let progress = Arc::new(Mutex::new(Progress {
            message: message.clone(),
            offset,
            version: 0,
        }));
        let (done_tx, done_rx) = watch::channel(false);
        lock(&self.inner.running).insert(
            message.chat_id.clone(),
            Running {
                message_id: message.id.clone(),
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
                    message_id: message.id.clone(),
                    chat_id: chat_id.clone(),
                    cancel,
                    progress,
                    seed,
                };
                generation.run(request).await;
                lock(&inner.running).remove(&chat_id);
                let _ = done_tx.send(true);
            },
            span,
        ));
    }
}

/// A client key is 1 to [`MAX_CLIENT_KEY_LEN`] visible ASCII characters (`400
/// invalid_idempotency_key` otherwise). The HTTP face checks a request's key with it before
/// acting on the request at all.
pub fn validate_key(key: &str) -> Result<(), ChatError> {
    if key.is_empty()
        || key.len() > MAX_CLIENT_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ChatError::InvalidContent {
            code: "invalid_idempotency_key",
            message: format!(
                "an Idempotency-Key is 1 to {MAX_CLIENT_KEY_LEN} visible ASCII characters"
            ),
        });
    }
    Ok(())
}
