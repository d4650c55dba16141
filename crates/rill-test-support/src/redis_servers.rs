//! Private Redis servers for tests: one that speaks only TLS (a CA and a server certificate made
//! at start), and a Redis Cluster of several primaries whose nodes can be killed and restarted
//! empty. Each runs in its own temporary directory on free ports of 127.0.0.1 and is killed when
//! dropped, so parallel test runs never share or leak one.
//!
//! Starting and restarting block (they run processes and wait for them): call them from
//! `tokio::task::spawn_blocking` in async tests. They need `redis-server` and `redis-cli`
//! (Redis 7, built with TLS). A test calls
//! [`skip`] first: with `RILL_TEST_SKIP_REDIS` set it is skipped, loudly; otherwise a missing or
//! unfit binary fails it with a message saying what is missing (`scripts/test` sets the skip
//! variable only outside CI).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it was started.
const STARTUP: Duration = Duration::from_secs(20);

/// True (after saying so loudly) when tests that start their own Redis must be skipped:
/// `RILL_TEST_SKIP_REDIS` (no Redis at all) or `RILL_TEST_SKIP_PRIVATE_REDIS` (no
/// `redis-server` with TLS to start), which `scripts/test` sets outside CI only.
pub fn skip() -> bool {
    for var in ["RILL_TEST_SKIP_REDIS", "RILL_TEST_SKIP_PRIVATE_REDIS"] {
        if std::env::var_os(var).is_some() {
            eprintln!("!!! {var} is set: SKIPPING a test that starts its own Redis !!!");
            return true;
        }
    }
    false
}

/// A free port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("no free port: {e}"),
    }
}

fn spawn_redis(args: &[String], dir: &Path) -> Child {
    let log = dir.join("redis.log");
    let mut command = Command::new("redis-server");
    command
        .args(args)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match command.spawn() {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot start redis-server ({e}): install Redis 7 (with TLS), or set \
             RILL_TEST_SKIP_REDIS=1 to skip the tests that need it"
        ),
    }
}

/// Runs `redis-cli` with `args`; its output on success.
fn cli(args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{text}{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Waits until `check` holds, or panics naming `what` and the server's log.
// Blocking on purpose: starting servers is blocking work (processes, `redis-cli`), done before a
// test's runtime work or on `spawn_blocking`, never on a runtime worker.
#[allow(clippy::disallowed_methods)]
fn wait_for(what: &str, log: &Path, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + STARTUP;
    while !check() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "{what} did not happen within {STARTUP:?}; the server's log ends with:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(child: &mut Child) {
    // Already gone is fine: the test may have killed it.
    let _ = child.kill();
    let _ = child.wait();
}

/// A `redis-server` that accepts only TLS, with a certificate for `localhost` (not `127.0.0.1`)
/// signed by a CA made for it.
#[derive(Debug)]
pub struct TlsRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl TlsRedis {
    pub fn start() -> TlsRedis {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temporary directory: {e}"),
        };
        let ca = make_certificates(dir.path());
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path("server.pem"),
            "--tls-key-file",
            &path("server-key.pem"),
            "--tls-ca-cert-file",
            &ca.display().to_string(),
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let child = spawn_redis(&args, dir.path());
        let server = TlsRedis { port, dir, child };
        let ca = server.ca_file().display().to_string();
        let port_arg = port.to_string();
        wait_for(
            "redis-server with TLS answering",
            &server.dir.path().join("redis.log"),
            || {
                cli(&["--tls", "--cacert", &ca, "-p", &port_arg, "PING"])
                    .is_ok_and(|o| o.trim() == "PONG")
            },
        );
        server
    }

    /// `rediss://localhost:<port>` (the name its certificate holds).
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The PEM of a CA that signed nothing this server has.
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Writes `ca.pem`, `server.pem`, `server-key.pem` and `other-ca.pem` into `dir`; returns the
/// CA's path.
fn make_certificates(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! { panic!("{what}: {e}") };
    let ca_for = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| fail("CA parameters", &e));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap_or_else(|e| fail("CA key", &e));
        CertifiedIssuer::self_signed(params, key).unwrap_or_else(|e| fail("CA", &e))
    };
    let ca = ca_for("rill test CA");
    let other = ca_for("rill other CA");
    let key = KeyPair::generate().unwrap_or_else(|e| fail("server key", &e));
    // Only `localhost`: a client that connects to 127.0.0.1 sees a certificate for another name.
    let params = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap_or_else(|e| fail("server parameters", &e));
    let cert = params
        .signed_by(&key, &ca)
        .unwrap_or_else(|e| fail("server certificate", &e));
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| fail(name, &e));
    };
    write("ca.pem", ca.pem());
    write("other-ca.pem", other.pem());
    write("server.pem", cert.pem());
    write("server-key.pem", key.serialize_pem());
    dir.join("ca.pem")
}

