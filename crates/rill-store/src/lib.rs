//! Chat and message storage on SQLite and PostgreSQL (sqlx), with embedded migrations.
//!
//! [`connect`] (or [`connect_with`], with TLS, pool and migration settings) picks the backend by
//! the URL's scheme, checks the schema's version and runs the migrations, and returns the
//! [`Store`] the rest of rill programs against; [`migrate`] only migrates (`rill migrate`). Both backends run the same SQL (`sql.rs`) and
//! the same logic (`backend.rs`); only the migrations differ. See `docs/storage.md` for the
//! schema and the guarantees.
//!
//! **Invariant:** the database enforces "one `streaming` message per chat" (a partial unique
//! index), so it holds across rill instances, and a message leaves `streaming` exactly once
//! (every write to it is conditional on `status = 'streaming'`).

mod backend;
mod rows;
mod schema;
mod sql;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rill_core::{Store, StoreError};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use backend::MAX_PAGE_LIMIT;
pub use schema::{Migrated, MigrationInfo, Migrations};

/// The default database: a `rill.db` file in the working directory, created if missing.
pub const DEFAULT_URL: &str = "sqlite://rill.db?mode=rwc";

/// How long [`connect`] waits for the database before giving up: start-up fails fast and says
/// why rather than hanging on an unreachable host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a SQLite writer waits for another writer's lock before failing. Writes are short
/// (one row or two), so this is only reached when something is badly wrong.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite pool size: WAL lets readers run beside the one writer; more connections than this
/// only queue on the write lock.
const SQLITE_MAX_CONNECTIONS: u32 = 8;

/// The size the write-ahead log is cut back to when SQLite restarts it (`journal_size_limit`),
/// and past which a connection returning to the pool truncates it (see [`WalGuard`]). Twice the
/// automatic checkpoint's 1000 pages (4 MiB at the default page size), so a normal checkpoint
/// cycle never reaches it.
const SQLITE_WAL_LIMIT: u64 = 8 * 1024 * 1024;

/// How long to wait before truncating again after a checkpoint that could not finish (a reader
/// held an old snapshot past the busy timeout), so it is not retried on every release.
const SQLITE_WAL_RETRY: Duration = Duration::from_secs(1);

/// PostgreSQL pool size per instance: enough for checkpoints of many generations and history
/// reads at once, small enough that several instances stay under the server's default
/// `max_connections` (100).
pub const PG_MAX_CONNECTIONS: u32 = 16;

/// How a store is opened, beyond its URL. [`StoreOptions::default`] is what [`connect`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// PEM file of the certificate authorities that sign the PostgreSQL server's certificate
    /// (libpq's `sslrootcert`). With it and no `sslmode` in the URL, the connection is
    /// `verify-full` (encrypted, certificate and host name checked). Without it, `verify-ca` and
    /// `verify-full` check against the system's roots. SQLite ignores it.
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL pool size (SQLite keeps its own: 8 for a file, 1 in memory).
    pub max_connections: u32,
    /// How long a query waits for a free pooled connection before it fails (and the first
    /// connection at start-up, for PostgreSQL).
    pub acquire_timeout: Duration,
    /// Pooled connections idle this long are closed; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// PostgreSQL's `statement_timeout` for every connection: a statement running longer is
    /// cancelled by the server. `None` leaves the server's setting.
    pub statement_timeout: Option<Duration>,
    /// Apply the migrations at start-up, or only verify the schema.
    pub migrations: Migrations,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            ca_file: None,
            max_connections: PG_MAX_CONNECTIONS,
            acquire_timeout: CONNECT_TIMEOUT,
            // sqlx's own default.
            idle_timeout: Some(Duration::from_secs(600)),
            // Far above any query rill makes (one row, or one page of at most 500), so it only
            // ends what is stuck (a lock held by a forgotten session) instead of holding a
            // pooled connection forever.
            statement_timeout: Some(Duration::from_secs(30)),
            migrations: Migrations::Apply,
        }
    }
}

