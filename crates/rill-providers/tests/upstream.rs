//! The OpenAI and Anthropic providers against the fake upstream over real sockets: normal
//! answers, every injected fault and the error kind or retry behaviour it must give, and the
//! connection closing when a stream is dropped.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns; a panic is the failure report.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rill_core::chat::{Role, Usage};
use rill_core::{
    BotConfig, CompletionRequest, PromptMessage, Provider, ProviderError, ProviderErrorKind,
    ProviderEvent, ProviderKind,
};
use rill_providers::{ProviderSettings, build_provider};
use rill_test_support::fake_upstream::{FakeUpstream, Reply, closed_port_url};

const KEY: &str = "sk-test-secret-4242";
/// Bound on any one test's wait for a stream: far above what any answer here needs.
const PATIENCE: Duration = Duration::from_secs(20);

fn env(name: &str) -> Option<String> {
    (name == "TEST_LLM_KEY").then(|| KEY.to_owned())
}

/// Short backoffs and generous timeouts: retries stay fast, nothing times out by accident.
fn settings() -> ProviderSettings {
    ProviderSettings {
        connect_timeout: Duration::from_secs(5),
        first_token_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        max_attempts: NonZeroU32::new(3).unwrap(),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(40),
        ..ProviderSettings::default()
    }
}

fn bot(kind: ProviderKind, base_url: String) -> BotConfig {
    BotConfig {
        id: "test-bot".into(),
        name: "Test".into(),
        description: String::new(),
        provider: kind,
        base_url: Some(base_url),
        api_key_env: Some("TEST_LLM_KEY".into()),
        model: "test-model".into(),
        system_prompt: Some("You are terse.".into()),
        temperature: Some(0.2),
        max_tokens: None,
        continuation: None,
    }
}

/// Both formats, each with the base URL its bots use.
fn formats(fake: &FakeUpstream) -> [(ProviderKind, String); 2] {
    [
        (ProviderKind::Openai, fake.openai_base_url()),
        (ProviderKind::Anthropic, fake.url()),
    ]
}

fn provider(
    kind: ProviderKind,
    base_url: String,
    settings: &ProviderSettings,
) -> Arc<dyn Provider> {
    build_provider(&bot(kind, base_url), &env, settings).expect("provider")
}

fn request(text: &str) -> CompletionRequest {
    CompletionRequest {
        messages: vec![PromptMessage::text(Role::User, text)],
        ..CompletionRequest::default()
    }
}

/// What a stream gave: the text of its deltas, its finish (if any), its error item (if any).
#[derive(Debug)]
struct Outcome {
    text: String,
    deltas: usize,
    finish: Option<(Option<String>, Option<Usage>)>,
    error: Option<ProviderError>,
}

async fn run(
    provider: &dyn Provider,
    request: CompletionRequest,
) -> Result<Outcome, ProviderError> {
    let mut stream = tokio::time::timeout(PATIENCE, provider.stream(request))
        .await
        .expect("stream() returned in time")?;
    let mut outcome = Outcome {
        text: String::new(),
        deltas: 0,
        finish: None,
        error: None,
    };
    loop {
        let item = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("stream item in time");
        match item {
            None => break,
            Some(Ok(ProviderEvent::Text(text))) => {
                assert!(outcome.finish.is_none(), "a delta after Finish");
                assert!(!text.is_empty(), "an empty delta");
                outcome.text.push_str(&text);
                outcome.deltas += 1;
            }
            Some(Ok(ProviderEvent::Finish { reason, usage })) => {
                assert!(outcome.finish.is_none(), "two Finish items");
                outcome.finish = Some((reason, usage));
            }
            Some(Err(error)) => {
                outcome.error = Some(error);
                assert!(stream.next().await.is_none(), "an item after the error");
                break;
            }
            Some(Ok(other)) => panic!("the fake upstream streams only text: {other:?}"),
        }
    }
    Ok(outcome)
}

fn default_reason(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "end_turn",
        _ => "stop",
    }
}

