//! The typed client of rill's topics: publish with `POST /api/topics/{topic}/events`, subscribe
//! to several topics on one connection with `GET /api/events?topic=a&topic=b`.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use reqwest::Method;
use rill_sse::OwnedEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::Client;
use crate::error::Error;
use crate::event_source::{EventStream, SseItem, SseRequest};

/// The read timeout of topic subscriptions: three of rill's default 15 s heartbeats.
pub const SUBSCRIBE_READ_TIMEOUT: Duration = Duration::from_secs(45);

/// The topics API of one server. Get one with [`Client::topics`].
#[derive(Debug, Clone)]
pub struct TopicsClient {
    client: Client,
}

/// What the server answers to a publish.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// The event's id on a stream over this topic alone (a subscriber of several topics sees
    /// another id, a cursor over all of them); usable as `Last-Event-ID` on such a stream.
    pub id: String,
}

/// An event of a topic subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicEvent {
    /// The topic it was published to.
    pub topic: String,
    /// The event name given at publish (`message` when none was).
    pub event: String,
    /// The JSON published.
    pub data: Value,
    /// The stream position: hand it back as `Last-Event-ID` to resume after this event.
    pub id: String,
}

impl TopicEvent {
    /// Decodes the envelope `{"topic": "...", "data": <json>}` of a topic stream event.
    pub fn from_event(event: OwnedEvent) -> Result<TopicEvent, Error> {
        #[derive(Deserialize)]
        struct Envelope {
            topic: String,
            data: Value,
        }
        let envelope: Envelope = serde_json::from_str(&event.data).map_err(Error::Decode)?;
        Ok(TopicEvent {
            topic: envelope.topic,
            event: event.event,
            data: envelope.data,
            id: event.id,
        })
    }
}

impl TopicsClient {
    pub(crate) fn new(client: Client) -> Self {
        TopicsClient { client }
    }

    /// Publishes `data` (any JSON) to `topic` under the event name `event` (`None`: the
    /// server's default, `message`); returns the id of the stored event.
    pub async fn publish(
        &self,
        topic: &str,
        event: Option<&str>,
        data: &(impl Serialize + ?Sized),
    ) -> Result<Published, Error> {
        #[derive(Serialize)]
        struct Body<'a, T: ?Sized> {
            #[serde(skip_serializing_if = "Option::is_none")]
            event: Option<&'a str>,
            data: &'a T,
        }
        let url = self.client.endpoint(["api", "topics", topic, "events"]);
        let request = self
            .client
            .request(Method::POST, url)
            .json(&Body { event, data });
        self.client.send_json(request).await
    }

    /// The subscription request for `topics`, to adjust (last event id, retry policy,
    /// comments...) before [`TopicStream::new`]`(request.stream())`. Its read timeout is
    /// [`SUBSCRIBE_READ_TIMEOUT`]: rill sends a heartbeat comment on idle streams, so a silent
    /// connection is a dead one.
    pub fn subscribe_request<T: AsRef<str>>(&self, topics: &[T]) -> Result<SseRequest, Error> {
        if topics.is_empty() {
            return Err(Error::InvalidRequest(
                "subscribe to at least one topic".into(),
            ));
        }
        let mut url = self.client.endpoint(["api", "events"]);
        {
            let mut query = url.query_pairs_mut();
            for topic in topics {
                query.append_pair("topic", topic.as_ref());
            }
        }
        Ok(self
            .client
            .sse(Method::GET, url)
            .read_timeout(SUBSCRIBE_READ_TIMEOUT))
    }

    /// Subscribes to `topics` with the default settings (reconnect forever, resume by id).
    pub fn subscribe<T: AsRef<str>>(&self, topics: &[T]) -> Result<TopicStream, Error> {
        Ok(TopicStream::new(self.subscribe_request(topics)?.stream()))
    }
}

/// The decoded events of a topic subscription. A connection-level `Err` ends it (as for
/// [`EventStream`]); an event whose envelope cannot be decoded gives an [`Error::Decode`] item
/// and the stream goes on.
pub struct TopicStream {
    inner: EventStream,
}

impl fmt::Debug for TopicStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicStream").finish_non_exhaustive()
    }
}

impl TopicStream {
    /// Decodes the events of `stream` (a subscription to `/api/events`).
    pub fn new(stream: EventStream) -> Self {
        TopicStream { inner: stream }
    }
}

impl Stream for TopicStream {
    type Item = Result<SseItem<TopicEvent>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|item| item?.try_map_event(TopicEvent::from_event)))
    }
}
