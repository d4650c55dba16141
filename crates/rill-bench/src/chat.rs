//! `rill bench chat`: C concurrent chats with the `demo` bot at zero delay; time to first token,
//! tokens per second, and the time per token rill adds on top of the model itself (the same
//! demo model run in-process, in the same run, with the same concurrency, is the baseline).
//! The same prompts then go through the OpenAI face (`POST /v1/chat/completions`, streamed),
//! so its time to first token stands next to the native API's.
//!
//! The server must run the demo unthrottled (`--demo-first-token-delay 0ms
//! --demo-tokens-per-second 0`), else this measures the demo's pacing, not rill.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use rill_core::chat::Role;
use rill_core::{CompletionRequest, PromptMessage, Provider, ProviderEvent};
use rill_providers::DemoProvider;
use rill_sse::{Item, Parser};
use serde::Serialize;
use serde_json::Value;

use crate::progress::bar;
use crate::report::{Table, millis};
use crate::{BenchError, Target};

/// What `chat` does.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    pub target: Target,
    /// Chats running at once.
    pub chats: usize,
    /// Messages sent in each chat, one after the other.
    pub messages: usize,
    /// The bot (it should be the unthrottled `demo`).
    pub bot: String,
    /// The longest the whole run may take; exchanges still running then are counted as failed.
    pub timeout: Duration,
    pub progress: bool,
}

/// Figures of a set of exchanges (through rill, or the in-process baseline).
#[derive(Clone, Debug, Serialize, Default)]
pub struct ChatFigures {
    pub exchanges: u64,
    pub tokens: u64,
    pub first_token_p50_micros: u64,
    pub first_token_p99_micros: u64,
    /// Mean over exchanges of (end - start) / tokens.
    pub micros_per_token: f64,
    /// All tokens over the wall time of the run (all chats together).
    pub tokens_per_second: f64,
}

/// What `chat` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ChatReport {
    pub scenario: &'static str,
    pub server: String,
    pub chats: usize,
    pub messages_per_chat: usize,
    pub expected: u64,
    pub completed: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub rill: ChatFigures,
    /// The same prompts and concurrency through `POST /v1/chat/completions` (streamed).
    pub openai: ChatFigures,
    /// Exchanges of the OpenAI face that failed, and the first error.
    pub openai_failed: u64,
    pub openai_first_error: Option<String>,
    pub baseline: ChatFigures,
    /// rill's time per token minus the in-process demo's.
    pub overhead_micros_per_token: f64,
    pub generator_cpu_seconds: f64,
}

/// One exchange's measurements.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    first_token: Duration,
    total: Duration,
    tokens: u64,
}

/// The prompt of message `m` of chat `c`: different prompts give different answers.
fn prompt(chat: usize, message: usize) -> String {
    format!("Benchmark question {message} of chat {chat}: tell me about streaming.")
}

