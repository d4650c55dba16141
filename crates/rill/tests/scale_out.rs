//! Scale-out with the real binary: several `rill serve` processes on one Redis (the broker) and
//! one PostgreSQL schema (the store). Resume lands on another instance on every reconnect, a
//! chat is followed across instances, an instance is killed mid-answer, stop travels between
//! instances, Redis loses its data or goes away, and bad backends fail start-up fast.
//!
//! Each test has its own Redis key prefix and its own PostgreSQL schema (dropped at the end,
//! also when the test panics). `RILL_TEST_REDIS` / `RILL_TEST_POSTGRES` name the servers;
//! `RILL_TEST_SKIP_REDIS` / `RILL_TEST_SKIP_POSTGRES` skip, loudly. Set `RILL_TEST_SERVE_LOGS=1`
//! to see the instances' logs.

use std::collections::VecDeque;
use std::future::Future;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::process::Stdio;
use std::time::Duration;

use futures::FutureExt;
use rill_sse::{Item, OwnedEvent, Parser};
use rill_test_support::redis_servers::{RedisCluster, TlsRedis};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const RILL: &str = env!("CARGO_BIN_EXE_rill");

/// Generous bound for anything a test waits for: no timing is asserted beyond "it happened".
const WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Backends: one key prefix and one schema per test.

