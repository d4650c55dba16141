//! `connect_with` and `migrate`: PostgreSQL over TLS, certificate errors that say what to check,
//! pool settings, and the schema version (a newer schema refused, verify-only start-up).

// Shared with the storage suite; this file uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use rill_core::StoreError;
use rill_store::{Migrations, StoreOptions};
use sqlx::Connection;
use support::{Step, postgres_url};

/// The certificate of the local test server (Debian's self-signed "snakeoil", for `localhost`).
const SERVER_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

fn error(result: Result<impl Sized, StoreError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(StoreError::Backend(message)) => message,
        Err(other) => panic!("expected a backend error, got {other:?}"),
    }
}

/// A fresh schema on the test server; the URL puts it first on the search path and names the
/// connections (`application_name`) so the test can find them in `pg_stat_activity`.
struct Schema {
    base: String,
    name: String,
    admin: sqlx::PgConnection,
}

impl Schema {
    async fn new() -> Option<Schema> {
        let base = postgres_url()?;
        let name = format!("rill_opt_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .step("PostgreSQL at RILL_TEST_POSTGRES (set RILL_TEST_SKIP_POSTGRES=1 to skip)");
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .step("create schema");
        Some(Schema { base, name, admin })
    }

    /// The URL with `extra` query parameters (`k=v&...`) and this schema.
    fn url(&self, extra: &str) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}{extra}&application_name={}&options=-c%20search_path%3D{}",
            self.base, self.name, self.name
        )
    }

    /// The same URL with another host (the server is reachable as both).
    fn url_on(&self, host: &str, extra: &str) -> String {
        let mut u = url::Url::parse(&self.url(extra)).step("url");
        u.set_host(Some(host)).step("host");
        u.to_string()
    }

    /// `(ssl, count)` of this schema's open connections: whether all use TLS, and how many.
    async fn connections(&mut self) -> (bool, i64) {
        sqlx::query_as(
            "SELECT coalesce(bool_and(s.ssl), false), count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.application_name = $1",
        )
        .bind(&self.name)
        .fetch_one(&mut self.admin)
        .await
        .step("pg_stat_ssl")
    }

    async fn drop(mut self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&mut self.admin)
            .await
            .step("drop schema");
    }
}

#[tokio::test]
async fn sslmode_require_encrypts_every_pooled_connection() {
    let Some(mut schema) = Schema::new().await else {
        return;
    };
    let store = rill_store::connect(&schema.url("sslmode=require"))
        .await
        .step("connect with sslmode=require");
    // Work on several connections at once, so the pool opens more than one.
    let chats = futures::future::join_all((0..6).map(|_| store.create_chat("tls", "demo"))).await;
    for chat in chats {
        chat.step("create a chat over TLS");
    }
    let (ssl, count) = schema.connections().await;
    assert!(count >= 1, "the store's connections are open");
    assert!(ssl, "every connection of the store uses TLS");
    drop(store);
    schema.drop().await;
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_file_connects_by_its_name() {
    let Some(mut schema) = Schema::new().await else {
        return;
    };
    let options = StoreOptions {
        ca_file: Some(SERVER_CERT.into()),
        ..StoreOptions::default()
    };
    // No sslmode in the URL: a CA file means verify-full.
    let store =
        rill_store::connect_with(&schema.url_on("localhost", "connect_timeout=5"), &options)
            .await
            .step("verify-full against the CA file, host localhost");
    store.ping().await.step("ping");
    let (ssl, _) = schema.connections().await;
    assert!(ssl, "verified TLS");
    drop(store);
    schema.drop().await;
}

#[tokio::test]
async fn certificate_problems_fail_naming_the_cause() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let dir = tempfile::tempdir().step("tempdir");
    let with_ca = |ca: &std::path::Path| StoreOptions {
        ca_file: Some(ca.to_owned()),
        ..StoreOptions::default()
    };
    // (A CA that did not sign the server's certificate cannot be shown failing here: sqlx adds
    // the CA file to the system's roots, and this machine's roots include the test server's
    // self-signed certificate. docs/configuration.md says so.)
    // The right CA, but a host name the certificate does not name (it names `localhost`).
    let message = error(
        rill_store::connect_with(
            &schema.url_on("127.0.0.1", "a=1"),
            &with_ca(std::path::Path::new(SERVER_CERT)),
        )
        .await,
    );
    assert!(message.contains("TLS"), "{message}");
    assert!(message.contains("host name"), "{message}");
    // A CA file that is missing, or is not a certificate.
    let message = error(
        rill_store::connect_with(&schema.url("a=1"), &with_ca(&dir.path().join("nope.pem"))).await,
    );
    assert!(message.contains("cannot read the CA file"), "{message}");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").step("write");
    let message = error(rill_store::connect_with(&schema.url("a=1"), &with_ca(&not_pem)).await);
    assert!(message.contains("no PEM certificate"), "{message}");
    schema.drop().await;
}

