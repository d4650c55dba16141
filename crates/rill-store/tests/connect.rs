//! `connect`: choosing the backend by URL, failing fast and clearly, in-memory SQLite.

// Shared with the storage suite; this file uses only part of it.
#[allow(dead_code)]
mod support;

use rill_core::StoreError;
use support::{Step, user};

async fn connect_error(url: &str) -> String {
    match rill_store::connect(url).await {
        Ok(_) => panic!("{url} should not connect"),
        Err(StoreError::Backend(message)) => message,
        Err(other) => panic!("{url}: expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_schemes_are_refused_with_the_supported_ones_named() {
    for url in ["mysql://root@localhost/rill", "rill.db", ""] {
        let message = connect_error(url).await;
        assert!(
            message.contains("unsupported database URL"),
            "{url}: {message}"
        );
        assert!(
            message.contains("sqlite://") && message.contains("postgres://"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_postgres_fails_without_revealing_the_password() {
    // Port 1 on loopback refuses connections: the error comes at once, not after a timeout.
    let message = connect_error("postgres://rill:hunter2@127.0.0.1:1/rill?password=hunter2").await;
    assert!(
        message.contains("cannot connect to PostgreSQL"),
        "{message}"
    );
    assert!(
        message.contains("127.0.0.1:1"),
        "names the server: {message}"
    );
    assert!(message.contains("refused"), "says why: {message}");
    assert!(
        !message.contains("hunter2"),
        "leaks the password: {message}"
    );
}

#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_fails_naming_it() {
    let dir = tempfile::tempdir().step("temporary directory");
    let url = format!("sqlite://{}/missing/rill.db?mode=rwc", dir.path().display());
    let message = connect_error(&url).await;
    assert!(message.contains("cannot open SQLite database"), "{message}");
    assert!(message.contains("missing/rill.db"), "{message}");
}

#[tokio::test]
async fn in_memory_sqlite_keeps_its_data_across_calls() {
    let store = rill_store::connect("sqlite::memory:").await.step("connect");
    let chat = store.create_chat("alice", "demo").await.step("create");
    store
        .insert_message(user(&chat.id, "hello"))
        .await
        .step("insert");
    let page = store.list_messages(&chat.id, None, 10).await.step("list");
    assert_eq!(page.items.len(), 1);
    let again = store.get_chat("alice", &chat.id).await.step("get");
    assert_eq!(again.map(|c| c.id), Some(chat.id));
}

#[tokio::test]
async fn a_sqlite_url_without_mode_creates_the_file() {
    let dir = tempfile::tempdir().step("temporary directory");
    let path = dir.path().join("fresh.db");
    let store = rill_store::connect(&format!("sqlite://{}", path.display()))
        .await
        .step("connect");
    store.ping().await.step("ping");
    assert!(path.exists());
}
