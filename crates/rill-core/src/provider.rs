//! The provider interface: a streaming chat completion from an LLM (or the offline demo model).

use std::pin::Pin;

use futures_core::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{Part, Role, Usage, text_of};

/// One message of the prompt, in the canonical model: its parts. An assistant message carries
/// its reasoning (with signatures) and its tool calls with their results; each provider's
/// encoder spreads them into its own shape (OpenAI `tool_calls` plus `tool` messages,
/// Anthropic `thinking`/`tool_use` blocks plus `tool_result` blocks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptMessage {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl PromptMessage {
    /// A message of one text part.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        PromptMessage {
            role,
            parts: vec![Part::text(text)],
        }
    }

    /// The concatenated text of the text parts.
    pub fn content(&self) -> String {
        text_of(&self.parts)
    }
}

/// A tool the model may call, in the canonical shape (each provider's encoder renames the
/// fields: OpenAI `function.parameters`, Anthropic `input_schema`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema of the arguments.
    pub parameters: Value,
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Tool(String),
}

/// Who asks, for upstreams that want to know (an app's own route behind rill).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestContext {
    pub user_id: Option<String>,
    pub chat_id: Option<String>,
    /// The id of the assistant message being generated.
    pub message_id: Option<String>,
}

/// What to ask the model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompletionRequest {
    pub model: String,
    pub system: Option<String>,
    /// The conversation, oldest first, ending with the user's new message.
    pub messages: Vec<PromptMessage>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// Sequences that end the answer, for providers that take them.
    pub stop: Vec<String>,
    /// Tools the model may call (passed through; rill runs none itself).
    pub tools: Vec<ToolSpec>,
    pub tool_choice: Option<ToolChoice>,
    pub context: RequestContext,
    /// The answer so far, to be continued rather than started anew (another instance's
    /// generation taken over after it died). Only sent to providers whose
    /// [`Provider::can_continue`] accepted these parts.
    pub prefill: Vec<Part>,
}

/// What a completion stream yields: the canonical events every provider's decoder produces,
/// whatever its wire names them.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderEvent {
    /// More text of the answer (never empty).
    Text(String),
    /// More reasoning text (never empty).
    Reasoning(String),
    /// The signature of the reasoning just streamed (replaces any earlier one).
    ReasoningSignature(String),
    /// A whole reasoning block the provider keeps opaque.
    RedactedReasoning(String),
    /// A tool call begins. `key` tells the calls of one answer apart (decoders assign it; a
    /// provider's own index may be reused, as Ollama does for parallel calls).
    ToolCallStart { key: u32, id: String, name: String },
    /// More argument text of the call `key`.
    ToolCallInput { key: u32, text: String },
    /// The arguments of the call `key` are complete.
    ToolCallEnd { key: u32 },
    /// The result of the call with provider id `id`, when the upstream runs the tool.
    ToolResult {
        id: String,
        output: Option<Value>,
        error: Option<String>,
    },
    /// A cited source.
    Source { url: String, title: Option<String> },
    /// The model finished; the last item of a successful stream.
    Finish {
        reason: Option<String>,
        usage: Option<Usage>,
    },
}

/// The stream of a completion. Dropping it closes the upstream request: that is how stop works.
pub type CompletionStream =
    Pin<Box<dyn Stream<Item = Result<ProviderEvent, ProviderError>> + Send>>;

/// Why a completion failed. `message` is safe to show a user: no keys, no internals.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    pub message: String,
}

/// Machine-readable kinds, also sent as the `code` of `error` events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// Could not connect (refused, DNS, TLS).
    Connect,
    /// The upstream answered an error status before streaming (4xx other than 429).
    Rejected,
    /// Rate limited (429) and the retries ran out.
    RateLimited,
    /// The upstream failed (5xx) and the retries ran out.
    Unavailable,
    /// No first token, or no next token, in time.
    Timeout,
    /// The stream broke or was malformed mid-way.
    Protocol,
    /// The upstream sent an error object inside the stream.
    Upstream,
    /// The bot is misconfigured (no API key, bad URL).
    Config,
}

impl ProviderErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderErrorKind::Connect => "upstream_connect",
            ProviderErrorKind::Rejected => "upstream_rejected",
            ProviderErrorKind::RateLimited => "upstream_rate_limited",
            ProviderErrorKind::Unavailable => "upstream_unavailable",
            ProviderErrorKind::Timeout => "upstream_timeout",
            ProviderErrorKind::Protocol => "upstream_protocol",
            ProviderErrorKind::Upstream => "upstream_error",
            ProviderErrorKind::Config => "bot_misconfigured",
        }
    }
}

impl std::fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProviderError {
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
        }
    }
}

/// A source of streaming completions.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Starts a completion. Retries before the first token (connection errors, 429, 5xx) happen
    /// inside; once this returns a stream, nothing is retried. Failures before the upstream
    /// answers (connect errors, error statuses, no response headers in time) are returned here;
    /// after it answered, a timeout (first token, idle), a broken or malformed stream or an
    /// upstream error object is the stream's last item (an `Err`, after the deltas sent).
    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, ProviderError>;

    /// Whether this provider can continue an answer whose parts so far are `parts` (sent as
    /// [`CompletionRequest::prefill`]), so that what it streams next is the rest of the same
    /// answer with nothing repeated. The default: it cannot.
    fn can_continue(&self, parts: &[Part]) -> bool {
        let _ = parts;
        false
    }
}

/// How an OpenAI-compatible server continues an unfinished answer (see `docs/providers.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Continuation {
    /// It cannot (OpenAI's own API): an answer whose instance died ends `interrupted`.
    None,
    /// vLLM: the answer so far as the last `assistant` message, with
    /// `continue_final_message: true` and `add_generation_prompt: false`.
    ContinueFinalMessage,
    /// DeepSeek's prefix completion: the last `assistant` message with `prefix: true`.
    Prefix,
    /// The answer so far as the last `assistant` message, nothing else (llama.cpp's server,
    /// LM Studio, OpenRouter's assistant prefill).
    AssistantPrefill,
}

/// Which provider implementation a bot uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp, LM Studio, ...).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// The built-in offline model.
    Demo,
    /// An app's own route speaking the Vercel AI SDK's UI message stream (e.g. a Next.js route
    /// ending in `streamText(...).toUIMessageStreamResponse()`), at `base_url`.
    AiSdk,
}

/// A configured bot (persona): who answers, with what model and instructions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub provider: ProviderKind,
    /// The API's base URL (e.g. `https://api.openai.com/v1`); the provider's default when absent.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The *name* of the environment variable holding the API key; the key itself is never in
    /// a file, a log line or an API answer.
    #[serde(default)]
    pub api_key_env: Option<String>,
    pub model: String,
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// How an OpenAI-compatible server continues an answer another instance could not finish;
    /// `none` by default (Anthropic always uses assistant prefill, the demo continues itself).
    #[serde(default)]
    pub continuation: Option<Continuation>,
}
