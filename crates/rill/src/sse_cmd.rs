//! `rill sse ...`: SSE wire tools. `rill sse parse` reads an event stream on stdin and prints one
//! JSON object per dispatched event and per valid `retry` field: a debugging tool and the hook
//! for conformance checks, so its output format must stay exactly as documented.

use std::io::{self, BufWriter, ErrorKind, Read, Write};

use anyhow::Context;
use clap::{Args, Subcommand};
use rill_sse::{Item, Parser};
use serde::Serialize;

/// Arguments of `rill sse`.
#[derive(Debug, Args)]
pub(crate) struct SseArgs {
    #[command(subcommand)]
    command: SseCommand,
}

#[derive(Debug, Subcommand)]
enum SseCommand {
    /// Parse an SSE byte stream from stdin and print one JSON object per line.
    ///
    /// Follows the WHATWG "Server-sent events" parsing rules exactly (UTF-8 with U+FFFD for
    /// invalid bytes, CR/LF/CRLF line ends, comments ignored, `event` defaulting to `message`,
    /// the last event ID kept across events). Input is read and parsed in whatever chunks arrive,
    /// and output is flushed after each, so it works live in a pipeline, e.g.
    /// `curl -sN http://127.0.0.1:8080/... | rill sse parse`.
    ///
    /// Output, one JSON object per line, in stream order:
    ///
    ///   {"event":"<type>","data":"<data>","id":"<last event id>"}   for each dispatched event
    ///   ("id" is "" when none was set);
    ///
    ///   {"retry":<milliseconds>}   for each valid `retry` field, where it is read.
    ///
    /// An event not terminated by a blank line when input ends is not printed (as the spec
    /// says). Exits with status 0 at end of input.
    #[command(verbatim_doc_comment)]
    Parse,
}

/// One output line for an event; the field order is the output format.
#[derive(Serialize)]
struct EventLine<'a> {
    event: &'a str,
    data: &'a str,
    id: &'a str,
}

/// One output line for a `retry` field.
#[derive(Serialize)]
struct RetryLine {
    retry: u64,
}

pub(crate) fn main(args: SseArgs) -> anyhow::Result<()> {
    match args.command {
        SseCommand::Parse => {
            let stdin = io::stdin().lock();
            let stdout = io::stdout().lock();
            match parse(stdin, stdout) {
                // A closed reader (`rill sse parse | head`) is the reader's choice, not a failure.
                Err(error) if error.kind() == ErrorKind::BrokenPipe => Ok(()),
                result => result.context("rill sse parse"),
            }
        }
    }
}

/// Parses `input` to the end, writing JSON lines to `output` and flushing after each read.
fn parse(mut input: impl Read, output: impl Write) -> io::Result<()> {
    let mut output = BufWriter::new(output);
    let mut parser = Parser::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        // The parser calls back with no way to return an error: keep the first and stop writing.
        let mut result = Ok(());
        parser.feed(&buf[..read], |item| {
            if result.is_err() {
                return;
            }
            result = match item {
                Item::Event(event) => write_line(
                    &mut output,
                    &EventLine {
                        event: event.event,
                        data: event.data,
                        id: event.id,
                    },
                ),
                Item::Retry(retry) => write_line(&mut output, &RetryLine { retry }),
                Item::Comment(_) => Ok(()),
            };
        });
        result?;
        output.flush()?;
    }
    output.flush()
}

fn write_line(output: &mut impl Write, line: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *output, line)?;
    output.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expected: &str) {
        let mut output = Vec::new();
        parse(input, &mut output).expect("parse into a Vec");
        assert_eq!(String::from_utf8_lossy(&output), expected);
    }

    #[test]
    fn prints_events_and_retries_in_stream_order() {
        check(
            b"retry: 10\nid: 1\nevent: a\ndata: x\ndata: \"y\"\n\ndata: z\n\nretry: 20\n",
            "{\"retry\":10}\n\
             {\"event\":\"a\",\"data\":\"x\\n\\\"y\\\"\",\"id\":\"1\"}\n\
             {\"event\":\"message\",\"data\":\"z\",\"id\":\"1\"}\n\
             {\"retry\":20}\n",
        );
    }

    #[test]
    fn prints_nothing_for_comments_and_unterminated_events() {
        check(b": hello\n\ndata: never dispatched\n", "");
    }
}
