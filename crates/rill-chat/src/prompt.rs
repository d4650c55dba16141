//! What the provider is sent: the system prompt and as much recent history as fits a budget.

use rill_core::PromptMessage;
use rill_core::chat::{Message, MessageStatus, Part, Role};

/// Picks the newest messages of `history` (oldest first) whose content fits `budget_chars`,
/// keeping the order, and skipping what a model should not see as conversation: empty
/// messages (an answer with no text but a tool call is not empty), failed or unfinished
/// assistant answers.
///
/// The budget is in characters, a deliberately provider-neutral stand-in for tokens (about four
/// characters per token in English); the newest message is always kept even when it alone
/// exceeds the budget, since it is the question being asked.
pub(crate) fn fit_history(history: &[Message], budget_chars: usize) -> Vec<PromptMessage> {
    let mut walk = Walk::new(budget_chars);
    let mut picked = Vec::new();
    for m in history.iter().rev() {
        match walk.step(m) {
            Step::Pick => picked.push(PromptMessage {
                role: m.role,
                // Every part goes: each provider's encoder keeps what its API takes back
                // (Anthropic thinking blocks with their signatures, tool calls with their
                // results).
                parts: if m.parts.is_empty() {
                    vec![Part::text(m.content.clone())]
                } else {
                    m.parts.clone()
                },
            }),
            Step::Skip => {}
            Step::Stop => break,
        }
    }
    picked.reverse();
    picked
}

/// Where the part of `history` (oldest first) that a model can still be sent starts: the
/// message [`fit_history`] stops at, the first that does not fit. Messages older than it are
/// never picked again, since newer messages only take more of the budget: for any `later`
/// messages, `fit_history(history[i..] + later) == fit_history(history + later)`. `None` when
/// every message fits (older ones, not in `history`, might too).
pub(crate) fn window_start(history: &[Message], budget_chars: usize) -> Option<usize> {
    let mut walk = Walk::new(budget_chars);
    history
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, m)| (walk.step(m) == Step::Stop).then_some(i))
}

/// [`fit_history`]'s walk over messages, newest first.
pub(crate) struct Walk {
    budget: usize,
    used: usize,
    picked_any: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Pick,
    Skip,
    /// This message does not fit: neither it nor any older message is picked.
    Stop,
}

impl Walk {
    pub(crate) fn new(budget_chars: usize) -> Self {
        Walk {
            budget: budget_chars,
            used: 0,
            picked_any: false,
        }
    }

    /// The next older message.
    pub(crate) fn step(&mut self, m: &Message) -> Step {
        let usable = match m.role {
            Role::User => true,
            Role::Assistant => matches!(
                m.status,
                MessageStatus::Complete | MessageStatus::Stopped | MessageStatus::Interrupted
            ),
            Role::System => false,
        };
        // An answer that only called a tool has no text but still belongs in the history: the
        // provider needs the call (and its result) to make sense of what follows.
        let calls_tools = m.parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
        if !usable || (m.content.trim().is_empty() && !calls_tools) {
            return Step::Skip;
        }
        let cost = cost_chars(m);
        if self.picked_any && self.used.saturating_add(cost) > self.budget {
            return Step::Stop;
        }
        self.used = self.used.saturating_add(cost);
        self.picked_any = true;
        Step::Pick
    }
}

