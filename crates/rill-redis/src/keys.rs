//! The Redis key layout: one place decides every key and channel name.
//!
//! ```text
//! <prefix>epoch            string   the epoch (one Redis; see docs/scale-out.md)
//! <prefix>epoch{<tag>}     string   the epoch of one cluster slot (Redis Cluster)
//! <prefix>{<topic>}:seq    string   the topic's last offset (INCR)
//! <prefix>{<topic>}:log    stream   the replay log; entry id `<offset>-0`, fields n, d, t
//! <prefix>{<topic>}        channel  live events (SPUBLISH, or PUBLISH before Redis 7)
//! <prefix>spent:<key>      string   a spent single-use key (stream tickets), until its expiry
//! ```
//!
//! The `{<topic>}` hash tag puts a topic's keys and its shard channel in one cluster slot. On a
//! cluster the epoch is kept per slot, in a key whose hash tag is a short string that hashes to
//! that very slot ([`slot_tag`]), so the publish and read scripts touch one slot only, and a
//! shard that loses its data (a failover without a replica, a restart without persistence)
//! changes the epochs of its own slots, not the others'. Topic names cannot contain `{` or `}`,
//! so no two topics share a key.

use std::sync::OnceLock;

use rill_core::Topic;

/// Slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// Builds key and channel names for one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    epoch: String,
    cluster: bool,
}

impl Keys {
    pub(crate) fn new(prefix: &str, cluster: bool) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            epoch: format!("{prefix}epoch"),
            cluster,
        }
    }

    /// The epoch key of `topic`: the one epoch on one Redis, its slot's epoch on a cluster.
    pub(crate) fn epoch(&self, topic: &Topic) -> String {
        if self.cluster {
            self.slot_epoch(topic_slot(topic))
        } else {
            self.epoch.clone()
        }
    }

    /// The epoch key of a slot (cluster).
    pub(crate) fn slot_epoch(&self, slot: u16) -> String {
        format!("{}epoch{{{}}}", self.prefix, slot_tag(slot))
    }

    /// The epoch key that stands for the deployment (`Broker::epoch`, readiness): the global
    /// one, or on a cluster that of the prefix's own slot.
    pub(crate) fn home_epoch(&self) -> String {
        if self.cluster {
            self.slot_epoch(key_slot(self.prefix.as_bytes()))
        } else {
            self.epoch.clone()
        }
    }

    pub(crate) fn seq(&self, topic: &Topic) -> String {
        format!("{}{{{}}}:seq", self.prefix, topic.as_str())
    }

    pub(crate) fn log(&self, topic: &Topic) -> String {
        format!("{}{{{}}}:log", self.prefix, topic.as_str())
    }

    pub(crate) fn channel(&self, topic: &Topic) -> String {
        format!("{}{{{}}}", self.prefix, topic.as_str())
    }

    /// The key marking `key` spent (`SpentSet`).
    pub(crate) fn spent(&self, key: &str) -> String {
        format!("{}spent:{key}", self.prefix)
    }
}

/// The cluster slot of every key and of the channel of `topic` (its hash tag is the name).
pub(crate) fn topic_slot(topic: &Topic) -> u16 {
    crc16(topic.as_str().as_bytes()) % SLOTS
}

/// The cluster slot of a key, by Redis's rule: the hash tag (between the first `{` and the next
/// `}`) if it is not empty, else the whole key.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let tagged = memchr::memchr(b'{', key).and_then(|open| {
        let rest = &key[open + 1..];
        memchr::memchr(b'}', rest).and_then(|close| (close > 0).then(|| &rest[..close]))
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0): the hash Redis Cluster uses for slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A short string that hashes to `slot`: the base-36 form of the smallest number that does.
///
/// The table is built once, on first use (cluster mode only), by hashing 0, 1, 2, ... until
/// every slot has one: about 170 000 hashes of 4-character strings, a few milliseconds. The
/// values are fixed by the hash, so every instance and every release finds the same keys.
pub(crate) fn slot_tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; usize::from(SLOTS)];
        let mut missing = usize::from(SLOTS);
        // Bounded: 36^5 strings cover every slot many times over (the test checks all are
        // found long before).
        for n in 0..60_466_176u64 {
            if missing == 0 {
                break;
            }
            let s = base36(n);
            let slot = usize::from(crc16(s.as_bytes()) % SLOTS);
            if tags[slot].is_none() {
                tags[slot] = Some(s);
                missing -= 1;
            }
        }
        // A slot left without a tag (impossible, see the test) falls back to a key of its own
        // slot computed differently: the slot number, which merely hashes elsewhere, so its
        // epoch would live in another slot than its topics (the scripts would then fail
        // loudly with CROSSSLOT rather than silently misbehave).
        tags.into_iter()
            .enumerate()
            .map(|(i, t)| t.unwrap_or_else(|| format!("slot{i}")))
            .collect()
    });
    tags.get(usize::from(slot)).map_or("", String::as_str)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("rill:", false);
        let t = Topic::new("orders/eu").unwrap();
        assert_eq!(k.epoch(&t), "rill:epoch");
        assert_eq!(k.home_epoch(), "rill:epoch");
        assert_eq!(k.seq(&t), "rill:{orders/eu}:seq");
        assert_eq!(k.log(&t), "rill:{orders/eu}:log");
        assert_eq!(k.channel(&t), "rill:{orders/eu}");
    }

    #[test]
    fn slots_follow_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        let t = Topic::new("orders/eu").unwrap();
        let k = Keys::new("rill:", true);
        for key in [k.seq(&t), k.log(&t), k.channel(&t), k.epoch(&t)] {
            assert_eq!(key_slot(key.as_bytes()), topic_slot(&t), "{key}");
        }
        assert_eq!(
            key_slot(k.home_epoch().as_bytes()),
            key_slot(b"rill:"),
            "the home epoch lives in the prefix's slot"
        );
    }

    #[test]
    fn every_slot_has_a_short_tag() {
        for slot in 0..SLOTS {
            let tag = slot_tag(slot);
            assert!(!tag.is_empty() && tag.len() <= 4, "slot {slot}: {tag:?}");
            assert_eq!(crc16(tag.as_bytes()) % SLOTS, slot);
        }
    }
}
