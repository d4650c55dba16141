//! The chat and backend keys of `rill serve`: database, broker, bots, providers' timeouts, demo
//! pace, engine.
//!
//! Same rules as every key (see `config.rs`): flag, then `RILL_*` env, then the TOML file, then
//! the default; a bad value names its key. Bots are configured only in the TOML file
//! (`[[bots]]`), since a bot is a record of several fields.

use std::num::NonZeroU32;

use anyhow::bail;
use clap::Args;
use rill_core::BotConfig;

use crate::config::{count, duration, parse_key, pick, positive_duration};

#[derive(Debug, Default, Args)]
pub(crate) struct ChatArgs {
    /// Chat storage: `sqlite://PATH` or `postgres://...` [default: sqlite://rill.db?mode=rwc].
    #[arg(
        long,
        env = "RILL_DATABASE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) database: Option<String>,

    /// The broker: `memory` (in-process, one instance) or `redis://host:port[/db]` (several
    /// instances; `rediss://` for TLS) [default: memory].
    #[arg(long, env = "RILL_BROKER", value_name = "URL", hide_env_values = true)]
    pub(crate) broker: Option<String>,

    /// Prefix of every Redis key and channel, so deployments can share a Redis [default: rill:].
    #[arg(long, env = "RILL_REDIS_KEY_PREFIX", value_name = "PREFIX")]
    pub(crate) redis_key_prefix: Option<String>,

    /// How long a generation's lease lasts without renewal; after it another instance marks the
    /// generation interrupted [default: 15s].
    #[arg(long, env = "RILL_LEASE_TTL", value_name = "DURATION")]
    pub(crate) lease_ttl: Option<String>,

    /// This instance's name in generation leases [default: random per start].
    #[arg(long, env = "RILL_INSTANCE_ID", value_name = "NAME")]
    pub(crate) instance_id: Option<String>,

    /// How often a running answer's text is saved [default: 500ms].
    #[arg(long, env = "RILL_CHECKPOINT_INTERVAL", value_name = "DURATION")]
    pub(crate) checkpoint_interval: Option<String>,

    /// History sent with each request to a model, in characters [default: 24000].
    #[arg(long, env = "RILL_HISTORY_BUDGET", value_name = "CHARS")]
    pub(crate) history_budget: Option<String>,

    /// Recent chat histories kept in memory, in bytes of text, so a chat's next question needs
    /// no history read before its first token; 0 keeps none [default: 16777216].
    #[arg(long, env = "RILL_HISTORY_CACHE_BYTES", value_name = "BYTES")]
    pub(crate) history_cache_bytes: Option<String>,

    /// The longest user message accepted, in characters [default: 32000].
    #[arg(long, env = "RILL_MAX_CONTENT_CHARS", value_name = "CHARS")]
    pub(crate) max_content_chars: Option<String>,

    /// The demo model's delay before its first token [default: 300ms].
    #[arg(long, env = "RILL_DEMO_FIRST_TOKEN_DELAY", value_name = "DURATION")]
    pub(crate) demo_first_token_delay: Option<String>,

    /// The demo model's pace in tokens per second; 0 = as fast as possible [default: 30].
    #[arg(long, env = "RILL_DEMO_TOKENS_PER_SECOND", value_name = "N")]
    pub(crate) demo_tokens_per_second: Option<String>,

    /// Longest wait for a connection to a model's API [default: 10s].
    #[arg(long, env = "RILL_UPSTREAM_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub(crate) upstream_connect_timeout: Option<String>,

    /// Longest wait for a model's first token [default: 90s].
    #[arg(
        long,
        env = "RILL_UPSTREAM_FIRST_TOKEN_TIMEOUT",
        value_name = "DURATION"
    )]
    pub(crate) upstream_first_token_timeout: Option<String>,

    /// Longest silence between two tokens [default: 30s].
    #[arg(long, env = "RILL_UPSTREAM_IDLE_TIMEOUT", value_name = "DURATION")]
    pub(crate) upstream_idle_timeout: Option<String>,

    /// Attempts before the first token, on connection errors, 429 and 5xx [default: 3].
    #[arg(long, env = "RILL_UPSTREAM_MAX_ATTEMPTS", value_name = "N")]
    pub(crate) upstream_max_attempts: Option<String>,
}

/// The resolved chat settings.
#[derive(Debug)]
pub(crate) struct ChatSettings {
    pub(crate) database: String,
    pub(crate) broker: Broker,
    pub(crate) engine: rill_chat::EngineSettings,
    pub(crate) providers: rill_providers::ProviderSettings,
    /// The configured bots; `None` means the defaults (demo, plus OpenAI/Anthropic by key).
    pub(crate) bots: Option<Vec<BotConfig>>,
}

/// Which broker to run on.
#[derive(Debug)]
pub(crate) enum Broker {
    Memory,
    /// The URL and key prefix; retention comes from the stream settings.
    Redis {
        url: String,
        key_prefix: String,
    },
}

