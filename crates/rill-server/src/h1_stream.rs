//! The HTTP/1.1 fast path for event streams: the first request of a plain-TCP connection that
//! asks for `text/event-stream` is read, routed and answered here, not by hyper, so that an
//! idle stream holds no HTTP buffers.
//!
//! **Why not hyper for these.** hyper's HTTP/1 connection keeps a read buffer and a write buffer
//! (8 KiB each at their smallest) for its whole life, and an event stream lives for hours doing
//! almost nothing: measured with massif, those buffers were about 8 of the 11 KiB an idle stream
//! cost (docs/benchmarks.md). No hyper setting releases them while a response body is open.
//! This module holds, per idle stream, the socket, the response body (the stream's own state)
//! and a wait for the forced end; nothing else.
//!
//! **What it does, and what it leaves to hyper.** Only the connection's first request can come
//! here, and only a `GET` in HTTP/1.1 with no body, no `Upgrade` or `Expect`, whose `Accept`
//! names `text/event-stream` (every `EventSource`, `rill sub`, the SSE client libraries).
//! Everything else, and anything unusual about the head (too large, malformed, HTTP/2's
//! preface, a header hyper would refuse), is handed to hyper with the bytes already read, as if
//! this module did not exist: hyper answers it, errors included. A request that does come here
//! goes through the same `Router`, so authentication, tickets, CORS, limits, tracing and the JSON
//! errors are the router's, not restated; this module only writes the response: status line,
//! headers, `date`, and the body with `content-length`, or chunked when its length is unknown
//! (every stream), exactly as hyper would frame it. When the response ends, the connection goes
//! on in hyper (keep-alive), with any bytes the client sent meanwhile.
//!
//! The request head is parsed with `httparse` (hyper's own parser). TLS connections stay on
//! hyper (rustls holds buffers of its own, and ALPN picks HTTP/2 there), and so does HTTP/2.
//!
//! A client that closes its side ends the stream at once (hyper does the same without
//! `h1_half_close`): the stream's subscription is released then, not at the next failed write.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version, header,
};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The largest request head read here: hyper's limit too (`max_buf_size(8192)` in `listen`),
/// so a larger head goes to hyper, which answers `431`.
pub(crate) const MAX_HEAD: usize = 8192;

/// Headers a head may have here; hyper's default maximum is 100 too (more: hyper answers).
const MAX_HEADERS: usize = 100;

/// The first read's buffer: a browser's `EventSource` head is 300 to 700 bytes.
const FIRST_READ: usize = 1024;

/// What the first request head of a connection turned out to be.
pub(crate) enum Head {
    /// A request this module answers, and the bytes the client sent after its head.
    /// (Boxed: it is short-lived, and would otherwise size every connection's task.)
    Stream {
        request: Box<Request<Body>>,
        rest: Bytes,
    },
    /// Anything else: the bytes read so far, which hyper must read first.
    Other(Bytes),
    /// The client closed the connection before a complete head.
    Closed,
}

/// Reads the connection's first request head (the caller bounds the time).
pub(crate) async fn read_head<IO>(io: &mut IO, peer: SocketAddr) -> io::Result<Head>
where
    IO: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    loop {
        if buf.len() >= MAX_HEAD {
            return Ok(Head::Other(buf.freeze()));
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(MAX_HEAD - buf.len()));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(Head::Closed);
        }
        match classify(&buf, peer) {
            Classified::Partial => {}
            Classified::Other => return Ok(Head::Other(buf.freeze())),
            // A head longer than hyper's limit (one read can bring more than asked): hyper's
            // `431`, as for any other request.
            Classified::Stream(_, len) if len > MAX_HEAD => return Ok(Head::Other(buf.freeze())),
            Classified::Stream(request, len) => {
                let rest = buf.split_off(len).freeze();
                return Ok(Head::Stream { request, rest });
            }
        }
    }
}

enum Classified {
    Partial,
    Other,
    /// The request and the length of its head.
    Stream(Box<Request<Body>>, usize),
}

