//! OpenAI-compatible chat completions (`POST {base}/chat/completions`, `stream: true`): OpenAI
//! itself and the servers that copy its API (Ollama, vLLM, llama.cpp, LM Studio, OpenRouter,
//! LiteLLM). The wire dialect (request body, chunk decoding) is `rill_dialects::openai_chat`;
//! this is the HTTP side.

use rill_core::{CompletionRequest, CompletionStream, Provider, ProviderError};
use rill_dialects::openai_chat::{ChunkDecoder, request_body};

use crate::BotDefaults;
use crate::http::{Upstream, read_stream};

/// The base URL when a bot sets none.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// A bot on an OpenAI-compatible API.
#[derive(Debug)]
pub struct OpenAiProvider {
    upstream: Upstream,
    defaults: BotDefaults,
}

impl OpenAiProvider {
    pub(crate) fn new(upstream: Upstream, defaults: BotDefaults) -> Self {
        OpenAiProvider { upstream, defaults }
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let body = request_body(&self.defaults.apply(request))?;
        let (response, started) = self.upstream.open(body).await?;
        Ok(read_stream(
            &self.upstream,
            response,
            started,
            ChunkDecoder::new(),
        ))
    }
}
