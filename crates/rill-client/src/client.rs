//! The base client of rill's HTTP API: a server URL, an optional bearer token, one HTTP pool.
//! The typed clients (topics, chats) are thin layers over it.

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use url::Url;

use crate::chats::ChatsClient;
use crate::error::Error;
use crate::event_source::{SseRequest, status_error, transport};
use crate::topics::TopicsClient;

/// A client of one rill server. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    /// Always ends with `/`, so API paths join under it (a server behind a path prefix works).
    base_url: Url,
    /// The bearer token, kept as a ready header value marked sensitive so it is never printed.
    token: Option<HeaderValue>,
    http: reqwest::Client,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:8080`), with its own HTTP
    /// pool (10 s connect timeout, redirects followed).
    pub fn new(base_url: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::InvalidRequest(format!("cannot build the HTTP client: {e}")))?;
        Self::with_http(base_url, http)
    }

    /// A client that sends through `http` (share one pool between clients).
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Result<Self, Error> {
        let mut base_url = Url::parse(base_url)
            .map_err(|e| Error::InvalidRequest(format!("server URL {base_url:?}: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(Error::InvalidRequest(format!(
                "server URL {base_url}: not http(s)"
            )));
        }
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        Ok(Client {
            base_url,
            token: None,
            http,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: &str) -> Result<Self, Error> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            Error::InvalidRequest("the token holds characters a header cannot carry".into())
        })?;
        value.set_sensitive(true);
        self.token = Some(value);
        Ok(self)
    }

    /// The server URL (ending with `/`).
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The HTTP pool.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The URL of an API path given as segments, each percent-encoded as needed:
    /// `endpoint(["api", "topics", name, "events"])`.
    pub fn endpoint<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request to `url` with the bearer token.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.header(AUTHORIZATION, token.clone()),
            None => builder,
        }
    }

    /// An event-stream request to `url` with the bearer token.
    pub fn sse(&self, method: Method, url: Url) -> SseRequest {
        let request = SseRequest::new(self.http.clone(), method, url);
        match &self.token {
            Some(token) => request.header(AUTHORIZATION, token.clone()),
            None => request,
        }
    }

    /// The topics API.
    pub fn topics(&self) -> TopicsClient {
        TopicsClient::new(self.clone())
    }

    /// The chats API.
    pub fn chats(&self) -> ChatsClient {
        ChatsClient::new(self.clone())
    }

    /// Sends `request`; a 2xx answer is decoded as JSON `T`, anything else becomes
    /// [`Error::Status`] with rill's error code and message.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, Error> {
        let response = request.send().await.map_err(transport)?;
        let response = check_status(response).await?;
        let body = response.bytes().await.map_err(transport)?;
        serde_json::from_slice(&body).map_err(Error::Decode)
    }
}

/// Passes a 2xx answer through; turns any other into [`Error::Status`].
pub(crate) async fn check_status(response: Response) -> Result<Response, Error> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(status_error(response).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_join_under_the_base_and_encode_segments() {
        let client = Client::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            client
                .endpoint(["api", "topics", "a b/c", "events"])
                .as_str(),
            "http://127.0.0.1:8080/api/topics/a%20b%2Fc/events"
        );
        let client = Client::new("https://example.test/rill").unwrap();
        assert_eq!(
            client.endpoint(["api", "events"]).as_str(),
            "https://example.test/rill/api/events"
        );
        assert!(Client::new("ftp://example.test").is_err());
        assert!(Client::new("not a url").is_err());
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let client = Client::new("http://127.0.0.1:8080")
            .unwrap()
            .with_token("s3cret")
            .unwrap();
        let shown = format!(
            "{client:?} {:?}",
            client.sse(Method::GET, client.endpoint(["api", "events"]))
        );
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