/// Parses `buf` as far as it goes and decides who answers it. Synchronous, so the header array
/// (3 KiB) lives on the stack for the call, never in a connection's future.
fn classify(buf: &[u8], peer: SocketAddr) -> Classified {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Classified::Partial,
        // Malformed, too many headers, HTTP/2's preface: hyper answers (or speaks h2).
        Err(_) => return Classified::Other,
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return Classified::Other;
    }
    let Some(uri) = parsed
        .path
        .filter(|path| path.starts_with('/'))
        .and_then(|path| axum::http::Uri::try_from(path).ok())
    else {
        return Classified::Other;
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    let mut wants_stream = false;
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Classified::Other;
        };
        match name {
            header::CONTENT_LENGTH if value.as_bytes() != b"0" => return Classified::Other,
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => {
                return Classified::Other;
            }
            header::ACCEPT if contains_ignore_case(value.as_bytes(), b"text/event-stream") => {
                wants_stream = true;
            }
            _ => {}
        }
        map.append(name, value);
    }
    if !wants_stream {
        return Classified::Other;
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    request.extensions_mut().insert(ConnectInfo(peer));
    Classified::Stream(Box::new(request), len)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// Whether a `Connection` header asks to close after this exchange.
fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// What becomes of the connection once the response is written.
pub(crate) enum After {
    /// Serve the next requests (hyper), reading `rest` first.
    KeepAlive { rest: Bytes },
    /// Close it: the client asked, left or stalled, the body failed, or the end was forced.
    Close,
}

/// How the body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `204`, `304`: no body.
    None,
    Length(u64),
    Chunked,
}

/// Routes `request` through `router` and writes the response to `io`; `rest` are bytes the
/// client sent after the head. `force` ends it at once (the end of the shutdown grace).
pub(crate) async fn answer<IO>(
    io: &mut IO,
    request: Box<Request<Body>>,
    rest: Bytes,
    router: Router,
    force: &CancellationToken,
) -> After
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut close = asks_to_close(request.headers());
    // Out of its box at once: a box moved out of is freed at the end of its scope (here,
    // the block's), and this function's lasts as long as the stream.
    let request = {
        let boxed = request;
        *boxed
    };
    // Boxed: the routing future is large and lives only until the response exists; inline it
    // would size every idle stream's task.
    let response = match Box::pin(router.oneshot(request)).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let (parts, mut body) = response.into_parts();
    let framing = match parts.status {
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED => Framing::None,
        status if status.is_informational() => Framing::None,
        _ => match body.size_hint().exact() {
            Some(len) => Framing::Length(len),
            None => Framing::Chunked,
        },
    };
    // A handler that answers `Connection: close` wants the connection closed after it.
    close |= asks_to_close(&parts.headers);
    let head = encode_head(parts.status, &parts.headers, framing, close);
    // The response's headers and extensions are written: an idle stream should not keep them.
    drop(parts);
    if let Err(error) = io.write_all(&head).await {
        tracing::debug!(%error, "cannot write a response head");
        return After::Close;
    }
    drop(head);
    let forced = force.cancelled();
    tokio::pin!(forced);
    // Bytes the client sends while the body is written (a pipelined request): kept for hyper.
    let mut received = BytesMut::new();
    received.extend_from_slice(&rest);
    drop(rest);
    let mut reading = true;
    let mut left = match framing {
        Framing::Length(len) => len,
        _ => 0,
    };
    loop {
        let step = poll_fn(|cx| {
            if forced.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Forced);
            }
            if reading {
                match poll_client(io, cx, &mut received) {
                    Poll::Ready(ClientRead::Closed) => return Poll::Ready(Step::ClientClosed),
                    Poll::Ready(ClientRead::Full) => reading = false,
                    Poll::Pending => {}
                }
            }
            Pin::new(&mut body).poll_frame(cx).map(Step::Frame)
        })
        .await;
        let frame = match step {
            Step::Forced | Step::ClientClosed => return After::Close,
            Step::Frame(None) => break,
            Step::Frame(Some(Ok(frame))) => frame,
            Step::Frame(Some(Err(error))) => {
                // Like hyper: the body failed, so the response is cut off (no last chunk), and
                // the client can tell it from a complete one.
                tracing::debug!(%error, "a response body failed");
                return After::Close;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: HTTP/1.1 responses here never announce any
        };
        if data.is_empty() {
            continue;
        }
        let written = match framing {
            Framing::None => continue,
            Framing::Chunked => write_chunk(io, data).await,
            Framing::Length(_) => {
                let Some(after) = left.checked_sub(data.len() as u64) else {
                    tracing::debug!("a response body is longer than its length");
                    return After::Close;
                };
                left = after;
                let mut data = data;
                io.write_all_buf(&mut data).await
            }
        };
        if let Err(error) = written {
            tracing::debug!(%error, "cannot write to a client");
            return After::Close;
        }
    }
    let ended = match framing {
        Framing::Chunked => io.write_all(b"0\r\n\r\n").await,
        Framing::Length(_) if left > 0 => {
            tracing::debug!("a response body is shorter than its length");
            return After::Close;
        }
        _ => Ok(()),
    };
    if ended.and(io.flush().await).is_err() || close {
        let _ = io.shutdown().await;
        return After::Close;
    }
    After::KeepAlive {
        rest: received.freeze(),
    }
}

