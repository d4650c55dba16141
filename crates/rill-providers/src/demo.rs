//! The built-in `demo` model: no network, no key. It answers any prompt with a deterministic
//! text built from the user's last message, mixing English, Korean and emoji (so multi-byte
//! characters cross chunk boundaries downstream) and some Markdown (a list, a table, a code
//! block), streamed a few characters at a time at a model-like pace.
//!
//! So that every part of a rich answer can be seen and tested offline, it first *reasons*
//! (a short, deterministic thought), and when the prompt mentions the weather (`weather`, or
//! `날씨`) or starts with `/tool`, it calls a `get_weather` tool: the arguments stream as JSON
//! fragments, the "tool" answers at once (the demo runs it itself), and the answer cites a
//! source before the text.

use std::time::Duration;

use rill_core::chat::{Part, Role, Usage};
use rill_core::{CompletionRequest, CompletionStream, Provider, ProviderError, ProviderEvent};
use serde_json::json;
use tokio::time::Instant;

/// How much of the user's message the answer quotes.
const QUOTE_LIMIT: usize = 240;

/// The offline model. Its pace comes from [`crate::ProviderSettings`].
#[derive(Clone, Debug)]
pub struct DemoProvider {
    first_token_delay: Duration,
    /// Between two tokens; zero for "as fast as the consumer reads".
    interval: Duration,
}

impl DemoProvider {
    /// A demo model that waits `first_token_delay`, then emits `tokens_per_second` tokens a
    /// second (0: no pacing at all).
    pub fn new(first_token_delay: Duration, tokens_per_second: u32) -> Self {
        let interval = if tokens_per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / tokens_per_second
        };
        DemoProvider {
            first_token_delay,
            interval,
        }
    }
}

#[async_trait::async_trait]
impl Provider for DemoProvider {
    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let mut events = script(&request);
        if !request.prefill.is_empty() {
            // An answer taken over from a dead instance: the same script, from where it was.
            events = remaining(events, &request.prefill).ok_or_else(|| {
                ProviderError::new(
                    rill_core::ProviderErrorKind::Protocol,
                    "the answer so far is not the demo's answer to this prompt",
                )
            })?;
        }
        let state = Tokens {
            events: events.into_iter(),
            emitted: 0,
            reasoning: 0,
            max_tokens: request.max_tokens.map(u64::from),
            input_tokens: estimate_tokens(&request),
            next_at: Instant::now() + self.first_token_delay,
            interval: self.interval,
            paced: !self.first_token_delay.is_zero() || !self.interval.is_zero(),
            finished: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            |mut state| async move {
                let event = state.next().await?;
                Some((Ok(event), state))
            },
        )))
    }

    /// The demo continues any answer of its own, unless it stopped in the middle of a tool
    /// call's arguments (no API continues those, and the demo does as they do).
    fn can_continue(&self, parts: &[Part]) -> bool {
        !matches!(
            parts.last(),
            Some(Part::ToolCall { input: None, .. }) | None
        )
    }
}

