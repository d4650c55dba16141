//! Anthropic Messages (`POST {base}/v1/messages`, `stream: true`). The wire dialect (request
//! body, event decoding) is `rill_dialects::anthropic`; this is the HTTP side.

use rill_core::{CompletionRequest, CompletionStream, Provider, ProviderError};
use rill_dialects::anthropic::{EventDecoder, request_body};

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
        let body = request_body(&self.defaults.apply(request))?;
        let (response, started) = self.upstream.open(body).await?;
        Ok(read_stream(
            &self.upstream,
            response,
            started,
            EventDecoder::new(),
        ))
    }
}
