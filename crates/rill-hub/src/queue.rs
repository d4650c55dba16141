//! The bounded per-connection queue of live events, and what happens when it is full.
//!
//! Brokers hand live events to a [`TopicSink`] from their publish path, so `deliver` never
//! blocks or awaits: it takes a short std mutex, applies the connection's [`WhenFull`] policy
//! when the queue is at its bound, and wakes the connection task.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rill_core::{Event, Sink};
use tokio::sync::Notify;

use crate::metrics::HubMetrics;

/// What a connection's queue does when a live event arrives and it is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Drop the subscriber: the queue is emptied, the stream ends with a final
    /// `event: error` `{"code":"slow_consumer"}` (when it can still be written), and the client
    /// resumes with `Last-Event-ID`. The policy of topic streams.
    Disconnect,
    /// First merge queued runs of `message.delta` events of the same `message_id` into one
    /// (text concatenated, id of the last), then, if still full, disconnect. The policy of chat
    /// streams, where a slow reader still gets every token, in fewer events.
    MergeDeltas,
}

/// One queued live event.
#[derive(Debug)]
pub(crate) struct Item {
    /// Index of the event's topic in the connection's sorted topic list.
    pub(crate) idx: usize,
    pub(crate) event: Arc<Event>,
    /// The lowest offset this item covers: `event.offset`, or lower for merged deltas.
    pub(crate) from: u64,
}

/// What the connection task takes from the queue on each wake-up.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// The queue overflowed outside catch-up: the subscriber is dropped.
    pub(crate) overflowed: bool,
    /// Events were dropped during catch-up: re-read every topic from the log.
    pub(crate) lagged: bool,
    /// Topics whose live feed the broker reported as interrupted.
    pub(crate) interrupted: Vec<usize>,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Item>,
    bytes: usize,
    /// While the connection replays from the log, a full queue is not the client's fault: new
    /// events are dropped and `lagged` makes the connection read them from the log instead.
    catching_up: bool,
    lagged: bool,
    overflowed: bool,
    interrupted: Vec<usize>,
}

/// A connection's bounded queue, shared by its sinks (one per topic) and its task.
#[derive(Debug)]
pub(crate) struct Queue {
    // A std mutex, not tokio's: held for a push or a swap, never across an await.
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    when_full: WhenFull,
    metrics: Arc<HubMetrics>,
}

impl Queue {
    pub(crate) fn new(capacity: usize, when_full: WhenFull, metrics: Arc<HubMetrics>) -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                catching_up: true,
                lagged: false,
                overflowed: false,
                interrupted: Vec::new(),
            }),
            notify: Notify::new(),
            capacity: capacity.max(1),
            when_full,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, idx: usize, event: &Arc<Event>) {
        {
            let mut st = self.lock();
            if st.overflowed {
                return;
            }
            if st.items.len() >= self.capacity && self.when_full == WhenFull::MergeDeltas {
                let before = (st.items.len(), st.bytes);
                st.bytes = merge_deltas(&mut st.items);
                self.unaccount(before.0 - st.items.len(), 0);
                // Merged JSON may re-escape text differently, so the byte count can move either way.
                if st.bytes <= before.1 {
                    self.unaccount(0, before.1 - st.bytes);
                } else {
                    self.metrics
                        .queued_bytes
                        .fetch_add((st.bytes - before.1) as u64, Ordering::Relaxed);
                }
            }
            if st.items.len() >= self.capacity {
                if st.catching_up {
                    st.lagged = true;
                    return;
                }
                st.overflowed = true;
                let (n, bytes) = (st.items.len(), st.bytes);
                st.items = VecDeque::new();
                st.bytes = 0;
                self.unaccount(n, bytes);
                self.metrics
                    .slow_consumers_dropped
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                let len = event.data.len();
                let was_empty = st.items.is_empty();
                st.items.push_back(Item {
                    idx,
                    event: event.clone(),
                    from: event.offset,
                });
                st.bytes += len;
                self.metrics.queued_events.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .queued_bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
                // The task takes the whole queue at once, so only the push that made it
                // non-empty needs to wake it (saves a wake-up per event in bursts).
                if !was_empty {
                    return;
                }
            }
        }
        self.notify.notify_one();
    }

    fn unaccount(&self, n: usize, bytes: usize) {
        self.metrics
            .queued_events
            .fetch_sub(n as u64, Ordering::Relaxed);
        self.metrics
            .queued_bytes
            .fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    fn interrupt(&self, idx: usize) {
        self.lock().interrupted.push(idx);
        self.notify.notify_one();
    }

    /// Moves every queued item into `into` (which the caller keeps, so its buffer is reused).
    pub(crate) fn take(&self, into: &mut VecDeque<Item>) -> Taken {
        let mut st = self.lock();
        let (n, bytes) = (st.items.len(), st.bytes);
        into.append(&mut st.items);
        st.bytes = 0;
        self.unaccount(n, bytes);
        Taken {
            overflowed: st.overflowed,
            lagged: std::mem::take(&mut st.lagged),
            interrupted: std::mem::take(&mut st.interrupted),
        }
    }

    pub(crate) fn set_catching_up(&self, on: bool) {
        self.lock().catching_up = on;
    }

    /// Waits until something was pushed since the last `take` (a stored permit makes a push
    /// between `take` and this call wake it at once).
    pub(crate) async fn wait(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let (n, bytes) = (st.items.len(), st.bytes);
        self.unaccount(n, bytes);
    }
}