/// One node of a [`RedisCluster`].
#[derive(Debug)]
struct Node {
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn args(&self) -> Vec<String> {
        [
            "--port",
            &self.port.to_string(),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &self.bus_port.to_string(),
            "--cluster-config-file",
            "nodes.conf",
            // Long enough that a killed and restarted primary is never declared failed (there
            // is no replica to promote), and the others keep serving their slots meanwhile.
            "--cluster-node-timeout",
            "15000",
            "--cluster-require-full-coverage",
            "no",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn start(&mut self) {
        self.child = Some(spawn_redis(&self.args(), &self.dir));
        let port = self.port.to_string();
        wait_for(
            &format!("cluster node {} answering", self.port),
            &self.dir.join("redis.log"),
            || cli(&["-p", &port, "PING"]).is_ok_and(|o| o.trim() == "PONG"),
        );
    }
}

/// A Redis Cluster of primaries without replicas, on free ports, in temporary directories.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `primaries` nodes, joins them with `redis-cli --cluster create` (slots spread
    /// evenly) and waits until every node sees the whole cluster `ok`.
    pub fn start(primaries: usize) -> RedisCluster {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temporary directory: {e}"),
        };
        let mut nodes = Vec::new();
        for i in 0..primaries {
            let node_dir = dir.path().join(format!("node{i}"));
            if let Err(e) = std::fs::create_dir(&node_dir) {
                panic!("node directory: {e}");
            }
            let mut node = Node {
                port: free_port(),
                bus_port: free_port(),
                dir: node_dir,
                child: None,
            };
            node.start();
            nodes.push(node);
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        if let Err(e) = cli(&args) {
            panic!("redis-cli --cluster create failed: {e}");
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ok(i);
        }
        cluster
    }

    /// Waits until node `i` reports the cluster `ok` with every slot assigned and every node
    /// known.
    fn wait_ok(&self, i: usize) {
        let node = &self.nodes[i];
        let port = node.port.to_string();
        let want_nodes = format!("cluster_known_nodes:{}", self.nodes.len());
        wait_for(
            &format!("cluster_state:ok on node {}", node.port),
            &node.dir.join("redis.log"),
            || {
                cli(&["-p", &port, "CLUSTER", "INFO"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_assigned:16384")
                        && info.contains(&want_nodes)
                })
            },
        );
    }

    /// A seed URL: `redis://127.0.0.1:<port of the first node>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    /// Every node's URL, comma-separated (seeds).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The index of the node serving `slot`, from `CLUSTER NODES` on the first live node.
    pub fn owner_of(&self, slot: u16) -> usize {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Ok(text) = cli(&["-p", &node.port.to_string(), "CLUSTER", "NODES"]) else {
                continue;
            };
            for line in text.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 9 || !fields[2].contains("master") {
                    continue;
                }
                let port = fields[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok());
                let serves = fields[8..].iter().any(|range| {
                    let mut ends = range.split('-').map(|x| x.parse::<u16>().ok());
                    match (ends.next().flatten(), ends.next()) {
                        (Some(a), None) => a == slot,
                        (Some(a), Some(Some(b))) => (a..=b).contains(&slot),
                        _ => false,
                    }
                });
                if serves && let Some(i) = self.nodes.iter().position(|n| Some(n.port) == port) {
                    return i;
                }
            }
        }
        panic!("no node serves slot {slot}");
    }

    /// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub fn key_slot(&self, key: &str) -> u16 {
        let port = self.nodes[0].port.to_string();
        match cli(&["-p", &port, "CLUSTER", "KEYSLOT", key]) {
            Ok(out) => match out.trim().parse() {
                Ok(slot) => slot,
                Err(e) => panic!("CLUSTER KEYSLOT {key}: {e}: {out}"),
            },
            Err(e) => panic!("CLUSTER KEYSLOT {key}: {e}"),
        }
    }

    /// Kills node `i` (SIGKILL: its data is gone, it has no persistence).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            kill(&mut child);
        }
    }

    /// Starts node `i` again on its port with its cluster configuration (`nodes.conf`: it
    /// rejoins as the primary of its slots) and no data, and waits until the cluster is `ok`.
    pub fn restart_empty(&mut self, i: usize) {
        for data in ["dump.rdb", "appendonly.aof"] {
            let _ = std::fs::remove_file(self.nodes[i].dir.join(data));
        }
        self.nodes[i].start();
        for j in 0..self.nodes.len() {
            self.wait_ok(j);
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                kill(&mut child);
            }
        }
    }
}
