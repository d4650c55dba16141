//! The demo model: deterministic, multi-byte, quoting the prompt, paced as configured and
//! instant at zero delay; and the default bot list.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns; a panic is the failure report.

use std::time::Duration;

use futures::StreamExt;
use rill_core::chat::{Role, Usage};
use rill_core::{
    BotConfig, CompletionRequest, CompletionStream, PromptMessage, ProviderEvent, ProviderKind,
};
use rill_providers::{ProviderSettings, build_provider, default_bots};

fn demo_bot() -> BotConfig {
    default_bots(&|_| None).remove(0)
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn request(messages: &[(Role, &str)]) -> CompletionRequest {
    CompletionRequest {
        model: "demo".into(),
        system: Some("Be nice.".into()),
        messages: messages
            .iter()
            .map(|(role, text)| PromptMessage::text(*role, *text))
            .collect(),
        ..CompletionRequest::default()
    }
}

/// What an answer streamed: its text tokens, and how many tokens in all (reasoning, tool
/// arguments and text).
#[derive(Debug, Default, PartialEq)]
struct Streamed {
    text: Vec<String>,
    all: u64,
    reasoning: String,
}

/// Reads a stream to its end, checking that no time passes: the tests run on paused time,
/// which only moves when every task waits on a timer, so any sleep in the demo would show.
async fn drain_instantly(
    mut stream: CompletionStream,
) -> (Vec<String>, Option<String>, Option<Usage>) {
    let (streamed, reason, usage) = drain_all(&mut stream).await;
    (streamed.text, reason, usage)
}

async fn drain_all(stream: &mut CompletionStream) -> (Streamed, Option<String>, Option<Usage>) {
    let start = tokio::time::Instant::now();
    let mut streamed = Streamed::default();
    for _ in 0..100_000 {
        match stream.next().await {
            Some(Ok(ProviderEvent::Text(text))) => {
                streamed.all += 1;
                streamed.text.push(text);
            }
            Some(Ok(ProviderEvent::Reasoning(text))) => {
                streamed.all += 1;
                streamed.reasoning.push_str(&text);
            }
            Some(Ok(ProviderEvent::ToolCallInput { .. })) => streamed.all += 1,
            Some(Ok(ProviderEvent::Finish { reason, usage })) => {
                assert!(stream.next().await.is_none());
                assert_eq!(
                    start.elapsed(),
                    Duration::ZERO,
                    "zero delay means no waiting"
                );
                return (streamed, reason, usage);
            }
            Some(Ok(_)) => {}
            other => panic!("unexpected item {other:?}"),
        }
    }
    panic!("the demo answer never finished");
}

async fn instant_answer(
    request: CompletionRequest,
) -> (Vec<String>, Option<String>, Option<Usage>) {
    let settings = ProviderSettings::default().unthrottled_demo();
    let provider = build_provider(&demo_bot(), &no_env, &settings).unwrap();
    drain_instantly(provider.stream(request).await.unwrap()).await
}

#[tokio::test(start_paused = true)]
async fn same_prompt_same_answer_with_the_users_message_and_multibyte_text() {
    let prompt = request(&[
        (Role::User, "earlier question"),
        (Role::Assistant, "earlier answer"),
        (Role::User, "How do rivers find the sea?"),
    ]);
    let (tokens, reason, usage) = instant_answer(prompt.clone()).await;
    let (again, _, _) = instant_answer(prompt).await;
    assert_eq!(tokens, again, "deterministic, down to the token cuts");

    let text = tokens.concat();
    assert!(text.contains("How do rivers find the sea?"), "{text}");
    assert!(
        !text.contains("earlier question"),
        "only the last user message is quoted"
    );
    assert!(
        text.chars().any(|c| ('가'..='힣').contains(&c)),
        "Korean: {text}"
    );
    assert!(text.chars().any(|c| c as u32 >= 0x1F300), "emoji: {text}");
    assert!(text.contains("\n- ") && text.contains("```") && text.contains("|---|"));
    assert!(tokens.len() > 50, "a few characters per token");
    assert!(
        tokens
            .iter()
            .all(|t| !t.is_empty() && t.chars().count() <= 4)
    );
    assert!(
        tokens.iter().any(|t| t.len() > t.chars().count()),
        "multi-byte tokens"
    );

    assert_eq!(reason.as_deref(), Some("stop"));
    let usage = usage.unwrap();
    assert!(
        usage.output_tokens > tokens.len() as u64,
        "reasoning counts too"
    );
    assert!(usage.reasoning_tokens.unwrap() > 0);
    assert!(usage.input_tokens > 0);
}

#[tokio::test(start_paused = true)]
async fn different_prompts_give_different_answers() {
    let (a, _, _) = instant_answer(request(&[(Role::User, "안녕하세요 🙂")])).await;
    let (b, _, _) = instant_answer(request(&[(Role::User, "hello")])).await;
    assert!(a.concat().contains("안녕하세요 🙂"));
    assert_ne!(a.concat(), b.concat());
}

#[tokio::test(start_paused = true)]
async fn max_tokens_cuts_the_answer_with_reason_length() {
    let mut prompt = request(&[(Role::User, "hi")]);
    prompt.max_tokens = Some(7);
    let settings = ProviderSettings::default().unthrottled_demo();
    let provider = build_provider(&demo_bot(), &no_env, &settings).unwrap();
    let mut stream = provider.stream(prompt).await.unwrap();
    let (streamed, reason, usage) = drain_all(&mut stream).await;
    assert_eq!(streamed.all, 7);
    assert_eq!(reason.as_deref(), Some("length"));
    assert_eq!(usage.unwrap().output_tokens, 7);
}

#[tokio::test(start_paused = true)]
async fn paced_like_a_model_by_default() {
    let settings = ProviderSettings::default();
    assert_eq!(settings.demo_first_token_delay, Duration::from_millis(300));
    assert_eq!(settings.demo_tokens_per_second, 30);
    let provider = build_provider(&demo_bot(), &no_env, &settings).unwrap();
    let start = tokio::time::Instant::now();
    let mut stream = provider
        .stream(request(&[(Role::User, "hi")]))
        .await
        .unwrap();
    // Paused time: these are exact, not wall-clock measurements.
    assert!(matches!(
        stream.next().await,
        Some(Ok(ProviderEvent::Reasoning(_)))
    ));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    for _ in 0..30 {
        assert!(matches!(
            stream.next().await,
            Some(Ok(ProviderEvent::Reasoning(_) | ProviderEvent::Text(_)))
        ));
    }
    // The timer wheel rounds deadlines up to the millisecond.
    let expected = Duration::from_millis(300) + Duration::from_secs(1) / 30 * 30;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= expected && elapsed <= expected + Duration::from_millis(1),
        "{elapsed:?}"
    );
}

