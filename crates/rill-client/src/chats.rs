//! The typed client of rill's chats: bots, chats, history pages, and sending a message with the
//! answer streamed back as typed events that survive dropped connections.
//!
//! How an answer is followed (docs/api.md, "Chats"): the POST-SSE style cannot be resumed by
//! posting again, so [`ChatsClient::send`] opens the chat's event stream
//! (`GET /api/chats/{id}/events`) *first*, waits until the server has answered it (its position
//! is then fixed at the log's head), posts the message with `Accept: application/json` (202),
//! and reads the stream until the answer's `message.completed`. The stream is an
//! [`EventStream`], which reconnects with `Last-Event-ID` so the server replays exactly what was
//! missed. When exact replay is impossible (no id received yet, or a `reset`), the server sends
//! a `snapshot` of a running answer, and a finished one is read back from the history: either
//! way the text comes out exactly once, as deltas appended to the last snapshot.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::client::{Client, check_status};
use crate::error::Error;
use crate::event_source::{EventStream, SseItem, transport};
use crate::policy::RetryPolicy;

/// The read timeout of chat event streams: three of rill's default 15 s heartbeats.
pub const CHAT_READ_TIMEOUT: Duration = Duration::from_secs(45);

/// How many of the newest messages are read to find an answer that finished while the client
/// was away; only the exchange's own two messages (and whatever another tab sent since) matter.
const RECENT_MESSAGES: u32 = 20;

/// A bot the server offers (`GET /api/bots`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Bot {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `openai`, `anthropic`, `demo`...
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub model: String,
}

/// A chat: one user's conversation with one bot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Chat {
    pub id: String,
    pub bot: String,
    /// Derived from the first message, once there is one.
    #[serde(default)]
    pub title: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Only in [`ChatsClient::get`]: the id of the answer being generated, if any.
    #[serde(default)]
    pub generating: Option<String>,
}

/// A page of chats, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChatPage {
    pub chats: Vec<Chat>,
    /// The cursor of the next (older) page, `None` at the end.
    pub next_before: Option<String>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    User,
    Assistant,
    /// A role this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

/// Where a message is in its life. Every status but `Streaming` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageStatus {
    Streaming,
    Complete,
    Stopped,
    Error,
    Interrupted,
    /// A status this client does not know (a newer server); taken as final.
    #[serde(other)]
    Unknown,
}

impl MessageStatus {
    /// Whether the message will change no more.
    pub fn is_final(self) -> bool {
        self != MessageStatus::Streaming
    }

    /// The wire name (`complete`, `stopped`...).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Streaming => "streaming",
            MessageStatus::Complete => "complete",
            MessageStatus::Stopped => "stopped",
            MessageStatus::Error => "error",
            MessageStatus::Interrupted => "interrupted",
            MessageStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token counts reported by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

/// A message of a chat, as the API and the `message.created` / `snapshot` events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    pub id: String,
    pub chat_id: String,
    pub role: Role,
    /// The whole text (so far, while `Streaming`).
    pub content: String,
    pub status: MessageStatus,
    /// `stop`, `length`, `stopped`, `error`, `interrupted`; `None` while streaming.
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// What went wrong, for status `error`.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A page of a chat's history, oldest to newest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    /// The cursor of the next *older* page, `None` at the start of the chat.
    pub next_before: Option<String>,
}

/// The server's `202` answer to a message posted with `Accept: application/json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Accepted {
    pub user_message: Message,
    /// The answer's placeholder (`Streaming`, empty).
    pub assistant_message: Message,
    /// The chat's event stream, relative to the server.
    pub events_url: String,
}

/// A typed event of a chat's stream, as [`ChatStream`] yields them.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChatEvent {
    /// `message.created`: the user's message, or the answer's empty `Streaming` placeholder.
    Created(Message),
    /// `message.delta`: append `text` to the message.
    Delta { message_id: String, text: String },
    /// `snapshot`: the message with its text so far; *replace* what was shown, do not append.
    Snapshot(Message),
    /// `message.completed`: the message is final.
    Completed {
        message_id: String,
        status: MessageStatus,
        finish_reason: Option<String>,
        usage: Option<Usage>,
        error: Option<String>,
    },
    /// `error`: the generation failed (`upstream_timeout`...); a `Completed` with status
    /// `error` follows.
    Error {
        code: String,
        message: String,
        message_id: Option<String>,
    },
    /// `reset`: exact resume was impossible; the client resynchronises (a `Snapshot` follows
    /// while the answer runs).
    Reset,
    /// The connection dropped; the client resumes after `delay` (reported so a terminal can say
    /// so; nothing needs doing).
    Reconnecting {
        error: Error,
        delay: Duration,
        attempt: u32,
    },
}

