//! Insert and checkpoint throughput on SQLite and PostgreSQL; prints figures, asserts nothing.
//!
//! `cargo bench -p rill-store --bench throughput` (PostgreSQL from RILL_TEST_POSTGRES, skipped
//! with RILL_TEST_SKIP_POSTGRES). The figures are in docs/storage.md.

// Shares the test suite's database helpers (fresh SQLite file, fresh PostgreSQL schema).
#[allow(dead_code)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rill_core::Store;
use rill_core::chat::{MessageStatus, Outcome, Part};
use support::{Db, Step, streaming, user};

const INSERTS: u32 = 2_000;
const EXCHANGES: u32 = 500;
const CHECKPOINTS: u32 = 2_000;
/// Concurrent generations checkpointing at once, and checkpoints each.
const GENERATIONS: u32 = 32;
const CHECKPOINTS_EACH: u32 = 100;

fn report(backend: &str, what: &str, ops: u32, took: Duration) {
    let per_op = took / ops;
    let rate = f64::from(ops) / took.as_secs_f64();
    println!("{backend:<10} {what:<48} {rate:>9.0} /s  {per_op:>10.1?} each");
}

/// A typical answer's text at checkpoint time: a few hundred tokens of mixed scripts.
fn answer_text(len: usize) -> String {
    "Hello 안녕하세요 🌍 ".chars().cycle().take(len).collect()
}

async fn run(backend: &'static str, db: Db) {
    let store: Arc<dyn Store> = db.store;
    let chat = store.create_chat("bench", "demo").await.step("create");

    let start = Instant::now();
    for i in 0..INSERTS {
        let message = user(&chat.id, &format!("message {i}"));
        store.insert_message(message).await.step("insert");
    }
    report(
        backend,
        "insert_message (sequential)",
        INSERTS,
        start.elapsed(),
    );

    let chat = store.create_chat("bench", "demo").await.step("create");
    let start = Instant::now();
    for _ in 0..EXCHANGES {
        let (_, answer) = store
            .insert_exchange(user(&chat.id, "question"), streaming(&chat.id))
            .await
            .step("exchange");
        let content = answer_text(1_000);
        let done = Outcome {
            status: MessageStatus::Complete,
            parts: vec![Part::text(content.clone())],
            content,
            finish_reason: Some("stop".to_owned()),
            usage: None,
            error: None,
        };
        store.finish(&answer.id, None, &done).await.step("finish");
    }
    report(
        backend,
        "insert_exchange + finish (sequential)",
        EXCHANGES,
        start.elapsed(),
    );

    let chat = store.create_chat("bench", "demo").await.step("create");
    let (_, answer) = store
        .insert_exchange(user(&chat.id, "question"), streaming(&chat.id))
        .await
        .step("exchange");
    let text = answer_text(2_000);
    // What a checkpoint of a text answer stores: the text, and the same text as its one part.
    let parts = vec![Part::text(text.clone())];
    let start = Instant::now();
    for offset in 0..CHECKPOINTS {
        store
            .checkpoint(&answer.id, "test-owner", &text, &parts, u64::from(offset))
            .await
            .step("checkpoint");
    }
    report(
        backend,
        "checkpoint 2000 chars (sequential)",
        CHECKPOINTS,
        start.elapsed(),
    );

    let mut answers = Vec::new();
    for _ in 0..GENERATIONS {
        let chat = store.create_chat("bench", "demo").await.step("create");
        let (_, answer) = store
            .insert_exchange(user(&chat.id, "question"), streaming(&chat.id))
            .await
            .step("exchange");
        answers.push(answer.id);
    }
    let start = Instant::now();
    let tasks: Vec<_> = answers
        .into_iter()
        .map(|id| {
            let store = store.clone();
            let text = text.clone();
            let parts = parts.clone();
            tokio::spawn(async move {
                for offset in 0..CHECKPOINTS_EACH {
                    store
                        .checkpoint(&id, "test-owner", &text, &parts, u64::from(offset))
                        .await
                        .step("checkpoint");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.step("join");
    }
    report(
        backend,
        "checkpoint 2000 chars (32 generations at once)",
        GENERATIONS * CHECKPOINTS_EACH,
        start.elapsed(),
    );
}

#[tokio::main]
async fn main() {
    support::on_sqlite(|db| run("sqlite", db)).await;
    support::on_postgres(|db| run("postgres", db)).await;
}