#[tokio::test]
async fn pool_size_and_statement_timeout_apply() {
    let Some(mut schema) = Schema::new().await else {
        return;
    };
    let options = StoreOptions {
        max_connections: 2,
        statement_timeout: Some(Duration::from_millis(300)),
        ..StoreOptions::default()
    };
    let store = rill_store::connect_with(&schema.url("a=1"), &options)
        .await
        .step("connect");
    let chats = futures::future::join_all((0..8).map(|_| store.create_chat("pool", "demo"))).await;
    let mut chats = chats.into_iter().map(|c| c.step("create a chat"));
    let Some(chat) = chats.next() else {
        panic!("eight chats")
    };
    let (_, count) = schema.connections().await;
    assert!((1..=2).contains(&count), "at most max_connections: {count}");

    // A statement stuck behind a lock is cancelled by the server after the statement timeout.
    let mut locker = sqlx::PgConnection::connect(&schema.url("a=1"))
        .await
        .step("locker");
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .step("begin");
    sqlx::query("LOCK TABLE chats IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .step("lock");
    let stuck = tokio::time::timeout(Duration::from_secs(20), store.get_chat("pool", &chat.id))
        .await
        .step("the server ends the statement, not this test's bound");
    let message = error(stuck);
    assert!(message.contains("statement timeout"), "{message}");
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .step("rollback");
    drop(locker);
    drop(store);
    schema.drop().await;
}

#[tokio::test]
async fn bad_pool_settings_are_refused() {
    for (options, what) in [
        (
            StoreOptions {
                max_connections: 0,
                ..StoreOptions::default()
            },
            "max_connections",
        ),
        (
            StoreOptions {
                acquire_timeout: Duration::ZERO,
                ..StoreOptions::default()
            },
            "acquire_timeout",
        ),
    ] {
        let message = error(rill_store::connect_with("sqlite::memory:", &options).await);
        assert!(message.contains(what), "{message}");
    }
}

/// Records a migration this build does not have, as a newer rill would have.
const FUTURE: &str = "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                      execution_time) VALUES (99990101000000, 'from the future', true, $1, 0)";

#[tokio::test]
async fn a_newer_schema_is_refused_on_sqlite() {
    let dir = tempfile::tempdir().step("tempdir");
    let url = format!("sqlite://{}/rill.db?mode=rwc", dir.path().display());
    let migrated = rill_store::migrate(&url, &StoreOptions::default())
        .await
        .step("migrate");
    assert!(!migrated.applied.is_empty(), "a fresh database is migrated");
    assert_eq!(migrated.version, migrated.applied.last().map(|m| m.version));
    let again = rill_store::migrate(&url, &StoreOptions::default())
        .await
        .step("migrate again");
    assert!(again.applied.is_empty(), "nothing left to apply");

    let mut conn = sqlx::SqliteConnection::connect(&url).await.step("sqlite");
    sqlx::query(FUTURE)
        .bind(vec![0u8])
        .execute(&mut conn)
        .await
        .step("a future migration");
    drop(conn);
    let message = error(rill_store::connect(&url).await);
    assert!(message.contains("newer than this rill"), "{message}");
    assert!(message.contains("99990101000000"), "{message}");
    assert!(message.contains("from the future"), "{message}");
    let message = error(rill_store::migrate(&url, &StoreOptions::default()).await);
    assert!(message.contains("newer than this rill"), "{message}");
}

#[tokio::test]
async fn verify_only_start_up_needs_rill_migrate_first_on_postgres() {
    let Some(mut schema) = Schema::new().await else {
        return;
    };
    let url = schema.url("a=1");
    let verify = StoreOptions {
        migrations: Migrations::Verify,
        ..StoreOptions::default()
    };
    let message = error(rill_store::connect_with(&url, &verify).await);
    assert!(message.contains("older than this rill"), "{message}");
    assert!(message.contains("rill migrate"), "{message}");

    let migrated = rill_store::migrate(&url, &StoreOptions::default())
        .await
        .step("migrate");
    assert!(!migrated.applied.is_empty());
    let store = rill_store::connect_with(&url, &verify)
        .await
        .step("verify after migrate");
    store.create_chat("v", "demo").await.step("works");
    drop(store);

    sqlx::query(&format!("SET search_path TO {}", schema.name))
        .execute(&mut schema.admin)
        .await
        .step("search_path");
    sqlx::query(FUTURE)
        .bind(vec![0u8])
        .execute(&mut schema.admin)
        .await
        .step("a future migration");
    for options in [&verify, &StoreOptions::default()] {
        let message = error(rill_store::connect_with(&url, options).await);
        assert!(message.contains("newer than this rill"), "{message}");
    }
    schema.drop().await;
}