enum Step {
    Forced,
    ClientClosed,
    Frame(Option<Result<Frame<Bytes>, axum::Error>>),
}

enum ClientRead {
    /// End of file or an error: the client is gone.
    Closed,
    /// A whole head's worth is waiting: stop reading until hyper takes over.
    Full,
}

/// Reads what the client sent, into `received`, until nothing is ready. The read buffer is on
/// the stack of this call only.
fn poll_client<IO: AsyncRead + Unpin>(
    io: &mut IO,
    cx: &mut Context<'_>,
    received: &mut BytesMut,
) -> Poll<ClientRead> {
    let mut scratch = [0u8; 512];
    loop {
        if received.len() >= MAX_HEAD {
            return Poll::Ready(ClientRead::Full);
        }
        let room = scratch.len().min(MAX_HEAD - received.len());
        let mut buf = ReadBuf::new(&mut scratch[..room]);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(ClientRead::Closed),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                return Poll::Ready(ClientRead::Closed);
            }
            Poll::Ready(Ok(())) => received.extend_from_slice(buf.filled()),
        }
    }
}

/// One chunk: its size line, the data and the closing line, in one vectored write when the
/// socket can.
async fn write_chunk<IO: AsyncWrite + Unpin>(io: &mut IO, data: Bytes) -> io::Result<()> {
    let mut line = [0u8; 18];
    let size_len = encode_chunk_size(data.len(), &mut line);
    let mut chunk = Buf::chain(Buf::chain(&line[..size_len], data), &b"\r\n"[..]);
    io.write_all_buf(&mut chunk).await
}