#[tokio::test]
async fn a_normal_answer_gives_exact_text_usage_and_finish_reason() {
    let fake = FakeUpstream::start().await;
    let tokens = ["Hello", ", 세계", "! 👋🏽", " done", "."];
    for (kind, url) in formats(&fake) {
        // Three-byte pieces cut frames and UTF-8 characters apart on the wire.
        fake.push(Reply::tokens(tokens).usage(21, 5).split_every(3));
        let provider = provider(kind, url, &settings());
        let outcome = run(&*provider, request("Say hello")).await.unwrap();
        assert_eq!(outcome.error, None, "{kind:?}");
        assert_eq!(outcome.text, tokens.concat(), "{kind:?}");
        assert_eq!(outcome.deltas, tokens.len(), "{kind:?}");
        assert_eq!(
            outcome.finish,
            Some((
                Some(default_reason(kind).to_owned()),
                Some(Usage {
                    input_tokens: 21,
                    output_tokens: 5,
                    reasoning_tokens: None,
                })
            )),
            "{kind:?}"
        );
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);

    let openai = &requests[0];
    assert_eq!(openai.path, "/v1/chat/completions");
    assert_eq!(
        openai.header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(openai.body["stream"], true);
    assert_eq!(openai.body["stream_options"]["include_usage"], true);
    assert_eq!(openai.body["model"], "test-model");
    assert_eq!(openai.body["messages"][0]["role"], "system");
    assert_eq!(openai.body["messages"][1]["content"], "Say hello");

    let anthropic = &requests[1];
    assert_eq!(anthropic.path, "/v1/messages");
    assert_eq!(anthropic.header("x-api-key"), Some(KEY));
    assert_eq!(anthropic.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(anthropic.header("authorization"), None);
    assert_eq!(anthropic.body["stream"], true);
    assert_eq!(anthropic.body["system"], "You are terse.");
    assert_eq!(anthropic.body["max_tokens"], 1024);
    assert_eq!(
        anthropic.body["messages"],
        serde_json::json!([{"role": "user", "content": "Say hello"}])
    );
}

#[tokio::test]
async fn no_key_variable_means_no_auth_header_for_local_servers() {
    let fake = FakeUpstream::start().await;
    let mut local = bot(ProviderKind::Openai, fake.openai_base_url());
    local.api_key_env = None;
    let provider = build_provider(&local, &env, &settings()).unwrap();
    let outcome = run(&*provider, request("hi")).await.unwrap();
    assert_eq!(outcome.text, "Hello from the fake upstream.");
    assert_eq!(fake.requests()[0].header("authorization"), None);
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_retried_then_succeeds() {
    let fake = FakeUpstream::start().await;
    for (n, (kind, url)) in formats(&fake).into_iter().enumerate() {
        // One second, capped by `backoff_max` (40 ms) so the test stays fast.
        fake.push(Reply::rate_limited("1"));
        fake.push(Reply::tokens(["after", " the wait"]));
        let provider = provider(kind, url, &settings());
        let outcome = run(&*provider, request("hi")).await.unwrap();
        assert_eq!(outcome.error, None, "{kind:?}");
        assert_eq!(outcome.text, "after the wait", "{kind:?}");
        assert_eq!(fake.request_count(), 2 * (n + 1), "{kind:?}");
    }
}

#[tokio::test]
async fn rate_limit_that_persists_ends_as_rate_limited() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::rate_limited("0"));
    let provider = provider(ProviderKind::Openai, fake.openai_base_url(), &settings());
    let error = run(&*provider, request("hi")).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::RateLimited);
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn server_errors_are_retried_up_to_the_limit_then_unavailable() {
    let fake = FakeUpstream::start().await;
    for (n, (kind, url)) in formats(&fake).into_iter().enumerate() {
        for _ in 0..3 {
            fake.push(Reply::status(500, "internal boom"));
        }
        let provider = provider(kind, url, &settings());
        let error = run(&*provider, request("hi")).await.unwrap_err();
        assert_eq!(error.kind, ProviderErrorKind::Unavailable, "{kind:?}");
        assert!(error.message.contains("internal boom"), "{error}");
        assert!(error.message.contains("3 attempts"), "{error}");
        assert_eq!(fake.request_count(), 3 * (n + 1), "{kind:?}");
    }
}

#[tokio::test]
async fn a_server_error_then_success_recovers() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::status(503, "busy"));
    fake.push(Reply::status(502, "bad gateway"));
    let provider = provider(ProviderKind::Anthropic, fake.url(), &settings());
    let outcome = run(&*provider, request("hi")).await.unwrap();
    assert_eq!(outcome.text, "Hello from the fake upstream.");
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_never_shows_the_key() {
    let fake = FakeUpstream::start().await;
    for (n, (kind, url)) in formats(&fake).into_iter().enumerate() {
        fake.push(Reply::status(
            401,
            &format!("Incorrect API key provided: {KEY}"),
        ));
        let provider = provider(kind, url, &settings());
        let error = run(&*provider, request("hi")).await.unwrap_err();
        assert_eq!(error.kind, ProviderErrorKind::Rejected, "{kind:?}");
        assert!(error.message.contains("Incorrect API key"), "{error}");
        assert!(error.message.contains("401"), "{error}");
        assert!(!error.message.contains(KEY), "{error}");
        assert_eq!(fake.request_count(), n + 1, "{kind:?}");
    }
}

