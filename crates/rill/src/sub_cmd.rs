//! `rill sub`: subscribe to rill topics, or to any SSE endpoint by URL ("curl for SSE"), and
//! print events as they come, resuming after drops.
//!
//! A GET stream that ends is opened again, as `EventSource` does. A POST (any method but GET)
//! is different: re-sending it repeats whatever it did (a chat message would be sent twice), so
//! after a cut it is re-sent *with* `Last-Event-ID` (a server like rill resumes the same
//! exchange), but when it ends normally `rill sub` stops, unless `--resend` asks for the
//! EventSource behaviour. A stream whose last event is rill's `event: error` with
//! `"reconnect": true` (a graceful shutdown, a maximum duration) did not end normally: it is
//! re-sent too. A `204 No Content` is the server saying there is nothing more: the end, not an
//! error.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures::{Stream, StreamExt};
use rill_client::reqwest::{Method, StatusCode};
use rill_client::{Client, Error, Event, RetryPolicy, SseItem, SseRequest, TopicStream, Url};
use serde_json::{Value, json};

/// Where the rill server is and how to authenticate: shared by the client subcommands.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The rill server.
    #[arg(
        long,
        env = "RILL_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub(crate) server: String,

    /// A bearer token, sent as `Authorization: Bearer <token>` (to the rill server only).
    #[arg(long, env = "RILL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
}

impl ServerArgs {
    /// The client of the configured server, with the token if one was given.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let client = Client::new(&self.server)
            .with_context(|| format!("invalid --server {:?}", self.server))?;
        match &self.token {
            Some(token) => client.with_token(token).context("invalid --token"),
            None => Ok(client),
        }
    }
}

/// Flags of `rill sub`.
#[derive(Debug, Args)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    server: ServerArgs,

    /// Topic names on the rill server, or one full http(s) URL of any SSE endpoint.
    #[arg(required = true, value_name = "TOPIC...|URL")]
    targets: Vec<String>,

    /// An extra request header, `'Name: value'` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,

    /// The request method [default: POST with --data, else GET].
    #[arg(short = 'X', long, value_name = "METHOD")]
    method: Option<String>,

    /// A request body, re-sent on every reconnect: text, `@FILE` for a file's content, `-` for
    /// standard input.
    #[arg(short = 'd', long, value_name = "DATA")]
    data: Option<String>,

    /// Also re-send a POST (any method but GET) when its stream ends normally, with
    /// `Last-Event-ID`, as EventSource does for GET. Without it such a stream is re-sent only
    /// after a cut, and `rill sub` stops when it ends.
    #[arg(long)]
    resend: bool,

    /// Resume after this event id (sent as `Last-Event-ID`).
    #[arg(long, value_name = "ID")]
    last_event_id: Option<String>,

    /// Print one JSON object per line: each event, comment, connection opened and error.
    #[arg(long)]
    json: bool,

    /// Reconnect when nothing (not even a heartbeat) arrives for this long, e.g. `2m`
    /// [default: 45s for topics (three heartbeats), none for a URL].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::duration)]
    read_timeout: Option<Duration>,

    /// Give up after this many failed reconnects in a row [default: never].
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
}

pub(crate) fn main(args: SubArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: SubArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let url_mode = args
        .targets
        .iter()
        .any(|t| t.starts_with("http://") || t.starts_with("https://"));
    // Whether a normal end of the stream is the end of `rill sub` (see the module docs).
    let mut stop_at_end = false;
    let mut request = if url_mode {
        let [target] = args.targets.as_slice() else {
            bail!("give either topic names or one URL, not both or several URLs");
        };
        let url: Url = target
            .parse()
            .with_context(|| format!("invalid URL {target:?}"))?;
        let method =
            args.method
                .as_deref()
                .unwrap_or(if args.data.is_some() { "POST" } else { "GET" });
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .with_context(|| format!("invalid method {method:?}"))?;
        stop_at_end = method != Method::GET && !args.resend;
        // The token is for the rill server: it goes to a URL of the same origin only, never to
        // whatever other host the URL names.
        if url.origin() == client.base_url().origin() {
            client.sse(method, url)
        } else {
            SseRequest::new(client.http().clone(), method, url)
        }
    } else {
        if args.method.is_some() || args.data.is_some() || args.resend {
            bail!(
                "-X/--method, -d/--data and --resend apply to a URL; topics are subscribed with GET"
            );
        }
        client.topics().subscribe_request(&args.targets)?
    };
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("invalid header {header:?}: expected 'Name: value'");
        };
        request = request.try_header(name, value)?;
    }
    if let Some(data) = &args.data {
        request = request.body(read_data(data)?);
    }
    if let Some(id) = &args.last_event_id {
        request = request.last_event_id(id.as_str());
    }
    if let Some(timeout) = args.read_timeout {
        request = request.read_timeout(timeout);
    }
    let policy = RetryPolicy {
        max_retries: args.max_retries,
        ..RetryPolicy::default()
    };
    request = request
        .retry_policy(policy)
        .comments(args.json)
        .state_changes(true);

    let printer = Printer {
        json: args.json,
        stop_at_end,
    };
    if url_mode {
        printer
            .print_all(request.stream(), asks_to_come_back, |event| {
                let line = json!({ "event": event.event, "data": event.data, "id": event.id });
                (format!("{} {}", event.event, event.data), line)
            })
            .await
    } else {
        printer.print_all(TopicStream::new(request.stream()), |_| false, |event| {
            let data = event.data.to_string();
            let line = json!({ "topic": event.topic, "event": event.event, "data": event.data, "id": event.id });
            (format!("{} {} {data}", event.topic, event.event), line)
        })
        .await
    }
}

