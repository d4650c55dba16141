//! A store that holds an exchange's insert back until the test lets it go, so that another
//! instance's step can land between the two halves of an exchange (its history read and its
//! insert). Every other call goes straight to the real store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rill_core::chat::{Chat, Message, NewMessage, Outcome, Page, PageCursor, Part};
use rill_core::{Epoch, Store, StoreError};
use tokio::sync::{Notify, oneshot};

pub(crate) struct HeldStore {
    inner: Arc<dyn Store>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
    holding: AtomicBool,
    listed_while_holding: Notify,
}

impl HeldStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(HeldStore {
            inner,
            release: Mutex::new(None),
            holding: AtomicBool::new(false),
            listed_while_holding: Notify::new(),
        })
    }

    /// Holds the next `insert_exchange` until the returned sender sends (or is dropped).
    pub(crate) fn hold_next_insert(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        *self.release.lock().expect("release lock") = Some(rx);
        tx
    }

    /// Returns once a page of messages was read while an insert was held.
    pub(crate) async fn listed_while_holding(&self) {
        self.listed_while_holding.notified().await;
    }
}

#[async_trait::async_trait]
impl Store for HeldStore {
    async fn insert_exchange(
        &self,
        user: NewMessage,
        assistant: NewMessage,
    ) -> Result<(Message, Message), StoreError> {
        let release = self.release.lock().expect("release lock").take();
        if let Some(release) = release {
            self.holding.store(true, Ordering::SeqCst);
            let _ = release.await;
            self.holding.store(false, Ordering::SeqCst);
        }
        self.inner.insert_exchange(user, assistant).await
    }

    async fn list_messages(
        &self,
        chat_id: &str,
        before: Option<PageCursor>,
        limit: u32,
    ) -> Result<Page<Message>, StoreError> {
        let page = self.inner.list_messages(chat_id, before, limit).await;
        if self.holding.load(Ordering::SeqCst) {
            self.listed_while_holding.notify_one();
        }
        page
    }

    // The rest, unchanged.

    async fn create_chat(&self, user_id: &str, bot_id: &str) -> Result<Chat, StoreError> {
        self.inner.create_chat(user_id, bot_id).await
    }
    async fn create_chat_with_id(
        &self,
        user_id: &str,
        bot_id: &str,
        id: &str,
    ) -> Result<Chat, StoreError> {
        self.inner.create_chat_with_id(user_id, bot_id, id).await
    }
    async fn get_chat(&self, user_id: &str, chat_id: &str) -> Result<Option<Chat>, StoreError> {
        self.inner.get_chat(user_id, chat_id).await
    }
    async fn list_chats(
        &self,
        user_id: &str,
        bot_id: Option<&str>,
        before: Option<PageCursor>,
        limit: u32,
    ) -> Result<Page<Chat>, StoreError> {
        self.inner.list_chats(user_id, bot_id, before, limit).await
    }
    async fn delete_chat(&self, user_id: &str, chat_id: &str) -> Result<bool, StoreError> {
        self.inner.delete_chat(user_id, chat_id).await
    }
    async fn set_title_if_empty(&self, chat_id: &str, title: &str) -> Result<(), StoreError> {
        self.inner.set_title_if_empty(chat_id, title).await
    }
    async fn insert_message(&self, message: NewMessage) -> Result<Message, StoreError> {
        self.inner.insert_message(message).await
    }
    async fn get_message(&self, message_id: &str) -> Result<Option<Message>, StoreError> {
        self.inner.get_message(message_id).await
    }
    async fn find_by_client_key(
        &self,
        chat_id: &str,
        key: &str,
    ) -> Result<Option<(Message, Option<Message>)>, StoreError> {
        self.inner.find_by_client_key(chat_id, key).await
    }
    async fn set_exchange_start(
        &self,
        message_id: &str,
        epoch: &Epoch,
        after: u64,
    ) -> Result<(), StoreError> {
        self.inner
            .set_exchange_start(message_id, epoch, after)
            .await
    }
    async fn exchange_start(&self, message_id: &str) -> Result<Option<(Epoch, u64)>, StoreError> {
        self.inner.exchange_start(message_id).await
    }
    async fn checkpoint(
        &self,
        message_id: &str,
        owner: &str,
        content: &str,
        parts: &[Part],
        offset: u64,
    ) -> Result<(), StoreError> {
        self.inner
            .checkpoint(message_id, owner, content, parts, offset)
            .await
    }
    async fn finish(
        &self,
        message_id: &str,
        owner: Option<&str>,
        outcome: &Outcome,
    ) -> Result<bool, StoreError> {
        self.inner.finish(message_id, owner, outcome).await
    }
    async fn set_parts(
        &self,
        message_id: &str,
        content: &str,
        parts: &[Part],
    ) -> Result<bool, StoreError> {
        self.inner.set_parts(message_id, content, parts).await
    }
    async fn checkpoint_offset(&self, message_id: &str) -> Result<Option<u64>, StoreError> {
        self.inner.checkpoint_offset(message_id).await
    }
    async fn renew_lease(
        &self,
        message_id: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.inner.renew_lease(message_id, owner, until_ms).await
    }
    async fn take_over(
        &self,
        message_id: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.inner
            .take_over(message_id, owner, until_ms, now_ms)
            .await
    }
    async fn release_lease(&self, message_id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_lease(message_id, owner).await
    }
    async fn orphaned(&self, now_ms: i64, owner: Option<&str>) -> Result<Vec<Message>, StoreError> {
        self.inner.orphaned(now_ms, owner).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
