//! Generations nobody runs any more (their process died): finished as `interrupted` with the
//! parts clients saw, and the engine's own shutdown.

use std::time::Duration;

use rill_core::Topic;
use rill_core::chat::{Message, MessageStatus, Outcome, PageCursor, Role};

use super::{AskOptions, ChatEngine, ChatError, duration_ms, now_ms};
use crate::protocol::ChatEvent;

impl ChatEngine {
    /// Takes over generations nobody runs any more. With several instances (`all` false: those
    /// whose lease expired), a generation whose provider can continue it is **continued** here:
    /// the parts clients saw (the checkpoint plus the events still in the broker's log) go to
    /// the provider as the start of the answer, and what it streams next extends them, so
    /// clients see one answer that goes on. The others (and, with `all`, every `streaming`
    /// message: the start-up of a single instance, whose log is gone) are marked `interrupted`
    /// with the parts they had, and their chats are told. Returns how many were taken over.
    pub async fn recover(&self, all: bool) -> Result<usize, ChatError> {
        let me = self.inner.settings.instance_id.as_str();
        let owner = (!all).then_some(me);
        let now = now_ms();
        let orphans = self.inner.store.orphaned(now, owner).await?;
        let mut recovered = 0;
        for message in orphans {
            if self.is_running(&message.chat_id) {
                continue;
            }
            // Only one instance takes each: the lease decides.
            let until = now.saturating_add(duration_ms(self.inner.settings.lease_ttl));
            let before = if all { i64::MAX } else { now };
            if !self
                .inner
                .store
                .take_over(&message.id, me, until, before)
                .await?
            {
                continue;
            }
            // Clients saw every event the dead owner published, also those after its last
            // checkpoint: store that (still in the broker's log) rather than the shorter
            // checkpoint, so the stored answer equals the streamed one. The checkpoint alone
            // when the log cannot be read (the in-process broker after a restart has no log).
            let (current, offset) = match self.rebuild(message.clone()).await {
                Ok(rebuilt) => (rebuilt.message, Some(rebuilt.offset)),
                Err(error) => {
                    tracing::warn!(%error, message_id = %message.id, "cannot read the logged events; keeping the checkpoint");
                    (message.clone(), None)
                }
            };
            if let (false, Some(offset)) = (all, offset)
                && self.continue_generation(current.clone(), offset).await?
            {
                recovered += 1;
                continue;
            }
            let outcome = Outcome {
                status: MessageStatus::Interrupted,
                content: current.content,
                parts: current.parts,
                finish_reason: Some("interrupted".to_owned()),
                usage: None,
                error: None,
            };
            if self
                .inner
                .store
                .finish(&message.id, Some(me), &outcome)
                .await?
            {
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

    /// Continues `message` (taken over, its parts as clients saw them up to topic offset
    /// `offset`) when its bot's provider can; `false` when it cannot.
    async fn continue_generation(&self, message: Message, offset: u64) -> Result<bool, ChatError> {
        let Some(bot) = message
            .bot_id
            .as_deref()
            .and_then(|id| self.bot(id))
            .cloned()
        else {
            return Ok(false);
        };
        if message.parts.is_empty() || !bot.provider.can_continue(&message.parts) {
            return Ok(false);
        }
        // The conversation up to the question this message answers.
        let before = self
            .inner
            .store
            .list_messages(&message.chat_id, Some(PageCursor(message.seq)), 50)
            .await?;
        let Some(question) = before.items.iter().rev().find(|m| m.role == Role::User) else {
            return Ok(false);
        };
        let history = self.history(&message.chat_id, Some(question.seq)).await?;
        let mut request = self.request(&bot, &message, &history, None, AskOptions::default());
        request.prefill = message.parts.clone();
        tracing::info!(message_id = %message.id, chat_id = %message.chat_id, parts = message.parts.len(), "continuing a generation another instance could not finish");
        self.spawn(bot, message, offset, request, None);
        Ok(true)
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
                        // A draining instance takes nothing over: it is going away.
                        if engine.is_draining() {
                            continue;
                        }
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