/// `{len:x}\r\n` into `out`, without allocating; returns its length.
fn encode_chunk_size(len: usize, out: &mut [u8; 18]) -> usize {
    // Upper case, as hyper writes them.
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut count = 0;
    loop {
        digits[count] = HEX[n & 0xf];
        count += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for (i, digit) in digits[..count].iter().rev().enumerate() {
        out[i] = *digit;
    }
    out[count] = b'\r';
    out[count + 1] = b'\n';
    count + 2
}

/// The status line and headers. The response's own framing headers are replaced by the ones
/// matching `framing`; `date` is added when the handler set none (as hyper does).
fn encode_head(status: StatusCode, headers: &HeaderMap, framing: Framing, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::None => {}
        Framing::Length(len) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(len.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// An I/O object that reads `prefix` before reading from `io`: how hyper gets the bytes this
/// module read. (hyper-util has the same type, `Rewind`, but does not export it.)
pub(crate) struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Prefixed<IO> {
    pub(crate) fn new(io: IO, prefix: Bytes) -> Self {
        Prefixed { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    fn kind(head: &[u8]) -> &'static str {
        match classify(head, peer()) {
            Classified::Partial => "partial",
            Classified::Other => "other",
            Classified::Stream(..) => "stream",
        }
    }

    #[test]
    fn only_a_plain_stream_get_comes_here() {
        let sse =
            b"GET /api/events?topic=a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        assert_eq!(kind(sse), "stream");
        assert_eq!(kind(&sse[..sse.len() - 2]), "partial");
        assert_eq!(
            kind(b"GET /x HTTP/1.1\r\nAccept: TEXT/Event-Stream;q=1, */*\r\n\r\n"),
            "stream"
        );
        assert_eq!(
            kind(b"GET /x HTTP/1.1\r\nContent-Length: 0\r\nAccept: text/event-stream\r\n\r\n"),
            "stream"
        );
        for other in [
            &b"GET /x HTTP/1.1\r\nAccept: application/json\r\n\r\n"[..],
            b"GET /x HTTP/1.1\r\n\r\n",
            b"HEAD /x HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"POST /x HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 2\r\n\r\n{}",
            b"GET /x HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nUpgrade: websocket\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nExpect: 100-continue\r\n\r\n",
            b"GET http://example.com/x HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /x HTTP/1.1\r\nBad Header: 1\r\nAccept: text/event-stream\r\n\r\n",
        ] {
            assert_eq!(kind(other), "other", "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn the_request_is_what_the_client_sent() {
        let head = b"GET /api/events?topic=a%2Fb HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 7\r\nX-A: 1\r\nX-A: 2\r\n\r\nextra";
        let Classified::Stream(request, len) = classify(head, peer()) else {
            panic!("a stream request");
        };
        assert_eq!(&head[len..], b"extra");
        assert_eq!(request.uri(), "/api/events?topic=a%2Fb");
        assert_eq!(request.headers()["last-event-id"], "7");
        assert_eq!(request.headers().get_all("x-a").iter().count(), 2);
        assert!(
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some()
        );
    }

    #[test]
    fn too_many_headers_go_to_hyper() {
        let mut head = b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            head.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(kind(&head), "other");
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut out = [0u8; 18];
        for (len, text) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (15, "F\r\n"),
            (16, "10\r\n"),
            (100, "64\r\n"),
            (65_536, "10000\r\n"),
            (usize::MAX, "FFFFFFFFFFFFFFFF\r\n"),
        ] {
            let n = encode_chunk_size(len, &mut out);
            assert_eq!(&out[..n], text.as_bytes(), "{len}");
        }
    }

    #[test]
    fn close_is_a_token_of_connection() {
        let mut headers = HeaderMap::new();
        assert!(!asks_to_close(&headers));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!asks_to_close(&headers));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, Close"),
        );
        assert!(asks_to_close(&headers));
        headers.insert(header::CONNECTION, HeaderValue::from_static("closed"));
        assert!(!asks_to_close(&headers));
    }

    #[test]
    fn heads_replace_framing_and_add_a_date() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let head = encode_head(StatusCode::OK, &headers, Framing::Chunked, false);
        let text = String::from_utf8(head).expect("ASCII");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"));
        assert!(text.contains("\r\ndate: "));
        assert!(text.ends_with("transfer-encoding: chunked\r\n\r\n"));
        assert!(!text.contains("content-length"));
        let head = encode_head(
            StatusCode::NO_CONTENT,
            &HeaderMap::new(),
            Framing::None,
            true,
        );
        let text = String::from_utf8(head).expect("ASCII");
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(text.ends_with("connection: close\r\n\r\n"));
        assert!(!text.contains("content-length") && !text.contains("transfer-encoding"));
        let head = encode_head(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            Framing::Length(12),
            false,
        );
        assert!(
            String::from_utf8(head)
                .expect("ASCII")
                .contains("content-length: 12\r\n")
        );
    }

    /// A router with a streamed body (`/s`: two chunks, then the end) and a pending one (`/p`).
    fn router() -> Router {
        use axum::routing::get;
        Router::new()
            .route(
                "/s",
                get(|| async {
                    let chunks = futures::stream::iter(["hello", "world"]).map(|c| {
                        Ok::<_, std::convert::Infallible>(Bytes::from_static(c.as_bytes()))
                    });
                    Body::from_stream(chunks)
                }),
            )
            .route(
                "/p",
                get(|| async {
                    Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>())
                }),
            )
    }

    /// The fast path itself, over an in-memory pipe: head, chunks, last chunk, and what the
    /// client sent meanwhile kept for hyper.
    #[tokio::test]
    async fn answer_writes_hypers_framing_and_keeps_what_follows() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let head = b"GET /s HTTP/1.1\r\naccept: text/event-stream\r\n\r\nGET /next";
        client.write_all(head).await.expect("write");
        let Head::Stream { request, rest } = read_head(&mut server, peer()).await.expect("read")
        else {
            panic!("a stream request");
        };
        assert_eq!(&rest[..], b"GET /next");
        let after = answer(
            &mut server,
            request,
            rest,
            router(),
            &CancellationToken::new(),
        )
        .await;
        let After::KeepAlive { rest } = after else {
            panic!("the connection goes on");
        };
        assert_eq!(&rest[..], b"GET /next");
        drop(server);
        let mut text = String::new();
        client.read_to_string(&mut text).await.expect("read");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"),
            "{text:?}"
        );
    }

    /// A client that closes its side ends a stream that has nothing to write, at once.
    #[tokio::test]
    async fn answer_ends_when_the_client_leaves() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client
            .write_all(b"GET /p HTTP/1.1\r\naccept: text/event-stream\r\n\r\n")
            .await
            .expect("write");
        let Head::Stream { request, rest } = read_head(&mut server, peer()).await.expect("read")
        else {
            panic!("a stream request");
        };
        let answering = tokio::spawn(async move {
            answer(
                &mut server,
                request,
                rest,
                router(),
                &CancellationToken::new(),
            )
            .await
        });
        let mut head = [0u8; 12];
        client.read_exact(&mut head).await.expect("the head");
        drop(client);
        let after = tokio::time::timeout(std::time::Duration::from_secs(10), answering)
            .await
            .expect("ended at once")
            .expect("no panic");
        assert!(matches!(after, After::Close));
    }

    #[tokio::test]
    async fn prefixed_reads_the_prefix_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.expect("write");
        drop(a);
        let mut io = Prefixed::new(b, Bytes::from_static(b"hello"));
        let mut all = String::new();
        io.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "hello world");
    }
}