/// rill's last event of a stream it ends but wants resumed: `event: error` with
/// `"reconnect": true` (docs/api.md: `server_shutdown`, `stream_duration`, `slow_consumer`).
fn asks_to_come_back(event: &Event) -> bool {
    event.event == "error"
        && serde_json::from_str::<Value>(&event.data)
            .ok()
            .and_then(|data| data.get("reconnect")?.as_bool())
            == Some(true)
}

/// Reads `-d` data: `@path` is a file, `-` is standard input, anything else is the data itself.
pub(crate) fn read_data(data: &str) -> anyhow::Result<Vec<u8>> {
    if data == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .context("cannot read standard input")?;
        Ok(bytes)
    } else if let Some(path) = data.strip_prefix('@') {
        std::fs::read(path).with_context(|| format!("cannot read {path}"))
    } else {
        Ok(data.as_bytes().to_vec())
    }
}

struct Printer {
    json: bool,
    /// Stop, successfully, when the stream ends normally instead of reconnecting.
    stop_at_end: bool,
}

impl Printer {
    /// Prints every item of `stream` until it ends (Ok) or fails for good (Err, after printing
    /// the error line in JSON mode). `format` gives an event's human line and JSON object. A
    /// `204 No Content`, and with `stop_at_end` a normal end, end it with Ok (and an `end` line
    /// in JSON mode); but not an end right after an event for which `come_back` holds.
    async fn print_all<E>(
        &self,
        mut stream: impl Stream<Item = Result<SseItem<E>, Error>> + Unpin,
        come_back: impl Fn(&E) -> bool,
        format: impl Fn(E) -> (String, Value),
    ) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout();
        // The last event asked the client to reconnect after the end.
        let mut asked_back = false;
        while let Some(item) = stream.next().await {
            let line = match item {
                Ok(SseItem::Event(event)) => {
                    asked_back = come_back(&event);
                    let (human, json) = format(event);
                    if self.json { json.to_string() } else { human }
                }
                Ok(SseItem::Comment(text)) if self.json => json!({ "comment": text }).to_string(),
                Ok(SseItem::Open { url }) if self.json => {
                    json!({ "open": { "url": url.as_str() } }).to_string()
                }
                Ok(SseItem::Reconnecting {
                    error: Error::Disconnected,
                    ..
                }) if self.stop_at_end && !asked_back => return self.end(&mut stdout, "ended"),
                Err(Error::Status { status, .. }) if status == StatusCode::NO_CONTENT => {
                    return self.end(&mut stdout, "no_content");
                }
                Ok(SseItem::Reconnecting {
                    error,
                    delay,
                    attempt,
                }) => {
                    if !self.json {
                        eprintln!("rill: {error}; reconnecting in {delay:.1?} (attempt {attempt})");
                        continue;
                    }
                    let mut object = error_json(&error);
                    object["retry_in_ms"] = json!(delay.as_millis() as u64);
                    object["attempt"] = json!(attempt);
                    json!({ "error": object }).to_string()
                }
                Ok(_) => continue,
                // A topic envelope that does not decode: say so and go on.
                Err(error @ Error::Decode(_)) => {
                    if !self.json {
                        eprintln!("rill: skipped an event: {error}");
                        continue;
                    }
                    json!({ "error": error_json(&error) }).to_string()
                }
                Err(error) => {
                    if self.json {
                        let mut object = error_json(&error);
                        object["fatal"] = json!(true);
                        // A closed stdout changes nothing here: we are failing anyway.
                        let _ = writeln!(stdout, "{}", json!({ "error": object }));
                    }
                    return Err(anyhow::Error::new(error).context("the subscription failed"));
                }
            };
            if let Err(error) = writeln!(stdout, "{line}") {
                // The reader went away (`rill sub ... | head`): a normal way to stop.
                if error.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(error).context("cannot write to standard output");
            }
        }
        Ok(())
    }
}

impl Printer {
    /// The end of the output: `{"end":{"reason":...}}` in JSON mode, nothing otherwise.
    fn end(&self, stdout: &mut std::io::Stdout, reason: &str) -> anyhow::Result<()> {
        if self.json {
            match writeln!(stdout, "{}", json!({ "end": { "reason": reason } })) {
                Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(error).context("cannot write to standard output");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The `{"kind","message","status","code"}` object of an error line.
fn error_json(error: &Error) -> Value {
    json!({
        "kind": error.kind(),
        "message": error.to_string(),
        "status": error.status().map(|s| s.as_u16()),
        "code": error.api_code(),
    })
}