/// What is left of `events` (a whole answer) once `parts` (the answer so far, as a message's
/// parts) are written: the rest of the last part, then every later part. `None` when `parts`
/// are not a beginning of this answer.
///
/// A part is what the chat engine makes of a run of events: consecutive reasoning, a tool call
/// (start, arguments, end, result), a source, consecutive text.
pub(crate) fn remaining(events: Vec<ProviderEvent>, parts: &[Part]) -> Option<Vec<ProviderEvent>> {
    // Group the events into parts, as the engine would.
    let mut groups: Vec<Vec<ProviderEvent>> = Vec::new();
    for event in events {
        let joins = matches!(
            (groups.last().and_then(|g| g.first()), &event),
            (
                Some(ProviderEvent::Reasoning(_)),
                ProviderEvent::Reasoning(_)
            ) | (Some(ProviderEvent::Text(_)), ProviderEvent::Text(_))
                | (
                    Some(ProviderEvent::ToolCallStart { .. }),
                    ProviderEvent::ToolCallInput { .. }
                        | ProviderEvent::ToolCallEnd { .. }
                        | ProviderEvent::ToolResult { .. },
                )
        );
        match groups.last_mut() {
            Some(group) if joins => group.push(event),
            _ => groups.push(vec![event]),
        }
    }
    let (last, done) = parts.split_last()?;
    if done.len() >= groups.len() {
        return None;
    }
    let mut rest = Vec::new();
    let group = &groups[done.len()];
    match (last, group.first()) {
        (Part::Text { text: have }, Some(ProviderEvent::Text(_)))
        | (Part::Reasoning { text: have, .. }, Some(ProviderEvent::Reasoning(_))) => {
            // Skip the tokens already written; a token cut by the end of what was written
            // goes on with its rest.
            let mut written = 0usize;
            for event in group {
                let (ProviderEvent::Text(token) | ProviderEvent::Reasoning(token)) = event else {
                    return None;
                };
                let end = written + token.len();
                if end <= have.len() {
                    written = end;
                    continue;
                }
                let from = have.len().saturating_sub(written);
                let piece = token.get(from..)?.to_owned();
                written = end;
                rest.push(match event {
                    ProviderEvent::Text(_) => ProviderEvent::Text(piece),
                    _ => ProviderEvent::Reasoning(piece),
                });
            }
            if written < have.len() {
                return None;
            }
        }
        // A whole tool call: only its result may be missing.
        (
            Part::ToolCall {
                input: Some(_),
                output,
                ..
            },
            Some(ProviderEvent::ToolCallStart { .. }),
        ) => {
            if output.is_none() {
                rest.extend(
                    group
                        .iter()
                        .filter(|e| matches!(e, ProviderEvent::ToolResult { .. }))
                        .cloned(),
                );
            }
        }
        (Part::Source { .. }, Some(ProviderEvent::Source { .. })) => {}
        _ => return None,
    }
    for group in &groups[done.len() + 1..] {
        rest.extend(group.iter().cloned());
    }
    Some(rest)
}

/// Emits the script's events one token at a time.
struct Tokens {
    events: std::vec::IntoIter<ProviderEvent>,
    emitted: u64,
    reasoning: u64,
    max_tokens: Option<u64>,
    input_tokens: u64,
    /// When the next token is due (from the stream's start, so pacing does not drift).
    next_at: Instant,
    interval: Duration,
    /// False when both delays are zero: then we never touch the timer, and each token is ready
    /// as soon as it is asked for (but for a cooperative yield now and then).
    paced: bool,
    finished: bool,
}

impl Tokens {
    async fn next(&mut self) -> Option<ProviderEvent> {
        if self.finished {
            return None;
        }
        let limit_hit = self.max_tokens.is_some_and(|max| self.emitted >= max);
        let next = if limit_hit { None } else { self.events.next() };
        let Some(event) = next else {
            self.finished = true;
            return Some(ProviderEvent::Finish {
                reason: Some(if limit_hit { "length" } else { "stop" }.to_owned()),
                usage: Some(Usage {
                    input_tokens: self.input_tokens,
                    output_tokens: self.emitted,
                    reasoning_tokens: Some(self.reasoning),
                }),
            });
        };
        if self.paced {
            tokio::time::sleep_until(self.next_at).await;
            self.next_at += self.interval;
        } else {
            // Always ready, so let the scheduler's budget decide when the consumer's task
            // should let others run: a benchmark's generations then share the workers.
            tokio::task::consume_budget().await;
        }
        match &event {
            ProviderEvent::Reasoning(_) => {
                self.emitted += 1;
                self.reasoning += 1;
            }
            ProviderEvent::Text(_) | ProviderEvent::ToolCallInput { .. } => self.emitted += 1,
            _ => {}
        }
        Some(event)
    }
}