/// What a message costs of the budget: its text, and the tool calls' arguments and results
/// (they go back to the provider too). Reasoning is not counted: providers drop or summarise it.
fn cost_chars(m: &Message) -> usize {
    m.parts
        .iter()
        .map(|p| match p {
            Part::ToolCall {
                input_text,
                output,
                error,
                ..
            } => input_text
                .chars()
                .count()
                .saturating_add(output.as_ref().map_or(0, |o| o.to_string().chars().count()))
                .saturating_add(error.as_ref().map_or(0, |e| e.chars().count())),
            _ => 0,
        })
        .fold(m.content.chars().count(), usize::saturating_add)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A message with only what the prompt looks at.
    pub(crate) fn msg(role: Role, status: MessageStatus, content: &str) -> Message {
        Message {
            id: String::new(),
            chat_id: String::new(),
            seq: 0,
            role,
            content: content.to_owned(),
            parts: Vec::new(),
            status,
            finish_reason: None,
            usage: None,
            error: None,
            bot_id: None,
            model: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn keeps_newest_within_budget_in_order() {
        use MessageStatus::*;
        use Role::*;
        let history = vec![
            msg(User, Complete, "aaaa"),
            msg(Assistant, Complete, "bbbb"),
            msg(User, Complete, "cc"),
            msg(Assistant, Error, "partial"),
            msg(Assistant, Complete, ""),
            msg(User, Complete, "dd"),
        ];
        let got: Vec<String> = fit_history(&history, 8)
            .into_iter()
            .map(|m| m.content())
            .collect();
        assert_eq!(got, ["bbbb", "cc", "dd"]);
        let got: Vec<String> = fit_history(&history, 1)
            .into_iter()
            .map(|m| m.content())
            .collect();
        assert_eq!(got, ["dd"], "the question is kept even over budget");
    }

    #[test]
    fn keeps_an_answer_that_only_called_a_tool() {
        use MessageStatus::*;
        use Role::*;
        let mut call = msg(Assistant, Complete, "");
        call.parts = vec![
            Part::Reasoning {
                text: "look it up".into(),
                signature: None,
                redacted: None,
            },
            Part::ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                input_text: r#"{"city":"Seoul"}"#.into(),
                input: None,
                output: Some(serde_json::json!({"c": 3})),
                error: None,
            },
        ];
        let history = vec![
            msg(User, Complete, "weather?"),
            call,
            msg(User, Complete, "and now?"),
        ];
        let got = fit_history(&history, 10_000);
        assert_eq!(
            got.len(),
            3,
            "the tool-only answer stays between its question and the next"
        );
        assert!(
            matches!(got[1].parts[1], Part::ToolCall { ref name, .. } if name == "get_weather")
        );

        // Its arguments and result count against the budget: with room for the last question
        // only, the call does not squeeze in.
        let got = fit_history(&history, 9);
        assert_eq!(got.len(), 1);
    }

    /// Cutting a history at its window start changes nothing the model is sent, however many
    /// messages come after: what the history cache relies on.
    #[test]
    fn a_history_cut_at_its_window_start_fits_the_same_with_any_later_messages() {
        use MessageStatus::*;
        use Role::*;
        // Deterministic variety: lengths, roles, failed and empty answers.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut kind = |i: usize| {
            let content = "x".repeat(usize::try_from(next(40)).unwrap_or(0));
            match (i % 2, next(6)) {
                (0, _) => msg(User, Complete, &content),
                (_, 0) => msg(Assistant, Error, &content),
                (_, 1) => msg(Assistant, Complete, ""),
                (_, 2) => msg(Assistant, Stopped, &content),
                _ => msg(Assistant, Complete, &content),
            }
        };
        for budget in [0, 1, 30, 100, 250] {
            for len in 0..40 {
                let history: Vec<Message> = (0..len).map(&mut kind).collect();
                let start = window_start(&history, budget);
                if let Some(i) = start {
                    assert_eq!(
                        fit_history(&history[i..], budget),
                        fit_history(&history, budget)
                    );
                }
                for more in 1..6 {
                    let later: Vec<Message> = (len..len + more).map(&mut kind).collect();
                    let whole: Vec<Message> = history.iter().chain(&later).cloned().collect();
                    let cut: Vec<Message> = history[start.unwrap_or(0)..]
                        .iter()
                        .chain(&later)
                        .cloned()
                        .collect();
                    assert_eq!(
                        fit_history(&cut, budget),
                        fit_history(&whole, budget),
                        "budget {budget}, {len} messages then {more}"
                    );
                }
            }
        }
    }
}
