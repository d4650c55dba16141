//! An app's own route that speaks the Vercel AI SDK's UI message stream (`POST {base_url}`, e.g.
//! a Next.js route ending in `streamText(...).toUIMessageStreamResponse()`): rill sits in front
//! of it and adds storage, resume, every tab and stop, while the app keeps its tools, RAG and
//! agent loop. The wire dialect (request body, chunk decoding) is `rill_dialects::ai_sdk`; this
//! is the HTTP side and the signed identity.
//!
//! Every request says on whose behalf it is made, in headers signed with the bot's secret (the
//! variable `api_key_env` names), so the route can trust them:
//!
//! ```text
//! x-rill-user: <user id, percent-encoded outside visible ASCII>
//! x-rill-timestamp: <unix seconds>
//! x-rill-signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<x-rill-user value>")>
//! ```
//!
//! The route recomputes the signature, compares it in constant time and refuses old timestamps
//! (docs/ai-sdk.md shows the few lines).

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue};
use rill_core::{CompletionRequest, CompletionStream, Provider, ProviderError, ProviderErrorKind};
use rill_dialects::ai_sdk::{ChunkDecoder, request_body};
use sha2::Sha256;

use crate::BotDefaults;
use crate::http::{ApiKey, Upstream, read_stream};

/// The headers of the signed identity.
pub const USER_HEADER: &str = "x-rill-user";
pub const TIMESTAMP_HEADER: &str = "x-rill-timestamp";
pub const SIGNATURE_HEADER: &str = "x-rill-signature";

/// A bot answered by an app's own AI SDK route.
#[derive(Debug)]
pub struct AiSdkProvider {
    upstream: Upstream,
    defaults: BotDefaults,
    /// Signs the identity; never sent itself.
    secret: ApiKey,
}

impl AiSdkProvider {
    pub(crate) fn new(upstream: Upstream, defaults: BotDefaults, secret: ApiKey) -> Self {
        AiSdkProvider {
            upstream,
            defaults,
            secret,
        }
    }
}

#[async_trait::async_trait]
impl Provider for AiSdkProvider {
    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let request = self.defaults.apply(request);
        let body = request_body(&request)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let user = request.context.user_id.as_deref().unwrap_or_default();
        let headers = identity_headers(self.secret.expose(), user, now)?;
        let (response, started) = self.upstream.open_with(body, headers).await?;
        Ok(read_stream(
            &self.upstream,
            response,
            started,
            ChunkDecoder::new(),
        ))
    }
}

/// The signed identity headers of a request made for `user` at `now` (unix seconds).
pub fn identity_headers(secret: &str, user: &str, now: u64) -> Result<HeaderMap, ProviderError> {
    let user = header_text(user);
    let timestamp = now.to_string();
    let mut headers = HeaderMap::new();
    let value = |text: String| {
        HeaderValue::try_from(text).map_err(|_| {
            // Cannot happen: every byte is visible ASCII or hex.
            ProviderError::new(
                ProviderErrorKind::Config,
                "the identity headers could not be built",
            )
        })
    };
    let mut signature = value(format!("v1={}", sign(secret, &timestamp, &user)))?;
    signature.set_sensitive(true);
    headers.insert(USER_HEADER, value(user)?);
    headers.insert(TIMESTAMP_HEADER, value(timestamp)?);
    headers.insert(SIGNATURE_HEADER, signature);
    Ok(headers)
}

/// Hex HMAC-SHA256 of `"<timestamp>.<user>"`.
fn sign(secret: &str, timestamp: &str, user: &str) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(user.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A user id as a header value: visible ASCII as is, other bytes (and `%`) percent-encoded,
/// so `decodeURIComponent` gives the id back.
fn header_text(user: &str) -> String {
    let mut text = String::with_capacity(user.len());
    for &byte in user.as_bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            text.push(char::from(byte));
        } else {
            text.push('%');
            text.push(char::from(HEX[usize::from(byte >> 4)].to_ascii_uppercase()));
            text.push(char::from(
                HEX[usize::from(byte & 0xf)].to_ascii_uppercase(),
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected values come from Python's `hmac` module, computed apart from this code.
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_user() {
        let headers = identity_headers("Jefe", "user 1/é", 1_700_000_000).unwrap();
        assert_eq!(headers[USER_HEADER], "user%201/%C3%A9");
        assert_eq!(headers[TIMESTAMP_HEADER], "1700000000");
        assert_eq!(
            headers[SIGNATURE_HEADER],
            "v1=401ddbde1e689e6dc16fe81e1ab827ed6a131a5915d899b080f3e8ea3bd1ead4"
        );
        assert!(headers[SIGNATURE_HEADER].is_sensitive());
        assert_eq!(header_text("a%b"), "a%25b");
    }
}
