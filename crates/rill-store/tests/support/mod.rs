//! Test databases: a fresh SQLite file, or a fresh PostgreSQL schema, per test.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use rill_core::Store;
use rill_core::chat::{MessageStatus, NewMessage, Role};
use sqlx::Connection;

/// A store under test and the URL it was opened with, to open it again (restart, migrations).
pub(crate) struct Db {
    pub(crate) url: String,
    pub(crate) store: Arc<dyn Store>,
}

impl Db {
    /// Another store on the same database, as a restarted process would open it.
    pub(crate) async fn reopen(&self) -> Arc<dyn Store> {
        match rill_store::connect(&self.url).await {
            Ok(store) => store,
            Err(e) => panic!("reopening {}: {e}", self.url),
        }
    }
}

/// Runs `test` on a new SQLite database in a temporary directory.
pub(crate) async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("temporary directory: {e}"),
    };
    let url = format!("sqlite://{}/rill.db?mode=rwc", dir.path().display());
    let store = match rill_store::connect(&url).await {
        Ok(store) => store,
        Err(e) => panic!("connecting to {url}: {e}"),
    };
    test(Db { url, store }).await;
    drop(dir);
}

/// The PostgreSQL server of the tests.
pub(crate) fn postgres_url() -> Option<String> {
    if std::env::var_os("RILL_TEST_SKIP_POSTGRES").is_some() {
        eprintln!(
            "\n!!! RILL_TEST_SKIP_POSTGRES is set: this PostgreSQL storage test is SKIPPED !!!\n"
        );
        return None;
    }
    Some(
        std::env::var("RILL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
    )
}

/// Runs `test` in a new PostgreSQL schema, dropped afterwards even when the test panics.
pub(crate) async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(base) = postgres_url() else { return };
    let schema = format!("rill_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "PostgreSQL at RILL_TEST_POSTGRES is unreachable ({e}); start it or set \
             RILL_TEST_SKIP_POSTGRES=1"
        ),
    };
    if let Err(e) = sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
    {
        panic!("creating schema {schema}: {e}");
    }
    // Every connection of the store's pool starts with this schema first on its search path,
    // so the tables (and sqlx's migration table) land there.
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    let outcome = AssertUnwindSafe(async {
        let store = match rill_store::connect(&url).await {
            Ok(store) => store,
            Err(e) => panic!("connecting to {url}: {e}"),
        };
        test(Db { url, store }).await;
    })
    .catch_unwind()
    .await;
    if let Err(e) = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
    {
        eprintln!("dropping schema {schema}: {e}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A user message, stored complete.
pub(crate) fn user(chat_id: &str, content: &str) -> NewMessage {
    NewMessage {
        chat_id: chat_id.to_owned(),
        role: Role::User,
        content: content.to_owned(),
        status: MessageStatus::Complete,
        bot_id: None,
        model: None,
        client_key: None,
        lease: None,
    }
}

/// An assistant placeholder, `streaming`.
pub(crate) fn streaming(chat_id: &str) -> NewMessage {
    NewMessage {
        chat_id: chat_id.to_owned(),
        role: Role::Assistant,
        content: String::new(),
        status: MessageStatus::Streaming,
        bot_id: Some("demo".to_owned()),
        model: Some("demo-1".to_owned()),
        client_key: None,
        lease: None,
    }
}

/// Unwraps a store result, naming the step that failed.
pub(crate) trait Step<T> {
    fn step(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}
