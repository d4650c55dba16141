//! Fuzz target: arbitrary bytes in arbitrary chunkings must never panic and must give the same
//! items, last event ID and retry as the same bytes in one chunk and one byte at a time; and the
//! input repeated into a longer stream, in chunks of up to a few KiB, the same as that stream in
//! one chunk (so the parser's switch between small chunks, whose whole lines it may hold back up
//! to 4 KiB, and large ones is exercised too).
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

/// Cuts `stream` into chunks whose sizes cycle through `size(byte)` for the bytes of `sizes`.
fn cut<'s>(stream: &'s [u8], sizes: &[u8], size: impl Fn(u8) -> usize) -> Vec<&'s [u8]> {
    let mut chunks = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let chunk_size = sizes.get(i % sizes.len().max(1)).map_or(1, |&s| size(s));
        let (chunk, after) = rest.split_at(chunk_size.min(rest.len()));
        chunks.push(chunk);
        rest = after;
        i += 1;
    }
    chunks
}

fuzz_target!(|input: &[u8]| {
    // The first bytes choose the chunk sizes (1 to 16, cycling); the rest is the stream.
    let split = input.len().min(8);
    let (sizes, stream) = input.split_at(split);
    let whole = run([stream]);
    let chunks = cut(stream, sizes, |s| usize::from(s % 16) + 1);
    assert_eq!(run(chunks.iter().copied()), whole, "chunked by {sizes:?}");
    assert_eq!(run(stream.chunks(1)), whole, "one byte at a time");

    // The stream repeated (2 to 9 times), in chunks of 1 to about 9 KiB.
    let repeats = sizes.first().map_or(2, |&s| usize::from(s % 8) + 2);
    let long = stream.repeat(repeats);
    let long_chunks = cut(&long, sizes, |s| usize::from(s) * 37 + 1);
    assert_eq!(
        run(long_chunks.iter().copied()),
        run([long.as_slice()]),
        "repeated {repeats} times, chunked by {sizes:?} x 37"
    );
});
