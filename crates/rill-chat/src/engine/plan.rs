//! The plans of a chat's streams: where each starts, what goes first, where it ends.
//!
//! - [`ChatEngine::follow`]: the chat's event stream (`GET .../events`, every tab). With a
//!   `Last-Event-ID` that can be replayed: exactly what was missed, then live. Without one: it
//!   joins at the current answer (a `snapshot` of it when one runs), never at the start of the
//!   chat. With one that cannot be replayed (unknown, garbage, expired, from before a restart):
//!   `reset` with the reason, then the current state (the running answer's `snapshot`, or the
//!   latest answer's `snapshot` and `message.completed`), then live.
//! - [`ChatEngine::exchange`]: one exchange, from its first event to its answer's
//!   `message.completed` (the POST-SSE and plain-text styles, and repeated requests).
//! - [`ChatEngine::resume`]: a POST that carries a `Last-Event-ID` (a client that retries the
//!   POST after a cut): the rest of the exchange that id belongs to, or `204 No Content` when
//!   the id is already the exchange's last event.

use std::sync::Arc;

use rill_core::chat::Message;
use rill_core::{
    Encoder, LogRead, PreludeEvent, ResetReason, Start, StreamCursor, StreamRequest, Topic,
    WhenFull, Wire,
};

use super::{ChatEngine, ChatError, Sent};
use crate::protocol::{COMPLETED, ChatEvent, DeltaCoalescer, SseUntil, Until};

/// A planned chat stream.
#[derive(Debug, Clone)]
pub struct Plan {
    pub topic: Topic,
    pub start: Start,
    /// Written first, with the id of the start position.
    pub prelude: Vec<ChatEvent>,
    /// Where the stream ends.
    pub until: Until,
    /// The answer the stream is about, when it follows one exchange.
    pub message_id: Option<String>,
}

/// What a POST with a `Last-Event-ID` gets.
#[derive(Debug, Clone)]
pub enum Resume {
    /// The id is the exchange's last event: nothing is missing (`204 No Content`).
    NoContent,
    Stream(Plan),
}

/// Where a client's `Last-Event-ID` stands in a chat's log.
enum Position {
    /// Replayable: events after this offset are all retained.
    Exact(u64),
    /// Not replayable, for this reason.
    Lost(ResetReason),
}

impl Plan {
    /// The hub request for this plan, written by `encoder` (rill's own SSE when `None`).
    pub fn into_request(self, encoder: Option<Box<dyn Encoder>>) -> StreamRequest {
        let encoder = encoder.unwrap_or_else(|| Box::new(SseUntil::new(self.until.clone())));
        StreamRequest {
            topics: vec![self.topic],
            start: self.start,
            wire: Wire::Custom(encoder),
            when_full: WhenFull::Resync,
            prelude: self
                .prelude
                .iter()
                .map(|e| PreludeEvent {
                    event: e.name().to_owned(),
                    data: String::from_utf8_lossy(&e.data()).into_owned(),
                })
                .collect(),
            coalesce: Some(Arc::new(DeltaCoalescer)),
        }
    }
}