impl ChatArgs {
    pub(crate) fn resolve(
        self,
        file: ChatArgs,
        bots: Option<Vec<BotConfig>>,
    ) -> anyhow::Result<ChatSettings> {
        let database = pick(self.database, file.database)
            .unwrap_or_else(|| rill_store::DEFAULT_URL.to_owned());
        if !(database.starts_with("sqlite:")
            || database.starts_with("postgres://")
            || database.starts_with("postgresql://"))
        {
            bail!(
                "invalid value for `database` (flag --database, env RILL_DATABASE, or key `database` in the TOML file): expected sqlite://PATH or postgres://..."
            );
        }

        let broker = match pick(self.broker, file.broker).as_deref() {
            None | Some("memory") => Broker::Memory,
            Some(url)
                if url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("unix://") =>
            {
                Broker::Redis {
                    url: url.to_owned(),
                    key_prefix: pick(self.redis_key_prefix, file.redis_key_prefix)
                        .unwrap_or_else(|| "rill:".to_owned()),
                }
            }
            Some(_) => bail!(
                "invalid value for `broker` (flag --broker, env RILL_BROKER, or key `broker` in the TOML file): expected `memory`, redis://host:port[/db] or rediss://host:port[/db] (TLS)"
            ),
        };

        let mut engine = rill_chat::EngineSettings::default();
        if let Some(v) = pick(self.lease_ttl, file.lease_ttl) {
            engine.lease_ttl = parse_key("lease_ttl", &v, |s| {
                let d = positive_duration(s)?;
                if d < std::time::Duration::from_secs(1) {
                    Err("at least 1s".to_owned())
                } else {
                    Ok(d)
                }
            })?;
        }
        if let Some(v) = pick(self.instance_id, file.instance_id) {
            engine.instance_id = parse_key("instance_id", &v, |s| {
                let ok = !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if ok {
                    Ok(s.to_owned())
                } else {
                    Err("1 to 64 ASCII letters, digits, - _ .".into())
                }
            })?;
        }
        if let Some(v) = pick(self.checkpoint_interval, file.checkpoint_interval) {
            engine.checkpoint_interval = parse_key("checkpoint_interval", &v, positive_duration)?;
        }
        if let Some(v) = pick(self.history_budget, file.history_budget) {
            engine.history_budget_chars = parse_key("history_budget", &v, count)?;
        }
        if let Some(v) = pick(self.history_cache_bytes, file.history_cache_bytes) {
            engine.history_cache_bytes = parse_key("history_cache_bytes", &v, |s| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|e| format!("{e} (expected a whole number of bytes, 0 for none)"))
            })?;
        }
        if let Some(v) = pick(self.max_content_chars, file.max_content_chars) {
            engine.max_content_chars = parse_key("max_content_chars", &v, count)?;
        }

        let mut providers = rill_providers::ProviderSettings::default();
        if let Some(v) = pick(self.demo_first_token_delay, file.demo_first_token_delay) {
            providers.demo_first_token_delay = parse_key("demo_first_token_delay", &v, duration)?;
        }
        if let Some(v) = pick(self.demo_tokens_per_second, file.demo_tokens_per_second) {
            providers.demo_tokens_per_second = parse_key("demo_tokens_per_second", &v, |s| {
                s.parse::<u32>().map_err(|e| e.to_string())
            })?;
        }
        if let Some(v) = pick(self.upstream_connect_timeout, file.upstream_connect_timeout) {
            providers.connect_timeout =
                parse_key("upstream_connect_timeout", &v, positive_duration)?;
        }
        if let Some(v) = pick(
            self.upstream_first_token_timeout,
            file.upstream_first_token_timeout,
        ) {
            providers.first_token_timeout =
                parse_key("upstream_first_token_timeout", &v, positive_duration)?;
        }
        if let Some(v) = pick(self.upstream_idle_timeout, file.upstream_idle_timeout) {
            providers.idle_timeout = parse_key("upstream_idle_timeout", &v, positive_duration)?;
        }
        if let Some(v) = pick(self.upstream_max_attempts, file.upstream_max_attempts) {
            providers.max_attempts = parse_key("upstream_max_attempts", &v, |s| {
                s.parse::<NonZeroU32>()
                    .map_err(|_| "a whole number of at least 1".to_owned())
            })?;
        }

        if let Some(bots) = &bots {
            validate_bots(bots)?;
        }
        Ok(ChatSettings {
            database,
            broker,
            engine,
            providers,
            bots,
        })
    }
}

/// Bot ids are unique, URL-safe and non-empty, so the API and the page can name them.
fn validate_bots(bots: &[BotConfig]) -> anyhow::Result<()> {
    if bots.is_empty() {
        bail!(
            "invalid `bots` in the TOML file: the list is empty (remove it to get the default bots)"
        );
    }
    let mut seen = std::collections::HashSet::new();
    for bot in bots {
        let ok = !bot.id.is_empty()
            && bot.id.len() <= 64
            && bot
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            bail!(
                "invalid bot id {:?} in `bots`: 1 to 64 ASCII letters, digits, - _ .",
                bot.id
            );
        }
        if !seen.insert(bot.id.as_str()) {
            bail!("duplicate bot id {:?} in `bots`", bot.id);
        }
        if bot.model.trim().is_empty() {
            bail!("bot {:?} in `bots` has an empty `model`", bot.id);
        }
        if let Some(t) = bot.temperature
            && !(0.0..=2.0).contains(&t)
        {
            bail!(
                "bot {:?} in `bots`: `temperature` must be between 0 and 2",
                bot.id
            );
        }
    }
    Ok(())
}
