//! The recent history of chats answered here, kept in memory: a chat's next question then
//! needs no history read before its first token.
//!
//! An entry is the part of a chat's history a model can still be sent (from
//! [`crate::prompt::window_start`] on), tagged with the chat's [`HistoryRevision`] it matches.
//! Every request reads the chat's row anyway (ownership, bot): an entry is used only when the
//! revision read there is the entry's, so a change made by another instance (a message added,
//! an answer finished, tool results recorded) is never missed. The database keeps the revision
//! (migration 0004); this instance moves an entry forward only over its own writes, whose
//! effect on the revision it knows:
//!
//! - an entry is seeded when an exchange starts, with the history its request was built from
//!   and the revision the chat will have after the exchange's two rows are stored, counted from
//!   the revision read *before* that history (a change in between makes the count come out
//!   higher, so the entry is never used);
//! - it is completed when the answer's final state is written (one change more), with the
//!   answer as written.
//!
//! Bounded by the bytes of text it holds (and 4,096 chats); the least recently used go first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rill_core::chat::{HistoryRevision, Message, Part};

use super::lock;
use crate::prompt::window_start;

/// Room per message beyond its text: ids, the struct, the entry.
const MESSAGE_OVERHEAD: usize = 256;

/// The most chats kept, whatever their size: bounds the eviction's scan.
const MAX_CHATS: usize = 4_096;