/// The whole answer to a prompt, as provider events: reasoning, perhaps a tool call with its
/// result and a source, then the text. The same prompt always gives the same events.
pub(crate) fn script(request: &CompletionRequest) -> Vec<ProviderEvent> {
    let last = last_question(request);
    let mut cutter = Cutter::new(fnv1a(last.as_bytes()) | 1);
    let mut events = Vec::new();
    let topic: String = last.trim().chars().take(60).collect();
    let topic = if topic.is_empty() {
        "an empty message".to_owned()
    } else {
        format!("\"{topic}\"")
    };
    let thought = format!(
        "The user wrote {topic}. I will quote it, greet them in English and Korean, and show \
         a list, a table and a code block so every kind of Markdown streams. 한국어도 함께."
    );
    cutter.cut(&thought, &mut events, ProviderEvent::Reasoning);
    let mut preface = String::new();
    if wants_weather(&last) {
        let city = city_of(&last);
        let id = format!("call_demo_{:08x}", fnv1a(last.as_bytes()) as u32);
        events.push(ProviderEvent::ToolCallStart {
            key: 0,
            id: id.clone(),
            name: "get_weather".to_owned(),
        });
        let arguments = json!({ "city": city, "unit": "celsius" }).to_string();
        cutter.cut(&arguments, &mut events, |text| {
            ProviderEvent::ToolCallInput { key: 0, text }
        });
        events.push(ProviderEvent::ToolCallEnd { key: 0 });
        let temperature = 12 + (fnv1a(city.as_bytes()) % 15) as i64;
        events.push(ProviderEvent::ToolResult {
            id,
            output: Some(json!({
                "city": city, "temperature": temperature, "unit": "celsius", "conditions": "clear",
            })),
            error: None,
        });
        let slug: String = city
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        events.push(ProviderEvent::Source {
            url: format!("https://example.com/weather/{slug}"),
            title: Some(format!("Demo weather for {city}")),
        });
        preface = format!(
            "The demo weather tool says it is **{temperature} °C** and clear in {city} \
             (오늘 날씨 맑음 ☀️).\n\n"
        );
    }
    let text = format!("{preface}{}", answer(request));
    cutter.cut(&text, &mut events, ProviderEvent::Text);
    events
}

/// Cuts text into tokens of 1 to 4 characters with a xorshift seeded from the prompt.
struct Cutter {
    rng: u64,
}

impl Cutter {
    fn new(seed: u64) -> Self {
        Cutter { rng: seed }
    }

