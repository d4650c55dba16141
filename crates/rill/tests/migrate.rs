//! `rill migrate` and the schema check of `rill serve`, with the real binary on the test
//! PostgreSQL (a fresh schema per test) and on SQLite: migrate before rolling out, serve with
//! `--database-migrations verify`, and a schema newer than the binary refused at start-up.

use std::process::Stdio;
use std::time::Duration;

use sqlx::Connection;
use tokio::process::Command;

const RILL: &str = env!("CARGO_BIN_EXE_rill");

/// Generous bound for a command that must finish by itself.
const WITHIN: Duration = Duration::from_secs(30);

fn postgres_url() -> Option<String> {
    if std::env::var_os("RILL_TEST_SKIP_POSTGRES").is_some() {
        eprintln!("!!! RILL_TEST_SKIP_POSTGRES is set: SKIPPING a migration test !!!");
        return None;
    }
    Some(
        std::env::var("RILL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
    )
}

/// Runs `rill <args>` to its end; `(success, stdout, stderr)`.
async fn rill(args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(RILL);
    command
        .args(args)
        .env_remove("RILL_CONFIG")
        .env_remove("RILL_DATABASE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(WITHIN, command.output())
        .await
        .expect("rill ends by itself")
        .expect("run rill");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A fresh PostgreSQL schema; the URL puts it first on the search path.
struct Schema {
    name: String,
    url: String,
    admin: sqlx::PgConnection,
}

impl Schema {
    async fn new(base: &str) -> Schema {
        let name = format!("rill_mig_{:016x}", fastrand::u64(..));
        let mut admin = sqlx::PgConnection::connect(base)
            .await
            .expect("PostgreSQL at RILL_TEST_POSTGRES (set RILL_TEST_SKIP_POSTGRES=1 to skip)");
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .expect("create schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{name}");
        Schema { name, url, admin }
    }

    /// Records a migration this binary does not have, as a newer rill would.
    async fn add_future_migration(&mut self) {
        sqlx::query(&format!(
            "INSERT INTO {}._sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (99990101000000, 'from the future', true, '\\x00', 0)",
            self.name
        ))
        .execute(&mut self.admin)
        .await
        .expect("a future migration");
    }

    async fn drop(mut self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&mut self.admin)
            .await
            .expect("drop schema");
    }
}

/// `rill serve` on `database` with `extra` flags, on a free port: `Ok(child)` once ready, or
/// `Err(stderr)` when it exited first.
async fn serve(database: &str, extra: &[&str]) -> Result<tokio::process::Child, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(RILL)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", database])
        .args(extra)
        .env_remove("RILL_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rill serve");
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(Some(_)) = child.try_wait() {
            let output = child.wait_with_output().await.expect("output");
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rill serve neither became ready nor exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_first_then_serve_verify_only_on_postgres() {
    let Some(base) = postgres_url() else {
        return;
    };
    let schema = Schema::new(&base).await;

    // Verify-only start-up on an empty schema: refused, saying what to run.
    let stderr = serve(&schema.url, &["--database-migrations", "verify"])
        .await
        .expect_err("refused");
    assert!(stderr.contains("rill migrate"), "{stderr}");
    assert!(stderr.contains("`database_migrations`"), "{stderr}");

    let (ok, out, err) = rill(&["migrate", "--database", &schema.url]).await;
    assert!(ok, "{err}");
    assert!(out.contains("Applied migration"), "{out}");
    let (ok, out, err) = rill(&["migrate", "--database", &schema.url]).await;
    assert!(ok, "{err}");
    assert!(out.contains("up to date"), "{out}");

    let mut node = serve(&schema.url, &["--database-migrations", "verify"])
        .await
        .expect("serves once migrated");
    node.start_kill().expect("stop");
    let _ = node.wait().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused_on_postgres() {
    let Some(base) = postgres_url() else {
        return;
    };
    let mut schema = Schema::new(&base).await;
    let (ok, _, err) = rill(&["migrate", "--database", &schema.url]).await;
    assert!(ok, "{err}");
    schema.add_future_migration().await;

    for extra in [&[][..], &["--database-migrations", "verify"][..]] {
        let stderr = serve(&schema.url, extra).await.expect_err("refused");
        assert!(stderr.contains("newer than this rill"), "{stderr}");
        assert!(stderr.contains("99990101000000"), "{stderr}");
        assert!(stderr.contains("`database`"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let (ok, _, err) = rill(&["migrate", "--database", &schema.url]).await;
    assert!(!ok, "migrate refuses too");
    assert!(err.contains("newer than this rill"), "{err}");
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_reads_the_configuration_file_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("rill.db").display());
    let config = dir.path().join("rill.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"{url}\"\nlisten = \"127.0.0.1:0\"\ndatabase_acquire_timeout = \"3s\"\n"
        ),
    )
    .expect("write config");
    let (ok, out, err) = rill(&["migrate", "--config", &config.display().to_string()]).await;
    assert!(ok, "{err}");
    assert!(out.contains("Applied migration"), "{out}");
    assert!(
        dir.path().join("rill.db").exists(),
        "the file named in the config"
    );
    // A bad value names its key.
    let (ok, _, err) = rill(&[
        "migrate",
        "--database",
        &url,
        "--database-acquire-timeout",
        "soon",
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("`database_acquire_timeout`"), "{err}");
}
