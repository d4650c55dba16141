//! Provider streams in each API's documented shape (see `data/upstream/README.md`), for
//! [`crate::fake_upstream::Reply::recorded`].

/// The streams by file name (without `.sse`), and whether each speaks Anthropic's format
/// (`true`) or OpenAI's (`false`).
pub const STREAMS: &[(&str, bool, &str)] = &[
    (
        "deepseek_reasoning_content",
        false,
        include_str!("../data/upstream/deepseek_reasoning_content.sse"),
    ),
    (
        "vllm_reasoning",
        false,
        include_str!("../data/upstream/vllm_reasoning.sse"),
    ),
    (
        "openrouter_reasoning_details",
        false,
        include_str!("../data/upstream/openrouter_reasoning_details.sse"),
    ),
    (
        "openai_parallel_tools",
        false,
        include_str!("../data/upstream/openai_parallel_tools.sse"),
    ),
    (
        "ollama_reused_index",
        false,
        include_str!("../data/upstream/ollama_reused_index.sse"),
    ),
    (
        "anthropic_thinking_tools",
        true,
        include_str!("../data/upstream/anthropic_thinking_tools.sse"),
    ),
    (
        "anthropic_midstream_error",
        true,
        include_str!("../data/upstream/anthropic_midstream_error.sse"),
    ),
];

/// One stream's body by name.
///
/// # Panics
///
/// When there is no stream of that name (a test's typo).
pub fn stream(name: &str) -> &'static str {
    STREAMS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, body)| *body)
        .unwrap_or_else(|| panic!("no upstream stream named {name:?}"))
}