/// The chats API of one server. Get one with [`Client::chats`].
#[derive(Debug, Clone)]
pub struct ChatsClient {
    client: Client,
    /// The reconnect policy of the event streams followed by [`ChatsClient::send`].
    policy: RetryPolicy,
    read_timeout: Duration,
}

impl ChatsClient {
    pub(crate) fn new(client: Client) -> Self {
        ChatsClient {
            client,
            policy: RetryPolicy::default(),
            read_timeout: CHAT_READ_TIMEOUT,
        }
    }

    /// Sets the reconnect policy of the answer streams (default: [`RetryPolicy::default`],
    /// reconnect forever after the server's `retry:`).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets how long a silent answer stream is trusted (default [`CHAT_READ_TIMEOUT`]).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The bots the server offers.
    pub async fn bots(&self) -> Result<Vec<Bot>, Error> {
        #[derive(Deserialize)]
        struct Bots {
            bots: Vec<Bot>,
        }
        let url = self.client.endpoint(["api", "bots"]);
        let bots: Bots = self
            .client
            .send_json(self.client.request(Method::GET, url))
            .await?;
        Ok(bots.bots)
    }

    /// Starts a chat with `bot` (`404 unknown_bot` when it is not configured).
    pub async fn create(&self, bot: &str) -> Result<Chat, Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            bot: &'a str,
        }
        let url = self.client.endpoint(["api", "chats"]);
        let request = self.client.request(Method::POST, url).json(&Body { bot });
        self.client.send_json(request).await
    }

    /// A page of the user's chats, newest first: all bots, or only `bot`'s; `before` is a
    /// page's `next_before`; `limit` 1 to 100.
    pub async fn list(
        &self,
        bot: Option<&str>,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ChatPage, Error> {
        let mut url = self.client.endpoint(["api", "chats"]);
        page_query(&mut url, bot.map(|bot| ("bot", bot)), before, limit);
        self.client
            .send_json(self.client.request(Method::GET, url))
            .await
    }

    /// One chat, with the id of the answer being generated (`404 not_found` when it does not
    /// exist or is another user's).
    pub async fn get(&self, chat_id: &str) -> Result<Chat, Error> {
        let url = self.client.endpoint(["api", "chats", chat_id]);
        self.client
            .send_json(self.client.request(Method::GET, url))
            .await
    }

    /// Deletes a chat (stopping its running generation first).
    pub async fn delete(&self, chat_id: &str) -> Result<(), Error> {
        let url = self.client.endpoint(["api", "chats", chat_id]);
        let response = self
            .client
            .request(Method::DELETE, url)
            .send()
            .await
            .map_err(transport)?;
        check_status(response).await.map(drop)
    }

    /// A page of a chat's history, oldest to newest: the newest page without `before`, older
    /// ones with a page's `next_before`.
    pub async fn messages(
        &self,
        chat_id: &str,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<MessagePage, Error> {
        let mut url = self.client.endpoint(["api", "chats", chat_id, "messages"]);
        page_query(&mut url, None, before, limit);
        self.client
            .send_json(self.client.request(Method::GET, url))
            .await
    }

    /// Posts a message without following the answer (`202`): the answer runs on the server
    /// and is published on the chat's event stream.
    pub async fn post(&self, chat_id: &str, content: &str) -> Result<Accepted, Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            content: &'a str,
        }
        let url = self.client.endpoint(["api", "chats", chat_id, "messages"]);
        let request = self
            .client
            .request(Method::POST, url)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .json(&Body { content });
        self.client.send_json(request).await
    }

    /// Sends `content` and follows the answer: the stream yields this exchange's events, from
    /// the user's `Created` to the answer's `Completed`, and then ends. It resumes by itself
    /// after dropped connections. Refusals (`409 generation_running`, `404 not_found`,
    /// `400 empty_content`...) come back here as [`Error::Status`] with the API code.
    pub async fn send(&self, chat_id: &str, content: &str) -> Result<ChatStream, Error> {
        self.exchange(chat_id, Some(content)).await
    }

    /// Answers the chat's last user message again, as a new assistant message (the Retry of a
    /// failed answer), followed like [`ChatsClient::send`].
    pub async fn regenerate(&self, chat_id: &str) -> Result<ChatStream, Error> {
        self.exchange(chat_id, None).await
    }

    /// Stops the running generation; returns the answer as stored (status `stopped`), or
    /// `409 not_generating` when nothing runs.
    pub async fn stop(&self, chat_id: &str) -> Result<Message, Error> {
        #[derive(Deserialize)]
        struct Stopped {
            message: Message,
        }
        let url = self.client.endpoint(["api", "chats", chat_id, "stop"]);
        let stopped: Stopped = self
            .client
            .send_json(self.client.request(Method::POST, url))
            .await?;
        Ok(stopped.message)
    }

    /// Opens the chat's event stream, waits until the server has answered it, then posts.
    async fn exchange(&self, chat_id: &str, content: Option<&str>) -> Result<ChatStream, Error> {
        let mut events = self.follow(chat_id);
        wait_open(&mut events).await?;
        let accepted = match content {
            Some(content) => self.post(chat_id, content).await?,
            None => {
                let url = self
                    .client
                    .endpoint(["api", "chats", chat_id, "regenerate"]);
                let request = self
                    .client
                    .request(Method::POST, url)
                    .header(ACCEPT, HeaderValue::from_static("application/json"));
                self.client.send_json(request).await?
            }
        };
        tracing::debug!(
            chat = chat_id,
            message = %accepted.assistant_message.id,
            "following the answer"
        );
        let exchange = Exchange {
            chats: self.clone(),
            chat_id: chat_id.to_owned(),
            user_id: accepted.user_message.id.clone(),
            assistant_id: accepted.assistant_message.id.clone(),
            events,
            pending: VecDeque::new(),
            seen_id: false,
            done: false,
        };
        let inner = futures::stream::unfold(exchange, |mut exchange| async move {
            let item = exchange.next().await?;
            Some((item, exchange))
        });
        Ok(ChatStream {
            accepted,
            inner: Box::pin(inner),
        })
    }

    /// The chat's event stream from its head (no `Last-Event-ID`), with connection changes.
    fn follow(&self, chat_id: &str) -> EventStream {
        let url = self.client.endpoint(["api", "chats", chat_id, "events"]);
        self.client
            .sse(Method::GET, url)
            .retry_policy(self.policy.clone())
            .read_timeout(self.read_timeout)
            .state_changes(true)
            .stream()
    }
}