impl StoreOptions {
    fn validate(&self) -> Result<(), StoreError> {
        let bad = |m: &str| Err(StoreError::Backend(format!("invalid storage setting: {m}")));
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.acquire_timeout.is_zero() {
            return bad("acquire_timeout must be positive");
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return bad("idle_timeout must be positive (or none)");
        }
        if self.statement_timeout.is_some_and(|d| d.as_millis() == 0) {
            return bad("statement_timeout must be at least 1ms (or none)");
        }
        Ok(())
    }
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static PG_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Opens the store at `url` and brings its schema up to date, with the default
/// [`StoreOptions`].
///
/// `sqlite://path?mode=rwc` (or `sqlite::memory:`) selects SQLite, `postgres://` or
/// `postgresql://` PostgreSQL. Fails within about [`CONNECT_TIMEOUT`] with a message naming the
/// database (never its password) when the URL is invalid, the scheme unknown, the database
/// unreachable or a migration fails.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    connect_with(url, &StoreOptions::default()).await
}

/// Opens the store at `url` with `options`: [`connect`] with TLS, pool and migration settings.
///
/// Also fails, before writing anything, when the schema is newer than this build (a migration
/// it does not know was applied), and with [`Migrations::Verify`] when it is older.
pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    let (pool, migrated) = open(url, options).await?;
    let target = redact(url);
    for m in &migrated.applied {
        tracing::info!(database = %target, version = m.version, description = %m.description,
            "Applied a migration.");
    }
    Ok(match pool {
        AnyPool::Sqlite(pool) => {
            tracing::info!(database = %target, "storage ready (SQLite)");
            Arc::new(backend::SqliteStore::new(pool))
        }
        AnyPool::Postgres(pool) => {
            tracing::info!(database = %target, "storage ready (PostgreSQL)");
            Arc::new(backend::PgStore::new(pool))
        }
    })
}

/// Applies the migrations the database lacks and returns what was done, then closes the
/// connections (`rill migrate`, for deploy pipelines that migrate before rolling out).
/// `options.migrations` is ignored: this always applies. Refuses a schema newer than this
/// build, like [`connect_with`].
pub async fn migrate(url: &str, options: &StoreOptions) -> Result<Migrated, StoreError> {
    let options = StoreOptions {
        migrations: Migrations::Apply,
        ..options.clone()
    };
    let (pool, migrated) = open(url, &options).await?;
    match pool {
        AnyPool::Sqlite(pool) => pool.close().await,
        AnyPool::Postgres(pool) => pool.close().await,
    }
    Ok(migrated)
}

enum AnyPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Connects by scheme and brings the schema up to date (or verifies it).
async fn open(url: &str, options: &StoreOptions) -> Result<(AnyPool, Migrated), StoreError> {
    options.validate()?;
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    let target = redact(url);
    // The pool's acquire timeout bounds the first connection already; this outer bound also
    // covers migrations waiting on a lock held by another instance.
    let bound = options.acquire_timeout.max(CONNECT_TIMEOUT) * 2;
    let connecting = async {
        match scheme {
            "sqlite" => {
                let pool = connect_sqlite(url, &target, options).await?;
                let m = schema::bring_up_to_date(
                    &pool,
                    &SQLITE_MIGRATIONS,
                    options.migrations,
                    &target,
                )
                .await?;
                Ok((AnyPool::Sqlite(pool), m))
            }
            "postgres" | "postgresql" => {
                let pool = connect_postgres(url, &target, options).await?;
                let m =
                    schema::bring_up_to_date(&pool, &PG_MIGRATIONS, options.migrations, &target)
                        .await?;
                Ok((AnyPool::Postgres(pool), m))
            }
            _ => Err(StoreError::Backend(format!(
                "unsupported database URL `{target}`: use sqlite://FILE?mode=rwc or \
                 postgres://USER@HOST/DB"
            ))),
        }
    };
    tokio::time::timeout(bound, connecting).await.map_err(|_| {
        StoreError::Backend(format!(
            "database {target} did not answer within {}s",
            bound.as_secs()
        ))
    })?
}