fn redis_url() -> String {
    std::env::var("RILL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn postgres_url() -> String {
    std::env::var("RILL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// True (after saying so loudly) when the test must be skipped for want of a backend.
fn skip(needs_postgres: bool) -> bool {
    if std::env::var_os("RILL_TEST_SKIP_REDIS").is_some() {
        eprintln!("!!! RILL_TEST_SKIP_REDIS is set: SKIPPING a scale-out test !!!");
        return true;
    }
    if needs_postgres && std::env::var_os("RILL_TEST_SKIP_POSTGRES").is_some() {
        eprintln!("!!! RILL_TEST_SKIP_POSTGRES is set: SKIPPING a scale-out test !!!");
        return true;
    }
    false
}

/// What the instances of one test share.
#[derive(Clone, Debug)]
struct Backends {
    redis: String,
    /// More Redis flags for every instance (`--redis-ca-file`, `--redis-cluster`).
    redis_args: Vec<String>,
    /// Key prefix of this test in Redis.
    prefix: String,
    /// The store URL: the test database with this test's schema first on the search path.
    database: String,
}

/// Runs `test` with a fresh key prefix and a fresh PostgreSQL schema, both removed afterwards
/// even when the test panics.
async fn with_backends<F, Fut>(test: F)
where
    F: FnOnce(Backends) -> Fut,
    Fut: Future<Output = ()>,
{
    with_backends_on(RedisUnderTest::Shared, test).await;
}

/// Which Redis the instances use.
enum RedisUnderTest {
    /// The test Redis (`RILL_TEST_REDIS`), shared with other tests: keys under a fresh prefix,
    /// deleted afterwards.
    Shared,
    /// A private server (TLS, a cluster) started by the test: its URL and the flags it needs.
    Private { url: String, args: Vec<String> },
}

/// [`with_backends`] on a given Redis.
async fn with_backends_on<F, Fut>(redis: RedisUnderTest, test: F)
where
    F: FnOnce(Backends) -> Fut,
    Fut: Future<Output = ()>,
{
    if skip(true) {
        return;
    }
    let base = postgres_url();
    let tag = format!("{:016x}", fastrand::u64(..));
    let schema = format!("rill_so_{tag}");
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL at RILL_TEST_POSTGRES is unreachable ({e}); start it or set \
             RILL_TEST_SKIP_POSTGRES=1"
        ),
    };
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create the test schema");
    // sqlx passes `options` to the server at connection start-up, so every pooled connection of
    // every instance works in this schema (tables and sqlx's migration table land there).
    let separator = if base.contains('?') { '&' } else { '?' };
    let (redis_url_, redis_args, shared) = match redis {
        RedisUnderTest::Shared => (redis_url(), Vec::new(), true),
        RedisUnderTest::Private { url, args } => (url, args, false),
    };
    let backends = Backends {
        redis: redis_url_,
        redis_args,
        prefix: format!("rill-so-{tag}:"),
        database: format!("{base}{separator}options=-c%20search_path%3D{schema}"),
    };
    let prefix = backends.prefix.clone();
    let outcome = AssertUnwindSafe(test(backends)).catch_unwind().await;
    // The instances' tables are in this schema (sqlx honoured `options`), not in `public`.
    let isolated: Result<i64, _> = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name = 'messages'",
    )
    .bind(&schema)
    .fetch_one(&mut admin)
    .await;
    if let Err(e) = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
    {
        eprintln!("dropping schema {schema}: {e}");
    }
    if shared {
        delete_prefix(&redis_url(), &prefix).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(
        isolated.expect("schema query"),
        1,
        "the instances' tables live in {schema}"
    );
}

/// Deletes this prefix's keys, and only those: what `FLUSHDB` does to this deployment's data
/// without touching the other tests sharing the Redis.
async fn delete_prefix(redis: &str, prefix: &str) {
    let client = redis::Client::open(redis).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis");
    let mut cursor: u64 = 0;
    // Bounded: SCAN visits every key once per full pass; 10 000 rounds is far beyond any test.
    for _ in 0..10_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("DEL");
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Instances.

/// A free port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One `rill serve` process.
struct Instance {
    child: Child,
    base: String,
}

/// The flags of an instance on `backends` named `name`, then `extra`.
fn serve_command(backends: &Backends, name: &str, port: u16, tokens_per_second: &str) -> Command {
    let mut command = Command::new(RILL);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--broker", &backends.redis])
        .args(&backends.redis_args)
        .args(["--redis-key-prefix", &backends.prefix])
        .args(["--database", &backends.database])
        .args(["--instance-id", name])
        .args([
            "--lease-ttl",
            "2s",
            "--checkpoint-interval",
            "100ms",
            "--demo-first-token-delay",
            "0ms",
            "--demo-tokens-per-second",
            tokens_per_second,
        ])
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("RILL_CONFIG");
    command
}

async fn launch(mut command: Command, port: u16) -> Instance {
    let logs = std::env::var_os("RILL_TEST_SERVE_LOGS").is_some();
    let child = command
        .stdout(Stdio::null())
        .stderr(if logs {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rill serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    // Up means ready: the broker answers (the listener is bound before the backends connect).
    for _ in 0..400 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return Instance { child, base };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rill serve did not become ready on port {port}");
}

/// Starts one instance per name, all at once (migrations serialise on PostgreSQL's lock).
async fn start_all(backends: &Backends, names: &[&str], tokens_per_second: &str) -> Vec<Instance> {
    futures::future::join_all(names.iter().map(|name| {
        let port = free_port();
        launch(serve_command(backends, name, port, tokens_per_second), port)
    }))
    .await
}

// ---------------------------------------------------------------------------------------------
// HTTP and SSE helpers.

/// An open SSE response and its parser.
struct Sse {
    response: reqwest::Response,
    parser: Parser,
    pending: VecDeque<OwnedEvent>,
}

impl Sse {
    async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Sse {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("open the stream");
        assert_eq!(response.status(), 200, "stream {url}");
        Sse {
            response,
            parser: Parser::new(),
            pending: VecDeque::new(),
        }
    }

    /// The next event; `None` when the server ended the stream. Panics after `deadline`.
    async fn next(&mut self, deadline: Instant) -> Option<OwnedEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event in time");
            match chunk {
                Ok(Some(bytes)) => {
                    let pending = &mut self.pending;
                    self.parser.feed(&bytes, |item| {
                        if let Item::Event(e) = item {
                            pending.push_back(OwnedEvent::from(e));
                        }
                    });
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

fn data(event: &OwnedEvent) -> Value {
    serde_json::from_str(&event.data).expect("JSON data")
}

/// Publishes `{"n": n}` as event `tick` and returns the event's id.
async fn publish(client: &reqwest::Client, base: &str, topic: &str, n: u64) -> String {
    let response = client
        .post(format!("{base}/api/topics/{topic}/events"))
        .json(&json!({ "event": "tick", "data": { "n": n } }))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 201, "publish {n} to {topic} on {base}");
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

async fn post_json(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let response = client.post(url).json(&body).send().await.expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create_chat(client: &reqwest::Client, base: &str) -> String {
    let (status, chat) =
        post_json(client, &format!("{base}/api/chats"), json!({"bot": "demo"})).await;
    assert_eq!(status, 201, "{chat}");
    chat["id"].as_str().expect("chat id").to_owned()
}

/// Sends a message (the 202 style) and returns the assistant message's id.
async fn send(client: &reqwest::Client, base: &str, chat: &str, content: &str) -> String {
    let (status, sent) = post_json(
        client,
        &format!("{base}/api/chats/{chat}/messages"),
        json!({ "content": content }),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    sent["assistant_message"]["id"]
        .as_str()
        .expect("assistant id")
        .to_owned()
}

async fn stored(client: &reqwest::Client, base: &str, chat: &str, id: &str) -> Value {
    let page: Value = client
        .get(format!("{base}/api/chats/{chat}/messages?limit=100"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .expect("the message is stored")
}

/// What a client of a chat stream knows about one answer.
#[derive(Debug, Default)]
struct Answer {
    text: String,
    deltas: usize,
    last_id: String,
    /// `status` of the answer's `message.completed`, once seen.
    completed: Option<String>,
}

impl Answer {
    /// Applies one chat event to the answer `id`.
    fn apply(&mut self, event: &OwnedEvent, id: &str) {
        self.last_id.clone_from(&event.id);
        let d = data(event);
        match event.event.as_str() {
            "message.delta" if d["message_id"] == id => {
                assert!(self.completed.is_none(), "a delta after the completion");
                self.text.push_str(d["text"].as_str().expect("text"));
                self.deltas += 1;
            }
            "snapshot" if d["id"] == id => {
                d["content"]
                    .as_str()
                    .expect("content")
                    .clone_into(&mut self.text);
            }
            "message.completed" if d["message_id"] == id => {
                self.completed = Some(d["status"].as_str().expect("status").to_owned());
            }
            "reset" => panic!("unexpected reset on a chat stream: {d}"),
            _ => {}
        }
    }

    /// Reads `sse` until `until` holds for the answer; panics if the stream ends first.
    async fn follow(
        &mut self,
        sse: &mut Sse,
        id: &str,
        deadline: Instant,
        until: impl Fn(&Self) -> bool,
    ) {
        while !until(self) {
            let event = sse
                .next(deadline)
                .await
                .expect("the chat stream stays open");
            self.apply(&event, id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Topics: exact resume, every reconnect on another instance.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_when_every_reconnect_lands_on_another_instance() {
    with_backends(resume_hopping_instances).await;
}

/// A subscriber reconnects after every few events, each time to the next instance, while the
/// three instances publish in turn: it gets every event once, in order.
async fn resume_hopping_instances(backends: Backends) {
    let nodes = start_all(&backends, &["a", "b", "c"], "50").await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = reqwest::Client::new();
    const N: u64 = 300;

    // The first event's id (from the publish answer) is where the subscriber starts, so
    // everything after it must arrive, wherever it was published.
    let mut last = publish(&client, &bases[0], "ticks", 0).await;
    let publisher = {
        let (client, bases) = (client.clone(), bases.clone());
        tokio::spawn(async move {
            for n in 1..=N {
                publish(&client, &bases[n as usize % 3], "ticks", n).await;
            }
        })
    };
    let deadline = Instant::now() + WITHIN;
    let mut seen = Vec::new();
    let mut reconnects = 0;
    while (seen.len() as u64) < N {
        assert!(reconnects < 1000, "bounded");
        let base = &bases[reconnects % 3];
        reconnects += 1;
        let mut sse = Sse::open(
            &client,
            &format!("{base}/api/events?topic=ticks"),
            Some(&last),
        )
        .await;
        // Cut after a random number of events: whatever was already received but not yet
        // handed over is lost with the connection, as for a real client.
        for _ in 0..fastrand::usize(1..40) {
            let event = sse.next(deadline).await.expect("the stream stays open");
            assert_eq!(event.event, "tick", "{event:?}");
            let d = data(&event);
            assert_eq!(d["topic"], "ticks");
            seen.push(d["data"]["n"].as_u64().expect("n"));
            last = event.id;
            if seen.len() as u64 == N {
                break;
            }
        }
    }
    publisher.await.expect("publisher");
    assert!(reconnects > 3, "the subscriber hopped between instances");
    assert_eq!(
        seen,
        (1..=N).collect::<Vec<_>>(),
        "every event once, in order"
    );
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_across_three_topics_on_one_connection_and_three_instances() {
    with_backends(resume_three_topics_hopping_instances).await;
}

/// The same over three topics on one connection (on a cluster: three slots, three epochs in
/// one id).
async fn resume_three_topics_hopping_instances(backends: Backends) {
    let nodes = start_all(&backends, &["a", "b", "c"], "50").await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = reqwest::Client::new();
    const TOPICS: [&str; 3] = ["orders", "prices/eu", "news:1"];
    const PER_TOPIC: u64 = 100;
    let query = "topic=orders&topic=prices/eu&topic=news:1";

    // A stream answers once it is attached: events published from now on are its own.
    let mut sse = Some(Sse::open(&client, &format!("{}/api/events?{query}", bases[0]), None).await);
    let publisher = {
        let (client, bases) = (client.clone(), bases.clone());
        tokio::spawn(async move {
            for n in 0..PER_TOPIC {
                for (t, topic) in TOPICS.iter().enumerate() {
                    publish(&client, &bases[(n as usize + t) % 3], topic, n).await;
                }
            }
        })
    };
    let deadline = Instant::now() + WITHIN;
    let mut seen: [Vec<u64>; 3] = Default::default();
    let total = |seen: &[Vec<u64>; 3]| seen.iter().map(Vec::len).sum::<usize>() as u64;
    let mut last = String::new();
    let mut reconnects = 0;
    while total(&seen) < PER_TOPIC * 3 {
        assert!(reconnects < 1000, "bounded");
        let mut stream = match sse.take() {
            Some(s) => s,
            None => {
                let base = &bases[reconnects % 3];
                Sse::open(&client, &format!("{base}/api/events?{query}"), Some(&last)).await
            }
        };
        reconnects += 1;
        for _ in 0..fastrand::usize(1..40) {
            let event = stream.next(deadline).await.expect("the stream stays open");
            assert_eq!(event.event, "tick", "{event:?}");
            let d = data(&event);
            let t = TOPICS
                .iter()
                .position(|t| d["topic"] == *t)
                .expect("one of the topics");
            seen[t].push(d["data"]["n"].as_u64().expect("n"));
            last = event.id;
            if total(&seen) == PER_TOPIC * 3 {
                break;
            }
        }
    }
    publisher.await.expect("publisher");
    for (t, topic) in TOPICS.iter().enumerate() {
        assert_eq!(
            seen[t],
            (0..PER_TOPIC).collect::<Vec<_>>(),
            "topic {topic}: once each, in order"
        );
    }
    drop(nodes);
}

// ---------------------------------------------------------------------------------------------
// Chats across instances.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_answer_followed_on_b_then_moved_to_c_ends_with_the_stored_text() {
    with_backends(chat_followed_and_moved).await;
}

/// A chat answered on A, followed on B, moved to C (and a newcomer on C): every client ends
/// with the stored text.
async fn chat_followed_and_moved(backends: Backends) {
    let nodes = start_all(&backends, &["a", "b", "c"], "100").await;
    let (a, b, c) = (&nodes[0].base, &nodes[1].base, &nodes[2].base);
    let client = reqwest::Client::new();
    let chat = create_chat(&client, a).await;
    let events = |base: &str| format!("{base}/api/chats/{chat}/events");
    let deadline = Instant::now() + WITHIN;

    let mut on_b = Sse::open(&client, &events(b), None).await;
    let id = send(&client, a, &chat, "follow me across instances").await;
    let mut answer = Answer::default();
    answer
        .follow(&mut on_b, &id, deadline, |a| a.deltas >= 10)
        .await;
    drop(on_b);

    // Moved: the same client resumes on C with its last id.
    let mut on_c = Sse::open(&client, &events(c), Some(&answer.last_id)).await;
    // And a newcomer on C without an id gets the answer so far as a snapshot, rebuilt on C
    // from A's checkpoint and the logged deltas.
    let mut newcomer = Sse::open(&client, &events(c), None).await;
    answer
        .follow(&mut on_c, &id, deadline, |a| a.completed.is_some())
        .await;
    let mut late = Answer::default();
    late.follow(&mut newcomer, &id, deadline, |a| a.completed.is_some())
        .await;

    let message = stored(&client, b, &chat, &id).await;
    assert_eq!(answer.completed.as_deref(), Some("complete"));
    assert_eq!(message["status"], "complete");
    assert!(answer.text.len() > 100, "a whole answer: {:?}", answer.text);
    assert_eq!(
        message["content"].as_str(),
        Some(answer.text.as_str()),
        "moved client"
    );
    assert_eq!(late.text, answer.text, "newcomer");
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_answer_is_continued_by_another() {
    with_backends(|backends| async move {
        let mut nodes = start_all(&backends, &["a", "b"], "50").await;
        let (a, b) = (nodes[0].base.clone(), nodes[1].base.clone());
        let client = reqwest::Client::new();
        let chat = create_chat(&client, &a).await;
        let deadline = Instant::now() + WITHIN;

        let mut on_b = Sse::open(&client, &format!("{b}/api/chats/{chat}/events"), None).await;
        let id = send(&client, &a, &chat, "an answer that outlives its instance").await;
        let mut answer = Answer::default();
        let mut checkpointed = String::new();
        for _ in 0..300 {
            answer
                .follow(&mut on_b, &id, deadline, |a| a.deltas >= 5)
                .await;
            let message = stored(&client, &b, &chat, &id).await;
            assert_eq!(message["status"], "streaming", "still running when killed");
            message["content"]
                .as_str()
                .expect("content")
                .clone_into(&mut checkpointed);
            if !checkpointed.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!checkpointed.is_empty(), "A checkpointed some text");

        nodes[0].child.start_kill().expect("SIGKILL");
        nodes[0].child.wait().await.expect("reaped");

        // B's reaper finds the expired lease (within 1.5 x lease_ttl; asserted only as "within
        // 30 s"), takes the generation over and continues it: the client on B sees one answer
        // that goes on, with nothing repeated.
        answer
            .follow(&mut on_b, &id, deadline, |a| a.completed.is_some())
            .await;
        assert_eq!(answer.completed.as_deref(), Some("complete"));
        let message = stored(&client, &b, &chat, &id).await;
        assert_eq!(message["status"], "complete");
        let kept = message["content"].as_str().expect("content");
        assert!(kept.starts_with(&checkpointed));
        assert_eq!(kept, answer.text, "the stored text is what the client saw");
        // And it is the very answer an instance that never died gives to the same prompt.
        let other = create_chat(&client, &b).await;
        let mut on_other = Sse::open(&client, &format!("{b}/api/chats/{other}/events"), None).await;
        let reference = send(&client, &b, &other, "an answer that outlives its instance").await;
        let mut whole = Answer::default();
        whole
            .follow(&mut on_other, &reference, deadline, |a| {
                a.completed.is_some()
            })
            .await;
        assert_eq!(answer.text, whole.text);
        drop(nodes);
    })
    .await;
}

/// Sends SIGTERM (a rolling deploy's stop) to an instance.
fn terminate(child: &Child) {
    let pid = child.id().expect("a running instance");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}

/// A chat answer followed the way `EventSource` does it: through `base`, reconnecting with
/// the last id after every end or error (a draining instance ends its streams; a 503 is retried
/// after a moment), until the answer completes. Returns what the client assembled.
async fn follow_reconnecting(
    client: reqwest::Client,
    base: String,
    chat: String,
    id: String,
) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut answer = Answer::default();
    while answer.completed.is_none() {
        assert!(Instant::now() < deadline, "answer {id} did not complete");
        let mut request = client
            .get(format!("{base}/api/chats/{chat}/events"))
            .header("accept", "text/event-stream");
        if !answer.last_id.is_empty() {
            request = request.header("last-event-id", answer.last_id.as_str());
        }
        let response = match request.send().await {
            Ok(r) if r.status() == 200 => r,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut sse = Sse {
            response,
            parser: Parser::new(),
            pending: VecDeque::new(),
        };
        while answer.completed.is_none() {
            match sse.next(deadline).await {
                Some(event) => {
                    // The server's own end of a stream (a draining instance) has no id.
                    if event.id.is_empty() {
                        continue;
                    }
                    answer.apply(&event, &id);
                }
                None => break,
            }
        }
    }
    answer
}

/// A message sent through a proxy, retried while instances drain (`503 draining`).
async fn send_retrying(client: &reqwest::Client, base: &str, chat: &str, content: &str) -> String {
    for _ in 0..100 {
        let (status, sent) = post_json(
            client,
            &format!("{base}/api/chats/{chat}/messages"),
            json!({ "content": content }),
        )
        .await;
        if status == 202 {
            return sent["assistant_message"]["id"]
                .as_str()
                .expect("assistant id")
                .to_owned();
        }
        assert_eq!(status, 503, "{sent}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no instance took the message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_instance_running_ten_generations_continues_each_elsewhere() {
    with_backends(|backends| async move {
        let mut nodes = start_all(&backends, &["a", "b", "c"], "40").await;
        let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
        let client = reqwest::Client::new();
        let mut followers = Vec::new();
        let mut chats = Vec::new();
        for i in 0..10 {
            let chat = create_chat(&client, &bases[0]).await;
            let content = format!("question number {i} for the takeover");
            let id = send(&client, &bases[0], &chat, &content).await;
            // Clients follow on B and C, as a load balancer would spread them.
            let base = bases[1 + i % 2].clone();
            followers.push(tokio::spawn(follow_reconnecting(
                client.clone(),
                base,
                chat.clone(),
                id.clone(),
            )));
            chats.push((chat, id, content));
        }
        // Let every answer get well under way on A, then kill A without warning.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        for (chat, id, _) in &chats {
            let message = stored(&client, &bases[1], chat, id).await;
            assert_eq!(message["status"], "streaming", "{id} still runs on A");
        }
        nodes[0].child.start_kill().expect("SIGKILL");
        nodes[0].child.wait().await.expect("reaped");
        for (follower, (chat, id, content)) in followers.into_iter().zip(&chats) {
            let answer = follower.await.expect("follower");
            assert_eq!(answer.completed.as_deref(), Some("complete"), "{id}");
            let message = stored(&client, &bases[1], chat, id).await;
            assert_eq!(message["status"], "complete", "{id}");
            assert_eq!(
                message["content"].as_str(),
                Some(answer.text.as_str()),
                "{id}"
            );
            assert!(content.len() < answer.text.len());
        }
        drop(nodes);
    })
    .await;
}

/// Each way a provider continues an answer another instance could not finish, through the fake
/// upstream: Anthropic's assistant prefill, vLLM's `continue_final_message`; and a server that
/// cannot continue (OpenAI's own API), whose answer ends `interrupted` as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_answer_is_continued_by_each_provider_that_can() {
    use rill_test_support::fake_upstream::{FakeUpstream, Reply};
    with_backends(|backends| async move {
        let fake = FakeUpstream::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bots.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[[bots]]
id = "claude"
name = "Claude"
provider = "anthropic"
model = "claude-test"
base_url = "{anthropic}"

[[bots]]
id = "vllm"
name = "vLLM"
provider = "openai"
model = "qwen"
base_url = "{openai}"
continuation = "continue_final_message"

[[bots]]
id = "openai"
name = "OpenAI"
provider = "openai"
model = "gpt"
base_url = "{openai}"
"#,
                anthropic = fake.url(),
                openai = fake.openai_base_url(),
            ),
        )
        .expect("write bots");
        let client = reqwest::Client::new();
        for bot in ["claude", "vllm", "openai"] {
            let ports = [free_port(), free_port()];
            let mut nodes = Vec::new();
            for (name, port) in [("a", ports[0]), ("b", ports[1])] {
                let mut command = serve_command(&backends, &format!("{bot}-{name}"), port, "50");
                command.arg("--config").arg(&config);
                nodes.push(launch(command, port).await);
            }
            let (a, b) = (nodes[0].base.clone(), nodes[1].base.clone());
            let (status, chat) =
                post_json(&client, &format!("{a}/api/chats"), json!({"bot": bot})).await;
            assert_eq!(status, 201, "{chat}");
            let chat = chat["id"].as_str().expect("id").to_owned();
            let before = fake.request_count();
            let tokens: Vec<String> = (0..300).map(|i| format!("w{i} ")).collect();
            fake.push(Reply::tokens(tokens).token_interval(Duration::from_millis(20)));
            let rest = [" and", " the", " rest."];
            fake.push(Reply::tokens(rest));
            let deadline = Instant::now() + WITHIN;
            let mut on_b = Sse::open(&client, &format!("{b}/api/chats/{chat}/events"), None).await;
            let id = send(&client, &a, &chat, "go on").await;
            let mut answer = Answer::default();
            answer
                .follow(&mut on_b, &id, deadline, |a| a.deltas >= 10)
                .await;
            // A checkpoint exists (every 100 ms), so the takeover has something to read.
            tokio::time::sleep(Duration::from_millis(250)).await;
            nodes[0].child.start_kill().expect("SIGKILL");
            nodes[0].child.wait().await.expect("reaped");
            answer
                .follow(&mut on_b, &id, deadline, |a| a.completed.is_some())
                .await;
            let message = stored(&client, &b, &chat, &id).await;
            let content = message["content"].as_str().expect("content").to_owned();
            assert_eq!(
                content, answer.text,
                "{bot}: the stored text is what the client saw"
            );
            if bot == "openai" {
                assert_eq!(answer.completed.as_deref(), Some("interrupted"), "{bot}");
                assert_eq!(fake.request_count(), before + 1, "{bot}: nothing continued");
                drop(fake.requests());
                drop(nodes);
                continue;
            }
            assert_eq!(answer.completed.as_deref(), Some("complete"), "{bot}");
            let requests = fake.requests();
            assert_eq!(
                requests.len(),
                before + 2,
                "{bot}: one continuation request"
            );
            let body = requests[before + 1].body.clone();
            let last = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .cloned()
                .expect("messages");
            assert_eq!(last["role"], "assistant", "{bot}: {body}");
            let prefill = last["content"].as_str().expect("prefill").to_owned();
            // What the client had when A died: the prefill, and then exactly the rest.
            match bot {
                // Anthropic refuses trailing whitespace in a prefill: it is cut, and the
                // model's repeat of it (the rest starts with " and") dropped.
                "claude" => {
                    let kept = content.strip_suffix("and the rest.").expect("the rest");
                    assert!(kept.ends_with(' '), "{content}");
                    assert_eq!(prefill, kept.trim_end(), "{bot}");
                }
                _ => {
                    let kept = content.strip_suffix(" and the rest.").expect("the rest");
                    assert_eq!(prefill, kept, "{bot}");
                    assert_eq!(body["continue_final_message"], true, "{bot}");
                    assert_eq!(body["add_generation_prompt"], false, "{bot}");
                }
            }
            drop(nodes);
        }
    })
    .await;
}

/// nginx in front of instances on `ports`, configured with docs/nginx-scale-out.conf as
/// documented (only ports and paths change, temp files go to our own directory so nginx needs no
/// root) and checked by `nginx -t`; returns the proxy's base URL, its process and its directory.
/// `None` (the test is skipped, loudly) when nginx is not installed.
async fn start_nginx(ports: &[String]) -> Option<(String, Child, tempfile::TempDir)> {
    if std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("!!! nginx is not installed: SKIPPING a test through nginx !!!");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_port();
    let temp = dir.path().display();
    let config = include_str!("../../../docs/nginx-scale-out.conf")
        .replace("listen 8080;", &format!("listen 127.0.0.1:{listen};"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", ports[0]))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{}", ports[1]))
        .replace("127.0.0.1:8083", &format!("127.0.0.1:{}", ports[2]))
        .replace("/tmp/rill-nginx.pid", &format!("{temp}/nginx.pid"))
        .replace(
            "\nhttp {",
            &format!(
                "\nhttp {{\n    client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n    \
                 fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n    \
                 scgi_temp_path {temp}/scgi;"
            ),
        )
        // One process, no master: dropping the child (SIGKILL) then leaves no orphaned
        // worker behind (a killed master's workers live on).
        .replace(
            "worker_processes auto;",
            "worker_processes 1;\nmaster_process off;",
        );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, config).expect("write the config");
    let checked = Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir.path())
        .output()
        .await
        .expect("nginx -t");
    assert!(
        checked.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let nginx = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir.path())
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start nginx");
    let proxy = format!("http://127.0.0.1:{listen}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{proxy}/readyz")).send().await
            && r.status() == 200
        {
            return Some((proxy, nginx, dir));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nginx did not proxy to the instances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_nginx_interrupts_no_answer() {
    with_backends(|backends| async move {
        let names = ["a", "b", "c"];
        let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
        // Short drains, so both ways an answer outlives its instance are exercised: finishing
        // during the drain, and being handed over when the drain runs out.
        let start = |name: String, port: u16| {
            let mut command = serve_command(&backends, &name, port, "30");
            command.args(["--drain-timeout", "3s"]);
            launch(command, port)
        };
        let mut nodes = Vec::new();
        for (name, port) in names.iter().zip(&ports) {
            nodes.push(start((*name).to_owned(), *port).await);
        }
        let port_texts: Vec<String> = ports.iter().map(u16::to_string).collect();
        let Some((proxy, _nginx, _dir)) = start_nginx(&port_texts).await else {
            return;
        };
        let client = reqwest::Client::new();
        let mut followers = Vec::new();
        let mut chats = Vec::new();
        for i in 0..20 {
            let chat = create_chat(&client, &proxy).await;
            let id = send_retrying(&client, &proxy, &chat, &format!("rolling question {i}")).await;
            followers.push(tokio::spawn(follow_reconnecting(
                client.clone(),
                proxy.clone(),
                chat.clone(),
                id.clone(),
            )));
            chats.push((chat, id));
        }
        // Restart every instance in turn, as a deploy does: SIGTERM, wait for it to exit,
        // start the new version on the same port, wait until it is ready.
        for (i, name) in names.iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(700)).await;
            terminate(&nodes[i].child);
            let exited = tokio::time::timeout(Duration::from_secs(30), nodes[i].child.wait())
                .await
                .expect("a draining instance exits after its drain")
                .expect("wait");
            assert!(exited.success(), "{name} exited cleanly: {exited:?}");
            nodes[i] = start(format!("{name}-2"), ports[i]).await;
        }
        for (follower, (chat, id)) in followers.into_iter().zip(&chats) {
            let answer = follower.await.expect("follower");
            assert_eq!(answer.completed.as_deref(), Some("complete"), "{id}");
            let message = stored(&client, &proxy, chat, id).await;
            assert_eq!(message["status"], "complete", "{id}");
            assert_eq!(
                message["content"].as_str(),
                Some(answer.text.as_str()),
                "{id}"
            );
        }
        drop(nodes);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sent_to_b_cancels_the_generation_running_on_a() {
    with_backends(|backends| async move {
        let nodes = start_all(&backends, &["a", "b"], "50").await;
        let (a, b) = (&nodes[0].base, &nodes[1].base);
        let client = reqwest::Client::new();
        let chat = create_chat(&client, a).await;
        let deadline = Instant::now() + WITHIN;

        let mut on_a = Sse::open(&client, &format!("{a}/api/chats/{chat}/events"), None).await;
        let id = send(&client, a, &chat, "stop me from elsewhere").await;
        let mut answer = Answer::default();
        answer
            .follow(&mut on_a, &id, deadline, |a| a.deltas >= 5)
            .await;

        let (status, body) =
            post_json(&client, &format!("{b}/api/chats/{chat}/stop"), json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["message"]["id"], id.as_str());
        assert_eq!(body["message"]["status"], "stopped");

        answer
            .follow(&mut on_a, &id, deadline, |a| a.completed.is_some())
            .await;
        assert_eq!(answer.completed.as_deref(), Some("stopped"));
        // A stopped streaming: nothing more for this answer (a delta would panic in `apply`).
        let quiet = Instant::now() + Duration::from_millis(500);
        while let Ok(Some(event)) = tokio::time::timeout_at(quiet, on_a.next(deadline)).await {
            answer.apply(&event, &id);
        }
        let message = stored(&client, b, &chat, &id).await;
        assert_eq!(message["status"], "stopped");
        assert_eq!(message["content"].as_str(), Some(answer.text.as_str()));
        let (status, body) =
            post_json(&client, &format!("{b}/api/chats/{chat}/stop"), json!({})).await;
        assert_eq!(status, 409, "nothing runs anymore: {body}");
        assert_eq!(body["error"]["code"], "not_generating");
        drop(nodes);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Redis losing its data, or going away.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_lost_gives_connected_and_resuming_subscribers_a_reset() {
    with_backends(|backends| async move {
        let nodes = start_all(&backends, &["a", "b"], "50").await;
        let (a, b) = (&nodes[0].base, &nodes[1].base);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + WITHIN;

        let mut sub = Sse::open(&client, &format!("{b}/api/events?topic=news"), None).await;
        for n in 0..3 {
            publish(&client, a, "news", n).await;
        }
        let mut old_id = String::new();
        for n in 0..3 {
            let event = sub.next(deadline).await.expect("open");
            assert_eq!(data(&event)["data"]["n"], n);
            old_id = event.id;
        }

        delete_prefix(&backends.redis, &backends.prefix).await;

        // Publishing works at once on the new epoch, and the connected subscriber learns that
        // the logs were lost.
        publish(&client, a, "news", 3).await;
        let event = sub.next(deadline).await.expect("open");
        assert_eq!(event.event, "reset", "{event:?}");
        assert_eq!(data(&event)["topic"], "news");
        assert_eq!(data(&event)["reason"], "epoch_changed");
        let mut after_reset = Vec::new();
        publish(&client, b, "news", 4).await;
        while after_reset.last() != Some(&4) {
            let event = sub.next(deadline).await.expect("open");
            assert_eq!(event.event, "tick", "{event:?}");
            after_reset.push(data(&event)["data"]["n"].as_u64().expect("n"));
        }
        assert!(
            after_reset == [3, 4] || after_reset == [4],
            "live again after the reset: {after_reset:?}"
        );

        // A client resuming with an id from before the loss, on another instance, resets too.
        let mut late = Sse::open(
            &client,
            &format!("{a}/api/events?topic=news"),
            Some(&old_id),
        )
        .await;
        let event = late.next(deadline).await.expect("open");
        assert_eq!(event.event, "reset", "{event:?}");
        assert_eq!(data(&event)["reason"], "epoch_changed");
        publish(&client, b, "news", 5).await;
        let event = late.next(deadline).await.expect("open");
        assert_eq!(data(&event)["data"]["n"], 5);
        drop(nodes);
    })
    .await;
}

/// A private `redis-server` on `port`, without persistence, so a restart loses everything.
async fn private_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is installed");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
    for _ in 0..200 {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
            if pong.is_ok() {
                return child;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server did not start on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_gives_503_while_down_then_reset_and_live_publishing() {
    if skip(false) {
        return;
    }
    let redis_port = free_port();
    let mut redis = private_redis(redis_port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let backends = Backends {
        redis: format!("redis://127.0.0.1:{redis_port}"),
        redis_args: Vec::new(),
        prefix: "rill:".to_owned(),
        database: format!("sqlite://{}?mode=rwc", dir.path().join("rill.db").display()),
    };
    let port = free_port();
    let node = launch(serve_command(&backends, "a", port, "50"), port).await;
    let base = &node.base;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let streams = reqwest::Client::new();
    let deadline = Instant::now() + WITHIN;

    let mut sub = Sse::open(&streams, &format!("{base}/api/events?topic=news"), None).await;
    publish(&client, base, "news", 0).await;
    let first = sub.next(deadline).await.expect("open");
    assert_eq!(data(&first)["data"]["n"], 0);
    let last = first.id;

    redis.start_kill().expect("kill redis");
    redis.wait().await.expect("reaped");

    // While Redis is down: publishing is refused with a clear 503, never dropped, and the
    // instance says it is not ready.
    let mut refused = None;
    for _ in 0..20 {
        let response = client
            .post(format!("{base}/api/topics/news/events"))
            .json(&json!({"event": "tick", "data": {"n": 99}}))
            .send()
            .await
            .expect("an answer");
        if response.status() != 201 {
            refused = Some((
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            ));
            break;
        }
    }
    let (status, body) = refused.expect("publishing fails while Redis is down");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "broker_unavailable");
    let mut ready = 200;
    for _ in 0..100 {
        ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16();
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 503, "not ready without Redis");

    let _redis = private_redis(redis_port).await;
    for _ in 0..300 {
        ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16();
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200, "ready again once Redis is back");

    // The subscriber either saw its live feed re-synchronised (a reset: Redis came back empty)
    // or had its stream ended with `broker_unavailable`; then it resumes and gets the reset.
    let mut reset = false;
    for _ in 0..10 {
        match sub.next(deadline).await {
            Some(event) if event.event == "reset" => {
                assert_eq!(data(&event)["reason"], "epoch_changed");
                reset = true;
                break;
            }
            Some(event) if event.event == "error" => {
                assert_eq!(data(&event)["code"], "broker_unavailable", "{event:?}");
            }
            Some(event) => panic!("unexpected {event:?}"),
            None => {
                sub = Sse::open(
                    &streams,
                    &format!("{base}/api/events?topic=news"),
                    Some(&last),
                )
                .await;
            }
        }
    }
    assert!(reset, "the subscriber was told the logs were lost");
    publish(&client, base, "news", 1).await;
    let event = sub.next(deadline).await.expect("open");
    assert_eq!(event.event, "tick");
    assert_eq!(data(&event)["data"]["n"], 1, "live again after the restart");
    drop(node);
}

// ---------------------------------------------------------------------------------------------
// Bad configuration fails fast, naming the setting.

/// Runs `rill serve` on `broker` and `database` (a fresh SQLite file when `None`) and returns its
/// stderr; it must exit non-zero by itself.
async fn fails(broker: &str, database: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("rill.db").display());
    let args = [
        "--broker",
        broker,
        "--database",
        database.unwrap_or(&sqlite),
    ];
    let mut command = Command::new(RILL);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RILL_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(WITHIN, command.output())
        .await
        .expect("rill serve gives up by itself")
        .expect("run rill serve");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{args:?} must fail: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backends_fail_start_up_fast_naming_the_setting() {
    let closed = free_port();
    let redis = format!("redis://127.0.0.1:{closed}");
    let postgres = format!("postgres://postgres@127.0.0.1:{closed}/rill");
    let (unreachable_redis, unreachable_postgres, bad_broker, bad_database) = tokio::join!(
        fails(&redis, None),
        fails("memory", Some(&postgres)),
        fails("http://127.0.0.1:6379", None),
        fails("memory", Some("mysql://127.0.0.1/rill")),
    );
    for (stderr, setting) in [
        (&unreachable_redis, "`broker`"),
        (&unreachable_postgres, "`database`"),
        (&bad_broker, "`broker`"),
        (&bad_database, "`database`"),
    ] {
        assert!(stderr.contains(setting), "stderr names {setting}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        unreachable_redis.contains(&closed.to_string()) || unreachable_redis.contains("refused"),
        "{unreachable_redis}"
    );
}

// ---------------------------------------------------------------------------------------------
// The documented nginx configuration, in front of three instances.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_nginx_config_streams_through_to_three_instances() {
    with_backends(|backends| async move {
        let nodes = start_all(&backends, &["a", "b", "c"], "50").await;
        let ports: Vec<String> = nodes
            .iter()
            .map(|n| n.base.rsplit(':').next().expect("port").to_owned())
            .collect();
        let Some((proxy, _nginx, _dir)) = start_nginx(&ports).await else {
            return;
        };
        let client = reqwest::Client::new();

        // Three subscribers through the proxy (least_conn puts them on different instances),
        // publishes through the proxy: every event reaches every subscriber one at a time, so
        // nothing waits in a proxy buffer.
        let deadline = Instant::now() + WITHIN;
        let mut subs = Vec::new();
        for _ in 0..3 {
            subs.push(Sse::open(&client, &format!("{proxy}/api/events?topic=proxied"), None).await);
        }
        let mut carrying = 0;
        for node in &nodes {
            let metrics = client
                .get(format!("{}/metrics", node.base))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            let open = metrics
                .lines()
                .find_map(|l| l.strip_prefix("rill_open_streams "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .expect("rill_open_streams");
            if open > 0.0 {
                carrying += 1;
            }
        }
        assert!(
            carrying > 1,
            "the proxy spread the streams over the instances"
        );
        for n in 0..20 {
            publish(&client, &proxy, "proxied", n).await;
            for sub in &mut subs {
                let event = sub.next(deadline).await.expect("open");
                assert_eq!(data(&event)["data"]["n"], n);
            }
        }
        drop(subs);
        drop(nodes);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// TLS: Redis over rediss:// (a private server that speaks only TLS, its CA given with
// --redis-ca-file) and PostgreSQL with sslmode=require.

/// Runs `test` on a private TLS Redis and the test PostgreSQL over TLS.
async fn with_tls_backends<F, Fut>(test: F)
where
    F: FnOnce(Backends) -> Fut,
    Fut: Future<Output = ()>,
{
    if skip(true) || rill_test_support::redis_servers::skip() {
        return;
    }
    let server = tokio::task::spawn_blocking(TlsRedis::start)
        .await
        .expect("a TLS Redis");
    let redis = RedisUnderTest::Private {
        url: server.url(),
        args: vec![
            "--redis-ca-file".to_owned(),
            server.ca_file().display().to_string(),
        ],
    };
    with_backends_on(redis, |mut backends| {
        backends.database.push_str("&sslmode=require");
        test(backends)
    })
    .await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_resume_is_exact_when_every_reconnect_lands_on_another_instance() {
    with_tls_backends(resume_hopping_instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_resume_is_exact_across_three_topics_and_three_instances() {
    with_tls_backends(resume_three_topics_hopping_instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_chat_answer_followed_on_b_then_moved_to_c_ends_with_the_stored_text() {
    with_tls_backends(chat_followed_and_moved).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_every_database_connection_is_encrypted() {
    with_tls_backends(|backends| async move {
        // Name the instances' connections, to find them in pg_stat_activity.
        let name = format!("rill_tls_{:08x}", fastrand::u32(..));
        let mut backends = backends;
        backends
            .database
            .push_str(&format!("&application_name={name}"));
        let nodes = start_all(&backends, &["a", "b"], "50").await;
        let client = reqwest::Client::new();
        let chat = create_chat(&client, &nodes[0].base).await;
        let _ = send(&client, &nodes[1].base, &chat, "hello over TLS").await;
        let mut admin = sqlx::PgConnection::connect(&postgres_url())
            .await
            .expect("admin connection");
        let (ssl, count): (bool, i64) = sqlx::query_as(
            "SELECT coalesce(bool_and(s.ssl), false), count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.application_name = $1",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .expect("pg_stat_ssl");
        assert!(count >= 2, "both instances hold connections: {count}");
        assert!(ssl, "every connection of every instance uses TLS");
        drop(nodes);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_ca_that_did_not_sign_the_certificate_fails_start_up_naming_the_setting() {
    if rill_test_support::redis_servers::skip() {
        return;
    }
    let server = tokio::task::spawn_blocking(TlsRedis::start)
        .await
        .expect("a TLS Redis");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("rill.db").display());
    let output = Command::new(RILL)
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &sqlite])
        .args(["--broker", &server.url()])
        .arg("--redis-ca-file")
        .arg(server.wrong_ca_file())
        .env_remove("RILL_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WITHIN, output)
        .await
        .expect("rill serve gives up by itself")
        .expect("run rill serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("`redis_ca_file`"),
        "names the setting: {stderr}"
    );
    assert!(stderr.contains("TLS"), "says it is TLS: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster: three primaries (private, started by the test), --redis-cluster.

/// Runs `test` on a private three-primary Redis Cluster; hands the cluster to the test too.
async fn with_cluster_backends<F, Fut>(test: F)
where
    F: FnOnce(Backends, RedisCluster) -> Fut,
    Fut: Future<Output = ()>,
{
    if skip(true) || rill_test_support::redis_servers::skip() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .expect("a Redis Cluster");
    let redis = RedisUnderTest::Private {
        url: cluster.url(),
        args: vec!["--redis-cluster".to_owned()],
    };
    with_backends_on(redis, |backends| test(backends, cluster)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_resume_is_exact_when_every_reconnect_lands_on_another_instance() {
    with_cluster_backends(|b, cluster| async move {
        resume_hopping_instances(b).await;
        // Alive until the test is done.
        drop(cluster);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_resume_is_exact_across_three_topics_and_three_instances() {
    with_cluster_backends(|b, cluster| async move {
        resume_three_topics_hopping_instances(b).await;
        // Alive until the test is done.
        drop(cluster);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_chat_answer_followed_on_b_then_moved_to_c_ends_with_the_stored_text() {
    with_cluster_backends(|b, cluster| async move {
        chat_followed_and_moved(b).await;
        // Alive until the test is done.
        drop(cluster);
    })
    .await;
}

/// What one client saw of many topics over streams that may end and be resumed.
#[derive(Debug, Default)]
struct Seen {
    /// Per topic: `n` of each tick, and `reset:<reason>` for each reset, in order.
    log: std::collections::BTreeMap<String, Vec<String>>,
    last_id: Option<String>,
}

impl Seen {
    fn apply(&mut self, event: &OwnedEvent) {
        let d = data(event);
        let topic = d["topic"].as_str().expect("topic").to_owned();
        let entry = match event.event.as_str() {
            "tick" => d["data"]["n"].as_u64().expect("n").to_string(),
            "reset" => format!("reset:{}", d["reason"].as_str().expect("reason")),
            other => panic!("unexpected event {other}: {d}"),
        };
        self.log.entry(topic).or_default().push(entry);
        self.last_id = Some(event.id.clone());
    }

    /// Reads `url` until `done` holds, resuming with the last id whenever the stream ends
    /// (`broker_unavailable` while a primary is down) or cannot open yet (503), as
    /// `EventSource` does. Bounded by `deadline`.
    async fn follow(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        sse: &mut Option<Sse>,
        deadline: Instant,
        done: impl Fn(&Self) -> bool,
    ) {
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out: {self:?}");
            let stream = match sse {
                Some(s) => s,
                None => {
                    let mut request = client.get(url).header("accept", "text/event-stream");
                    if let Some(id) = &self.last_id {
                        request = request.header("last-event-id", id);
                    }
                    let response = request.send().await.expect("an answer");
                    if response.status() != 200 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    sse.insert(Sse {
                        response,
                        parser: Parser::new(),
                        pending: VecDeque::new(),
                    })
                }
            };
            match stream.next(deadline).await {
                Some(event) if event.event == "error" => {
                    assert_eq!(data(&event)["code"], "broker_unavailable", "{event:?}");
                }
                Some(event) => self.apply(&event),
                None => *sse = None,
            }
        }
    }

    fn ticks(&self, topic: &str) -> Vec<String> {
        self.log.get(topic).cloned().unwrap_or_default()
    }
}

/// Publishes tick `n` to `topic` on `base`, retrying (bounded) while its primary is away.
async fn publish_retrying(client: &reqwest::Client, base: &str, topic: &str, n: u64) {
    for _ in 0..200 {
        let response = client
            .post(format!("{base}/api/topics/{topic}/events"))
            .json(&json!({ "event": "tick", "data": { "n": n } }))
            .send()
            .await
            .expect("publish");
        match response.status().as_u16() {
            201 => return,
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("publish {n} to {topic}: {other}"),
        }
    }
    panic!("publishing {n} to {topic} never succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_primary_restarted_empty_resets_only_its_topics() {
    with_cluster_backends(|backends, cluster| async move {
        let nodes = start_all(&backends, &["a", "b", "c"], "50").await;
        let (a, b, c) = (&nodes[0].base, &nodes[1].base, &nodes[2].base);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);

        // 100 topics over the slots, in four streams of 25 (each stream's id carries the epochs
        // of several slots).
        let topics: Vec<String> = (0..100).map(|i| format!("spread/{i}")).collect();
        let owner: Vec<usize> = topics
            .iter()
            .map(|t| cluster.owner_of(cluster.key_slot(&format!("{}{{{t}}}:seq", backends.prefix))))
            .collect();
        let victim = owner[0];
        let on_victim = |i: usize| owner[i] == victim;
        assert!(
            (0..3).all(|n| owner.contains(&n)),
            "the topics live on every primary"
        );
        let groups: Vec<Vec<usize>> = (0..4).map(|g| (g * 25..g * 25 + 25).collect()).collect();
        let url = |base: &str, group: &[usize]| {
            let query: Vec<String> = group
                .iter()
                .map(|&i| format!("topic={}", topics[i]))
                .collect();
            format!("{base}/api/events?{}", query.join("&"))
        };
        let count_is = |seen: &Seen, group: &[usize], n: usize| {
            group.iter().all(|&i| seen.ticks(&topics[i]).len() >= n)
        };

        // Published on A, read on B.
        let mut on_b: Vec<(Seen, Option<Sse>)> = Vec::new();
        for group in &groups {
            let sse = Sse::open(&client, &url(b, group), None).await;
            on_b.push((Seen::default(), Some(sse)));
        }
        for n in 0..2 {
            for t in &topics {
                publish(&client, a, t, n).await;
            }
        }
        for (group, (seen, sse)) in groups.iter().zip(on_b.iter_mut()) {
            seen.follow(&client, &url(b, group), sse, deadline, |s| {
                count_is(s, group, 2)
            })
            .await;
        }
        // Resumed on C from B's ids, after two more on A.
        for t in &topics {
            publish(&client, a, t, 2).await;
        }
        let mut on_c: Vec<(Seen, Option<Sse>)> = Vec::new();
        for (group, (seen, _)) in groups.iter().zip(&on_b) {
            let mut resumed = Seen {
                last_id: seen.last_id.clone(),
                ..Seen::default()
            };
            let mut sse = None;
            resumed
                .follow(&client, &url(c, group), &mut sse, deadline, |s| {
                    count_is(s, group, 1)
                })
                .await;
            on_c.push((resumed, None));
        }
        for (i, t) in topics.iter().enumerate() {
            let group = &on_c[i / 25].0;
            assert_eq!(group.ticks(t), ["2"], "{t}: C resumed exactly after B's id");
        }
        for (group, (seen, sse)) in groups.iter().zip(on_b.iter_mut()) {
            seen.follow(&client, &url(b, group), sse, deadline, |s| {
                count_is(s, group, 3)
            })
            .await;
        }

        // The victim primary dies and comes back empty; meanwhile the others keep publishing.
        let mut cluster = cluster;
        let mut cluster = tokio::task::spawn_blocking(move || {
            cluster.kill(victim);
            cluster
        })
        .await
        .expect("kill");
        for (i, t) in topics.iter().enumerate() {
            if !on_victim(i) {
                publish(&client, a, t, 3).await;
            }
        }
        let _cluster = tokio::task::spawn_blocking(move || {
            cluster.restart_empty(victim);
            cluster
        })
        .await
        .expect("restart");
        for (i, t) in topics.iter().enumerate() {
            if on_victim(i) {
                publish_retrying(&client, a, t, 3).await;
            }
        }
        // A topic's reset jumps to its head: wait for them before publishing what must arrive.
        let reset_or = |seen: &Seen, group: &[usize], last: &str| {
            group.iter().all(|&i| {
                let got = seen.ticks(&topics[i]);
                if on_victim(i) {
                    got.iter().any(|e| e == "reset:epoch_changed")
                } else {
                    got.last().map(String::as_str) == Some(last)
                }
            })
        };
        let last_is = |seen: &Seen, group: &[usize], last: &str| {
            group
                .iter()
                .all(|&i| seen.ticks(&topics[i]).last().map(String::as_str) == Some(last))
        };

        // On B: the victim's topics were reset (epoch_changed) and go on; nothing else lost.
        for (group, (seen, sse)) in groups.iter().zip(on_b.iter_mut()) {
            seen.follow(&client, &url(b, group), sse, deadline, |s| {
                reset_or(s, group, "3")
            })
            .await;
        }
        for t in &topics {
            publish_retrying(&client, a, t, 4).await;
        }
        for (group, (seen, sse)) in groups.iter().zip(on_b.iter_mut()) {
            seen.follow(&client, &url(b, group), sse, deadline, |s| {
                last_is(s, group, "4")
            })
            .await;
        }
        for (i, t) in topics.iter().enumerate() {
            let got = on_b[i / 25].0.ticks(t);
            if on_victim(i) {
                assert_eq!(got[..4], ["0", "1", "2", "reset:epoch_changed"], "{t}");
                assert!(
                    got[4..] == ["3", "4"] || got[4..] == ["4"],
                    "{t}: live again after the reset: {got:?}"
                );
            } else {
                assert_eq!(
                    got,
                    ["0", "1", "2", "3", "4"],
                    "{t}: nothing lost, no reset"
                );
            }
        }

        // On C, resuming from ids taken before the loss: the victim's topics reset, the others
        // replay exactly across the outage.
        for (group, (seen, sse)) in groups.iter().zip(on_c.iter_mut()) {
            seen.follow(&client, &url(c, group), sse, deadline, |s| {
                reset_or(s, group, "4")
            })
            .await;
        }
        for t in &topics {
            publish(&client, a, t, 5).await;
        }
        for (group, (seen, sse)) in groups.iter().zip(on_c.iter_mut()) {
            seen.follow(&client, &url(c, group), sse, deadline, |s| {
                last_is(s, group, "5")
            })
            .await;
        }
        for (i, t) in topics.iter().enumerate() {
            let got = on_c[i / 25].0.ticks(t);
            if on_victim(i) {
                assert_eq!(got, ["2", "reset:epoch_changed", "5"], "{t}");
            } else {
                assert_eq!(
                    got,
                    ["2", "3", "4", "5"],
                    "{t}: exact replay across the outage"
                );
            }
        }
        drop(nodes);
    })
    .await;
}
