//! The subscriber's side of one SSE connection, over a raw tokio `TcpStream`.
//!
//! Why not `rill-client` or hyper here: a load generator holding 19,000 connections and reading
//! a million events a second must cost as little per connection and per event as possible. A
//! raw stream lets us bind each socket to a chosen 127.0.0.x source address (one source address
//! has only ~28k ephemeral ports), keep one small read buffer per connection, read whatever
//! the kernel has in one `read` (many events per syscall), undo chunked transfer coding in
//! place, and feed `rill_sse::Parser` without copying. The request is built once and shared.

use std::net::{IpAddr, SocketAddr};

use memchr::memmem;
use rill_sse::{Item, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::BenchError;

/// Bytes read per `read` call; also the most a connection keeps buffered.
const READ_BUFFER: usize = 8 * 1024;
/// The largest response head we accept.
const MAX_HEAD: usize = 16 * 1024;

/// An open SSE response: headers read, body being decoded.
#[derive(Debug)]
pub(crate) struct SseConn {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Body bytes that came in the same reads as the head, not yet parsed.
    pending: usize,
    pending_start: usize,
    chunked: Option<Dechunker>,
    parser: Parser,
}

/// Connects (from `source` when given), sends `request`, and reads the response head: a
/// `200` with an event-stream body, or an error naming what came instead.
pub(crate) async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
    request: &[u8],
) -> Result<SseConn, BenchError> {
    let connect_error = |source: std::io::Error| BenchError::Connect { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(connect_error)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(connect_error)?;
    }
    // Small kernel buffers: idle subscribers should not make the generator's (or the kernel's)
    // footprint the limit; the kernel grows them under load anyway (autotuning).
    let _ = socket.set_recv_buffer_size(16 * 1024);
    let mut stream = socket.connect(addr).await.map_err(connect_error)?;
    let _ = stream.set_nodelay(true);
    stream.write_all(request).await.map_err(connect_error)?;

    let mut buffer = Vec::with_capacity(READ_BUFFER);
    let head_end = loop {
        if let Some(end) = memmem::find(&buffer, b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() >= MAX_HEAD {
            return Err(BenchError::Protocol("response head too long".to_owned()));
        }
        buffer.reserve(READ_BUFFER);
        let read = stream.read_buf(&mut buffer).await.map_err(connect_error)?;
        if read == 0 {
            return Err(BenchError::Protocol(
                "connection closed before the response head".to_owned(),
            ));
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).unwrap_or_default();
    if status != "200" {
        return Err(BenchError::Protocol(format!(
            "subscribe got {status_line:?}"
        )));
    }
    let lower = head.to_ascii_lowercase();
    let chunked = lower
        .contains("transfer-encoding: chunked")
        .then(Dechunker::default);
    let pending = buffer.len() - head_end;
    Ok(SseConn {
        stream,
        buffer,
        pending,
        pending_start: head_end,
        chunked,
        parser: Parser::new(),
    })
}

impl SseConn {
    /// Reads once (all the kernel has, up to the buffer size) and hands every parsed item to
    /// `on`. Returns `false` when the server closed the stream or it broke.
    pub(crate) async fn read_batch(&mut self, mut on: impl FnMut(Item<'_>)) -> bool {
        if self.pending > 0 {
            let start = self.pending_start;
            let end = start + self.pending;
            self.pending = 0;
            let bytes = std::mem::take(&mut self.buffer);
            let alive = self.feed(&bytes[start..end], &mut on);
            self.buffer = bytes;
            self.buffer.clear();
            return alive;
        }
        self.buffer.clear();
        match self.stream.read_buf(&mut self.buffer).await {
            Ok(0) | Err(_) => false,
            Ok(_) => {
                let bytes = std::mem::take(&mut self.buffer);
                let alive = self.feed(&bytes, &mut on);
                self.buffer = bytes;
                alive
            }
        }
    }

    fn feed(&mut self, bytes: &[u8], on: &mut impl FnMut(Item<'_>)) -> bool {
        let parser = &mut self.parser;
        match &mut self.chunked {
            None => {
                parser.feed(bytes, &mut *on);
                true
            }
            // A malformed chunk ends the stream like a close would.
            Some(dechunker) => dechunker
                .feed(bytes, |piece| parser.feed(piece, &mut *on))
                .unwrap_or(false),
        }
    }
}

/// Undoes HTTP/1.1 chunked transfer coding incrementally (any split of the input works).
/// Chunk extensions and trailers are skipped. Hand-written because it is twenty lines and
/// runs per read on the hot path; no crate exposes just this over borrowed slices.
#[derive(Debug, Default)]
pub(crate) struct Dechunker {
    state: ChunkState,
}

#[derive(Debug, Default)]
enum ChunkState {
    /// Reading the hex size line; `extension` once past the digits.
    #[default]
    Size,
    SizeDigits {
        value: u64,
        extension: bool,
    },
    Data {
        left: u64,
    },
    /// After a chunk's data: skip its CRLF.
    DataEnd,
    Done,
}

impl Dechunker {
    /// Feeds transfer-coded bytes; `out` gets the decoded pieces. `Ok(false)` once the last
    /// chunk was read, `Err` on malformed input.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        mut out: impl FnMut(&[u8]),
    ) -> Result<bool, ()> {
        while !input.is_empty() {
            match &mut self.state {
                ChunkState::Done => return Ok(false),
                ChunkState::Size => {
                    self.state = ChunkState::SizeDigits {
                        value: 0,
                        extension: false,
                    };
                }
                ChunkState::SizeDigits { value, extension } => {
                    let byte = input[0];
                    input = &input[1..];
                    match byte {
                        b'\n' => {
                            self.state = if *value == 0 {
                                ChunkState::Done
                            } else {
                                ChunkState::Data { left: *value }
                            };
                        }
                        b'\r' => {}
                        _ if *extension => {}
                        b';' | b' ' | b'\t' => *extension = true,
                        _ => {
                            let digit = (byte as char).to_digit(16).ok_or(())?;
                            *value = value.checked_mul(16).ok_or(())? + u64::from(digit);
                        }
                    }
                }
                ChunkState::Data { left } => {
                    let take = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    out(&input[..take]);
                    input = &input[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let byte = input[0];
                    input = &input[1..];
                    if byte == b'\n' {
                        self.state = ChunkState::Size;
                    }
                }
            }
        }
        Ok(!matches!(self.state, ChunkState::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_any_split() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut dechunker = Dechunker::default();
            let mut out = Vec::new();
            let first = dechunker.feed(&wire[..split], |piece| out.extend_from_slice(piece));
            let second = dechunker.feed(&wire[split..], |piece| out.extend_from_slice(piece));
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(first.is_ok());
            assert_eq!(second, Ok(false));
        }
        assert!(Dechunker::default().feed(b"zz\r\n", |_| {}).is_err());
    }
}
