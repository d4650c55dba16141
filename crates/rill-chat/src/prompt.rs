//! What the provider is sent: the system prompt and as much recent history as fits a budget.

use rill_core::PromptMessage;
use rill_core::chat::{Message, MessageStatus, Role};

/// Picks the newest messages of `history` (oldest first) whose content fits `budget_chars`,
/// keeping the order, and skipping what a model should not see as conversation: empty
/// messages, failed or unfinished assistant answers.
///
/// The budget is in characters, a deliberately provider-neutral stand-in for tokens (about four
/// characters per token in English); the newest message is always kept even when it alone
/// exceeds the budget, since it is the question being asked.
pub(crate) fn fit_history(history: &[Message], budget_chars: usize) -> Vec<PromptMessage> {
    let mut picked = Vec::new();
    let mut used = 0usize;
    for m in history.iter().rev() {
        let usable = match m.role {
            Role::User => true,
            Role::Assistant => matches!(
                m.status,
                MessageStatus::Complete | MessageStatus::Stopped | MessageStatus::Interrupted
            ),
            Role::System => false,
        };
        if !usable || m.content.trim().is_empty() {
            continue;
        }
        let cost = m.content.chars().count();
        if !picked.is_empty() && used.saturating_add(cost) > budget_chars {
            break;
        }
        used = used.saturating_add(cost);
        // Every part goes: each provider's encoder keeps what its API takes back (Anthropic
        // thinking blocks with their signatures, tool calls with their results).
        let parts = if m.parts.is_empty() {
            vec![rill_core::chat::Part::text(m.content.clone())]
        } else {
            m.parts.clone()
        };
        picked.push(PromptMessage {
            role: m.role,
            parts,
        });
    }
    picked.reverse();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, status: MessageStatus, content: &str) -> Message {
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
}
