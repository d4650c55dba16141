//! `rill token`: mint a development HS256 token from the configured secret and print it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use crate::config::{FileConfig, JwtArgs, duration};

/// Flags of `rill token`. The secret comes from the same places as for `rill serve`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The TOML configuration file of `rill serve` (its `jwt_secret` is used).
    #[arg(long, env = "RILL_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(flatten)]
    jwt: JwtArgs,

    /// The user (`sub` claim).
    #[arg(long, value_name = "USER")]
    sub: String,

    /// A topic pattern the token may publish to (`name`, `prefix/*` or `*`); repeatable.
    #[arg(long, value_name = "PATTERN")]
    publish: Vec<String>,

    /// A topic pattern the token may subscribe to (`name`, `prefix/*` or `*`); repeatable.
    #[arg(long, value_name = "PATTERN")]
    subscribe: Vec<String>,

    /// How long the token is valid, e.g. `1h`, `30m`.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    ttl: String,
}

pub(crate) fn main(args: TokenArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let Some(secret) = args.jwt.secret(file.jwt_secret) else {
        bail!(
            "`rill token` needs the HS256 secret: set --jwt-secret, RILL_JWT_SECRET or `jwt_secret` in the --config file"
        );
    };
    let ttl = duration(&args.ttl)
        .map_err(|why| anyhow::anyhow!("invalid value {:?} for --ttl: {why}", args.ttl))?;
    if args.sub.is_empty() {
        bail!("--sub must not be empty");
    }
    let mut claims = rill_server::Claims::new(args.sub, ttl);
    claims.publish = args.publish;
    claims.subscribe = args.subscribe;
    let token = rill_server::mint_hs256(secret.expose().as_bytes(), &claims)
        .context("cannot mint the token")?;
    println!("{token}");
    Ok(())
}
