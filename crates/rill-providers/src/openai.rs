//! OpenAI-compatible chat completions (`POST {base}/chat/completions`, `stream: true`): OpenAI
//! itself and the servers that copy its API (Ollama, vLLM, llama.cpp, LM Studio, OpenRouter,
//! LiteLLM). The wire dialect (request body, chunk decoding) is `rill_dialects::openai_chat`;
//! this is the HTTP side.

use rill_core::chat::Part;
use rill_core::{CompletionRequest, CompletionStream, Continuation, Provider, ProviderError};
use rill_dialects::continuation;
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
    /// How this server continues an unfinished answer (the bot's `continuation`).
    continuation: Continuation,
}

impl OpenAiProvider {
    pub(crate) fn new(
        upstream: Upstream,
        defaults: BotDefaults,
        continuation: Continuation,
    ) -> Self {
        OpenAiProvider {
            upstream,
            defaults,
            continuation,
        }
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let prefill = continuation::prefill_text(&request.prefill);
        let mut body = request_body(&self.defaults.apply(request))?;
        // An answer taken over from a dead instance, continued the way this server documents.
        if let Some(text) = prefill {
            let mut value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| crate::encode_failed())?;
            continuation::openai(&mut value, &text, self.continuation);
            body = serde_json::to_vec(&value).map_err(|_| crate::encode_failed())?;
        }
        let (response, started) = self.upstream.open(body).await?;
        Ok(read_stream(
            &self.upstream,
            response,
            started,
            ChunkDecoder::new(),
        ))
    }

    /// An answer of only text, on a server configured with a way to continue it.
    fn can_continue(&self, parts: &[Part]) -> bool {
        self.continuation != Continuation::None && continuation::prefill_text(parts).is_some()
    }
}