impl ChatEngine {
    /// Plans `GET /api/chats/{id}/events` (see the module docs). `last_event_id` is what the
    /// client sent, as text (a non-ASCII header counts: it gives `reset`).
    pub async fn follow(
        &self,
        chat_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<Plan, ChatError> {
        let topic = Topic::for_chat(chat_id);
        let head = self.head(&topic).await?;
        let lost = match last_event_id {
            Some(id) => match position(&topic, &head, id) {
                Position::Exact(offset) => {
                    return Ok(Plan {
                        topic,
                        start: Start::After(vec![(Topic::for_chat(chat_id), offset)]),
                        prelude: Vec::new(),
                        until: Until::Forever,
                        message_id: None,
                    });
                }
                Position::Lost(reason) => Some(reason),
            },
            None => None,
        };
        let mut prelude = Vec::new();
        if let Some(reason) = lost {
            prelude.push(reset(&topic, reason));
        }
        let start = match self.snapshot(chat_id).await? {
            Some(snapshot) => {
                prelude.push(ChatEvent::Snapshot(snapshot.message));
                snapshot.offset
            }
            None => {
                // A client that lost its place gets the latest answer as it ended.
                if lost.is_some()
                    && let Some(answer) = self.latest_answer(chat_id).await?
                {
                    let completed = answer
                        .status
                        .is_final()
                        .then(|| ChatEvent::completed_of(&answer));
                    prelude.push(ChatEvent::Snapshot(answer));
                    prelude.extend(completed);
                }
                head.head
            }
        };
        Ok(Plan {
            start: Start::After(vec![(topic.clone(), start)]),
            topic,
            prelude,
            until: Until::Forever,
            message_id: None,
        })
    }

    /// Plans the stream of an exchange: from its first event to its answer's completion.
    /// Exact from the log when the exchange's start is still there; otherwise (a repeated
    /// request long after) the question, the answer's `snapshot`, and its completion if over.
    pub async fn exchange(&self, sent: &Sent) -> Result<Plan, ChatError> {
        let chat_id = &sent.assistant_message.chat_id;
        let topic = Topic::for_chat(chat_id);
        let answer_id = sent.assistant_message.id.clone();
        let until = Until::Completed(Some(answer_id.clone()));
        let head = self.head(&topic).await?;
        if let Some(start) = &sent.start
            && start.epoch == head.epoch
            && start.offset.saturating_add(1) >= head.first
        {
            return Ok(Plan {
                start: Start::After(vec![(topic.clone(), start.offset)]),
                topic,
                prelude: Vec::new(),
                until,
                message_id: Some(answer_id),
            });
        }
        let mut prelude = vec![ChatEvent::Created(sent.user_message.clone())];
        let start = self
            .answer_state(chat_id, &answer_id, &head, &mut prelude)
            .await?;
        Ok(Plan {
            start: Start::After(vec![(topic.clone(), start)]),
            topic,
            prelude,
            until,
            message_id: Some(answer_id),
        })
    }

    /// Plans a POST that carries a `Last-Event-ID` (see the module docs).
    pub async fn resume(&self, chat_id: &str, last_event_id: &str) -> Result<Resume, ChatError> {
        let topic = Topic::for_chat(chat_id);
        let head = self.head(&topic).await?;
        let reason = match position(&topic, &head, last_event_id) {
            Position::Exact(offset) => {
                if let Some(resume) = self.resume_exact(&topic, &head, offset).await? {
                    return Ok(resume);
                }
                // The log has events after the id but no end of an exchange, and nothing runs:
                // nothing to follow exactly; say so and give the state.
                ResetReason::UnknownId
            }
            Position::Lost(reason) => reason,
        };
        let mut prelude = vec![reset(&topic, reason)];
        let answer = match self.snapshot(chat_id).await? {
            Some(snapshot) => snapshot.message.id,
            None => match self.latest_answer(chat_id).await? {
                Some(answer) => answer.id,
                None => return Ok(Resume::NoContent),
            },
        };
        let start = self
            .answer_state(chat_id, &answer, &head, &mut prelude)
            .await?;
        Ok(Resume::Stream(Plan {
            start: Start::After(vec![(topic.clone(), start)]),
            topic,
            prelude,
            until: Until::Completed(Some(answer.clone())),
            message_id: Some(answer),
        }))
    }

    /// A replayable `Last-Event-ID` on a POST: its event closes the exchange (`NoContent`), or
    /// the stream replays from it to the next completion (of the answer running at the id, or,
    /// between exchanges, the next one). `None` when no completion will ever come.
    async fn resume_exact(
        &self,
        topic: &Topic,
        head: &LogRead,
        offset: u64,
    ) -> Result<Option<Resume>, ChatError> {
        let plan = |message_id: Option<String>| {
            Resume::Stream(Plan {
                topic: topic.clone(),
                start: Start::After(vec![(topic.clone(), offset)]),
                prelude: Vec::new(),
                until: Until::Completed(None),
                message_id,
            })
        };
        if offset > 0 {
            let at = self.inner.broker.read(topic, offset - 1, 1).await?;
            if let Some(event) = at.events.first().filter(|e| e.offset == offset)
                && &*event.name == COMPLETED
            {
                return Ok(Some(Resume::NoContent));
            }
        }
        let chat_id = topic.as_str().strip_prefix("_chat/").unwrap_or_default();
        if let Some(snapshot) = self.snapshot(chat_id).await? {
            return Ok(Some(plan(Some(snapshot.message.id))));
        }
        // Nothing runs: the completion must already be in the log.
        let mut after = offset;
        // Bounded: the log holds at most its retention, read 1024 at a time.
        for _ in 0..1024 {
            let read = self.inner.broker.read(topic, after, 1024).await?;
            if let Some(done) = read.events.iter().find(|e| &*e.name == COMPLETED) {
                let message_id = ChatEvent::decode(&done.name, &done.data)
                    .ok()
                    .flatten()
                    .and_then(|e| e.message_id().map(str::to_owned));
                return Ok(Some(plan(message_id)));
            }
            match read.events.last() {
                Some(last) if last.offset < read.head => after = last.offset,
                _ => break,
            }
        }
        if offset >= head.head {
            return Ok(Some(Resume::NoContent));
        }
        Ok(None)
    }

    /// Adds the state of answer `answer_id` to `prelude` (its `snapshot`, and its completion if
    /// it is over) and returns the offset the stream continues after.
    async fn answer_state(
        &self,
        chat_id: &str,
        answer_id: &str,
        head: &LogRead,
        prelude: &mut Vec<ChatEvent>,
    ) -> Result<u64, ChatError> {
        if let Some(snapshot) = self.snapshot(chat_id).await?
            && snapshot.message.id == answer_id
        {
            prelude.push(ChatEvent::Snapshot(snapshot.message));
            return Ok(snapshot.offset);
        }
        let answer: Message = self
            .inner
            .store
            .get_message(answer_id)
            .await?
            .ok_or(ChatError::NotFound)?;
        let over = answer.status.is_final();
        let completed = ChatEvent::completed_of(&answer);
        prelude.push(ChatEvent::Snapshot(answer));
        if over {
            prelude.push(completed);
        }
        Ok(head.head)
    }

    /// The topic's epoch, head and first retained offset.
    async fn head(&self, topic: &Topic) -> Result<LogRead, ChatError> {
        Ok(self.inner.broker.read(topic, u64::MAX, 0).await?)
    }
}

/// Where `last_event_id` stands in `topic`'s log.
fn position(topic: &Topic, head: &LogRead, last_event_id: &str) -> Position {
    let Some(cursor) = StreamCursor::parse(last_event_id.trim()) else {
        return Position::Lost(ResetReason::UnknownId);
    };
    let topics = std::slice::from_ref(topic);
    if !cursor.matches(&head.epoch, topics) {
        let same_topics = rill_core::cursor::topic_set_hash(topics) == cursor.topics_hash;
        return Position::Lost(if same_topics && cursor.epoch_of(0) != Some(&head.epoch) {
            ResetReason::EpochChanged
        } else {
            ResetReason::UnknownId
        });
    }
    let offset = cursor.offsets.first().copied().unwrap_or(0);
    if offset > head.head {
        Position::Lost(ResetReason::UnknownId)
    } else if offset.saturating_add(1) < head.first {
        Position::Lost(ResetReason::Expired)
    } else {
        Position::Exact(offset)
    }
}

fn reset(topic: &Topic, reason: ResetReason) -> ChatEvent {
    ChatEvent::Reset {
        topic: topic.as_str().to_owned(),
        reason: reason.as_str().to_owned(),
    }
}
