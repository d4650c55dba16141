//! Fuzz target: arbitrary bytes in arbitrary chunkings must never panic and must give the same
//! items, last event ID and retry as the same bytes in one chunk and one byte at a time.
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run parse_chunks -- -max_total_time=300`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_sse::{Item, Parser};

/// Everything a parser reports, rendered so runs can be compared.
fn run<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<String>, String, Option<u64>) {
    let mut parser = Parser::new();
    let mut items = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, |item| {
            items.push(match item {
                Item::Event(e) => format!("event {:?} {:?} {:?}", e.event, e.data, e.id),
                Item::Retry(ms) => format!("retry {ms}"),
                Item::Comment(text) => format!("comment {text:?}"),
            });
        });
    }
    (items, parser.last_event_id().to_owned(), parser.retry())
}

fuzz_target!(|input: &[u8]| {
    // The first bytes choose the chunk sizes (1 to 16, cycling); the rest is the stream.
    let split = input.len().min(8);
    let (sizes, stream) = input.split_at(split);
    let whole = run([stream]);

    let mut chunks = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes.get(i % sizes.len().max(1)).map_or(1, |s| usize::from(s % 16) + 1);
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk);
        rest = after;
        i += 1;
    }
    assert_eq!(run(chunks.iter().copied()), whole, "chunked by {sizes:?}");
    assert_eq!(run(stream.chunks(1)), whole, "one byte at a time");
});