    fn cut(
        &mut self,
        text: &str,
        out: &mut Vec<ProviderEvent>,
        wrap: impl Fn(String) -> ProviderEvent,
    ) {
        let mut rest = text;
        while !rest.is_empty() {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let chars = 1 + (self.rng % 4) as usize;
            let end = rest
                .char_indices()
                .nth(chars)
                .map_or(rest.len(), |(offset, _)| offset);
            out.push(wrap(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
}

fn last_question(request: &CompletionRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content())
        .unwrap_or_default()
}

/// The tool's trigger: the weather asked about, or `/tool`.
fn wants_weather(question: &str) -> bool {
    let lower = question.to_lowercase();
    lower.trim_start().starts_with("/tool") || lower.contains("weather") || lower.contains("날씨")
}

/// The city after "in " (up to 40 characters of letters, spaces and hyphens), else Seoul.
fn city_of(question: &str) -> String {
    let lower = question.to_lowercase();
    let Some(at) = lower.find(" in ") else {
        return "Seoul".to_owned();
    };
    let city: String = question[at + 4..]
        .chars()
        .take_while(|c| c.is_alphabetic() || *c == ' ' || *c == '-')
        .take(40)
        .collect();
    let city = city.trim();
    if city.is_empty() {
        "Seoul".to_owned()
    } else {
        city.to_owned()
    }
}

/// About four bytes of English per token: good enough for plausible usage numbers.
fn estimate_tokens(request: &CompletionRequest) -> u64 {
    let bytes: usize = request.system.as_deref().map_or(0, str::len)
        + request
            .messages
            .iter()
            .map(|m| m.content().len() + 4)
            .sum::<usize>();
    (bytes as u64).div_ceil(4).max(1)
}

/// FNV-1a: a tiny stable hash, so answers stay the same across runs and builds (std's hashers
/// are randomly keyed).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

const OPENERS: [&str; 4] = [
    "Thanks for your message! 고마워요 🙏",
    "What a great question! 좋은 질문이에요 🤔",
    "Let me think about that for a moment. 잠시만요… ⏳",
    "Happy to help with this! 기꺼이 도와드릴게요 😊",
];

const MIDDLES: [&str; 4] = [
    "Streaming means you see each word as soon as it is written, not when the whole answer is done.",
    "Every tab of this chat sees the same answer, and a reload picks it up exactly where it was.",
    "If you press stop, the text so far is kept, and you can ask the next question right away.",
    "Slow phones get fewer, larger pieces of text, but always the same text in the end.",
];

/// The answer to a prompt: the same prompt always gives the same answer.
pub(crate) fn answer(request: &CompletionRequest) -> String {
    let last = last_question(request);
    let last = last.as_str();
    let hash = fnv1a(last.as_bytes());
    // FNV's high bits barely move when only the last byte differs: mix (splitmix64's
    // finalizer) before picking.
    let pick = |salt: u64, n: usize| {
        let mut x = hash ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x % n as u64) as usize
    };

    let mut quoted = String::with_capacity(QUOTE_LIMIT + 16);
    let mut cut = last.trim();
    if let Some((end, _)) = cut.char_indices().nth(QUOTE_LIMIT) {
        cut = &cut[..end];
    }
    for line in cut.lines() {
        quoted.push_str("> ");
        quoted.push_str(line);
        quoted.push('\n');
    }
    if quoted.is_empty() {
        quoted.push_str("> (an empty message)\n");
    }
    if cut.len() < last.trim().len() {
        quoted.push_str("> …\n");
    }

    let words = last.split_whitespace().count();
    let chars = last.chars().count();
    let turns = request.messages.len();
    let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    let (chars_word, words_word, turns_word) = (
        plural(chars, "character", "characters"),
        plural(words, "word", "words"),
        plural(turns, "message", "messages"),
    );
    format!(
        "{quoted}\n{opener} I am the **demo** model built into rill: I run offline, need no API \
         key, and always give the same answer to the same prompt. 안녕하세요, 반가워요! 👋\n\n\
         Your message has {chars} {chars_word} and {words} {words_word}, and this conversation \
         has {turns} {turns_word} so far. {middle}\n\n\
         Here is what this chat can do:\n\n\
         - **Streaming**: tokens arrive a few characters at a time 🚀\n\
         - **Resume**: reload the page and the answer continues 🔄\n\
         - **Stop**: the text so far is kept ✋\n\
         - 한국어와 이모지도 깨지지 않아요 🇰🇷✨\n\n\
         | language | greeting | emoji |\n\
         |---|---|---|\n\
         | English | Hello | 👋 |\n\
         | 한국어 | 안녕하세요 | 🙇 |\n\
         | Emoji | 🤖💬 | 🎉 |\n\n\
         ```rust\n\
         fn main() {{\n    println!(\"안녕, {name}! 🦀\");\n}}\n\
         ```\n\n\
         That is all from the demo model. 감사합니다! 🌱",
        opener = OPENERS[pick(7, OPENERS.len())],
        middle = MIDDLES[pick(29, MIDDLES.len())],
        name = ["rill", "world", "friend", "stream"][pick(43, 4)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::PromptMessage;

    fn request(text: &str) -> CompletionRequest {
        CompletionRequest {
            model: "demo".into(),
            messages: vec![PromptMessage::text(Role::User, text)],
            ..CompletionRequest::default()
        }
    }

    #[test]
    fn quotes_every_line_and_cuts_long_messages() {
        let text = answer(&request("first line\nsecond line"));
        assert!(text.starts_with("> first line\n> second line\n"));
        let long = "가".repeat(1000);
        let text = answer(&request(&long));
        assert!(text.contains(&"가".repeat(QUOTE_LIMIT)));
        assert!(!text.contains(&"가".repeat(QUOTE_LIMIT + 1)));
        assert!(answer(&request("")).starts_with("> (an empty message)"));
    }

    #[test]
    fn reasons_first_and_calls_the_weather_tool_when_asked() {
        let plain = script(&request("hello"));
        assert!(matches!(plain[0], ProviderEvent::Reasoning(_)));
        assert!(
            !plain
                .iter()
                .any(|e| matches!(e, ProviderEvent::ToolCallStart { .. }))
        );
        let weather = script(&request("What is the weather in Busan?"));
        let start = weather
            .iter()
            .position(
                |e| matches!(e, ProviderEvent::ToolCallStart { name, .. } if name == "get_weather"),
            )
            .unwrap();
        assert!(matches!(
            weather[..start].last(),
            Some(ProviderEvent::Reasoning(_))
        ));
        let arguments: String = weather
            .iter()
            .filter_map(|e| match e {
                ProviderEvent::ToolCallInput { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(arguments, r#"{"city":"Busan","unit":"celsius"}"#);
        assert!(
            weather
                .iter()
                .any(|e| matches!(e, ProviderEvent::ToolResult { .. }))
        );
        assert!(weather.iter().any(|e| matches!(e, ProviderEvent::Source { url, .. } if url == "https://example.com/weather/busan")));
        assert!(
            script(&request("/tool"))
                .iter()
                .any(|e| matches!(e, ProviderEvent::ToolCallEnd { .. }))
        );
        assert_eq!(
            script(&request("weather")),
            script(&request("weather")),
            "deterministic"
        );
    }

    #[test]
    fn a_continuation_is_the_rest_of_the_same_answer() {
        let request = request("What is the weather in Jeju?");
        let all = script(&request);
        // What the engine would have made of every prefix: cut after n events, the rest must
        // give back exactly the whole answer.
        for cut in [0, 1, 5, 60, 80, 85, 90, 95, 100, 200, all.len() - 1] {
            let (before, _) = all.split_at(cut.min(all.len()));
            let parts = parts_of(before);
            if parts.is_empty() {
                continue;
            }
            let Some(rest) = remaining(all.clone(), &parts) else {
                assert!(
                    matches!(parts.last(), Some(Part::ToolCall { input: None, .. })),
                    "cut {cut}: only a half-written tool call cannot continue"
                );
                continue;
            };
            let mut joined = before.to_vec();
            joined.extend(rest);
            assert_eq!(parts_of(&joined), parts_of(&all), "cut {cut}");
        }
        // A token cut in the middle goes on with its rest.
        let parts = vec![Part::Reasoning {
            text: "The us".into(),
            signature: None,
            redacted: None,
        }];
        let rest = remaining(all.clone(), &parts).unwrap();
        let mut text = String::from("The us");
        for e in &rest {
            if let ProviderEvent::Reasoning(t) = e {
                text.push_str(t);
            }
        }
        assert!(text.starts_with("The user wrote"), "{text}");
        assert!(remaining(all, &[Part::text("Something else")]).is_none());
    }

    /// A tiny model of the engine's parts, for the continuation test.
    fn parts_of(events: &[ProviderEvent]) -> Vec<Part> {
        let mut parts: Vec<Part> = Vec::new();
        for e in events {
            match (e, parts.last_mut()) {
                (ProviderEvent::Reasoning(t), Some(Part::Reasoning { text, .. })) => {
                    text.push_str(t)
                }
                (ProviderEvent::Reasoning(t), _) => parts.push(Part::Reasoning {
                    text: t.clone(),
                    signature: None,
                    redacted: None,
                }),
                (ProviderEvent::Text(t), Some(Part::Text { text })) => text.push_str(t),
                (ProviderEvent::Text(t), _) => parts.push(Part::text(t.clone())),
                (ProviderEvent::ToolCallStart { id, name, .. }, _) => parts.push(Part::ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    input_text: String::new(),
                    input: None,
                    output: None,
                    error: None,
                }),
                (
                    ProviderEvent::ToolCallInput { text, .. },
                    Some(Part::ToolCall { input_text, .. }),
                ) => input_text.push_str(text),
                (
                    ProviderEvent::ToolCallEnd { .. },
                    Some(Part::ToolCall {
                        input_text, input, ..
                    }),
                ) => *input = serde_json::from_str(input_text).ok(),
                (
                    ProviderEvent::ToolResult { output: o, .. },
                    Some(Part::ToolCall { output, .. }),
                ) => output.clone_from(o),
                (ProviderEvent::Source { url, title }, _) => parts.push(Part::Source {
                    url: url.clone(),
                    title: title.clone(),
                }),
                _ => {}
            }
        }
        parts
    }

    #[test]
    fn different_prompts_vary() {
        let answers: std::collections::HashSet<String> = (0..20)
            .map(|i| answer(&request(&format!("question {i}"))))
            .map(|a| a.lines().nth(2).unwrap_or_default().to_owned())
            .collect();
        assert!(answers.len() > 1);
    }
}
