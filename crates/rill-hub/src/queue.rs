//! The bounded per-connection queue of live events, and what happens when it is full.
//!
//! Brokers hand live events to a [`TopicSink`] from their publish path, so `deliver` never
//! blocks or awaits: it takes a short std mutex, pushes an `Arc` (or applies the connection's
//! [`WhenFull`] policy when the queue is at its bound, which is constant work: no event is
//! parsed or merged here) and wakes the connection task. Merging runs of chat deltas for a slow
//! reader happens in that reader's own task, on what it reads back from the log.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rill_core::{Event, Sink, WhenFull};
use tokio::sync::Notify;

use crate::metrics::HubMetrics;

/// One queued live event.
#[derive(Debug)]
pub(crate) struct Item {
    /// Index of the event's topic in the connection's sorted topic list.
    pub(crate) idx: usize,
    pub(crate) event: Arc<Event>,
}

/// What the connection task takes from the queue on each wake-up.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// The queue overflowed outside catch-up ([`WhenFull::Disconnect`]): the subscriber is
    /// dropped.
    pub(crate) overflowed: bool,
    /// Events were dropped (during catch-up, or under [`WhenFull::Resync`]): re-read every
    /// topic from the log.
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
            if st.items.len() >= self.capacity {
                if st.catching_up || self.when_full == WhenFull::Resync {
                    // The log has the event: the task reads it back when it gets there. The
                    // queue keeps what it has (so the task writes it first) and the flag.
                    if !std::mem::replace(&mut st.lagged, true) {
                        drop(st);
                        self.notify.notify_one();
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rill_core::Topic;

    fn event(offset: u64) -> Arc<Event> {
        let t = Topic::new("_chat/1").unwrap();
        Arc::new(Event::new(
            t,
            offset,
            Arc::from("m"),
            Bytes::from_static(b"{}"),
            0,
        ))
    }

    #[test]
    fn full_queue_disconnects_a_topic_subscriber() {
        let metrics = Arc::new(HubMetrics::default());
        let queue = Queue::new(3, WhenFull::Disconnect, metrics.clone());
        queue.set_catching_up(false);
        let sink = TopicSink {
            queue: queue.clone(),
            idx: 0,
        };
        for i in 1..=5 {
            sink.deliver(&event(i));
        }
        let mut got = VecDeque::new();
        let taken = queue.take(&mut got);
        assert!(taken.overflowed);
        assert!(got.is_empty(), "an overflowed queue is emptied");
        assert_eq!(metrics.slow_consumers_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.queued_events.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn full_queue_resyncs_a_chat_subscriber_from_the_log() {
        let metrics = Arc::new(HubMetrics::default());
        let queue = Queue::new(3, WhenFull::Resync, metrics.clone());
        queue.set_catching_up(false);
        let sink = TopicSink {
            queue: queue.clone(),
            idx: 0,
        };
        for i in 1..=10 {
            sink.deliver(&event(i));
        }
        let mut got = VecDeque::new();
        let taken = queue.take(&mut got);
        assert!(taken.lagged && !taken.overflowed);
        let offsets: Vec<u64> = got.iter().map(|i| i.event.offset).collect();
        assert_eq!(offsets, [1, 2, 3], "what was queued is kept, in order");
        assert_eq!(metrics.slow_consumers_dropped.load(Ordering::Relaxed), 0);
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
            sink.deliver(&event(i));
        }
        let mut got = VecDeque::new();
        let taken = queue.take(&mut got);
        assert!(taken.lagged && !taken.overflowed);
        assert_eq!(got.len(), 2);
        assert_eq!(metrics.slow_consumers_dropped.load(Ordering::Relaxed), 0);
    }
}