/// Runs the scenario: first through rill, then the in-process baseline.
pub async fn run_chat(options: ChatOptions) -> Result<ChatReport, BenchError> {
    if options.chats == 0 || options.messages == 0 {
        return Err(BenchError::Option(
            "chats and messages must be > 0".to_owned(),
        ));
    }
    let own_cpu_before = crate::CpuUse::own();
    let client = reqwest::Client::builder()
        .http1_only()
        .timeout(options.timeout)
        .build()?;
    let expected = (options.chats * options.messages) as u64;
    let progress = bar(options.progress, expected, "exchanges");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chat in 0..options.chats {
        let (client, options, progress) = (client.clone(), options.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let id = match create_chat(&client, &options).await {
                Ok(id) => id,
                Err(error) => return (done, Some(error.to_string())),
            };
            for message in 0..options.messages {
                match exchange(&client, &options, &id, &prompt(chat, message)).await {
                    Ok(exchange) => done.push(exchange),
                    Err(error) => return (done, Some(error.to_string())),
                }
                progress.inc(1);
            }
            (done, None)
        }));
    }
    let mut exchanges = Vec::new();
    let mut first_error = None;
    let deadline = tokio::time::sleep(options.timeout);
    tokio::pin!(deadline);
    for task in tasks {
        tokio::select! {
            joined = task => match joined {
                Ok((done, error)) => {
                    exchanges.extend(done);
                    if first_error.is_none() {
                        first_error = error;
                    }
                }
                Err(error) => { first_error.get_or_insert_with(|| error.to_string()); }
            },
            () = &mut deadline => {
                first_error.get_or_insert_with(|| "the run timed out".to_owned());
                break;
            }
        }
    }
    let rill_wall = started.elapsed();
    progress.finish_and_clear();
    let rill = figures(&exchanges, rill_wall);

    // The OpenAI face: the same prompts and concurrency, one stateless completion each.
    let started = Instant::now();
    let progress = bar(options.progress, expected, "completions");
    let mut tasks = Vec::new();
    for chat in 0..options.chats {
        let (client, options, progress) = (client.clone(), options.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for message in 0..options.messages {
                match completion(&client, &options, &prompt(chat, message)).await {
                    Ok(exchange) => done.push(exchange),
                    Err(error) => return (done, Some(error.to_string())),
                }
                progress.inc(1);
            }
            (done, None)
        }));
    }
    let mut completions = Vec::new();
    let mut openai_first_error = None;
    let deadline = tokio::time::sleep(options.timeout);
    tokio::pin!(deadline);
    for task in tasks {
        tokio::select! {
            joined = task => match joined {
                Ok((done, error)) => {
                    completions.extend(done);
                    if openai_first_error.is_none() {
                        openai_first_error = error;
                    }
                }
                Err(error) => { openai_first_error.get_or_insert_with(|| error.to_string()); }
            },
            () = &mut deadline => {
                openai_first_error.get_or_insert_with(|| "the run timed out".to_owned());
                break;
            }
        }
    }
    progress.finish_and_clear();
    let openai = figures(&completions, started.elapsed());
    let openai_failed = expected.saturating_sub(completions.len() as u64);

    // Baseline: the same model, prompts and concurrency, without rill in between.
    let provider = Arc::new(DemoProvider::new(Duration::ZERO, 0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chat in 0..options.chats {
        let (provider, messages) = (provider.clone(), options.messages);
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for message in 0..messages {
                if let Some(exchange) = baseline_exchange(&provider, &prompt(chat, message)).await {
                    done.push(exchange);
                }
            }
            done
        }));
    }
    let mut baseline_exchanges = Vec::new();
    for task in tasks {
        if let Ok(done) = task.await {
            baseline_exchanges.extend(done);
        }
    }
    let baseline = figures(&baseline_exchanges, started.elapsed());
    let completed = exchanges.len() as u64;
    Ok(ChatReport {
        scenario: "chat",
        server: options.target.server.to_string(),
        chats: options.chats,
        messages_per_chat: options.messages,
        expected,
        completed,
        failed: expected - completed,
        first_error,
        overhead_micros_per_token: rill.micros_per_token - baseline.micros_per_token,
        rill,
        openai,
        openai_failed,
        openai_first_error,
        baseline,
        generator_cpu_seconds: crate::CpuUse::own().since(own_cpu_before).total(),
    })
}

fn figures(exchanges: &[Exchange], wall: Duration) -> ChatFigures {
    let Ok(mut first) = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3) else {
        return ChatFigures::default();
    };
    let mut per_token = 0.0;
    let mut tokens = 0;
    for exchange in exchanges {
        first.saturating_record(exchange.first_token.as_micros().clamp(1, 600_000_000) as u64);
        per_token += exchange.total.as_secs_f64() * 1e6 / exchange.tokens.max(1) as f64;
        tokens += exchange.tokens;
    }
    ChatFigures {
        exchanges: exchanges.len() as u64,
        tokens,
        first_token_p50_micros: first.value_at_quantile(0.5),
        first_token_p99_micros: first.value_at_quantile(0.99),
        micros_per_token: per_token / exchanges.len().max(1) as f64,
        tokens_per_second: tokens as f64 / wall.as_secs_f64().max(1e-9),
    }
}