/// The [`Sink`] of one topic of a connection.
pub(crate) struct TopicSink {
    pub(crate) queue: Arc<Queue>,
    pub(crate) idx: usize,
}

impl Sink for TopicSink {
    fn deliver(&self, event: &Arc<Event>) {
        self.queue.push(self.idx, event);
    }

    fn interrupted(&self) {
        self.queue.interrupt(self.idx);
    }
}

/// The chat event name whose runs [`WhenFull::MergeDeltas`] merges.
pub const DELTA_EVENT: &str = "message.delta";

fn delta_fields(event: &Event) -> Option<serde_json::Map<String, serde_json::Value>> {
    if &*event.name != DELTA_EVENT {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&event.data).ok()?;
    (map.get("message_id").is_some() && map.get("text").is_some_and(|t| t.is_string()))
        .then_some(map)
}

/// Merges every run of consecutive `message.delta` items of one topic and one `message_id` into
/// one item: the texts concatenated, the other fields and the offset of the run's last event.
/// Returns the queued data bytes after merging. Only consecutive runs merge, so the order of
/// events as the client sees it never changes.
pub(crate) fn merge_deltas(items: &mut VecDeque<Item>) -> usize {
    let mut out: VecDeque<Item> = VecDeque::with_capacity(items.len());
    // The run being built: its first item's `from`, its fields, its text.
    let mut run: Option<(
        Item,
        serde_json::Map<String, serde_json::Value>,
        String,
        usize,
    )> = None;
    let flush = |run: &mut Option<(
        Item,
        serde_json::Map<String, serde_json::Value>,
        String,
        usize,
    )>,
                 out: &mut VecDeque<Item>| {
        if let Some((last, mut fields, text, count)) = run.take() {
            if count == 1 {
                out.push_back(last);
                return;
            }
            fields.insert("text".to_owned(), serde_json::Value::String(text));
            let data = serde_json::to_vec(&fields)
                .map(Bytes::from)
                .unwrap_or_else(|_| last.event.data.clone());
            let e = &last.event;
            let merged = Event::new(e.topic.clone(), e.offset, e.name.clone(), data, e.time_ms);
            out.push_back(Item {
                idx: last.idx,
                event: Arc::new(merged),
                from: last.from,
            });
        }
    };
    for item in items.drain(..) {
        let Some(fields) = delta_fields(&item.event) else {
            flush(&mut run, &mut out);
            out.push_back(item);
            continue;
        };
        let text = fields
            .get("text")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned();
        match &mut run {
            Some((last, f, acc, count))
                if last.idx == item.idx && f.get("message_id") == fields.get("message_id") =>
            {
                acc.push_str(&text);
                *count += 1;
                *f = fields;
                let from = last.from;
                *last = Item { from, ..item };
            }
            _ => {
                flush(&mut run, &mut out);
                run = Some((item, fields, text, 1));
            }
        }
    }
    flush(&mut run, &mut out);
    *items = out;
    items.iter().map(|i| i.event.data.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::Topic;

    fn item(idx: usize, offset: u64, name: &str, data: &str) -> Item {
        let t = Topic::new("_chat/1").unwrap();
        let e = Event::new(t, offset, Arc::from(name), Bytes::from(data.to_owned()), 0);
        Item {
            idx,
            event: Arc::new(e),
            from: offset,
        }
    }

    fn summary(items: &VecDeque<Item>) -> Vec<(u64, u64, String, String)> {
        items
            .iter()
            .map(|i| {
                (
                    i.from,
                    i.event.offset,
                    i.event.name.to_string(),
                    String::from_utf8_lossy(&i.event.data).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn merges_runs_of_one_message() {
        let mut q: VecDeque<Item> = [
            item(0, 1, "message.created", r#"{"id":"m1"}"#),
            item(0, 2, "message.delta", r#"{"message_id":"m1","text":"Hel"}"#),
            item(
                0,
                3,
                "message.delta",
                r#"{"message_id":"m1","text":"lo, "}"#,
            ),
            item(
                0,
                4,
                "message.delta",
                r#"{"message_id":"m1","text":"wörld"}"#,
            ),
            item(0, 5, "message.delta", r#"{"message_id":"m2","text":"x"}"#),
            item(0, 6, "message.delta", r#"{"message_id":"m2","text":"y"}"#),
            item(0, 7, "message.completed", r#"{"message_id":"m1"}"#),
            item(0, 8, "message.delta", r#"{"message_id":"m2","text":"z"}"#),
        ]
        .into_iter()
        .collect();
        let bytes = merge_deltas(&mut q);
        assert_eq!(
            summary(&q),
            vec![
                (1, 1, "message.created".into(), r#"{"id":"m1"}"#.into()),
                (
                    2,
                    4,
                    "message.delta".into(),
                    r#"{"message_id":"m1","text":"Hello, wörld"}"#.into()
                ),
                (
                    5,
                    6,
                    "message.delta".into(),
                    r#"{"message_id":"m2","text":"xy"}"#.into()
                ),
                (
                    7,
                    7,
                    "message.completed".into(),
                    r#"{"message_id":"m1"}"#.into()
                ),
                (
                    8,
                    8,
                    "message.delta".into(),
                    r#"{"message_id":"m2","text":"z"}"#.into()
                ),
            ]
        );
        assert_eq!(bytes, q.iter().map(|i| i.event.data.len()).sum::<usize>());
    }

    #[test]
    fn leaves_other_topics_and_odd_deltas_alone() {
        let mut q: VecDeque<Item> = [
            item(0, 1, "message.delta", r#"{"message_id":"m1","text":"a"}"#),
            item(1, 1, "message.delta", r#"{"message_id":"m1","text":"b"}"#),
            item(1, 2, "message.delta", r#"not json"#),
            item(1, 3, "message.delta", r#"{"message_id":"m1","text":7}"#),
        ]
        .into_iter()
        .collect();
        merge_deltas(&mut q);
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn full_queue_merges_then_disconnects() {
        let metrics = Arc::new(HubMetrics::default());
        let queue = Queue::new(3, WhenFull::MergeDeltas, metrics.clone());
        queue.set_catching_up(false);
        let sink = TopicSink {
            queue: queue.clone(),
            idx: 0,
        };
        for i in 1..=10 {
            sink.deliver(
                &item(
                    0,
                    i,
                    "message.delta",
                    &format!(r#"{{"message_id":"m","text":"{i}"}}"#),
                )
                .event,
            );
        }
        let mut got = VecDeque::new();
        let taken = queue.take(&mut got);
        assert!(!taken.overflowed);
        let texts: String = got
            .iter()
            .map(|i| {
                serde_json::from_slice::<serde_json::Value>(&i.event.data).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(texts, "12345678910");
        assert_eq!(got.back().unwrap().event.offset, 10);
        assert_eq!(metrics.queued_events.load(Ordering::Relaxed), 0);

        for i in 11..=14 {
            sink.deliver(&item(0, i, "message.created", "{}").event);
        }
        got.clear();
        assert!(queue.take(&mut got).overflowed);
        assert!(got.is_empty(), "an overflowed queue is emptied");
        assert_eq!(metrics.slow_consumers_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.queued_events.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn overflow_while_catching_up_lags_instead() {
        let metrics = Arc::new(HubMetrics::default());
        let queue = Queue::new(2, WhenFull::Disconnect, metrics.clone());
        let sink = TopicSink {
            queue: queue.clone(),
            idx: 0,
        };
        for i in 1..=5 {
            sink.deliver(&item(0, i, "m", "{}").event);
        }
        let mut got = VecDeque::new();
        let taken = queue.take(&mut got);
        assert!(taken.lagged && !taken.overflowed);
        assert_eq!(got.len(), 2);
        assert_eq!(metrics.slow_consumers_dropped.load(Ordering::Relaxed), 0);
    }
}