pub(crate) struct HistoryCache {
    limit_bytes: usize,
    budget_chars: usize,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

struct Entry {
    revision: HistoryRevision,
    messages: Vec<Message>,
    bytes: usize,
    used: u64,
}

/// The history an exchange's request was built from, to be completed with its answer.
#[derive(Debug)]
pub(crate) struct Seed {
    /// The chat's revision once the exchange is stored.
    pub(crate) revision: HistoryRevision,
    /// Oldest first, ending with the question.
    pub(crate) messages: Vec<Message>,
}

impl HistoryCache {
    /// A cache of at most `limit_bytes` (0: none) of chats whose model requests carry at most
    /// `budget_chars` of history.
    pub(crate) fn new(limit_bytes: usize, budget_chars: usize) -> Self {
        HistoryCache {
            limit_bytes,
            budget_chars,
            state: Mutex::new(State::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.limit_bytes > 0
    }

    /// The chat's history if it is known at `revision` (oldest first); an entry for another
    /// revision is dropped.
    pub(crate) fn get(&self, chat_id: &str, revision: HistoryRevision) -> Option<Vec<Message>> {
        if !self.enabled() {
            return None;
        }
        let mut state = lock(&self.state);
        let state = &mut *state;
        state.clock = state.clock.wrapping_add(1);
        let found = match state.entries.get_mut(chat_id) {
            Some(entry) if entry.revision == revision => {
                entry.used = state.clock;
                Some(entry.messages.clone())
            }
            Some(_) => {
                if let Some(stale) = state.entries.remove(chat_id) {
                    state.bytes = state.bytes.saturating_sub(stale.bytes);
                }
                None
            }
            None => None,
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Completes `seed` with the answer as its final state was written (one change more).
    pub(crate) fn complete(&self, chat_id: &str, seed: Seed, answer: Message) {
        let Seed {
            revision,
            mut messages,
        } = seed;
        messages.push(answer);
        self.put(chat_id, revision.after(1), messages);
    }

    /// Keeps `messages` (oldest first) as the chat's history at `revision`, cut where the model
    /// can no longer be sent them.
    pub(crate) fn put(&self, chat_id: &str, revision: HistoryRevision, mut messages: Vec<Message>) {
        if !self.enabled() {
            return;
        }
        if let Some(start) = window_start(&messages, self.budget_chars) {
            messages.drain(..start);
        }
        let bytes = messages.iter().map(size_of_message).sum::<usize>();
        let mut state = lock(&self.state);
        let state = &mut *state;
        if let Some(old) = state.entries.remove(chat_id) {
            state.bytes = state.bytes.saturating_sub(old.bytes);
        }
        if bytes > self.limit_bytes {
            return;
        }
        // The least recently used go first. A linear scan over at most `MAX_CHATS` entries
        // (tens of microseconds), when an answer is written, never before a first token.
        while state.bytes.saturating_add(bytes) > self.limit_bytes
            || state.entries.len() >= MAX_CHATS
        {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            if let Some(evicted) = state.entries.remove(&oldest) {
                state.bytes = state.bytes.saturating_sub(evicted.bytes);
            }
        }
        state.clock = state.clock.wrapping_add(1);
        state.bytes = state.bytes.saturating_add(bytes);
        state.entries.insert(
            chat_id.to_owned(),
            Entry {
                revision,
                messages,
                bytes,
                used: state.clock,
            },
        );
    }

    /// Forgets the chat (deleted here).
    pub(crate) fn forget(&self, chat_id: &str) {
        let mut state = lock(&self.state);
        if let Some(old) = state.entries.remove(chat_id) {
            state.bytes = state.bytes.saturating_sub(old.bytes);
        }
    }

    /// Requests answered from the cache, and requests that read the history from the store.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        lock(&self.state).bytes
    }
}

/// About what a message takes in memory: its text twice (content and parts) and some room.
fn size_of_message(m: &Message) -> usize {
    let parts: usize = m
        .parts
        .iter()
        .map(|p| match p {
            Part::Text { text } | Part::Reasoning { text, .. } => text.len(),
            Part::ToolCall {
                input_text, output, ..
            } => input_text
                .len()
                .saturating_add(output.as_ref().map_or(0, |_| 256)),
            _ => 128,
        })
        .sum();
    m.content
        .len()
        .saturating_add(parts)
        .saturating_add(MESSAGE_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use rill_core::chat::{MessageStatus, Role};

    use super::*;

    fn message(role: Role, content: &str) -> Message {
        crate::prompt::tests::msg(role, MessageStatus::Complete, content)
    }

    fn revision(changes: i64) -> HistoryRevision {
        HistoryRevision {
            chat_seq: 1,
            changes,
        }
    }

    #[test]
    fn an_entry_serves_its_revision_only_and_a_stale_one_is_dropped() {
        let cache = HistoryCache::new(1 << 20, 1_000);
        cache.put("c", revision(3), vec![message(Role::User, "q")]);
        assert!(cache.get("c", revision(4)).is_none(), "another revision");
        assert!(
            cache.get("c", revision(3)).is_none(),
            "dropped when a newer revision was seen"
        );
        cache.put("c", revision(3), vec![message(Role::User, "q")]);
        let other_chat_same_id = HistoryRevision {
            chat_seq: 2,
            changes: 3,
        };
        assert!(cache.get("c", other_chat_same_id).is_none());
        cache.put("c", revision(3), vec![message(Role::User, "q")]);
        assert_eq!(cache.get("c", revision(3)).map(|m| m.len()), Some(1));
        assert_eq!(cache.counts(), (1, 3));
    }

    #[test]
    fn a_completed_seed_is_the_next_revision_cut_to_the_budget() {
        let cache = HistoryCache::new(1 << 20, 10);
        let seed = Seed {
            revision: revision(2),
            messages: vec![
                message(Role::User, "aaaaaaaa"),
                message(Role::Assistant, "bbbbbbbb"),
                message(Role::User, "cccc"),
            ],
        };
        cache.complete("c", seed, message(Role::Assistant, "dddd"));
        let got = cache.get("c", revision(3)).expect("the completed entry");
        let contents: Vec<&str> = got.iter().map(|m| m.content.as_str()).collect();
        // "bbbbbbbb" is the first that does not fit: kept as the window's start, and nothing
        // older.
        assert_eq!(contents, ["bbbbbbbb", "cccc", "dddd"]);
    }

    #[test]
    fn the_least_recently_used_chat_goes_when_the_bytes_run_out() {
        let one = size_of_message(&message(Role::User, "q"));
        let cache = HistoryCache::new(2 * one, 1_000);
        cache.put("a", revision(1), vec![message(Role::User, "q")]);
        cache.put("b", revision(1), vec![message(Role::User, "q")]);
        assert!(
            cache.get("a", revision(1)).is_some(),
            "a is used: b is older"
        );
        cache.put("c", revision(1), vec![message(Role::User, "q")]);
        assert!(cache.get("b", revision(1)).is_none());
        assert!(cache.get("a", revision(1)).is_some());
        assert!(cache.get("c", revision(1)).is_some());
        assert_eq!(cache.bytes(), 2 * one);
        cache.forget("a");
        assert_eq!(cache.bytes(), one);
    }

    #[test]
    fn at_most_max_chats_are_kept_however_small() {
        let cache = HistoryCache::new(usize::MAX, 1_000);
        for n in 0..=MAX_CHATS {
            cache.put(&n.to_string(), revision(1), vec![message(Role::User, "q")]);
        }
        assert_eq!(lock(&cache.state).entries.len(), MAX_CHATS);
        assert!(cache.get("0", revision(1)).is_none(), "the oldest went");
        assert!(cache.get(&MAX_CHATS.to_string(), revision(1)).is_some());
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let cache = HistoryCache::new(0, 1_000);
        cache.put("a", revision(1), vec![message(Role::User, "q")]);
        assert!(cache.get("a", revision(1)).is_none());
        assert_eq!(cache.counts(), (0, 0));
    }
}
