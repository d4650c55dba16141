//! `rill migrate`: apply the database migrations and exit, for deploy pipelines that migrate
//! before rolling out (then `rill serve --database-migrations verify`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::{FileConfig, StoreArgs, pick};

/// Flags of `rill migrate`: the database keys of `rill serve`, from the same places.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The TOML configuration file of `rill serve` (its `database` and `database_*` keys are
    /// used, the others ignored).
    #[arg(long, env = "RILL_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// The database: `sqlite://PATH` or `postgres://...` [default: sqlite://rill.db?mode=rwc].
    #[arg(
        long,
        env = "RILL_DATABASE",
        value_name = "URL",
        hide_env_values = true
    )]
    database: Option<String>,

    #[command(flatten)]
    store: StoreArgs,
}

pub(crate) fn main(args: MigrateArgs) -> anyhow::Result<()> {
    let mut file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let url = pick(args.database, file.database.take())
        .unwrap_or_else(|| rill_store::DEFAULT_URL.to_owned());
    let options = args.store.resolve(StoreArgs::from_file(&mut file))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let migrated = runtime
        .block_on(rill_store::migrate(&url, &options))
        .context("cannot migrate the chat database (setting `database`)")?;
    if migrated.applied.is_empty() {
        println!(
            "The schema is up to date (migration {}).",
            migrated.version.unwrap_or(0)
        );
    } else {
        for m in &migrated.applied {
            println!("Applied migration {} ({}).", m.version, m.description);
        }
        println!(
            "The schema is now at migration {}.",
            migrated.version.unwrap_or(0)
        );
    }
    Ok(())
}