/// Adds the paging parameters that are set.
fn page_query(
    url: &mut Url,
    filter: Option<(&str, &str)>,
    before: Option<&str>,
    limit: Option<u32>,
) {
    if filter.is_none() && before.is_none() && limit.is_none() {
        return;
    }
    let mut query = url.query_pairs_mut();
    if let Some((name, value)) = filter {
        query.append_pair(name, value);
    }
    if let Some(before) = before {
        query.append_pair("before", before);
    }
    if let Some(limit) = limit {
        query.append_pair("limit", &limit.to_string());
    }
}

/// Reads `events` until its first connection is open. A failure before that is returned at
/// once rather than retried: the caller asked for something that does not work right now
/// (wrong server, unknown chat), and should hear so instead of waiting.
async fn wait_open(events: &mut EventStream) -> Result<(), Error> {
    loop {
        match events.next().await {
            Some(Ok(SseItem::Open { .. })) => return Ok(()),
            Some(Ok(SseItem::Reconnecting { error, .. })) | Some(Err(error)) => return Err(error),
            Some(Ok(_)) => continue,
            None => return Err(Error::Disconnected),
        }
    }
}

/// The answer stream of [`ChatsClient::send`]: `Ok` events until the answer's
/// [`ChatEvent::Completed`], after which it ends; or an `Err` (the server refused the stream
/// for good, retries ran out) after which it ends. An event that cannot be decoded gives an
/// [`Error::Decode`] item and the stream goes on.
pub struct ChatStream {
    accepted: Accepted,
    inner: Pin<Box<dyn Stream<Item = Result<ChatEvent, Error>> + Send>>,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("chat", &self.accepted.assistant_message.chat_id)
            .field("answer", &self.accepted.assistant_message.id)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    /// The exchange as the server accepted it: the user's message and the answer's
    /// placeholder (whose id the answer's events carry).
    pub fn accepted(&self) -> &Accepted {
        &self.accepted
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The state behind a [`ChatStream`].
struct Exchange {
    chats: ChatsClient,
    chat_id: String,
    user_id: String,
    assistant_id: String,
    events: EventStream,
    pending: VecDeque<ChatEvent>,
    /// An event with an id has arrived, so a reconnect resumes exactly with `Last-Event-ID`.
    /// Until then a reconnect starts at the head, and what it missed is recovered by a
    /// `snapshot` (answer still running) or from the history (answer finished).
    seen_id: bool,
    done: bool,
}

/// The data of `message.delta`.
#[derive(Deserialize)]
struct DeltaData {
    message_id: String,
    text: String,
}

/// The data of `message.completed`.
#[derive(Deserialize)]
struct CompletedData {
    message_id: String,
    status: MessageStatus,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<String>,
}

/// The data of `error`: a generation's failure (with `message_id`), or the server's notice
/// that it ends the connection (`stream_duration`, `server_shutdown`: without `message_id`).
#[derive(Deserialize)]
struct ErrorData {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    message_id: Option<String>,
}

impl Exchange {
    async fn next(&mut self) -> Option<Result<ChatEvent, Error>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let item = match self.events.next().await {
                Some(Ok(item)) => item,
                Some(Err(error)) => {
                    self.done = true;
                    return Some(Err(error));
                }
                None => {
                    self.done = true;
                    return Some(Err(Error::Disconnected));
                }
            };
            match item {
                SseItem::Event(event) => {
                    if !event.id.is_empty() {
                        self.seen_id = true;
                    }
                    if let Err(error) = self.on_event(&event.event, &event.data).await {
                        return Some(Err(error));
                    }
                }
                SseItem::Open { .. } => {
                    // Every open here is a reconnect (the first was awaited before posting).
                    if !self.seen_id {
                        if let Err(error) = self.settle_from_history().await {
                            return Some(Err(error));
                        }
                    }
                }
                SseItem::Reconnecting {
                    error,
                    delay,
                    attempt,
                } => {
                    tracing::debug!(chat = %self.chat_id, %error, ?delay, attempt, "answer stream dropped; resuming");
                    return Some(Ok(ChatEvent::Reconnecting {
                        error,
                        delay,
                        attempt,
                    }));
                }
                SseItem::Comment(_) => {}
            }
        }
    }

