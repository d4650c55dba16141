//! The built-in `demo` model: no network, no key. It answers any prompt with a deterministic
//! text built from the user's last message, mixing English, Korean and emoji (so multi-byte
//! characters cross chunk boundaries downstream) and some Markdown (a list, a table, a code
//! block), streamed a few characters at a time at a model-like pace.

use std::time::Duration;

use rill_core::chat::{Role, Usage};
use rill_core::{CompletionRequest, CompletionStream, Provider, ProviderError, ProviderEvent};
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
        let text = answer(&request);
        let seed = fnv1a(text.as_bytes());
        let input_tokens = estimate_tokens(&request);
        let state = Tokens {
            text,
            position: 0,
            rng: seed | 1,
            emitted: 0,
            max_tokens: request.max_tokens.map(u64::from),
            input_tokens,
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
}

/// Cuts the answer into tokens of 1 to 4 characters, on the fly.
struct Tokens {
    text: String,
    /// Byte offset of the next token.
    position: usize,
    /// A xorshift state seeded from the answer: the same prompt gives the same tokens.
    rng: u64,
    emitted: u64,
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
        if self.position >= self.text.len() || limit_hit {
            self.finished = true;
            return Some(ProviderEvent::Finish {
                reason: Some(if limit_hit { "length" } else { "stop" }.to_owned()),
                usage: Some(Usage {
                    input_tokens: self.input_tokens,
                    output_tokens: self.emitted,
                }),
            });
        }
        if self.paced {
            tokio::time::sleep_until(self.next_at).await;
            self.next_at += self.interval;
        } else {
            // Always ready, so let the scheduler's budget decide when the consumer's task
            // should let others run: a benchmark's generations then share the workers.
            tokio::task::consume_budget().await;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let chars = 1 + (self.rng % 4) as usize;
        let rest = &self.text[self.position..];
        let end = rest
            .char_indices()
            .nth(chars)
            .map_or(rest.len(), |(offset, _)| offset);
        let token = rest[..end].to_owned();
        self.position += end;
        self.emitted += 1;
        Some(ProviderEvent::Delta(token))
    }
}

/// About four bytes of English per token: good enough for plausible usage numbers.
fn estimate_tokens(request: &CompletionRequest) -> u64 {
    let bytes: usize = request.system.as_deref().map_or(0, str::len)
        + request
            .messages
            .iter()
            .map(|m| m.content.len() + 4)
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
    let last = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map_or("", |m| m.content.as_str());
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
            system: None,
            messages: vec![PromptMessage {
                role: Role::User,
                content: text.into(),
            }],
            temperature: None,
            max_tokens: None,
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
    fn different_prompts_vary() {
        let answers: std::collections::HashSet<String> = (0..20)
            .map(|i| answer(&request(&format!("question {i}"))))
            .map(|a| a.lines().nth(2).unwrap_or_default().to_owned())
            .collect();
        assert!(answers.len() > 1);
    }
}
