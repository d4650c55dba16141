//! Parser throughput: rill-sse against `eventsource-stream` and a bare `memchr` line scan, on the
//! same bytes in the same chunks: small LLM-token events (60-120 bytes) and large events (64 KiB
//! of data), cut 3 chunks per event or into 16 KiB chunks.
//!
//! Run: `cargo bench -p rill-sse --bench parse`. Criterion reports events/s (the group
//! throughput); the bytes per event printed at the start give MB/s. Results: docs/benchmarks.md.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use rill_sse::{Item, Parser};

/// A stream of events and the chunks it is delivered in.
struct Scenario {
    name: String,
    events: u64,
    bytes: Vec<u8>,
    /// Chunk boundaries as ranges into `bytes`.
    chunks: Vec<std::ops::Range<usize>>,
}

impl Scenario {
    fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().map(|range| &self.bytes[range.clone()])
    }
}

/// Events like those rill sends while a model streams: an id (a stream cursor), the event name
/// and a small JSON data line with one token of text. 60-120 bytes each.
fn small_events(count: usize) -> Vec<Vec<u8>> {
    const WORDS: &[&str] = &[
        " the",
        " answer",
        ",",
        " is",
        " 안녕하세요",
        " streaming",
        " tokens",
        ".",
        " 😀",
        " rill",
        " Server-Sent",
        " Events",
        " are",
        " simple",
        "\\n",
        " über",
    ];
    (0..count)
        .map(|n| {
            let word = WORDS[n % WORDS.len()];
            let pad = "x".repeat(n % 23);
            let event = format!(
                "id: 1.9f2c.{n}\nevent: message.delta\ndata: {{\"message_id\":\"m_{:04}\",\"text\":\"{word}{pad}\"}}\n\n",
                n % 10_000
            );
            assert!((60..=120).contains(&event.len()), "{} bytes: {event:?}", event.len());
            event.into_bytes()
        })
        .collect()
}

/// Events with 64 KiB of data on one line (a long document or a base64 image in one event).
fn large_events(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|n| {
            let mut event = format!("id: {n}\nevent: document\ndata: ").into_bytes();
            let text = "Lorem ipsum dolor sit amet, 한국어 텍스트, consectetur adipiscing elit. ";
            while event.len() < 64 * 1024 + 30 {
                event.extend_from_slice(text.as_bytes());
            }
            event.truncate(64 * 1024 + 30);
            // Keep the data valid UTF-8 after truncation: back off to a char boundary.
            while std::str::from_utf8(&event).is_err() {
                event.pop();
            }
            event.extend_from_slice(b"\n\n");
            event
        })
        .collect()
}

/// Cuts each event into three chunks of about equal size.
fn three_per_event(name: &str, events: &[Vec<u8>]) -> Scenario {
    let mut bytes = Vec::new();
    let mut chunks = Vec::new();
    for event in events {
        let start = bytes.len();
        let (a, b) = (event.len() / 3, event.len() * 2 / 3);
        chunks.extend([
            start..start + a,
            start + a..start + b,
            start + b..start + event.len(),
        ]);
        bytes.extend_from_slice(event);
    }
    Scenario {
        name: format!("{name}/3-chunks-per-event"),
        events: events.len() as u64,
        bytes,
        chunks,
    }
}

/// Cuts the stream into 16 KiB chunks, wherever that falls.
fn fixed_chunks(name: &str, events: &[Vec<u8>], size: usize) -> Scenario {
    let bytes = events.concat();
    let chunks = (0..bytes.len())
        .step_by(size)
        .map(|start| start..(start + size).min(bytes.len()))
        .collect();
    Scenario {
        name: format!("{name}/16KiB-chunks"),
        events: events.len() as u64,
        bytes,
        chunks,
    }
}

#[inline(never)]
fn rill(scenario: &Scenario) -> u64 {
    let mut parser = Parser::new();
    let mut events = 0u64;
    let mut data = 0usize;
    for chunk in scenario.chunks() {
        parser.feed(chunk, |item| {
            if let Item::Event(event) = item {
                events += 1;
                data += event.data.len();
            }
        });
    }
    black_box(data);
    events
}

#[inline(never)]
fn eventsource_stream(scenario: &Scenario) -> u64 {
    let chunks = futures::stream::iter(scenario.chunks().map(Ok::<_, Infallible>));
    let mut stream = chunks.eventsource();
    let mut events = 0u64;
    let mut data = 0usize;
    futures::executor::block_on(async {
        while let Some(event) = stream.next().await {
            if let Ok(event) = event {
                events += 1;
                data += event.data.len();
            }
        }
    });
    black_box(data);
    events
}

/// The floor: find every LF in every chunk and nothing else.
#[inline(never)]
fn memchr_scan(scenario: &Scenario) -> u64 {
    let mut lines = 0u64;
    for chunk in scenario.chunks() {
        lines += memchr::memchr_iter(b'\n', chunk).count() as u64;
    }
    lines
}

fn scenarios() -> [Scenario; 4] {
    let small = small_events(20_000);
    let large = large_events(64);
    [
        three_per_event("small", &small),
        fixed_chunks("small", &small, 16 * 1024),
        three_per_event("large", &large),
        fixed_chunks("large", &large, 16 * 1024),
    ]
}

/// `RILL_SSE_BENCH_ONCE=<part of a scenario name>`: runs each parser once on the matching
/// scenarios instead of timing them, for counting instructions under valgrind, where each
/// parser's run is the cost of its function (`rill`, `eventsource_stream`) alone:
/// `valgrind --tool=callgrind --toggle-collect='parse::rill' <bench binary>` (see
/// docs/benchmarks.md). Growing the buffers is counted too, a few allocations per run.
fn run_once(filter: &str) {
    for scenario in scenarios().iter().filter(|s| s.name.contains(filter)) {
        black_box(rill(scenario));
        black_box(eventsource_stream(scenario));
        black_box(memchr_scan(scenario));
        eprintln!(
            "{}: {} events, {} bytes, {} chunks, each parser ran once",
            scenario.name,
            scenario.events,
            scenario.bytes.len(),
            scenario.chunks.len()
        );
    }
}

fn bench(c: &mut Criterion) {
    for scenario in &scenarios() {
        // Every parser must see every event, or the comparison means nothing.
        assert_eq!(rill(scenario), scenario.events, "{}: rill", scenario.name);
        assert_eq!(
            eventsource_stream(scenario),
            scenario.events,
            "{}: eventsource-stream",
            scenario.name
        );
        eprintln!(
            "{}: {} events, {} bytes, {:.1} bytes/event, {} chunks",
            scenario.name,
            scenario.events,
            scenario.bytes.len(),
            scenario.bytes.len() as f64 / scenario.events as f64,
            scenario.chunks.len(),
        );
        let mut group = c.benchmark_group(&scenario.name);
        group.throughput(Throughput::Elements(scenario.events));
        group.bench_function("rill-sse", |b| b.iter(|| rill(scenario)));
        group.bench_function("eventsource-stream", |b| {
            b.iter(|| eventsource_stream(scenario))
        });
        group.bench_function("memchr-scan", |b| b.iter(|| memchr_scan(scenario)));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Short measurements so the whole run takes a couple of minutes.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench
}
fn main() {
    if let Some(filter) = std::env::var_os("RILL_SSE_BENCH_ONCE") {
        run_once(&filter.to_string_lossy());
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
