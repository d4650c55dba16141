//! Streaming LLM providers: OpenAI-compatible, Anthropic Messages, an app's own AI SDK route
//! and the offline demo model.
//!
//! [`build_provider`] turns a [`BotConfig`] into an [`rill_core::Provider`]; [`default_bots`] is
//! the bot list when the configuration names none. Both HTTP providers read the upstream's SSE
//! with `rill_sse::Parser`, retry before the first token only (connection errors, 429, 5xx,
//! honouring `Retry-After`), and time out on a missing first token or a silence between
//! tokens ([`ProviderSettings`]). A completion stream owns its HTTP response and nothing runs
//! behind it: dropping the stream closes the upstream connection, which is how stop works.
//!
//! No API key reaches a log line or an error message: keys are read by variable name through
//! the lookup the binary passes in, sent in sensitive headers, and scrubbed from upstream text.

mod ai_sdk;
mod anthropic;
mod demo;
mod http;
mod openai;
mod settings;

use std::sync::Arc;

use rill_core::{BotConfig, Provider, ProviderError, ProviderErrorKind, ProviderKind};

pub use ai_sdk::{
    AiSdkProvider, SIGNATURE_HEADER, TIMESTAMP_HEADER, USER_HEADER, identity_headers,
};
pub use anthropic::{ANTHROPIC_VERSION, AnthropicProvider, DEFAULT_ANTHROPIC_BASE_URL};
pub use demo::DemoProvider;
pub use openai::{DEFAULT_OPENAI_BASE_URL, OpenAiProvider};
pub use settings::{DEFAULT_ANTHROPIC_MAX_TOKENS, ProviderSettings};

use http::{ApiKey, Upstream};

/// The model of the default `openai` bot.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";
/// The model of the default `anthropic` bot.
pub const DEFAULT_ANTHROPIC_MODEL: &str = "claude-haiku-4-5";

/// What a bot sets that a request may leave out.
#[derive(Clone, Debug)]
pub(crate) struct BotDefaults {
    pub(crate) model: String,
    pub(crate) system: Option<String>,
    pub(crate) temperature: Option<f32>,
    pub(crate) max_tokens: Option<u32>,
}

impl BotDefaults {
    /// The request with the bot's values where it leaves them out.
    pub(crate) fn apply(
        &self,
        mut request: rill_core::CompletionRequest,
    ) -> rill_core::CompletionRequest {
        if request.model.is_empty() {
            request.model.clone_from(&self.model);
        }
        if request.system.as_deref().is_none_or(str::is_empty) {
            request.system.clone_from(&self.system);
        }
        request.temperature = request.temperature.or(self.temperature);
        request.max_tokens = request.max_tokens.or(self.max_tokens);
        request
    }

    fn from_bot(bot: &BotConfig) -> Self {
        BotDefaults {
            model: bot.model.clone(),
            system: bot.system_prompt.clone(),
            temperature: bot.temperature,
            max_tokens: bot.max_tokens,
        }
    }
}

/// Builds the provider of a bot. `env` looks up environment variables by name (only the binary
/// reads the environment); the bot's `api_key_env` names the one holding its key (for an
/// `ai_sdk` bot: the secret its identity headers are signed with). Values of the
/// request (model, system prompt, temperature, max tokens) win over the bot's; the bot's fill
/// what the request leaves out.
///
/// All HTTP bots built with the same connect timeout share one connection pool.
///
/// # Errors
///
/// [`ProviderErrorKind::Config`] when the key variable is unset or empty (the message names the
/// variable, never a key), the key is not a valid header value, or the base URL is not an
/// `http`/`https` URL.
pub fn build_provider(
    bot: &BotConfig,
    env: &dyn Fn(&str) -> Option<String>,
    settings: &ProviderSettings,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let defaults = BotDefaults::from_bot(bot);
    match bot.provider {
        ProviderKind::Demo => Ok(Arc::new(DemoProvider::new(
            settings.demo_first_token_delay,
            settings.demo_tokens_per_second,
        ))),
        ProviderKind::Openai => {
            let key = api_key(bot, env)?;
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some((key, name)) = &key {
                headers.insert(reqwest::header::AUTHORIZATION, key.header("Bearer ", name)?);
            }
            let upstream = upstream(
                bot,
                DEFAULT_OPENAI_BASE_URL,
                "chat/completions",
                headers,
                key,
                settings,
            )?;
            let continuation = bot.continuation.unwrap_or(rill_core::Continuation::None);
            Ok(Arc::new(OpenAiProvider::new(
                upstream,
                defaults,
                continuation,
            )))
        }
        ProviderKind::Anthropic => {
            let key = api_key(bot, env)?;
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                "anthropic-version",
                reqwest::header::HeaderValue::from_static(ANTHROPIC_VERSION),
            );
            if let Some((key, name)) = &key {
                headers.insert("x-api-key", key.header("", name)?);
            }
            let upstream = upstream(
                bot,
                DEFAULT_ANTHROPIC_BASE_URL,
                "v1/messages",
                headers,
                key,
                settings,
            )?;
            Ok(Arc::new(AnthropicProvider::new(upstream, defaults)))
        }
        ProviderKind::AiSdk => {
            // The route is the app's, so there is no default URL; and the identity rill
            // forwards is worth nothing unsigned, so the secret is required.
            if bot.base_url.is_none() {
                return Err(ProviderError::new(
                    ProviderErrorKind::Config,
                    format!(
                        "bot {}: an ai_sdk bot needs base_url, the URL of the app's route",
                        bot.id
                    ),
                ));
            }
            let Some((secret, name)) = api_key(bot, env)? else {
                return Err(ProviderError::new(
                    ProviderErrorKind::Config,
                    format!(
                        "bot {}: an ai_sdk bot needs api_key_env, naming the variable that holds the secret its requests are signed with",
                        bot.id
                    ),
                ));
            };
            let upstream = upstream(
                bot,
                "",
                "",
                reqwest::header::HeaderMap::new(),
                Some((secret.clone(), name)),
                settings,
            )?;
            Ok(Arc::new(AiSdkProvider::new(upstream, defaults, secret)))
        }
    }
}

