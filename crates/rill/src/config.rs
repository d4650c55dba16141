//! Configuration of `rill serve`: flags, `RILL_*` environment variables and a TOML file.
//!
//! Precedence, highest first: command-line flag, environment variable, TOML file (`--config`),
//! built-in default. Everything is validated into typed values before any port is bound, and a
//! bad value names the key it came from. Every key is documented in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// Flags of `rill serve`. Each one also reads `RILL_<NAME>` and the TOML key of the same name.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A TOML configuration file. Its keys are the flag names with `_` for `-`.
    #[arg(long, env = "RILL_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "RILL_LISTEN", value_name = "ADDR")]
    pub(crate) listen: Option<String>,

    /// How long graceful shutdown waits for open requests, e.g. `10s` [default: 10s].
    #[arg(long, env = "RILL_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub(crate) shutdown_grace: Option<String>,

    /// Log filter, in `RUST_LOG` syntax [default: info].
    #[arg(long, env = "RILL_LOG", value_name = "FILTER")]
    pub(crate) log: Option<String>,
}

/// The TOML file. Unknown keys are an error, so a typo never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Option<String>,
    pub(crate) shutdown_grace: Option<String>,
    pub(crate) log: Option<String>,
}

impl FileConfig {
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
    }
}

/// The resolved settings of `rill serve`.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) server: rill_server::Config,
    pub(crate) log: String,
}

/// Picks the flag/env value, else the file's, else `None`, remembering which key it came from.
fn pick(flag: Option<String>, file: Option<String>) -> Option<String> {
    flag.or(file)
}

/// Parses `value` for `key`, with an error that names the key and where it can be set.
fn parse_key<T>(key: &str, value: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> anyhow::Result<T> {
    parse(value).map_err(|why| {
        anyhow::anyhow!(
            "invalid value {value:?} for `{key}` (flag --{flag}, env RILL_{env}, or key `{key}` in the TOML file): {why}",
            flag = key.replace('_', "-"),
            env = key.to_uppercase(),
        )
    })
}

pub(crate) fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{e} (expected e.g. 15s, 500ms, 2m)"))
}

impl ServeArgs {
    pub(crate) fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let defaults = rill_server::Config::default();

        let listen = match pick(self.listen, file.listen) {
            Some(v) => parse_key("listen", &v, |s| s.parse::<SocketAddr>().map_err(|e| e.to_string()))?,
            None => defaults.listen,
        };
        let shutdown_grace = match pick(self.shutdown_grace, file.shutdown_grace) {
            Some(v) => parse_key("shutdown_grace", &v, duration)?,
            None => defaults.shutdown_grace,
        };
        let log = pick(self.log, file.log).unwrap_or_else(|| "info".to_owned());
        if log.trim().is_empty() {
            bail!("invalid value for `log`: it is empty");
        }

        Ok(Settings { server: rill_server::Config { listen, shutdown_grace }, log })
    }
}
