//! Server-Sent Events wire format: a spec-exact incremental parser and an encoder. No I/O.
//!
//! The [`Parser`] follows the parsing rules of the WHATWG HTML standard, section "Server-sent
//! events" (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>),
//! and gives the same items for any chunking of the same bytes. The encoder ([`encode_event`],
//! [`encode_comment`], [`encode_retry`]) writes frames that the parser (and any browser's
//! `EventSource`) reads back unchanged, and refuses ids and event names that would break framing.
//!
//! **Invariant:** this crate does no I/O and needs no async runtime: bytes in, items out.
//!
//! ```
//! use rill_sse::{encode_event, Item, OwnedEvent, Parser};
//!
//! let mut wire = Vec::new();
//! encode_event(&mut wire, Some("7"), Some("message.delta"), "two\nlines").unwrap();
//!
//! let mut parser = Parser::new();
//! let mut events = Vec::new();
//! parser.feed(&wire, |item| {
//!     if let Item::Event(event) = item {
//!         events.push(OwnedEvent::from(event));
//!     }
//! });
//! assert_eq!(events[0].event, "message.delta");
//! assert_eq!(events[0].data, "two\nlines");
//! assert_eq!(parser.last_event_id(), "7");
//! ```

mod encode;
mod parse;
mod scan;

pub use encode::{
    EncodeError, encode_comment, encode_comment_buf, encode_event, encode_event_buf, encode_retry,
    encode_retry_buf,
};
pub use parse::{Event, Item, OwnedEvent, Parser};
