//! Generations nobody runs any more (their process died): finished as `interrupted` with the
//! parts clients saw, and the engine's own shutdown.

use std::time::Duration;

use rill_core::Topic;
use rill_core::chat::{MessageStatus, Outcome};

use super::{ChatEngine, ChatError, now_ms};
use crate::protocol::ChatEvent;

impl ChatEngine {
    /// Marks generations nobody runs anymore as `interrupted`, keeping the parts they published
    /// (the checkpoint plus the events still in the broker's log), and tells their chats. With
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
            // Clients saw every event the dead owner published, also those after its last
            // checkpoint: store that (still in the broker's log) rather than the shorter
            // checkpoint, so the stored answer equals the streamed one. The checkpoint alone
            // when the log cannot be read (the in-process broker after a restart has no log).
            let current = match self.rebuild(message.clone()).await {
                Ok(rebuilt) => rebuilt.message,
                Err(error) => {
                    tracing::warn!(%error, message_id = %message.id, "cannot read the logged events; keeping the checkpoint");
                    message.clone()
                }
            };
            let outcome = Outcome {
                status: MessageStatus::Interrupted,
                content: current.content,
                parts: current.parts,
                finish_reason: Some("interrupted".to_owned()),
                usage: None,
                error: None,
            };
            if self.inner.store.finish(&message.id, &outcome).await? {
                recovered += 1;
                tracing::info!(message_id = %message.id, chat_id = %message.chat_id, "marked an orphaned generation interrupted");
                let event = ChatEvent::Completed {
                    message_id: message.id.clone(),
                    status: MessageStatus::Interrupted,
                    finish_reason: Some("interrupted".to_owned()),
                    usage: None,
                    error: None,
                };
                if let Err(error) = self
                    .inner
                    .broker
                    .publish(&Topic::for_chat(&message.chat_id), event.to_new_event())
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

    /// Ends every running generation as `interrupted` (parts saved, completion published) and
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
}