fn url(target: &Target, path: &str) -> url::Url {
    let mut url = target.server.clone();
    url.set_path(path);
    url
}

fn authorized(builder: reqwest::RequestBuilder, target: &Target) -> reqwest::RequestBuilder {
    match &target.token {
        Some(token) => builder.bearer_auth(token),
        None => builder,
    }
}

async fn create_chat(
    client: &reqwest::Client,
    options: &ChatOptions,
) -> Result<String, BenchError> {
    let response = authorized(
        client.post(url(&options.target, "/api/chats")),
        &options.target,
    )
    .json(&serde_json::json!({ "bot": options.bot }))
    .send()
    .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    body.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Protocol(format!("create chat answered {status}: {body}")))
}

/// Sends one message and reads the exchange's SSE stream to `message.completed`.
async fn exchange(
    client: &reqwest::Client,
    options: &ChatOptions,
    chat: &str,
    content: &str,
) -> Result<Exchange, BenchError> {
    let start = Instant::now();
    let response = authorized(
        client.post(url(&options.target, &format!("/api/chats/{chat}/messages"))),
        &options.target,
    )
    .header("accept", "text/event-stream")
    .json(&serde_json::json!({ "content": content }))
    .send()
    .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(BenchError::Protocol(format!(
            "send answered {status}: {body}"
        )));
    }
    let mut body = response.bytes_stream();
    let mut parser = Parser::new();
    let mut first_token = None;
    let mut completed: Option<Result<u64, String>> = None;
    while completed.is_none() {
        let Some(chunk) = body.next().await else {
            break;
        };
        let chunk = chunk?;
        parser.feed(&chunk, |item| {
            let Item::Event(event) = item else {
                return;
            };
            match event.event {
                // The first token of any kind: the demo model reasons before it answers.
                "message.delta" | "message.reasoning.delta" | "message.tool_input.delta" => {
                    first_token.get_or_insert_with(|| start.elapsed());
                }
                "message.completed" => {
                    let data: Value = serde_json::from_str(event.data).unwrap_or_default();
                    completed = Some(if data["status"] == "complete" {
                        Ok(data["usage"]["output_tokens"].as_u64().unwrap_or(0))
                    } else {
                        Err(format!("the answer ended with {data}"))
                    });
                }
                "error" => completed = Some(Err(format!("error event: {}", event.data))),
                _ => {}
            }
        });
    }
    let total = start.elapsed();
    match completed {
        Some(Ok(tokens)) => Ok(Exchange {
            first_token: first_token.unwrap_or(total),
            total,
            tokens,
        }),
        Some(Err(error)) => Err(BenchError::Protocol(error)),
        None => Err(BenchError::Protocol(
            "the stream ended without message.completed".to_owned(),
        )),
    }
}