async fn connect_sqlite(
    url: &str,
    target: &str,
    settings: &StoreOptions,
) -> Result<sqlx::SqlitePool, StoreError> {
    let mut options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Backend(format!("invalid SQLite URL `{target}`: {e}")))?
        .journal_mode(SqliteJournalMode::Wal)
        // In WAL mode NORMAL never corrupts the file; a power cut (not a process crash) may
        // lose the last commits. Checkpoints every few hundred ms make FULL's fsync per write
        // too costly for that.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        // When SQLite restarts the log after a checkpoint, it cuts the file back to this size
        // (otherwise the file keeps its largest size forever).
        .pragma("journal_size_limit", SQLITE_WAL_LIMIT.to_string())
        .pragma("wal_autocheckpoint", "1000");
    if !url.contains("mode=") {
        // `sqlite://rill.db` means "this file", created on first start like the default.
        options = options.create_if_missing(true);
    }
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let pool = if in_memory {
        // An in-memory database lives as long as one connection to it: keep exactly one, forever.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        let guard = Arc::new(WalGuard::new(options.get_filename()));
        SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .idle_timeout(settings.idle_timeout)
            .after_release(move |conn, _| {
                let guard = guard.clone();
                Box::pin(async move {
                    guard.check(conn).await;
                    Ok(true)
                })
            })
    }
    // A SQLite connection is a handle to a local file (or to memory): it cannot be lost the way
    // a network connection can, so the ping sqlx sends before handing each one out is only a
    // round trip through the connection's worker thread, before every statement.
    .test_before_acquire(false)
    .acquire_timeout(settings.acquire_timeout)
    .connect_with(options)
    .await
    .map_err(|e| StoreError::Backend(format!("cannot open SQLite database {target}: {e}")))?;
    Ok(pool)
}

/// Keeps SQLite's write-ahead log bounded.
///
/// SQLite checkpoints the log after every 1000 pages written (`wal_autocheckpoint`), but such a
/// checkpoint never waits for readers, and the log can only restart from its beginning once no
/// reader uses it. With readers always active (streams, history pages, eight pooled
/// connections) that moment never comes, and the log grows without end: 137 MB next to a 2 MB
/// database was seen. So whenever a connection returns to the pool and the `-wal` file is past
/// [`SQLITE_WAL_LIMIT`], it runs `PRAGMA wal_checkpoint(TRUNCATE)`: that one waits (up to the
/// busy timeout) for the readers of old snapshots to finish, holding new writers back
/// meanwhile, copies every page into the database and truncates the log to zero bytes. Readers
/// that start meanwhile read the database file, so a steady stream of them cannot starve it.
/// Runs in the pool's release task, never in a request's path; one at a time.
#[derive(Debug)]
struct WalGuard {
    wal: std::path::PathBuf,
    /// Set while one connection truncates, so the others do not queue behind it.
    busy: std::sync::atomic::AtomicBool,
    /// No truncation before this (after one that could not finish). A std `Mutex`: held for a
    /// comparison, never across an await.
    not_before: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl WalGuard {
    fn new(database: &std::path::Path) -> Self {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        WalGuard {
            wal: wal.into(),
            busy: std::sync::atomic::AtomicBool::new(false),
            not_before: std::sync::Mutex::new(None),
        }
    }

    async fn check(&self, conn: &mut sqlx::SqliteConnection) {
        use std::sync::atomic::Ordering;
        // One `stat` per released connection: far cheaper than any query.
        let size = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        if size <= SQLITE_WAL_LIMIT {
            return;
        }
        let now = tokio::time::Instant::now();
        if lock(&self.not_before).is_some_and(|t| now < t) || self.busy.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let result: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await;
        let backoff = match result {
            // A writer's automatic checkpoint held the checkpoint lock (SQLite does not wait for
            // it): the next release tries again at once.
            Ok((1, -1, _)) => false,
            Ok((0, log, checkpointed)) => {
                tracing::debug!(
                    log,
                    checkpointed,
                    wal_bytes = size,
                    "Truncated the SQLite write-ahead log."
                );
                false
            }
            Ok((_, log, checkpointed)) => {
                tracing::debug!(
                    log,
                    checkpointed,
                    "A reader outlasted the busy timeout; the write-ahead log was not truncated."
                );
                true
            }
            Err(error) => {
                tracing::warn!(%error, "Checkpointing the SQLite write-ahead log failed.");
                true
            }
        };
        if backoff {
            *lock(&self.not_before) = Some(tokio::time::Instant::now() + SQLITE_WAL_RETRY);
        }
        self.busy.store(false, Ordering::Release);
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn connect_postgres(
    url: &str,
    target: &str,
    settings: &StoreOptions,
) -> Result<sqlx::PgPool, StoreError> {
    // sqlx's parse errors can quote the URL; ours names it without the password.
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::Backend(format!("invalid PostgreSQL URL `{target}`")))?;
    if let Some(ca) = &settings.ca_file {
        // Read here, so a missing or wrong file is reported as such at start-up, not as a
        // failed handshake on the first connection.
        let pem = std::fs::read(ca).map_err(|e| {
            StoreError::Backend(format!("cannot read the CA file {}: {e}", ca.display()))
        })?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(StoreError::Backend(format!(
                "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                ca.display()
            )));
        }
        options = options.ssl_root_cert_from_pem(pem);
        if !has_query_key(url, "sslmode") {
            // A CA file says "check the server against it": do, host name included.
            options = options.ssl_mode(sqlx::postgres::PgSslMode::VerifyFull);
        }
    }
    if let Some(t) = settings.statement_timeout {
        // A start-up parameter of every connection (appended to any `options` of the URL).
        options = options.options([("statement_timeout", format!("{}ms", t.as_millis()))]);
    }
    let mode = options.get_ssl_mode();
    let unreachable = |e: &sqlx::Error| {
        StoreError::Backend(format!(
            "cannot connect to PostgreSQL {target}: {}",
            describe_pg_error(e, mode, settings.ca_file.is_some())
        ))
    };
    // One plain connection first: the pool retries a refused connection until its timeout
    // (made for a server still starting) and then reports only "timed out"; start-up should
    // fail at once and say why (refused, no such database, bad password, bad certificate).
    let probe = tokio::time::timeout(
        settings.acquire_timeout,
        PgConnection::connect_with(&options),
    )
    .await
    .map_err(|_| {
        StoreError::Backend(format!(
            "cannot connect to PostgreSQL {target}: no answer within {:?}",
            settings.acquire_timeout
        ))
    })?
    .map_err(|e| unreachable(&e))?;
    // Best effort: the probe has done its job either way.
    let _ = probe.close().await;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(settings.idle_timeout)
        .connect_with(options)
        .await
        .map_err(|e| unreachable(&e))
}

/// Whether the URL's query sets `key` (e.g. `sslmode`).
fn has_query_key(url: &str, key: &str) -> bool {
    url.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| kv.split('=').next().is_some_and(|k| k == key))
    })
}

