//! Which server a scenario talks to, and how each kind of server is subscribed to and published
//! to. rill is the default; the others exist for the side-by-side comparison
//! (`scripts/bench-side-by-side`, configs under `bench/`).

use std::net::{SocketAddr, ToSocketAddrs};

use serde::Serialize;
use url::Url;

use crate::BenchError;

/// The kind of server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// rill: `GET /api/events?topic=T`, `POST /api/topics/T/events` `{"data":...}`.
    Rill,
    /// nginx + nchan (bench/nchan/nginx.conf): `GET /sub/T`, `POST /pub/T` with the raw data.
    Nchan,
    /// Pushpin (bench/pushpin): `GET /sub/T` through the proxy, publish with the HTTP control
    /// API's `http-stream` format on the publish URL.
    Pushpin,
    /// The Node.js Express server (bench/node-express): `GET /events?topic=T`,
    /// `POST /publish/T` `{"data":...}`.
    Node,
    /// The raw-tokio floor (bench/raw-tokio): nchan's shapes, `GET /sub/T`, `POST /pub/T` with
    /// the raw data.
    Floor,
}

impl Flavor {
    /// Parses `rill`, `nchan`, `pushpin`, `node` or `floor`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rill" => Some(Flavor::Rill),
            "nchan" => Some(Flavor::Nchan),
            "pushpin" => Some(Flavor::Pushpin),
            "node" => Some(Flavor::Node),
            "floor" => Some(Flavor::Floor),
            _ => None,
        }
    }
}

/// Where and what the server under test is.
#[derive(Clone, Debug)]
pub struct Target {
    /// What kind of server.
    pub flavor: Flavor,
    /// The base URL subscribers connect to (`http://host:port`; plain HTTP/1.1 only).
    pub server: Url,
    /// The base URL publishes go to: the same as `server` except for Pushpin (its control port).
    pub publish: Url,
    /// A bearer token for rill with auth `jwt`.
    pub token: Option<String>,
}

impl Target {
    /// A target from URLs given on the command line.
    pub fn new(
        flavor: Flavor,
        server: &str,
        publish: Option<&str>,
        token: Option<String>,
    ) -> Result<Self, BenchError> {
        let parse = |url: &str| {
            let parsed = Url::parse(url).map_err(|error| BenchError::BadUrl {
                url: url.to_owned(),
                reason: error.to_string(),
            })?;
            if parsed.scheme() != "http" {
                return Err(BenchError::BadUrl {
                    url: url.to_owned(),
                    reason: "the load generator speaks plain http:// only".to_owned(),
                });
            }
            Ok(parsed)
        };
        let server = parse(server)?;
        let publish = match publish {
            Some(url) => parse(url)?,
            None if flavor == Flavor::Pushpin => parse("http://127.0.0.1:5561")?,
            None => server.clone(),
        };
        Ok(Target {
            flavor,
            server,
            publish,
            token,
        })
    }

    /// The socket address subscribers connect to.
    pub(crate) fn subscribe_addr(&self) -> Result<SocketAddr, BenchError> {
        let bad = |reason: &str| BenchError::BadUrl {
            url: self.server.to_string(),
            reason: reason.to_owned(),
        };
        let host = self.server.host_str().ok_or_else(|| bad("no host"))?;
        let port = self.server.port_or_known_default().unwrap_or(80);
        (host, port)
            .to_socket_addrs()
            .map_err(|error| bad(&error.to_string()))?
            .next()
            .ok_or_else(|| bad("the host resolves to no address"))
    }

    /// The raw HTTP/1.1 request a subscriber sends for `topic`, built once and shared.
    pub(crate) fn subscribe_request(&self, topic: &str) -> Vec<u8> {
        let path = match self.flavor {
            Flavor::Rill => format!("/api/events?topic={topic}"),
            Flavor::Nchan | Flavor::Pushpin | Flavor::Floor => format!("/sub/{topic}"),
            Flavor::Node => format!("/events?topic={topic}"),
        };
        let host = self.server.host_str().unwrap_or("127.0.0.1");
        let port = self.server.port_or_known_default().unwrap_or(80);
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\n"
        );
        if let Some(token) = &self.token {
            request.push_str("Authorization: Bearer ");
            request.push_str(token);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.into_bytes()
    }

    /// The URL and JSON body that publish `payload` (a JSON text) to `topic`.
    pub(crate) fn publish_request(&self, topic: &str, payload: &str) -> (Url, String) {
        let join = |path: &str| {
            let mut url = self.publish.clone();
            url.set_path(path);
            url
        };
        match self.flavor {
            Flavor::Rill => (
                join(&format!("/api/topics/{topic}/events")),
                format!(r#"{{"data":{payload}}}"#),
            ),
            Flavor::Nchan | Flavor::Floor => (join(&format!("/pub/{topic}")), payload.to_owned()),
            Flavor::Node => (
                join(&format!("/publish/{topic}")),
                format!(r#"{{"data":{payload}}}"#),
            ),
            Flavor::Pushpin => {
                // Pushpin sends `content` verbatim to every subscriber: the SSE frame itself.
                let content = format!("data: {payload}\n\n");
                let escaped = serde_json::Value::String(content).to_string();
                (
                    join("/publish/"),
                    format!(
                        r#"{{"items":[{{"channel":"{topic}","formats":{{"http-stream":{{"content":{escaped}}}}}}}]}}"#
                    ),
                )
            }
        }
    }
}
