//! `rill serve` refuses bad stream settings before binding, naming the key, from a flag, an
//! environment variable or the TOML file.

use std::process::Command;

const RILL: &str = env!("CARGO_BIN_EXE_rill");

/// Runs `rill serve` with `args` and `env`; it must fail, and stderr must mention `needle`.
/// `listen` is invalid too (and checked after the stream keys), so a stream key that were
/// wrongly accepted still makes `rill` exit instead of serving forever.
#[track_caller]
fn check_refused(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let mut cmd = Command::new(RILL);
    cmd.arg("serve")
        .args(["--listen", "not-an-address"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run rill");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} {env:?} should fail");
    assert!(stderr.contains(needle), "{args:?} {env:?}: {stderr}");
}

#[test]
fn bad_stream_settings_name_their_key() {
    check_refused(&["--max-topics", "0"], &[], "`max_topics`");
    check_refused(&["--heartbeat", "15"], &[], "`heartbeat`");
    check_refused(&["--queue-size", "lots"], &[], "`queue_size`");
    check_refused(&[], &[("RILL_RETENTION_AGE", "0s")], "`retention_age`");
    check_refused(
        &[],
        &[("RILL_MAX_STREAM_DURATION", "soon")],
        "`max_stream_duration`",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rill.toml");
    std::fs::write(&path, "max_connections_per_user = \"-1\"\n").expect("write");
    check_refused(
        &["--config", path.to_str().expect("utf-8 path")],
        &[],
        "`max_connections_per_user`",
    );
    std::fs::write(&path, "retention_event = \"5\"\n").expect("write");
    check_refused(
        &["--config", path.to_str().expect("utf-8 path")],
        &[],
        "retention_event",
    );
}
