//! Anthropic Messages (`POST {base}/v1/messages`, `stream: true`). The wire dialect (request
//! body, event decoding) is `rill_dialects::anthropic`; this is the HTTP side.

use rill_core::chat::Part;
use rill_core::{CompletionRequest, CompletionStream, Provider, ProviderError};
use rill_dialects::anthropic::{EventDecoder, request_body};
use rill_dialects::continuation;

use crate::BotDefaults;
use crate::http::{Upstream, read_stream};

/// The base URL when a bot sets none (the path `/v1/messages` is appended).
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The API version we speak, sent as `anthropic-version`.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A bot on the Anthropic Messages API.
#[derive(Debug)]
pub struct AnthropicProvider {
    upstream: Upstream,
    defaults: BotDefaults,
}

impl AnthropicProvider {
    pub(crate) fn new(upstream: Upstream, defaults: BotDefaults) -> Self {
        AnthropicProvider { upstream, defaults }
    }
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let prefill = continuation::prefill_text(&request.prefill);
        let mut body = request_body(&self.defaults.apply(request))?;
        // An answer taken over from a dead instance: its text so far as the assistant's
        // prefill, and the whitespace the API makes us cut not doubled.
        let mut cut = None;
        if let Some(text) = prefill {
            let mut value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| crate::encode_failed())?;
            cut = Some(continuation::anthropic(&mut value, &text));
            body = serde_json::to_vec(&value).map_err(|_| crate::encode_failed())?;
        }
        let (response, started) = self.upstream.open(body).await?;
        let stream = read_stream(&self.upstream, response, started, EventDecoder::new());
        Ok(match cut {
            Some(cut) if !cut.is_empty() => crate::strip_first_text(stream, cut),
            _ => stream,
        })
    }

    /// An answer of only text: Anthropic continues an assistant prefill.
    fn can_continue(&self, parts: &[Part]) -> bool {
        continuation::prefill_text(parts).is_some()
    }
}
