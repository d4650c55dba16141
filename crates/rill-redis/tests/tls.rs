//! The Redis broker over TLS (`rediss://`), against a private `redis-server` that speaks only
//! TLS: it works with the server's CA, and every certificate problem stops `connect` with a
//! TLS error that says what to check. (The broker contract also runs over TLS: contract.rs.)

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;

use std::time::Duration;

use common::{connect, skip_private, tls_config, tls_redis};
use rill_core::{Broker, Topic};
use rill_redis::{ConfigError, ConnectError, RedisBroker, RedisBrokerConfig};
use rill_test_support::broker_contract::{RecordingSink, event};

async fn connect_error(config: RedisBrokerConfig) -> ConnectError {
    match tokio::time::timeout(Duration::from_secs(30), RedisBroker::connect(config)).await {
        Ok(Ok(_)) => panic!("connected"),
        Ok(Err(e)) => e,
        Err(_) => panic!("connect did not give up"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_reads_and_feeds_live_over_tls() {
    if skip_private() {
        return;
    }
    let server = tls_redis().await;
    let a = connect(tls_config(&server)).await;
    let t = Topic::new("secure").unwrap();
    let sink = RecordingSink::new();
    let _att = a.attach(&t, sink.clone()).await.unwrap();
    for i in 1..=3 {
        assert_eq!(a.publish(&t, event(i)).await.unwrap().offset, i);
    }
    sink.wait_for_count(3).await;
    assert_eq!(sink.offsets(), [1, 2, 3]);
    let r = a.read(&t, 1, 10).await.unwrap();
    assert_eq!(
        r.events.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(a.ready().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_certificate_is_a_tls_error() {
    if skip_private() {
        return;
    }
    let server = tls_redis().await;
    let mut cfg = tls_config(&server);
    cfg.tls_ca_file = Some(server.wrong_ca_file());
    let err = connect_error(cfg).await;
    let msg = err.to_string();
    assert!(matches!(err, ConnectError::Tls { .. }), "{msg}");
    assert!(msg.contains("CA file"), "says what to check: {msg}");
    assert!(
        msg.contains(&server.port.to_string()),
        "names the server: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_roots_do_not_trust_a_private_ca() {
    if skip_private() {
        return;
    }
    let server = tls_redis().await;
    let mut cfg = tls_config(&server);
    cfg.tls_ca_file = None;
    let err = connect_error(cfg).await;
    assert!(matches!(err, ConnectError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("system's roots"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_certificate_does_not_name_is_a_tls_error() {
    if skip_private() {
        return;
    }
    let server = tls_redis().await;
    let mut cfg = tls_config(&server);
    // The same server, by an address its certificate (for `localhost`) does not hold.
    cfg.url = format!("rediss://127.0.0.1:{}", server.port);
    let err = connect_error(cfg).await;
    let msg = err.to_string();
    assert!(matches!(err, ConnectError::Tls { .. }), "{msg}");
    assert!(msg.contains("host"), "{msg}");
}

#[tokio::test]
async fn ca_file_problems_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RedisBrokerConfig::new("rediss://localhost:1");
    cfg.tls_ca_file = Some(dir.path().join("missing.pem"));
    let err = connect_error(cfg.clone()).await;
    assert!(
        matches!(err, ConnectError::Config(ConfigError::BadCaFile { .. })),
        "{err}"
    );
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    cfg.tls_ca_file = Some(not_pem);
    let err = connect_error(cfg.clone()).await;
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    // A CA file with a plain redis:// URL is a mistake worth stopping for.
    cfg.url = "redis://localhost:1".into();
    let err = connect_error(cfg).await;
    assert!(err.to_string().contains("not rediss://"), "{err}");
}