/// The key named by `api_key_env`, with that name; `None` when the bot names no variable (local
/// servers such as Ollama need no key).
fn api_key(
    bot: &BotConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(ApiKey, String)>, ProviderError> {
    let Some(name) = bot.api_key_env.as_deref() else {
        return Ok(None);
    };
    match env(name).filter(|key| !key.trim().is_empty()) {
        Some(key) => Ok(Some((ApiKey::new(key.trim().to_owned()), name.to_owned()))),
        None => Err(ProviderError::new(
            ProviderErrorKind::Config,
            format!(
                "bot {}: the environment variable {name} (its API key) is not set",
                bot.id
            ),
        )),
    }
}

fn upstream(
    bot: &BotConfig,
    default_base: &str,
    path: &str,
    headers: reqwest::header::HeaderMap,
    key: Option<(ApiKey, String)>,
    settings: &ProviderSettings,
) -> Result<Upstream, ProviderError> {
    let base = bot.base_url.as_deref().unwrap_or(default_base);
    // The URL is not echoed: a gateway URL may carry a token.
    let bad_url = || {
        ProviderError::new(
            ProviderErrorKind::Config,
            format!("bot {}: base_url is not a valid http(s) URL", bot.id),
        )
    };
    // An empty `path`: the base URL is the endpoint itself (an app's route).
    let url = if path.is_empty() {
        reqwest::Url::parse(base)
    } else {
        reqwest::Url::parse(&format!("{}/{path}", base.trim_end_matches('/')))
    }
    .map_err(|_| bad_url())?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(bad_url());
    }
    Ok(Upstream {
        client: http::shared_client(settings.connect_timeout)?,
        settings: settings.clone(),
        url,
        headers,
        key: key.map(|(key, _)| key),
        bot: bot.id.as_str().into(),
    })
}

/// The bots when the configuration names none: `demo` always, `openai` when `OPENAI_API_KEY`
/// is set, `anthropic` when `ANTHROPIC_API_KEY` is set.
pub fn default_bots(env: &dyn Fn(&str) -> Option<String>) -> Vec<BotConfig> {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let mut bots = vec![BotConfig {
        id: "demo".into(),
        name: "Demo".into(),
        description: "The built-in offline model: no network, no key. Answers in English, \
                      Korean and emoji."
            .into(),
        provider: ProviderKind::Demo,
        base_url: None,
        api_key_env: None,
        model: "demo".into(),
        system_prompt: None,
        temperature: None,
        max_tokens: None,
        continuation: None,
    }];
    if set("OPENAI_API_KEY") {
        bots.push(BotConfig {
            id: "openai".into(),
            name: "OpenAI".into(),
            description: format!("OpenAI {DEFAULT_OPENAI_MODEL}."),
            provider: ProviderKind::Openai,
            base_url: None,
            api_key_env: Some("OPENAI_API_KEY".into()),
            model: DEFAULT_OPENAI_MODEL.into(),
            system_prompt: Some("You are a helpful assistant.".into()),
            temperature: None,
            max_tokens: None,
            continuation: None,
        });
    }
    if set("ANTHROPIC_API_KEY") {
        bots.push(BotConfig {
            id: "anthropic".into(),
            name: "Claude".into(),
            description: format!("Anthropic {DEFAULT_ANTHROPIC_MODEL}."),
            provider: ProviderKind::Anthropic,
            base_url: None,
            api_key_env: Some("ANTHROPIC_API_KEY".into()),
            model: DEFAULT_ANTHROPIC_MODEL.into(),
            system_prompt: Some("You are a helpful assistant.".into()),
            temperature: None,
            max_tokens: Some(DEFAULT_ANTHROPIC_MAX_TOKENS),
            continuation: None,
        });
    }
    bots
}

/// A request body that would not serialize (it always does: plain data).
pub(crate) fn encode_failed() -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::Config,
        "the request could not be encoded",
    )
}

/// `stream` with `cut` removed from the start of its first text, when it starts with it (see
/// `rill_dialects::continuation::strip_repeated`).
pub(crate) fn strip_first_text(
    stream: rill_core::CompletionStream,
    cut: String,
) -> rill_core::CompletionStream {
    use futures::StreamExt;
    let mut cut = Some(cut);
    Box::pin(stream.filter_map(move |item| {
        let item = match (item, cut.as_deref()) {
            (Ok(rill_core::ProviderEvent::Text(text)), Some(c)) => {
                let text = rill_dialects::continuation::strip_repeated(&text, c);
                cut = None;
                (!text.is_empty()).then_some(Ok(rill_core::ProviderEvent::Text(text)))
            }
            (item, _) => Some(item),
        };
        futures::future::ready(item)
    }))
}