/// A connection error in words that point at the fix; TLS failures say which setting to check.
fn describe_pg_error(e: &sqlx::Error, mode: sqlx::postgres::PgSslMode, ca_file: bool) -> String {
    // sqlx reports a handshake refused by rustls (unknown issuer, wrong name, expired) as an
    // I/O error whose text is rustls's: recognise it by that text.
    let tls = match e {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => {
            let text = io.to_string().to_ascii_lowercase();
            text.contains("certificate") || text.contains("tls")
        }
        _ => false,
    };
    if !tls {
        return e.to_string();
    }
    let hint = if ca_file {
        "check that the CA file signed the server's certificate and that the host name in the \
         URL is one the certificate names"
    } else {
        "check the server's certificate against the system's roots (or give the CA that signed \
         it as a CA file) and that the host name in the URL is one the certificate names"
    };
    format!("TLS (sslmode {mode:?}) failed: {e}; {hint}")
}

/// The URL without password or query (which may carry `password=`), for messages and logs.
fn redact(url: &str) -> String {
    // SQLite URLs (`sqlite://rill.db`, `sqlite::memory:`) carry no credentials, only a path.
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            // Both only fail for URLs that cannot have credentials, which is fine to ignore.
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        _ => "(unparsable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_password_and_query() {
        assert_eq!(
            redact("postgres://rill:s3cret@db.example:5432/rill?password=x&sslmode=require"),
            "postgres://rill@db.example:5432/rill"
        );
        assert!(!redact("postgresql://u:p@h/d").contains(":p@"));
        assert_eq!(
            redact("sqlite://rill.db?mode=rwc"),
            "sqlite://rill.db?mode=rwc"
        );
        assert_eq!(redact("not a url at all"), "(unparsable URL)");
    }
}
