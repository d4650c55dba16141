//! Chat and message storage on SQLite and PostgreSQL (sqlx), with embedded migrations.
//!
//! [`connect`] picks the backend by the URL's scheme, runs the migrations and returns the
//! [`Store`] the rest of rill programs against. Both backends run the same SQL (`sql.rs`) and
//! the same logic (`backend.rs`); only the migrations differ. See `docs/storage.md` for the
//! schema and the guarantees.
//!
//! **Invariant:** the database enforces "one `streaming` message per chat" (a partial unique
//! index), so it holds across rill instances, and a message leaves `streaming` exactly once
//! (every write to it is conditional on `status = 'streaming'`).

mod backend;
mod rows;
mod sql;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rill_core::{Store, StoreError};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use backend::MAX_PAGE_LIMIT;

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
const PG_MAX_CONNECTIONS: u32 = 16;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static PG_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Opens the store at `url` and brings its schema up to date.
///
/// `sqlite://path?mode=rwc` (or `sqlite::memory:`) selects SQLite, `postgres://` or
/// `postgresql://` PostgreSQL. Fails within about [`CONNECT_TIMEOUT`] with a message naming the
/// database (never its password) when the URL is invalid, the scheme unknown, the database
/// unreachable or a migration fails.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    let target = redact(url);
    // The pool's acquire timeout bounds the first connection already; this outer bound also
    // covers migrations waiting on a lock held by another instance.
    let connecting = async {
        match scheme {
            "sqlite" => connect_sqlite(url, &target).await,
            "postgres" | "postgresql" => connect_postgres(url, &target).await,
            _ => Err(StoreError::Backend(format!(
                "unsupported database URL `{target}`: use sqlite://FILE?mode=rwc or \
                 postgres://USER@HOST/DB"
            ))),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting)
        .await
        .map_err(|_| {
            StoreError::Backend(format!(
                "database {target} did not answer within {}s",
                (CONNECT_TIMEOUT * 2).as_secs()
            ))
        })?
}

async fn connect_sqlite(url: &str, target: &str) -> Result<Arc<dyn Store>, StoreError> {
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
            .after_release(move |conn, _| {
                let guard = guard.clone();
                Box::pin(async move {
                    guard.check(conn).await;
                    Ok(true)
                })
            })
    }
    .acquire_timeout(CONNECT_TIMEOUT)
    .connect_with(options)
    .await
    .map_err(|e| StoreError::Backend(format!("cannot open SQLite database {target}: {e}")))?;
    SQLITE_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|e| StoreError::Backend(format!("migrating SQLite database {target}: {e}")))?;
    tracing::info!(database = %target, "storage ready (SQLite)");
    Ok(Arc::new(backend::SqliteStore::new(pool)))
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

async fn connect_postgres(url: &str, target: &str) -> Result<Arc<dyn Store>, StoreError> {
    // sqlx's parse errors can quote the URL; ours names it without the password.
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::Backend(format!("invalid PostgreSQL URL `{target}`")))?;
    let unreachable = |e: &dyn std::fmt::Display| {
        StoreError::Backend(format!("cannot connect to PostgreSQL {target}: {e}"))
    };
    // One plain connection first: the pool retries a refused connection until its timeout
    // (made for a server still starting) and then reports only "timed out"; start-up should
    // fail at once and say why (refused, no such database, bad password).
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            unreachable(&format_args!(
                "no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| unreachable(&e))?;
    // Best effort: the probe has done its job either way.
    let _ = probe.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(PG_MAX_CONNECTIONS)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| unreachable(&e))?;
    PG_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|e| StoreError::Backend(format!("migrating PostgreSQL database {target}: {e}")))?;
    tracing::info!(database = %target, "storage ready (PostgreSQL)");
    Ok(Arc::new(backend::PgStore::new(pool)))
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
