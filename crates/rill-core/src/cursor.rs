//! Stream cursors: what an SSE `id:` encodes, and what comes back as `Last-Event-ID`.
//!
//! Every topic has a log of events with offsets 1, 2, 3, ... that only grow. The log lives in a
//! broker, which names its current incarnation with an [`Epoch`]: when a log is lost (a process
//! restart for the in-process broker, a Redis restart with no data) the epoch changes, and offsets
//! from the old epoch mean nothing.
//!
//! One SSE connection may carry several topics, and `EventSource` sends back only the last id it
//! saw. So the id of every event carries the position in *every* topic of the connection:
//!
//! ```text
//! <epoch>.<topic-set hash>.<offset of topic 1>.<offset of topic 2>...
//! <epoch of topic 1>-<epoch of topic 2>-....<topic-set hash>.<offset of topic 1>...
//! ```
//!
//! The second form is for brokers whose topics have epochs of their own (a Redis Cluster keeps
//! one per slot, so a shard that loses its data resets only its topics); it is written only when
//! the topics' epochs differ, so an id over topics of one epoch keeps the first form (every id
//! of the in-process broker and of one Redis). Topics are in sorted order; the hash (FNV-1a of the sorted names, base 36) makes an id from a
//! connection with other topics detectable instead of silently misapplied. Offset 0 means
//! "nothing from this topic yet". The format is opaque to clients; only this module reads it.

use std::fmt;
use std::sync::Arc;

use crate::Topic;

/// The incarnation of a broker's logs: short, `[a-z0-9]`, different after any loss of the logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Wraps an epoch string, which must be 1 to 32 chars of `[a-z0-9]`.
    pub fn new(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        ok.then(|| Epoch(Arc::from(s)))
    }

    /// A fresh epoch from 64 random bits (the caller supplies them, so this crate needs no RNG).
    pub fn from_random(bits: u64) -> Self {
        Epoch(Arc::from(to_base36(bits)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.0)
    }
}

/// The position of one connection in each of its topics.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamCursor {
    /// The epoch of each topic's log, in sorted topic order, or one epoch for every topic.
    pub epochs: Vec<Epoch>,
    /// Hash of the sorted topic set the offsets belong to (see [`topic_set_hash`]).
    pub topics_hash: u32,
    /// The last offset seen in each topic, in sorted topic order; 0 means none yet.
    pub offsets: Vec<u64>,
}

impl StreamCursor {
    /// Parses a `Last-Event-ID`. `None` when it is not one of ours (another server's id,
    /// garbage): the caller treats that as a foreign id and resets.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let epochs = parts
            .next()?
            .split('-')
            .map(Epoch::new)
            .collect::<Option<Vec<Epoch>>>()?;
        let hash = parts.next()?;
        if hash.is_empty() || hash.len() > 7 {
            return None;
        }
        let topics_hash = u32::from_str_radix(hash, 36).ok()?;
        let offsets = parts
            .map(|p| {
                // Plain decimal only: no sign, no leading '+', no empty part.
                if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    p.parse::<u64>().ok()
                }
            })
            .collect::<Option<Vec<u64>>>()?;
        if offsets.is_empty() || (epochs.len() != 1 && epochs.len() != offsets.len()) {
            return None;
        }
        Some(StreamCursor {
            epochs,
            topics_hash,
            offsets,
        })
    }

    /// The epoch of the `i`-th topic (sorted order).
    pub fn epoch_of(&self, i: usize) -> Option<&Epoch> {
        match self.epochs.as_slice() {
            [one] => Some(one),
            all => all.get(i),
        }
    }

    /// Whether this cursor belongs to a connection over exactly `sorted_topics`, whatever the
    /// epochs.
    pub fn fits(&self, sorted_topics: &[Topic]) -> bool {
        self.offsets.len() == sorted_topics.len()
            && (self.epochs.len() == 1 || self.epochs.len() == self.offsets.len())
            && self.topics_hash == topic_set_hash(sorted_topics)
    }

    /// Whether this cursor belongs to a connection over exactly `sorted_topics`, every one of
    /// them in `epoch`.
    pub fn matches(&self, epoch: &Epoch, sorted_topics: &[Topic]) -> bool {
        self.fits(sorted_topics) && self.epochs.iter().all(|e| e == epoch)
    }
}

