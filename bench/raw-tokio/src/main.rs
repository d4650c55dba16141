//! The raw-tokio floor of rill's side-by-side benchmark: a minimal SSE fan-out server written
//! for the purpose, with no HTTP library. It is what a fan-out costs on tokio when nothing else
//! is done: a floor to measure rill against, not a product (no auth, no resume, no TLS, no
//! HTTP/2, no topic clean-up).
//!
//! It speaks what `rill bench connections` / `rill bench fanout --flavor floor` expect, the same
//! shapes as the nchan peer:
//!
//! - `GET /sub/<topic>`: `200`, `Content-Type: text/event-stream`, then the body until close
//!   (no chunked coding): every event published to the topic as `id: N\ndata: ...\n\n`, and a
//!   `:\n\n` comment every `HEARTBEAT_S` seconds (default 5).
//! - `POST /pub/<topic>` with the event's data as the body: `200` with an empty body, keep-alive.
//!
//! How: one task per connection; each topic is a `tokio::sync::broadcast` channel of encoded
//! frames (`Arc<[u8]>`, encoded once, shared by every subscriber); a subscriber writes each frame
//! as it comes, or all the frames already queued in one write. One `watch` channel ticks the
//! heartbeat for everyone. A subscriber that falls a whole channel behind (`Lagged`) is closed.
//! After the request head a subscriber keeps no read buffer.
//!
//! Environment: `PORT` (default 8184), `HEARTBEAT_S` (default 5), `QUEUE` (frames per topic
//! channel, default 1024).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{broadcast, watch};

/// The largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The largest publish body accepted.
const MAX_BODY: usize = 1024 * 1024;
/// The most bytes a subscriber gathers into one write.
const MAX_BATCH: usize = 64 * 1024;

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n";
const PUBLISHED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

type Frame = Arc<[u8]>;

struct Hub {
    topics: Mutex<HashMap<String, broadcast::Sender<Frame>>>,
    next_id: AtomicU64,
    queue: usize,
    heartbeat: watch::Receiver<()>,
}

impl Hub {
    fn sender(&self, topic: &str) -> broadcast::Sender<Frame> {
        let mut topics = self
            .topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(self.queue).0)
            .clone()
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = u16::try_from(env_number("PORT", 8184)).unwrap_or(8184);
    let heartbeat_s = env_number("HEARTBEAT_S", 5).max(1);
    let queue = usize::try_from(env_number("QUEUE", 1024))
        .unwrap_or(1024)
        .max(1);

    let (tick, heartbeat) = watch::channel(());
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(heartbeat_s));
        interval.tick().await;
        loop {
            interval.tick().await;
            if tick.send(()).is_err() {
                return;
            }
        }
    });
    let hub = Arc::new(Hub {
        topics: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        queue,
        heartbeat,
    });

    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener = socket.listen(4096)?;
    eprintln!("raw-tokio SSE floor on 127.0.0.1:{port}");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, Arc::clone(&hub)));
            }
            // Out of file descriptors and the like: wait a little, keep serving the others.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// What a request head asked for.
enum Request {
    Subscribe(String),
    Publish { topic: String, length: usize },
    Other,
}

/// Serves requests on one connection until it closes or becomes a subscription.
async fn connection(mut stream: TcpStream, hub: Arc<Hub>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // Read and parse one request head.
        let (request, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(&buffer) {
                Ok(httparse::Status::Complete(head_len)) => {
                    break (classify(&parsed), head_len);
                }
                Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD => {}
                _ => {
                    let _ = stream.write_all(BAD_REQUEST).await;
                    return;
                }
            }
            buffer.reserve(1024);
            match stream.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        match request {
            Request::Subscribe(topic) => {
                drop(buffer);
                subscribe(stream, &hub, &topic).await;
                return;
            }
            Request::Publish { topic, length } => {
                let Some(end) = head_len.checked_add(length) else {
                    return;
                };
                while buffer.len() < end {
                    buffer.reserve(end - buffer.len());
                    match stream.read_buf(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                publish(&hub, &topic, &buffer[head_len..end]);
                buffer.drain(..end);
                if stream.write_all(PUBLISHED).await.is_err() {
                    return;
                }
            }
            Request::Other => {
                let _ = stream.write_all(NOT_FOUND).await;
                return;
            }
        }
    }
}

fn classify(request: &httparse::Request<'_, '_>) -> Request {
    let path = request.path.unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    match (request.method.unwrap_or_default(), path) {
        ("GET", path) if path.starts_with("/sub/") && path.len() > 5 => {
            Request::Subscribe(path[5..].to_owned())
        }
        ("POST", path) if path.starts_with("/pub/") && path.len() > 5 => {
            let length = request
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                .and_then(|header| std::str::from_utf8(header.value).ok())
                .and_then(|value| value.trim().parse::<usize>().ok());
            match length {
                Some(length) if length <= MAX_BODY => Request::Publish {
                    topic: path[5..].to_owned(),
                    length,
                },
                _ => Request::Other,
            }
        }
        _ => Request::Other,
    }
}

/// Encodes the event once and hands it to every subscriber of the topic.
fn publish(hub: &Hub, topic: &str, data: &[u8]) {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let mut frame = Vec::with_capacity(data.len() + 32);
    frame.extend_from_slice(b"id: ");
    frame.extend_from_slice(id.to_string().as_bytes());
    frame.push(b'\n');
    for line in data.split(|&byte| byte == b'\n') {
        frame.extend_from_slice(b"data: ");
        frame.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        frame.push(b'\n');
    }
    frame.push(b'\n');
    // No subscriber yet: the event goes nowhere (no history), like nchan's `newest`.
    let _ = hub.sender(topic).send(frame.into());
}

/// Streams the topic's events and heartbeats to one subscriber until it goes away or lags.
async fn subscribe(mut stream: TcpStream, hub: &Hub, topic: &str) {
    let mut events = hub.sender(topic).subscribe();
    let mut heartbeat = hub.heartbeat.clone();
    heartbeat.borrow_and_update();
    if stream.write_all(SSE_HEAD).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            biased;
            event = events.recv() => {
                let Ok(first) = event else {
                    return; // lagged a whole channel behind, or the topic is gone
                };
                let written = match events.try_recv() {
                    Err(broadcast::error::TryRecvError::Empty) => stream.write_all(&first).await,
                    Err(_) => return,
                    Ok(second) => {
                        // Several frames queued already: one write for all of them.
                        let mut batch = Vec::with_capacity(MAX_BATCH.min(first.len() * 16));
                        batch.extend_from_slice(&first);
                        batch.extend_from_slice(&second);
                        while batch.len() < MAX_BATCH {
                            match events.try_recv() {
                                Ok(frame) => batch.extend_from_slice(&frame),
                                Err(broadcast::error::TryRecvError::Empty) => break,
                                Err(_) => return,
                            }
                        }
                        stream.write_all(&batch).await
                    }
                };
                if written.is_err() {
                    return;
                }
            }
            changed = heartbeat.changed() => {
                if changed.is_err() || stream.write_all(b":\n\n").await.is_err() {
                    return;
                }
            }
            readable = stream.readable() => {
                // A subscriber sends nothing after its request: this is the close (or junk,
                // which is dropped without being kept).
                if readable.is_err() {
                    return;
                }
                let mut scratch = [0u8; 64];
                match stream.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    }
}
