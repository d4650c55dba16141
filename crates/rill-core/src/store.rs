//! The storage interface for chats and messages, implemented by `rill-store` on SQLite and
//! PostgreSQL.
//!
//! Ownership is part of every query: a chat of another user is reported exactly like a chat that
//! does not exist, so the HTTP layer answers 404 without ever learning it exists.

use crate::Epoch;
use crate::chat::{Chat, Message, NewMessage, Outcome, Page, PageCursor, Part};

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The chat already has a message `streaming` (one generation at a time per chat): 409.
    #[error("a generation is already running in this chat")]
    Busy,
    /// The chat already has a message with this client key (a repeated request).
    #[error("a message with this client key exists")]
    DuplicateKey,
    /// The chat or message does not exist (or is not the caller's).
    #[error("not found")]
    NotFound,
    /// The database failed or is unreachable; details for the log only.
    #[error("storage failed: {0}")]
    Backend(String),
}

/// Storage of chats and messages.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a chat for `user_id` with `bot_id`.
    async fn create_chat(&self, user_id: &str, bot_id: &str) -> Result<Chat, StoreError>;

    /// Creates a chat with an id the client chose (the AI SDK's chat ids). An id that exists
    /// already, whoever owns it, fails with [`StoreError::DuplicateKey`].
    async fn create_chat_with_id(
        &self,
        user_id: &str,
        bot_id: &str,
        id: &str,
    ) -> Result<Chat, StoreError>;

    /// The chat, if it exists and belongs to `user_id`.
    async fn get_chat(&self, user_id: &str, chat_id: &str) -> Result<Option<Chat>, StoreError>;

    /// `user_id`'s chats, newest first, optionally of one bot only; `before` from a previous page.
    async fn list_chats(
        &self,
        user_id: &str,
        bot_id: Option<&str>,
        before: Option<PageCursor>,
        limit: u32,
    ) -> Result<Page<Chat>, StoreError>;

    /// Deletes the chat and its messages. `false` when it did not exist or is not `user_id`'s.
    async fn delete_chat(&self, user_id: &str, chat_id: &str) -> Result<bool, StoreError>;

    /// Sets the chat's title if it has none yet (derived from the first user message).
    async fn set_title_if_empty(&self, chat_id: &str, title: &str) -> Result<(), StoreError>;

    /// Inserts a message. A `Streaming` message in a chat that already has one fails with
    /// [`StoreError::Busy`] (enforced by the database, so it holds across instances).
    async fn insert_message(&self, message: NewMessage) -> Result<Message, StoreError>;

    /// Inserts the user message and the assistant's `Streaming` placeholder in one transaction:
    /// either both exist or neither ([`StoreError::Busy`] if a generation is running,
    /// [`StoreError::DuplicateKey`] if the chat has a message with the user message's key).
    async fn insert_exchange(
        &self,
        user: NewMessage,
        assistant: NewMessage,
    ) -> Result<(Message, Message), StoreError>;

    /// A message by id (no ownership check: callers reach messages through an owned chat).
    async fn get_message(&self, message_id: &str) -> Result<Option<Message>, StoreError>;

    /// The message of `chat_id` whose client key is `key`, and the first assistant message
    /// after it (its answer), if any.
    async fn find_by_client_key(
        &self,
        chat_id: &str,
        key: &str,
    ) -> Result<Option<(Message, Option<Message>)>, StoreError>;

    /// Records where the exchange of assistant message `message_id` starts in its chat's log:
    /// replaying after `after` in `epoch` yields the exchange's events.
    async fn set_exchange_start(
        &self,
        message_id: &str,
        epoch: &Epoch,
        after: u64,
    ) -> Result<(), StoreError>;

    /// Where the exchange of an assistant message starts, if recorded (see
    /// [`Store::set_exchange_start`]).
    async fn exchange_start(&self, message_id: &str) -> Result<Option<(Epoch, u64)>, StoreError>;

    /// History: one page of the chat's messages, oldest to newest within the page, strictly
    /// older than `before` when given; `next_before` points at the next older page.
    async fn list_messages(
        &self,
        chat_id: &str,
        before: Option<PageCursor>,
        limit: u32,
    ) -> Result<Page<Message>, StoreError>;

    /// Saves the parts of a `Streaming` message so far (and their text as `content`), and the
    /// broker offset of the last event they include. Ignored when the message is no longer
    /// `Streaming`, or when `owner` no longer holds its lease (another instance took the
    /// generation over).
    async fn checkpoint(
        &self,
        message_id: &str,
        owner: &str,
        content: &str,
        parts: &[Part],
        offset: u64,
    ) -> Result<(), StoreError>;

    /// Writes the final state of a `Streaming` message: by the holder of its lease when `owner`
    /// is given. Returns `false` (and changes nothing) when it was no longer `Streaming` (or
    /// `owner` lost the lease), so two instances never both finish it.
    async fn finish(
        &self,
        message_id: &str,
        owner: Option<&str>,
        outcome: &Outcome,
    ) -> Result<bool, StoreError>;

    /// Replaces the parts (and `content`) of a message that is no longer `Streaming`: the
    /// results of its tool calls, supplied by the client after the answer. `false` when the
    /// message does not exist or is still streaming.
    async fn set_parts(
        &self,
        message_id: &str,
        content: &str,
        parts: &[Part],
    ) -> Result<bool, StoreError>;

    /// The checkpoint offset saved with the last [`Store::checkpoint`] of a message.
    async fn checkpoint_offset(&self, message_id: &str) -> Result<Option<u64>, StoreError>;

    /// Records that `owner` (an instance id) runs the generation of `message_id` until
    /// `until_ms` (Unix ms); called again to renew. Returns `false` (and changes nothing) when
    /// the message is no longer `Streaming` (another instance declared it over) or another
    /// owner holds its lease (another instance took it over after ours expired): the
    /// generation must stop.
    async fn renew_lease(
        &self,
        message_id: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Takes the lease of a `Streaming` message whose lease ended before `now_ms` (or that never
    /// had one): `owner` holds it until `until_ms`. Atomic: of several instances trying, one
    /// gets `true`.
    async fn take_over(
        &self,
        message_id: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Ends `owner`'s lease of a `Streaming` message at once, so another instance takes the
    /// generation over at its next look (a draining instance handing over what it could not
    /// finish).
    async fn release_lease(&self, message_id: &str, owner: &str) -> Result<(), StoreError>;

    /// `Streaming` messages whose lease ended before `now_ms`, or that have no lease and belong
    /// to `owner` (the messages a crashed previous run of this instance left behind), or that
    /// never got a lease and were last written (inserted or checkpointed) over a minute before
    /// `now_ms` (their process died between the insert and its first `renew_lease`). With
    /// `owner` `None`: every `Streaming` message (single-instance start-up recovery).
    async fn orphaned(&self, now_ms: i64, owner: Option<&str>) -> Result<Vec<Message>, StoreError>;

    /// Whether the database answers (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}