#[tokio::test]
async fn connection_refused_is_retried_then_connect_error() {
    for kind in [ProviderKind::Openai, ProviderKind::Anthropic] {
        let provider = provider(kind, closed_port_url(), &settings());
        let error = run(&*provider, request("hi")).await.unwrap_err();
        assert_eq!(error.kind, ProviderErrorKind::Connect, "{kind:?}");
        assert!(error.message.contains("3 attempts"), "{error}");
        assert!(
            !error.message.contains("127.0.0.1"),
            "no URL in messages: {error}"
        );
    }
}

#[tokio::test]
async fn a_drop_mid_stream_ends_with_protocol_error_after_the_deltas_and_no_retry() {
    let fake = FakeUpstream::start().await;
    for (n, (kind, url)) in formats(&fake).into_iter().enumerate() {
        fake.push(Reply::tokens(["partial", " answer"]).then_drop());
        let provider = provider(kind, url, &settings());
        let outcome = run(&*provider, request("hi")).await.unwrap();
        assert_eq!(outcome.text, "partial answer", "{kind:?}");
        assert_eq!(outcome.finish, None, "{kind:?}");
        let error = outcome.error.expect("an error item");
        assert_eq!(error.kind, ProviderErrorKind::Protocol, "{kind:?}");
        assert_eq!(
            fake.request_count(),
            n + 1,
            "no retry after tokens ({kind:?})"
        );
    }
}

#[tokio::test]
async fn a_malformed_chunk_is_a_protocol_error() {
    let fake = FakeUpstream::start().await;
    for (kind, url) in formats(&fake) {
        fake.push(Reply::tokens(["fine so far"]).then_malformed());
        let provider = provider(kind, url, &settings());
        let outcome = run(&*provider, request("hi")).await.unwrap();
        assert_eq!(outcome.text, "fine so far", "{kind:?}");
        let error = outcome.error.expect("an error item");
        assert_eq!(error.kind, ProviderErrorKind::Protocol, "{kind:?}");
    }
}

#[tokio::test]
async fn an_error_object_in_the_stream_is_an_upstream_error() {
    let fake = FakeUpstream::start().await;
    for (kind, url) in formats(&fake) {
        fake.push(Reply::tokens(["half"]).then_error("Overloaded"));
        let provider = provider(kind, url, &settings());
        let outcome = run(&*provider, request("hi")).await.unwrap();
        assert_eq!(outcome.text, "half", "{kind:?}");
        let error = outcome.error.expect("an error item");
        assert_eq!(error.kind, ProviderErrorKind::Upstream, "{kind:?}");
        assert!(error.message.contains("Overloaded"), "{error}");
    }
}

#[tokio::test]
async fn no_first_token_in_time_is_a_timeout_item() {
    let fake = FakeUpstream::start().await;
    let settings = ProviderSettings {
        first_token_timeout: Duration::from_millis(300),
        ..settings()
    };
    for (n, (kind, url)) in formats(&fake).into_iter().enumerate() {
        fake.push(Reply::tokens(["too late"]).first_token_delay(Duration::from_secs(60)));
        let provider = provider(kind, url, &settings);
        let outcome = run(&*provider, request("hi")).await.unwrap();
        assert_eq!(outcome.text, "", "{kind:?}");
        let error = outcome.error.expect("an error item");
        assert_eq!(error.kind, ProviderErrorKind::Timeout, "{kind:?}");
        assert_eq!(fake.request_count(), n + 1, "{kind:?}");
    }
}

