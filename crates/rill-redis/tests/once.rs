//! `SpentSet` on Redis: a key is spent once in the whole deployment, until its expiry.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;

use std::time::Duration;

use common::{Cleanup, config, connect, fresh_prefix, skip};
use rill_core::SpentSet;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_spent_once_across_instances_until_it_expires() {
    if skip() {
        return;
    }
    let cleanup = Cleanup::default();
    let prefix = fresh_prefix();
    cleanup.add(&prefix);
    let a = connect(config(&prefix)).await;
    let b = connect(config(&prefix)).await;
    let later = now_ms() + 60_000;

    assert!(a.spend("t1", later).await.unwrap(), "the first spend wins");
    assert!(
        !a.spend("t1", later).await.unwrap(),
        "a replay on the same instance"
    );
    assert!(
        !b.spend("t1", later).await.unwrap(),
        "a replay on another instance"
    );
    assert!(
        b.spend("t2", later).await.unwrap(),
        "another key is its own"
    );

    // Concurrent spends of one key: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let x = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(
            async move { x.spend("t3", later).await.unwrap() },
        ));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);

    // Another deployment (prefix) on the same Redis has its own set.
    let other_prefix = fresh_prefix();
    cleanup.add(&other_prefix);
    let other = connect(config(&other_prefix)).await;
    assert!(other.spend("t1", later).await.unwrap());

    // Forgotten at the expiry: the key can be spent again (a ticket is expired by then; its
    // caller refuses it for that).
    let soon = now_ms() + 300;
    assert!(a.spend("t4", soon).await.unwrap());
    assert!(!a.spend("t4", soon).await.unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(a.spend("t4", now_ms() + 60_000).await.unwrap());
    // An expiry already past, or zero, is accepted (and forgotten at once).
    assert!(a.spend("t5", 0).await.unwrap());
}
