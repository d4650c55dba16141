//! Merging runs of deltas, for readers that fell behind: fewer, larger events, the same text.
//!
//! The hub calls this on batches it reads from the log for a chat stream (a resume, or a slow
//! reader resynchronised from the log); never on the publish path.

use std::sync::Arc;

use bytes::Bytes;
use rill_core::{Coalesce, Event};

use super::events::{ChatEvent, DeltaKind};

/// Merges consecutive deltas of the same kind, message and part into one: the texts
/// concatenated, the offset (and so the SSE id) of the last. Only consecutive runs merge, so
/// the order of events never changes.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeltaCoalescer;

impl Coalesce for DeltaCoalescer {
    fn coalesce(&self, events: &mut Vec<Arc<Event>>) {
        if events.len() < 2 {
            return;
        }
        let mut out: Vec<Arc<Event>> = Vec::with_capacity(events.len());
        // The run being built: its last event, its decoded fields, and how many it covers.
        let mut run: Option<(Arc<Event>, ChatEvent, usize)> = None;
        for event in events.drain(..) {
            let delta = DeltaKind::from_event_name(&event.name)
                .and_then(|_| ChatEvent::decode(&event.name, &event.data).ok().flatten());
            let Some(ChatEvent::Delta {
                message_id,
                part,
                kind,
                text,
            }) = delta
            else {
                flush(&mut run, &mut out);
                out.push(event);
                continue;
            };
            match &mut run {
                Some((
                    last,
                    ChatEvent::Delta {
                        message_id: m,
                        part: p,
                        kind: k,
                        text: acc,
                    },
                    count,
                )) if *m == message_id && *p == part && *k == kind => {
                    acc.push_str(&text);
                    *count += 1;
                    *last = event;
                }
                _ => {
                    flush(&mut run, &mut out);
                    let fields = ChatEvent::Delta {
                        message_id,
                        part,
                        kind,
                        text,
                    };
                    run = Some((event, fields, 1));
                }
            }
        }
        flush(&mut run, &mut out);
        *events = out;
    }
}

fn flush(run: &mut Option<(Arc<Event>, ChatEvent, usize)>, out: &mut Vec<Arc<Event>>) {
    let Some((last, fields, count)) = run.take() else {
        return;
    };
    if count == 1 {
        out.push(last);
        return;
    }
    let merged = Event::new(
        last.topic.clone(),
        last.offset,
        last.name.clone(),
        Bytes::from(fields.data()),
        last.time_ms,
    );
    out.push(Arc::new(merged));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::Topic;

    fn event(offset: u64, name: &str, data: &str) -> Arc<Event> {
        let topic = Topic::new("_chat/1").unwrap();
        Arc::new(Event::new(
            topic,
            offset,
            Arc::from(name),
            Bytes::from(data.to_owned()),
            0,
        ))
    }

    fn summary(events: &[Arc<Event>]) -> Vec<(u64, String, String)> {
        events
            .iter()
            .map(|e| {
                (
                    e.offset,
                    e.name.to_string(),
                    String::from_utf8_lossy(&e.data).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn merges_runs_of_one_part_only() {
        let mut events = vec![
            event(1, "message.created", r#"{"id":"m1"}"#),
            event(
                2,
                "message.delta",
                r#"{"message_id":"m1","part":0,"text":"Hel"}"#,
            ),
            event(
                3,
                "message.delta",
                r#"{"message_id":"m1","part":0,"text":"lo, "}"#,
            ),
            event(
                4,
                "message.delta",
                r#"{"message_id":"m1","part":0,"text":"wörld"}"#,
            ),
            event(
                5,
                "message.reasoning.delta",
                r#"{"message_id":"m1","part":0,"text":"x"}"#,
            ),
            event(
                6,
                "message.delta",
                r#"{"message_id":"m1","part":1,"text":"a"}"#,
            ),
            event(
                7,
                "message.delta",
                r#"{"message_id":"m1","part":1,"text":"b"}"#,
            ),
            event(8, "message.delta", "not json"),
            event(
                9,
                "message.delta",
                r#"{"message_id":"m1","part":1,"text":"c"}"#,
            ),
        ];
        DeltaCoalescer.coalesce(&mut events);
        assert_eq!(
            summary(&events),
            vec![
                (1, "message.created".into(), r#"{"id":"m1"}"#.into()),
                (
                    4,
                    "message.delta".into(),
                    r#"{"message_id":"m1","part":0,"text":"Hello, wörld"}"#.into()
                ),
                (
                    5,
                    "message.reasoning.delta".into(),
                    r#"{"message_id":"m1","part":0,"text":"x"}"#.into()
                ),
                (
                    7,
                    "message.delta".into(),
                    r#"{"message_id":"m1","part":1,"text":"ab"}"#.into()
                ),
                (8, "message.delta".into(), "not json".into()),
                (
                    9,
                    "message.delta".into(),
                    r#"{"message_id":"m1","part":1,"text":"c"}"#.into()
                ),
            ]
        );
    }
}