/// One streamed `POST /v1/chat/completions` (with `include_usage`), read to `[DONE]`.
async fn completion(
    client: &reqwest::Client,
    options: &ChatOptions,
    content: &str,
) -> Result<Exchange, BenchError> {
    let start = Instant::now();
    let response = authorized(
        client.post(url(&options.target, "/v1/chat/completions")),
        &options.target,
    )
    .json(&serde_json::json!({
        "model": options.bot,
        "messages": [{"role": "user", "content": content}],
        "stream": true,
        "stream_options": {"include_usage": true},
    }))
    .send()
    .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(BenchError::Protocol(format!(
            "chat completion answered {status}: {body}"
        )));
    }
    let mut body = response.bytes_stream();
    let mut parser = Parser::new();
    let mut first_token = None;
    let mut tokens = 0;
    let mut done: Option<Result<(), String>> = None;
    while done.is_none() {
        let Some(chunk) = body.next().await else {
            break;
        };
        let chunk = chunk?;
        parser.feed(&chunk, |item| {
            let Item::Event(event) = item else {
                return;
            };
            if event.data == "[DONE]" {
                done.get_or_insert(Ok(()));
                return;
            }
            let data: Value = serde_json::from_str(event.data).unwrap_or_default();
            if data.get("error").is_some() {
                done = Some(Err(format!("error chunk: {}", event.data)));
                return;
            }
            if let Some(n) = data["usage"]["completion_tokens"].as_u64() {
                tokens = n;
            }
            let delta = &data["choices"][0]["delta"];
            // The first token of any kind: the demo model reasons before it answers.
            let token = ["content", "reasoning_content"]
                .iter()
                .any(|f| delta[f].as_str().is_some_and(|t| !t.is_empty()))
                || delta.get("tool_calls").is_some();
            if token {
                first_token.get_or_insert_with(|| start.elapsed());
            }
        });
    }
    let total = start.elapsed();
    match done {
        Some(Ok(())) => Ok(Exchange {
            first_token: first_token.unwrap_or(total),
            total,
            tokens,
        }),
        Some(Err(error)) => Err(BenchError::Protocol(error)),
        None => Err(BenchError::Protocol(
            "the stream ended without [DONE]".to_owned(),
        )),
    }
}

/// The same exchange with the demo model in-process: the floor rill's figures are compared to.
async fn baseline_exchange(provider: &DemoProvider, content: &str) -> Option<Exchange> {
    let start = Instant::now();
    let request = CompletionRequest {
        model: "demo".to_owned(),
        messages: vec![PromptMessage::text(Role::User, content)],
        ..CompletionRequest::default()
    };
    let mut stream = provider.stream(request).await.ok()?;
    let mut first_token = None;
    let mut tokens = 0;
    while let Some(item) = stream.next().await {
        match item.ok()? {
            ProviderEvent::Finish { usage, .. } => {
                if let Some(usage) = usage {
                    tokens = usage.output_tokens;
                }
            }
            _ => {
                first_token.get_or_insert_with(|| start.elapsed());
                tokens += 1;
            }
        }
    }
    let total = start.elapsed();
    Some(Exchange {
        first_token: first_token.unwrap_or(total),
        total,
        tokens,
    })
}

impl ChatReport {
    /// The human-readable result table.
    pub fn table(&self) -> Table {
        let mut table = Table::new(format!("chat against {}", self.server));
        table
            .row(
                "chats × messages",
                format!("{} × {}", self.chats, self.messages_per_chat),
            )
            .row(
                "completed",
                format!("{} of {}", self.completed, self.expected),
            );
        if let Some(error) = &self.first_error {
            table.row("first error", error);
        }
        if self.openai_failed > 0 {
            table.row(
                "OpenAI face failed",
                format!(
                    "{} ({})",
                    self.openai_failed,
                    self.openai_first_error.as_deref().unwrap_or("?")
                ),
            );
        }
        for (name, figures) in [
            ("through rill", &self.rill),
            ("OpenAI face", &self.openai),
            ("demo in-process", &self.baseline),
        ] {
            table.row(
                name,
                format!(
                    "first token p50 {} p99 {}, {:.1} µs/token, {:.0} tokens/s ({} tokens)",
                    millis(figures.first_token_p50_micros),
                    millis(figures.first_token_p99_micros),
                    figures.micros_per_token,
                    figures.tokens_per_second,
                    figures.tokens,
                ),
            );
        }
        table
            .row(
                "overhead per token",
                format!("{:.1} µs", self.overhead_micros_per_token),
            )
            .row(
                "load generator CPU",
                format!("{:.2} s", self.generator_cpu_seconds),
            );
        table
    }
}
