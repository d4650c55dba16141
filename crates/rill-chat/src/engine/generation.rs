//! One running generation: the provider's events into the chat's topic, checkpoints, the lease,
//! and the final state written once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rill_core::chat::{Message, MessageStatus, Outcome, Usage};
use rill_core::{
    BrokerError, CompletionRequest, Event, Provider, ProviderError, ProviderEvent, Sink, Topic,
};
use tokio_util::sync::CancellationToken;

use super::history_cache::Seed;
use super::{Inner, Progress, control_topic, duration_ms, lock, now_ms};
use crate::protocol::{ChatEvent, PartsWriter, apply};

/// One running generation.
pub(crate) struct Generation {
    pub(crate) inner: Arc<Inner>,
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) message_id: String,
    pub(crate) chat_id: String,
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: Arc<Mutex<Progress>>,
    /// The history the request was built from, for the history cache once the answer is
    /// written.
    pub(crate) seed: Option<Seed>,
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
    /// The broker could not take the answer's events: its details are for the log only.
    BrokerFailed,
    /// Another instance holds the lease now (ours ran out): it finishes the message; this
    /// generation writes nothing more.
    LostLease,
    /// This instance is going away with the answer unfinished: the lease is released so
    /// another instance continues it; nothing is written.
    HandedOver,
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
    pub(crate) async fn run(mut self, request: CompletionRequest) {
        let topic = Topic::for_chat(&self.chat_id);
        let _stop_listener = match self
            .inner
            .broker
            .attach(
                &control_topic(&self.chat_id),
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
        // A continued answer (taken over from a dead instance) extends the parts it has.
        let parts = lock(&self.progress).message.parts.clone();
        let mut writer = PartsWriter::continuing(self.message_id.clone(), &parts);
        let ending = self.stream(&topic, request, &mut writer).await;
        let seed = self.seed.take();
        self.finish(&topic, ending, &mut writer, seed).await;
    }

    /// Pumps the provider's stream into the topic until it ends, fails, or is stopped.
    async fn stream(
        &self,
        topic: &Topic,
        request: CompletionRequest,
        writer: &mut PartsWriter,
    ) -> Ending {
        let shutdown = self.inner.shutdown.clone();
        let hand_over = self.inner.hand_over.clone();
        let mut stream = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Ending::Stopped,
            () = hand_over.cancelled() => return Ending::HandedOver,
            () = shutdown.cancelled() => return Ending::Interrupted,
            started = self.provider.stream(request) => match started {
                Ok(s) => s,
                Err(error) => return Ending::Failed(error),
            },
        };
        // Both first tick one period from now, not at once: the lease was just taken (a renewal
        // now would put a database write before the first token) and nothing is new to save.
        let every = self.inner.settings.checkpoint_interval;
        let mut checkpoint = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = self.inner.settings.lease_ttl / 3;
        let mut lease = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved_version = 0u64;
        let mut events = Vec::new();
        let mut first_token = true;
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Ending::Stopped,
                () = hand_over.cancelled() => return Ending::HandedOver,
                () = shutdown.cancelled() => return Ending::Interrupted,
                _ = checkpoint.tick() => self.checkpoint(&mut saved_version).await,
                _ = lease.tick() => {
                    let until = now_ms().saturating_add(duration_ms(self.inner.settings.lease_ttl));
                    match self.inner.store.renew_lease(&self.message_id, &self.inner.settings.instance_id, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Another instance found the lease expired (we could not reach the
                            // database for a while) and took the message over or finished it:
                            // whatever we add now would clash with it. Stop here, silently.
                            tracing::warn!("the generation was taken over or finished elsewhere after our lease expired; stopping");
                            return Ending::LostLease;
                        }
                        Err(error) => tracing::warn!(%error, "cannot renew the generation's lease"),
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(ProviderEvent::Finish { reason, usage })) => {
                        return Ending::Complete { reason, usage };
                    }
                    Some(Ok(event)) => {
                        writer.push(event, &mut events);
                        let token = first_token
                            && events.iter().any(|e| matches!(e, ChatEvent::Delta { .. }));
                        for event in events.drain(..) {
                            if let Err(error) = self.publish(topic, event).await {
                                tracing::warn!(%error, "the event broker failed mid-answer; ending it");
                                return Ending::BrokerFailed;
                            }
                        }
                        if token {
                            first_token = false;
                            // The readers' tasks were just woken with the answer's first
                            // token: let them write it before this task takes the thread for
                            // the next ones (a model that streams faster than the network
                            // would otherwise hold the first token back by a whole budget of
                            // tokio's scheduler, about 128 events). Once per answer.
                            tokio::task::yield_now().await;
                        }
                    }
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

    /// Publishes an event of the answer, retrying briefly, and applies it to the progress.
    /// A lost event would be a silent hole in every client's answer, so after the retries the
    /// generation ends instead; the event still counts in the stored message.
    async fn publish(&self, topic: &Topic, event: ChatEvent) -> Result<(), BrokerError> {
        let new_event = event.to_new_event();
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0;
        let result = loop {
            match self.inner.broker.publish(topic, new_event.clone()).await {
                Ok(p) => break Ok(p.offset),
                Err(error) if attempt >= 4 => break Err(error),
                Err(error) => {
                    tracing::warn!(%error, attempt, "publishing an answer event failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        };
        let mut p = lock(&self.progress);
        if let Err(error) = apply(&mut p.message, &event) {
            // The writer numbers parts itself: this would be a bug.
            tracing::error!(%error, "an answer event does not fit its message");
        }
        p.version += 1;
        match result {
            Ok(offset) => {
                p.offset = offset;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn checkpoint(&self, saved_version: &mut u64) {
        let (message, offset, version) = {
            let p = lock(&self.progress);
            if p.version == *saved_version {
                return;
            }
            (p.message.clone(), p.offset, p.version)
        };
        match self
            .inner
            .store
            .checkpoint(
                &self.message_id,
                &self.inner.settings.instance_id,
                &message.content,
                &message.parts,
                offset,
            )
            .await
        {
            Ok(()) => *saved_version = version,
            Err(error) => tracing::warn!(%error, "checkpoint failed; will retry"),
        }
    }

    async fn finish(
        &self,
        topic: &Topic,
        ending: Ending,
        writer: &mut PartsWriter,
        seed: Option<Seed>,
    ) {
        let owner = self.inner.settings.instance_id.as_str();
        match ending {
            Ending::LostLease => return,
            Ending::HandedOver => {
                // What clients saw is in the log; the last checkpoint may be older, which the
                // next owner's rebuild covers. Release the lease so it starts at once.
                let mut saved = 0;
                self.checkpoint(&mut saved).await;
                if let Err(error) = self
                    .inner
                    .store
                    .release_lease(&self.message_id, owner)
                    .await
                {
                    tracing::warn!(%error, "cannot release the lease; another instance takes over when it expires");
                }
                tracing::info!("generation handed over to another instance");
                return;
            }
            _ => {}
        }
        // Open parts close first, so every reader sees each part ended before the message.
        let mut closing = Vec::new();
        writer.finish(&mut closing);
        for event in closing {
            if let Err(error) = self.publish(topic, event).await {
                tracing::warn!(%error, "cannot publish the end of a part");
            }
        }
        let message = lock(&self.progress).message.clone();
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
                Some((e.kind.as_str(), e.message)),
            ),
            Ending::BrokerFailed => (
                MessageStatus::Error,
                Some("error".to_owned()),
                None,
                Some((
                    "broker_unavailable",
                    "the event broker became unavailable during the answer".to_owned(),
                )),
            ),
            // Handled above.
            Ending::LostLease | Ending::HandedOver => return,
        };
        tracing::info!(status = %status, chars = message.content.chars().count(), parts = message.parts.len(), "generation ended");
        // The answer as it is about to be written, for the history cache.
        let written_answer = seed.as_ref().map(|_| Message {
            status,
            finish_reason: finish_reason.clone(),
            usage,
            error: error.as_ref().map(|(_, m)| m.clone()),
            ..message.clone()
        });
        let outcome = Outcome {
            status,
            content: message.content,
            parts: message.parts,
            finish_reason: finish_reason.clone(),
            usage,
            error: error.as_ref().map(|(_, m)| m.clone()),
        };
        // The final state must land: retry the store a few times before giving up (the lease
        // reaper of another instance, or the next start-up, then marks it interrupted).
        let mut written = false;
        for attempt in 0..5u32 {
            match self
                .inner
                .store
                .finish(&self.message_id, Some(owner), &outcome)
                .await
            {
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
        // Before the answer's end is published: a client that asks again on seeing it finds the
        // history in memory.
        if let (Some(seed), Some(answer)) = (seed, written_answer) {
            self.inner
                .history_cache
                .complete(&self.chat_id, seed, answer);
        }
        let mut tail = Vec::new();
        if let Some((code, message)) = &error {
            tail.push(ChatEvent::Error {
                code: (*code).to_owned(),
                message: message.clone(),
                message_id: Some(self.message_id.clone()),
                reconnect: None,
            });
        }
        tail.push(ChatEvent::Completed {
            message_id: self.message_id.clone(),
            status,
            finish_reason,
            usage,
            error: error.map(|(_, m)| m),
        });
        for event in tail {
            if let Err(error) = self.inner.broker.publish(topic, event.to_new_event()).await {
                tracing::warn!(%error, "cannot publish the end of the answer");
            }
        }
    }
}
