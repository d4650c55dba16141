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
//! way every part comes out exactly once.
//!
//! The events and the message model are the server's own (`rill_chat::protocol`,
//! `rill_core::chat`): this client decodes exactly what the engine encodes, and
//! [`ChatStream::message`] is the answer assembled from them, every part included.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

use rill_chat::protocol::{self, ChatEvent};
use rill_core::chat::Message;

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

/// What a [`ChatStream`] yields: the answer's events, and the connection's changes.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChatUpdate {
    /// An event of this exchange (its question's `message.created`, the answer's parts,
    /// deltas, `snapshot`, `message.completed`, a generation `error`, `reset`).
    Event(ChatEvent),
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
        Ok(ChatStream {
            answer: accepted.assistant_message.clone(),
            accepted,
            exchange,
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

/// The answer stream of [`ChatsClient::send`]: `Ok` updates until the answer's
/// `message.completed`, after which it ends; or an `Err` (the server refused the stream for
/// good, retries ran out) after which it ends. An event that cannot be decoded gives an
/// [`Error::Decode`] item and the stream goes on.
///
/// [`ChatStream::next`] also keeps [`ChatStream::message`]: the answer as the events so far
/// make it, every part included.
pub struct ChatStream {
    accepted: Accepted,
    /// The answer, with every event of it applied.
    answer: Message,
    exchange: Exchange,
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

    /// The answer as it stands: its text, its parts (reasoning, tool calls, sources) and, once
    /// it is over, its status, finish reason and usage.
    pub fn message(&self) -> &Message {
        &self.answer
    }

    /// The next update, `None` after the answer's completion (or a final error).
    pub async fn next(&mut self) -> Option<Result<ChatUpdate, Error>> {
        let item = self.exchange.next().await?;
        if let Ok(ChatUpdate::Event(event)) = &item
            && let Err(error) = protocol::apply(&mut self.answer, event)
        {
            // A server that sends events that do not fit: say so, keep the stream.
            tracing::warn!(%error, "an event does not fit the answer");
        }
        Some(item)
    }

    /// As a `Stream` of updates (the assembled answer is then not kept).
    pub fn into_stream(self) -> impl Stream<Item = Result<ChatUpdate, Error>> + Send {
        futures::stream::unfold(self, |mut stream| async move {
            let item = stream.next().await?;
            Some((item, stream))
        })
    }
}

/// The state behind a [`ChatStream`].
struct Exchange {
    chats: ChatsClient,
    chat_id: String,
    user_id: String,
    assistant_id: String,
    events: EventStream,
    pending: VecDeque<ChatUpdate>,
    /// An event with an id has arrived, so a reconnect resumes exactly with `Last-Event-ID`.
    /// Until then a reconnect starts at the head, and what it missed is recovered by a
    /// `snapshot` (answer still running) or from the history (answer finished).
    seen_id: bool,
    done: bool,
}

impl Exchange {
    async fn next(&mut self) -> Option<Result<ChatUpdate, Error>> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(Ok(update));
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
                    if !self.seen_id
                        && let Err(error) = self.settle_from_history().await
                    {
                        return Some(Err(error));
                    }
                }
                SseItem::Reconnecting {
                    error,
                    delay,
                    attempt,
                } => {
                    tracing::debug!(chat = %self.chat_id, %error, ?delay, attempt, "answer stream dropped; resuming");
                    return Some(Ok(ChatUpdate::Reconnecting {
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
        let Some(event) = ChatEvent::decode(name, data.as_bytes())
            .map_err(|e| Error::Decode(serde_json::Error::io(std::io::Error::other(e))))?
        else {
            // Events of newer servers are not this client's business.
            return Ok(());
        };
        match &event {
            ChatEvent::Reset { .. } => {
                // The state follows on the same stream (a snapshot of the running answer, or
                // the latest answer and its completion); if ours is over and not the latest,
                // the history has it.
                self.pending.push_back(ChatUpdate::Event(event));
                self.settle_from_history().await?;
            }
            ChatEvent::Error {
                message_id: None,
                code,
                ..
            } => {
                // The server ends this connection (and says whether to come back): the event
                // stream reconnects, or fails with the status that explains why.
                tracing::debug!(chat = %self.chat_id, %code, "the server ends the answer stream");
            }
            other => match other.message_id() {
                Some(id) if self.ours(id) => {
                    if let ChatEvent::Completed { message_id, .. } = other {
                        self.done = *message_id == self.assistant_id;
                    }
                    self.pending.push_back(ChatUpdate::Event(event));
                }
                _ => {}
            },
        }
        Ok(())
    }

    /// Called when the stream was (re)opened at the chat's head, or after a `reset`: if the
    /// answer is already final in the history, it is yielded from there (a `snapshot` with the
    /// whole answer and a `message.completed`), since no event of it will come any more. If it
    /// is still running, the server sent a `snapshot` on this connection: nothing to do.
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
        if message.status.is_final() && !self.done {
            let completed = ChatEvent::completed_of(&message);
            self.pending
                .push_back(ChatUpdate::Event(ChatEvent::Snapshot(message)));
            self.pending.push_back(ChatUpdate::Event(completed));
            self.done = true;
        }
        Ok(())
    }
}
