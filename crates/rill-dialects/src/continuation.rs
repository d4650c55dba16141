//! Continuing an unfinished answer (a generation taken over from an instance that died): the
//! answer so far goes to the provider as the start of the assistant's turn, in the shape each
//! API documents, and what comes back extends it.
//!
//! Only answers made of text can be continued this way: Anthropic refuses a prefill with
//! extended thinking, and no API continues a half-written tool call.

use rill_core::Continuation;
use rill_core::chat::Part;
use serde_json::{Value, json};

/// The answer so far as one text, when it is only text (and not empty).
pub fn prefill_text(parts: &[Part]) -> Option<String> {
    let mut text = String::new();
    for part in parts {
        match part {
            Part::Text { text: t } => text.push_str(t),
            _ => return None,
        }
    }
    (!text.trim().is_empty()).then_some(text)
}

/// Anthropic's assistant prefill: the answer so far as the last `assistant` turn. The API
/// refuses a final assistant turn that ends in whitespace, so that is cut off and returned: the
/// model writes it again, or not, and [`strip_repeated`] drops it when it does.
pub fn anthropic(body: &mut Value, text: &str) -> String {
    let kept = text.trim_end();
    let cut = text[kept.len()..].to_owned();
    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
        messages.push(json!({"role": "assistant", "content": kept}));
    }
    cut
}

/// An OpenAI-compatible server's continuation of the answer so far, by `mode`.
pub fn openai(body: &mut Value, text: &str, mode: Continuation) {
    let Some(object) = body.as_object_mut() else {
        return;
    };
    let mut message = json!({"role": "assistant", "content": text});
    match mode {
        Continuation::None => return,
        Continuation::ContinueFinalMessage => {
            object.insert("continue_final_message".into(), json!(true));
            object.insert("add_generation_prompt".into(), json!(false));
        }
        Continuation::Prefix => {
            if let Some(m) = message.as_object_mut() {
                m.insert("prefix".into(), json!(true));
            }
        }
        Continuation::AssistantPrefill => {}
    }
    if let Some(messages) = object.get_mut("messages").and_then(Value::as_array_mut) {
        messages.push(message);
    }
}

/// The first text of a continuation without the whitespace the prefill had to leave out, when
/// the model wrote it again (so it is not doubled).
pub fn strip_repeated(first: &str, cut: &str) -> String {
    first.strip_prefix(cut).unwrap_or(first).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_is_continued() {
        assert_eq!(
            prefill_text(&[Part::text("Hel"), Part::text("lo ")]).as_deref(),
            Some("Hello ")
        );
        assert_eq!(prefill_text(&[]), None);
        let reasoning = Part::Reasoning {
            text: "x".into(),
            signature: None,
            redacted: None,
        };
        assert_eq!(prefill_text(&[reasoning, Part::text("a")]), None);
    }

    #[test]
    fn each_api_gets_its_shape() {
        let mut body = json!({"messages": [{"role": "user", "content": "q"}]});
        assert_eq!(anthropic(&mut body, "Hello, wor \n"), " \n");
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": "Hello, wor"})
        );
        assert_eq!(strip_repeated(" \nld", " \n"), "ld");
        assert_eq!(strip_repeated("ld", " \n"), "ld");

        let mut vllm = json!({"messages": []});
        openai(&mut vllm, "Hi ", Continuation::ContinueFinalMessage);
        assert_eq!(
            vllm,
            json!({"messages": [{"role": "assistant", "content": "Hi "}],
                   "continue_final_message": true, "add_generation_prompt": false})
        );
        let mut deepseek = json!({"messages": []});
        openai(&mut deepseek, "Hi", Continuation::Prefix);
        assert_eq!(deepseek["messages"][0]["prefix"], json!(true));
    }
}