    /// Whether `id` is one of this exchange's two messages.
    fn ours(&self, id: &str) -> bool {
        id == self.assistant_id || id == self.user_id
    }

    async fn on_event(&mut self, name: &str, data: &str) -> Result<(), Error> {
        match name {
            "message.created" | "snapshot" => {
                let message: Message = serde_json::from_str(data).map_err(Error::Decode)?;
                if self.ours(&message.id) {
                    self.pending.push_back(if name == "snapshot" {
                        ChatEvent::Snapshot(message)
                    } else {
                        ChatEvent::Created(message)
                    });
                }
            }
            "message.delta" => {
                let delta: DeltaData = serde_json::from_str(data).map_err(Error::Decode)?;
                if self.ours(&delta.message_id) {
                    self.pending.push_back(ChatEvent::Delta {
                        message_id: delta.message_id,
                        text: delta.text,
                    });
                }
            }
            "message.completed" => {
                let done: CompletedData = serde_json::from_str(data).map_err(Error::Decode)?;
                if self.ours(&done.message_id) {
                    self.done = done.message_id == self.assistant_id;
                    self.pending.push_back(ChatEvent::Completed {
                        message_id: done.message_id,
                        status: done.status,
                        finish_reason: done.finish_reason,
                        usage: done.usage,
                        error: done.error,
                    });
                }
            }
            "error" => {
                let error: ErrorData = serde_json::from_str(data).map_err(Error::Decode)?;
                match error.message_id {
                    Some(id) if self.ours(&id) => self.pending.push_back(ChatEvent::Error {
                        code: error.code,
                        message: error.message,
                        message_id: Some(id),
                    }),
                    // The server ends this connection (and says whether to come back): the
                    // event stream reconnects, or fails with the status that explains why.
                    _ => {
                        tracing::debug!(chat = %self.chat_id, code = %error.code, "the server ends the answer stream")
                    }
                }
            }
            "reset" => {
                self.pending.push_back(ChatEvent::Reset);
                self.rejoin().await?;
            }
            // Events of newer servers are not this client's business.
            _ => {}
        }
        Ok(())
    }

    /// After a `reset`: follow the chat afresh from its head, so a running answer comes as a
    /// `snapshot`, and a finished one is read from the history.
    async fn rejoin(&mut self) -> Result<(), Error> {
        self.events = self.chats.follow(&self.chat_id);
        self.seen_id = false;
        wait_open(&mut self.events).await?;
        self.settle_from_history().await
    }

    /// Called when the stream was (re)opened at the chat's head: if the answer is already
    /// final in the history, it is yielded from there (a `Snapshot` with the whole text and a
    /// `Completed`), since no event of it will come any more. If it is still running, the
    /// server sent a `snapshot` on this connection: nothing to do.
    async fn settle_from_history(&mut self) -> Result<(), Error> {
        let page = self
            .chats
            .messages(&self.chat_id, None, Some(RECENT_MESSAGES))
            .await?;
        let Some(message) = page
            .messages
            .into_iter()
            .find(|m| m.id == self.assistant_id)
        else {
            return Ok(());
        };
        if message.status.is_final() {
            let completed = ChatEvent::Completed {
                message_id: message.id.clone(),
                status: message.status,
                finish_reason: message.finish_reason.clone(),
                usage: message.usage,
                error: message.error.clone(),
            };
            self.pending.push_back(ChatEvent::Snapshot(message));
            self.pending.push_back(completed);
            self.done = true;
        }
        Ok(())
    }
}
