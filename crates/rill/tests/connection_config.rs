//! `rill serve` refuses bad connection settings (timeouts, the socket cap) before binding,
//! naming the key, from a flag, an environment variable or the TOML file.

use std::process::Command;

const RILL: &str = env!("CARGO_BIN_EXE_rill");

/// Runs `rill serve` with `args` and `env`; it must fail, and stderr must mention `needle`.
/// `listen` is invalid too (and checked after these keys), so a key that were wrongly accepted
/// still makes `rill` exit instead of serving forever.
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
fn bad_connection_settings_name_their_key() {
    check_refused(
        &["--header-read-timeout", "0s"],
        &[],
        "`header_read_timeout`",
    );
    check_refused(&["--body-read-timeout", "soon"], &[], "`body_read_timeout`");
    check_refused(&[], &[("RILL_IDLE_TIMEOUT", "10")], "`idle_timeout`");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rill.toml");
    std::fs::write(&path, "max_open_connections = \"0\"\n").expect("write");
    check_refused(
        &["--config", path.to_str().expect("utf-8 path")],
        &[],
        "`max_open_connections`",
    );
    // Good values pass these checks and stop at the bad `listen`.
    check_refused(
        &[
            "--header-read-timeout",
            "5s",
            "--body-read-timeout",
            "20s",
            "--idle-timeout",
            "2m",
            "--max-open-connections",
            "500",
        ],
        &[],
        "`listen`",
    );
}
