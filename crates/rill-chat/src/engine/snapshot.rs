//! Where a running answer stands: exact from memory when it runs here, or rebuilt from its last
//! checkpoint plus the events the broker logged after it when it runs elsewhere.

use rill_core::Topic;
use rill_core::chat::Message;

use super::{ChatEngine, ChatError, lock};
use crate::protocol::{ChatEvent, apply};

/// The state of an in-progress message at a given offset of the chat's topic: what a stream
/// that cannot replay exactly sends as `snapshot`, continuing live strictly after `offset`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub message: Message,
    pub offset: u64,
}

impl ChatEngine {
    /// The in-progress message of `chat_id`, if any, as a snapshot consistent with an offset of
    /// the chat's topic. Exact for a generation of this process; for one running elsewhere it is
    /// rebuilt from the last checkpoint plus the events logged after it.
    pub async fn snapshot(&self, chat_id: &str) -> Result<Option<Snapshot>, ChatError> {
        {
            let running = lock(&self.inner.running);
            if let Some(r) = running.get(chat_id) {
                let progress = lock(&r.progress);
                return Ok(Some(Snapshot {
                    message: progress.message.clone(),
                    offset: progress.offset,
                }));
            }
        }
        let Some(message) = self.streaming_message(chat_id).await? else {
            return Ok(None);
        };
        Ok(Some(self.rebuild(message).await?))
    }

    /// A message running (or having run) elsewhere: its checkpoint plus the events the broker
    /// logged after it, and the offset of the last one.
    pub(crate) async fn rebuild(&self, message: Message) -> Result<Snapshot, ChatError> {
        let (mut message, mut offset) = self.checkpoint_of(message).await?;
        let topic = Topic::for_chat(&message.chat_id);
        // Bounded: a checkpoint is at most `checkpoint_interval` old, so few events follow it.
        for _ in 0..64 {
            let read = self.inner.broker.read(&topic, offset, 1024).await?;
            if read.first > offset.saturating_add(1) {
                // The log no longer holds what follows the checkpoint: the best we have is the
                // checkpoint itself, at the offset right before what the log still has.
                break;
            }
            let Some(last) = read.events.last().map(|e| e.offset) else {
                break;
            };
            for event in &read.events {
                if let Ok(Some(event)) = ChatEvent::decode(&event.name, &event.data)
                    && let Err(error) = apply(&mut message, &event)
                {
                    tracing::warn!(%error, "a logged event does not fit the checkpoint; keeping the checkpoint");
                    return Ok(Snapshot { message, offset });
                }
            }
            offset = last;
        }
        Ok(Snapshot { message, offset })
    }

    /// The message as last checkpointed, and the offset of the last event it includes.
    ///
    /// The store writes both in one statement but reads them in two queries, and the owner may
    /// checkpoint in between: the offset is read on both sides of the message, and the read is
    /// retried until they agree (offsets only grow from one checkpoint to the next, so equal
    /// offsets mean the message is that checkpoint's).
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
                // Never checkpointed: the placeholder, which its `message.created` carries.
                let offset = match after {
                    Some(offset) => offset,
                    None => match store.exchange_start(&message.id).await? {
                        Some((_, start)) => start,
                        None => 0,
                    },
                };
                return Ok((message, offset));
            }
        }
        Err(ChatError::Store(rill_core::StoreError::Backend(
            "the checkpoint kept moving while it was read".to_owned(),
        )))
    }
}
