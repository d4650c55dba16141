//! The schema's version against this build's migrations: refuse a newer schema, apply or verify.
//!
//! sqlx records every applied migration in `_sqlx_migrations`. A version there that this build
//! does not have means a newer rill migrated the database (a deploy that migrated first, then
//! rolled back the binary, or an old instance restarted after the migration): its queries may
//! no longer fit the tables, so start-up stops with a message that says so, before anything is
//! written. sqlx would also refuse (`VersionMissing`), but only while applying, and in words
//! that do not say what to do.

use sqlx::migrate::Migrator;
use sqlx::{Database, Pool};

use rill_core::StoreError;

/// What start-up does with the schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Migrations {
    /// Apply the migrations this build has and the database lacks (the default: one instance,
    /// or several that may migrate at start-up, serialised by a lock).
    #[default]
    Apply,
    /// Change nothing; refuse to start unless the schema is exactly this build's (for deploy
    /// pipelines that run `rill migrate` before rolling out).
    Verify,
}

/// One migration, as `rill migrate` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationInfo {
    pub version: i64,
    pub description: String,
}

/// What [`crate::migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The migrations applied by this call, oldest first (empty: the schema was up to date).
    pub applied: Vec<MigrationInfo>,
    /// The newest migration of the schema now.
    pub version: Option<i64>,
}

/// The versions recorded in `_sqlx_migrations` (none when the table does not exist yet).
async fn applied<DB>(pool: &Pool<DB>) -> Result<Vec<MigrationInfo>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    (i64, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let mut conn = pool.acquire().await?;
    let rows: Result<Vec<(i64, String)>, sqlx::Error> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await;
    match rows {
        Ok(rows) => Ok(rows
            .into_iter()
            .map(|(version, description)| MigrationInfo {
                version,
                description,
            })
            .collect()),
        Err(sqlx::Error::Database(db))
            // PostgreSQL's undefined_table; SQLite has no code for it, only the message.
            if db.code().as_deref() == Some("42P01") || db.message().contains("no such table") =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// Checks the schema against `migrator` and applies or verifies as `mode` says. Returns what
/// was applied. `target` names the database in messages (without its password).
pub(crate) async fn bring_up_to_date<DB>(
    pool: &Pool<DB>,
    migrator: &Migrator,
    mode: Migrations,
    target: &str,
) -> Result<Migrated, StoreError>
where
    DB: Database + sqlx::migrate::MigrateDatabase,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    (i64, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Backend(format!("{what} of database {target}: {e}"))
    };
    let known: Vec<MigrationInfo> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| MigrationInfo {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect();
    let before = applied(pool)
        .await
        .map_err(|e| failed("reading the schema version", &e))?;
    if let Some(unknown) = before
        .iter()
        .find(|a| !known.iter().any(|k| k.version == a.version))
    {
        let ours = known.last().map_or(0, |k| k.version);
        return Err(StoreError::Backend(format!(
            "the schema of database {target} is newer than this rill: it has migration {} \
             ({}), which this build does not know (its newest is {ours}). A newer rill \
             migrated it; run that version (or newer), or restore the database from before \
             that migration",
            unknown.version, unknown.description
        )));
    }
    let pending: Vec<&MigrationInfo> = known
        .iter()
        .filter(|k| !before.iter().any(|a| a.version == k.version))
        .collect();
    match mode {
        Migrations::Verify if !pending.is_empty() => {
            let list: Vec<String> = pending
                .iter()
                .map(|p| format!("{} ({})", p.version, p.description))
                .collect();
            Err(StoreError::Backend(format!(
                "the schema of database {target} is older than this rill: {} migration(s) to \
                 apply: {}. Run `rill migrate` first (migrations are set to verify only)",
                pending.len(),
                list.join(", ")
            )))
        }
        Migrations::Verify => Ok(Migrated {
            applied: Vec::new(),
            version: before.last().map(|a| a.version),
        }),
        Migrations::Apply => {
            migrator
                .run(pool)
                .await
                .map_err(|e| failed("migrating", &e))?;
            let after = applied(pool)
                .await
                .map_err(|e| failed("reading the schema version", &e))?;
            let applied = after
                .iter()
                .filter(|a| !before.iter().any(|b| b.version == a.version))
                .cloned()
                .collect();
            Ok(Migrated {
                applied,
                version: after.last().map(|a| a.version),
            })
        }
    }
}