impl fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One epoch when they are all the same: the form every single-epoch broker writes.
        match self.epochs.split_first() {
            Some((first, rest)) if rest.iter().all(|e| e == first) => write!(f, "{first}")?,
            _ => {
                for (i, e) in self.epochs.iter().enumerate() {
                    if i > 0 {
                        f.write_str("-")?;
                    }
                    write!(f, "{e}")?;
                }
            }
        }
        write!(f, ".{}", to_base36(u64::from(self.topics_hash)))?;
        for o in &self.offsets {
            write!(f, ".{o}")?;
        }
        Ok(())
    }
}

/// FNV-1a over the sorted topic names, each followed by `\n`.
///
/// Written by hand: it is eight lines, and the value must never change between releases (ids in
/// browsers outlive a deploy), which a hashing crate's default hasher does not promise.
pub fn topic_set_hash(sorted_topics: &[Topic]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for t in sorted_topics {
        for &b in t.as_str().as_bytes().iter().chain(b"\n") {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

fn to_base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".to_owned();
    }
    let mut out = Vec::with_capacity(13);
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<Topic> {
        let mut v: Vec<Topic> = names.iter().map(|n| Topic::new(n).unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip() {
        let ts = topics(&["b", "a", "c/d"]);
        let e = Epoch::from_random(0xdead_beef_1234);
        let c = StreamCursor {
            epochs: vec![e.clone()],
            topics_hash: topic_set_hash(&ts),
            offsets: vec![0, 17, u64::MAX],
        };
        let s = c.to_string();
        assert_eq!(StreamCursor::parse(&s), Some(c.clone()));
        assert!(c.matches(&e, &ts));
        assert!(!c.matches(&e, &topics(&["a", "b"])));
        assert!(!c.matches(&Epoch::new("other").unwrap(), &ts));
        assert_eq!(c.epoch_of(2), Some(&e));
    }

    #[test]
    fn epochs_per_topic() {
        let ts = topics(&["a", "b", "c"]);
        let (x, y) = (Epoch::new("x1").unwrap(), Epoch::new("y2").unwrap());
        let c = StreamCursor {
            epochs: vec![x.clone(), y.clone(), x.clone()],
            topics_hash: topic_set_hash(&ts),
            offsets: vec![1, 2, 3],
        };
        let s = c.to_string();
        assert!(s.starts_with("x1-y2-x1."), "{s}");
        let back = StreamCursor::parse(&s).unwrap();
        assert_eq!(back, c);
        assert!(back.fits(&ts));
        assert!(!back.matches(&x, &ts), "not every topic is in x1");
        assert_eq!(back.epoch_of(1), Some(&y));
        // Equal epochs are written once: the id every single-epoch broker writes.
        let same = StreamCursor {
            epochs: vec![x.clone(); 3],
            ..c.clone()
        };
        assert!(same.to_string().starts_with("x1."), "{same}");
        assert!(same.matches(&x, &ts));
        // Two epochs for three topics is not an id of ours.
        assert_eq!(StreamCursor::parse("x1-y2.0.1.2.3"), None);
    }

    #[test]
    fn foreign_ids() {
        for s in [
            "",
            "42",
            "abc",
            "a.b",
            "a.b.",
            "a.b.x",
            "A.b.1",
            "a..1",
            "a.b.-1",
            "a.b.+1",
            "a.zzzzzzzz.1",
            "a.b.1.",
            "a.b.99999999999999999999999",
            "a-.b.1",
            "-a.b.1",
            "a-B.b.1",
        ] {
            assert_eq!(StreamCursor::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn hash_is_stable() {
        // Ids outlive releases: this value must never change.
        assert_eq!(topic_set_hash(&topics(&["orders"])), 0x30e7_8c12);
    }
}