#[test]
fn default_bots_follow_the_keys_in_the_environment() {
    let ids = |env: &dyn Fn(&str) -> Option<String>| -> Vec<String> {
        default_bots(env).into_iter().map(|b| b.id).collect()
    };
    assert_eq!(ids(&|_| None), ["demo"]);
    let openai = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-x".to_owned());
    assert_eq!(ids(&openai), ["demo", "openai"]);
    let both =
        |name: &str| matches!(name, "OPENAI_API_KEY" | "ANTHROPIC_API_KEY").then(|| "k".to_owned());
    assert_eq!(ids(&both), ["demo", "openai", "anthropic"]);
    let empty = |_: &str| Some(String::new());
    assert_eq!(ids(&empty), ["demo"]);

    let bots = default_bots(&both);
    assert_eq!(bots[0].provider, ProviderKind::Demo);
    assert_eq!(bots[1].model, "gpt-4o-mini");
    assert_eq!(bots[1].api_key_env.as_deref(), Some("OPENAI_API_KEY"));
    assert_eq!(bots[2].provider, ProviderKind::Anthropic);
    assert_eq!(bots[2].api_key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
    // Every default bot builds: keys come from the lookup, never from the bot itself.
    for bot in &bots {
        build_provider(bot, &both, &ProviderSettings::default()).unwrap();
    }
}
