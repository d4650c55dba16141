//! A scripted HTTP/1.1 server on 127.0.0.1:0 for the client's tests: it records every request
//! (raw header bytes included) and answers the n-th one with what the test's script says.
//!
//! Written on bare tokio sockets rather than hyper or axum on purpose: the scenarios need what a
//! well-behaved server library will not do (a 301 without `Location`, a chunked body cut off
//! mid-chunk, a stream held open with nothing sent, non-ASCII header bytes read back exactly).

// A test helper: a panic is how it reports a broken test setup.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Every test awaits with this bound, so a bug hangs nothing for long.
pub const LIMIT: Duration = Duration::from_secs(10);

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Names lowercased, values as the bytes that came.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The value of header `name` (lowercase), if sent.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of header `name` as text (lossy), if sent.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// How a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The body is close-delimited: the server writes it and closes (a clean end of stream).
    Close,
    /// Chunked: the server writes the body as one chunk, then closes without the last chunk (the
    /// connection drops mid-stream: the client sees a transport error).
    Drop,
    /// The server writes the body and then sends nothing, until the client goes away (or `LIMIT`).
    Hold,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub end: End,
}

impl Reply {
    /// A 200 event stream with `body`, closed after it.
    pub fn sse(body: &str) -> Reply {
        Reply::stream("text/event-stream", body.as_bytes())
    }

    /// A 200 with this content type and body.
    pub fn stream(content_type: &str, body: &[u8]) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.to_vec(),
            end: End::Close,
        }
    }

    /// A bodiless answer with this status.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Length".into(), "0".into())],
            body: Vec::new(),
            end: End::Close,
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Content-Length".into(), body.len().to_string()),
            ],
            body: body.as_bytes().to_vec(),
            end: End::Close,
        }
    }

    /// A redirect to `location` (`None`: no `Location` header at all).
    pub fn redirect(status: u16, location: Option<&str>) -> Reply {
        let mut reply = Reply::status(status);
        if let Some(location) = location {
            reply.headers.push(("Location".into(), location.into()));
        }
        reply
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn ending(mut self, end: End) -> Reply {
        self.end = end;
        self
    }
}

type Script = dyn Fn(usize, &Recorded) -> Reply + Send + Sync;

/// The server. Dropping it stops accepting.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// How many connections have seen the client go away while held (`End::Hold`).
    closed_by_client: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Starts a server that answers request number `n` (0-based) with `script(n, &request)`.
    pub async fn start(
        script: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let closed_by_client = Arc::new(Mutex::new(0));
        let script: Arc<Script> = Arc::new(script);
        let task = tokio::spawn({
            let requests = requests.clone();
            let closed_by_client = closed_by_client.clone();
            async move {
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        return;
                    };
                    let requests = requests.clone();
                    let closed_by_client = closed_by_client.clone();
                    let script = script.clone();
                    tokio::spawn(async move {
                        let _ = serve(socket, &requests, &closed_by_client, &*script).await;
                    });
                }
            }
        });
        TestServer {
            addr,
            requests,
            closed_by_client,
            task,
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> rill_client::Url {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// How many held streams the client has closed.
    pub fn closed_by_client(&self) -> usize {
        *self.closed_by_client.lock().unwrap()
    }
}

/// Reads one request, answers it, closes the connection (`Connection: close` every time, so
/// each attempt of the client is one connection and one recorded request).
async fn serve(
    mut socket: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    closed_by_client: &Mutex<usize>,
    script: &Script,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut socket).await? else {
        return Ok(());
    };
    let n = {
        let mut requests = requests.lock().unwrap();
        requests.push(request.clone());
        requests.len() - 1
    };
    let reply = script(n, &request);
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nConnection: close\r\n",
        reply.status
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.end == End::Drop {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await?;
    match reply.end {
        End::Close => socket.write_all(&reply.body).await?,
        End::Drop => {
            // One chunk, then the connection goes away without the terminating `0\r\n\r\n`.
            socket
                .write_all(format!("{:x}\r\n", reply.body.len()).as_bytes())
                .await?;
            socket.write_all(&reply.body).await?;
            socket.write_all(b"\r\n").await?;
        }
        End::Hold => {
            socket.write_all(&reply.body).await?;
            socket.flush().await?;
            let mut buf = [0u8; 64];
            // The client sends nothing more: a read returns 0 (or fails) when it closes.
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(LIMIT, socket.read(&mut buf)).await {
                *closed_by_client.lock().unwrap() += 1;
            }
        }
    }
    socket.flush().await?;
    socket.shutdown().await
}

async fn read_request(socket: &mut TcpStream) -> std::io::Result<Option<Recorded>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = &buf[..head_end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    for line in lines {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            headers.push((name, line[colon + 1..].trim_ascii().to_vec()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Recorded {
        method,
        path,
        headers,
        body,
    }))
}
