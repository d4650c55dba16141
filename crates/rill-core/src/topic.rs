//! Topic names: the one place their charset and length are decided.

use std::fmt;
use std::sync::Arc;

/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 200;

/// A validated topic name.
///
/// A topic is 1 to [`MAX_TOPIC_LEN`] bytes of ASCII letters, digits and `_ - . : @ /`. It must
/// not start or end with `/`, nor contain `//`, so `prefix/*` patterns stay unambiguous. Names
/// starting with `_` are reserved for rill itself (chat streams live under `_chat/`); see
/// [`Topic::is_reserved`]. Cloning is cheap (the name is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// Why a string is not a topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    #[error("topic name contains {0:?}; allowed are ASCII letters, digits and _ - . : @ /")]
    BadChar(char),
    #[error("topic name must not start or end with '/' or contain '//'")]
    BadSlash,
}

impl Topic {
    /// Validates `name` as a topic.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        if let Some(c) = name.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '/'))
        }) {
            return Err(TopicError::BadChar(c));
        }
        if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            return Err(TopicError::BadSlash);
        }
        Ok(Topic(Arc::from(name)))
    }

    /// The topic that carries the events of one chat.
    pub fn for_chat(chat_id: &str) -> Self {
        Topic(Arc::from(format!("_chat/{chat_id}")))
    }

    /// Whether the name is reserved for rill's own streams (it starts with `_`). The public
    /// topics API refuses reserved names.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with('_')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(name: &str, expected: Result<(), TopicError>) {
        assert_eq!(Topic::new(name).map(|_| ()), expected, "{name:?}");
    }

    #[test]
    fn names() {
        check("orders", Ok(()));
        check("orders/42", Ok(()));
        check("user:7@prices.eu-1_x", Ok(()));
        check("", Err(TopicError::Empty));
        check(&"a".repeat(MAX_TOPIC_LEN), Ok(()));
        check(&"a".repeat(MAX_TOPIC_LEN + 1), Err(TopicError::TooLong));
        check("a b", Err(TopicError::BadChar(' ')));
        check("a*", Err(TopicError::BadChar('*')));
        check("한", Err(TopicError::BadChar('한')));
        check("/a", Err(TopicError::BadSlash));
        check("a/", Err(TopicError::BadSlash));
        check("a//b", Err(TopicError::BadSlash));
        assert!(Topic::for_chat("x").is_reserved());
        assert!(!Topic::new("x").unwrap().is_reserved());
    }
}