#[tokio::test]
async fn silence_between_tokens_is_a_timeout_item_after_the_text() {
    let fake = FakeUpstream::start().await;
    let settings = ProviderSettings {
        idle_timeout: Duration::from_millis(300),
        ..settings()
    };
    for (kind, url) in formats(&fake) {
        fake.push(Reply::tokens(["first", " second"]).then_hang());
        let provider = provider(kind, url, &settings);
        let outcome = run(&*provider, request("hi")).await.unwrap();
        assert_eq!(outcome.text, "first second", "{kind:?}");
        let error = outcome.error.expect("an error item");
        assert_eq!(error.kind, ProviderErrorKind::Timeout, "{kind:?}");
    }
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_connection() {
    let fake = FakeUpstream::start().await;
    for (n, (kind, url)) in formats(&fake).into_iter().enumerate() {
        fake.push(Reply::endless("tick ", Duration::from_millis(5)));
        let provider = provider(kind, url, &settings());
        let mut stream = provider.stream(request("go on")).await.unwrap();
        for _ in 0..3 {
            let item = tokio::time::timeout(PATIENCE, stream.next()).await.unwrap();
            assert_eq!(item, Some(Ok(ProviderEvent::Text("tick ".into()))));
        }
        assert_eq!(fake.disconnects(), n, "{kind:?}");
        drop(stream);
        assert!(
            fake.wait_for_disconnects(n + 1, PATIENCE).await,
            "the fake upstream saw its connection closed ({kind:?})"
        );
    }
}

#[tokio::test]
async fn a_missing_key_is_a_config_error_naming_the_variable() {
    let mut bot = bot(ProviderKind::Anthropic, "http://127.0.0.1:9".into());
    bot.api_key_env = Some("NOT_SET_ANYWHERE".into());
    let error = build_provider(&bot, &env, &settings()).err().unwrap();
    assert_eq!(error.kind, ProviderErrorKind::Config);
    assert!(error.message.contains("NOT_SET_ANYWHERE"), "{error}");

    let empty = |_: &str| Some(String::new());
    let error = build_provider(&bot, &empty, &settings()).err().unwrap();
    assert_eq!(error.kind, ProviderErrorKind::Config);

    let mut bad_url = self::bot(ProviderKind::Openai, "ftp://example.com".into());
    bad_url.api_key_env = None;
    let error = build_provider(&bad_url, &env, &settings()).err().unwrap();
    assert_eq!(error.kind, ProviderErrorKind::Config);
    assert!(error.message.contains("base_url"), "{error}");

    let newline = |_: &str| Some("sk-bad\nkey".to_owned());
    let bot = self::bot(ProviderKind::Openai, "http://127.0.0.1:9".into());
    let error = build_provider(&bot, &newline, &settings()).err().unwrap();
    assert_eq!(error.kind, ProviderErrorKind::Config);
    assert!(!error.message.contains("sk-bad"), "{error}");
}

#[tokio::test]
async fn dropping_the_stream_before_the_first_token_closes_the_connection_too() {
    let fake = FakeUpstream::start().await;
    for (n, (kind, url)) in formats(&fake).into_iter().enumerate() {
        fake.push(Reply::tokens(["never"]).first_token_delay(Duration::from_secs(60)));
        let provider = provider(kind, url, &settings());
        let stream = provider.stream(request("wait")).await.unwrap();
        drop(stream);
        assert!(
            fake.wait_for_disconnects(n + 1, PATIENCE).await,
            "the fake upstream saw its connection closed ({kind:?})"
        );
    }
}

#[tokio::test]
async fn retry_after_replaces_the_backoff() {
    let fake = FakeUpstream::start().await;
    // Without the header the backoff would be 30 s or more, beyond the test's patience: only
    // honouring `Retry-After: 0` lets the second attempt come in time.
    let settings = ProviderSettings {
        backoff_base: Duration::from_secs(60),
        backoff_max: Duration::from_secs(60),
        ..settings()
    };
    fake.push(Reply::rate_limited("0"));
    fake.push(Reply::status(503, "busy").header("retry-after", "0"));
    let provider = provider(ProviderKind::Openai, fake.openai_base_url(), &settings);
    let outcome = run(&*provider, request("hi")).await.unwrap();
    assert_eq!(outcome.text, "Hello from the fake upstream.");
    assert_eq!(fake.request_count(), 3);
}
