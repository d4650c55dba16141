//! The Redis key layout: one place decides every key and channel name.
//!
//! ```text
//! <prefix>epoch            string   the current epoch (see docs/scale-out.md)
//! <prefix>{<topic>}:seq    string   the topic's last offset (INCR)
//! <prefix>{<topic>}:log    stream   the replay log; entry id `<offset>-0`, fields n, d, t
//! <prefix>{<topic>}        channel  live events (SPUBLISH, or PUBLISH before Redis 7)
//! ```
//!
//! The `{<topic>}` hash tag puts a topic's keys and its shard channel in one cluster slot, so the
//! publish script only touches one slot per topic (plus the epoch key: see the docs for what a
//! cluster would need). Topic names cannot contain `{` or `}`, so no two topics share a key.

use rill_core::Topic;

/// Builds key and channel names for one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    epoch: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            epoch: format!("{prefix}epoch"),
        }
    }

    pub(crate) fn epoch(&self) -> &str {
        &self.epoch
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("rill:");
        let t = Topic::new("orders/eu").unwrap();
        assert_eq!(k.epoch(), "rill:epoch");
        assert_eq!(k.seq(&t), "rill:{orders/eu}:seq");
        assert_eq!(k.log(&t), "rill:{orders/eu}:log");
        assert_eq!(k.channel(&t), "rill:{orders/eu}");
    }
}
