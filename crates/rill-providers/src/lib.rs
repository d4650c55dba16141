//! Streaming LLM providers: OpenAI-compatible, Anthropic Messages and the offline demo model.
