//! The Vercel AI SDK face: `useChat` (`DefaultChatTransport`, `ai` 6 and 7) against rill,
//! unmodified, with resume, stop and every tab (docs/ai-sdk.md).
//!
//! - `POST /api/ai-sdk/chat`: what the transport sends (`id`, `messages`, `trigger`, plus body
//!   fields such as `bot`). The chat is an ordinary rill chat with the client's id (created on
//!   first use, owned by the caller); only the last user message of `messages` is read, and its
//!   id is the idempotency key, so a retried POST gets the first one's exchange. The answer
//!   streams as UI message chunks (`rill_dialects::ai_sdk::UiStream`).
//! - `GET /api/ai-sdk/chat/{id}/stream` (`resume: true`, `resumeStream()`): `204` when no answer
//!   runs; else the running answer from its `start`, exactly from the log, then live.
//! - `POST /api/ai-sdk/chat/{id}/stop`: stops the generation (the `stop()` of `useChat` only
//!   aborts its fetch).
//! - `GET /api/ai-sdk/chat/{id}/messages`: the stored history as `UIMessage`s, for `useChat`'s
//!   `messages` after a reload (without the running answer, which resume brings).
//!
//! The stored history is the truth: the client's `messages` never rewrite it.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use rill_chat::{ChatEngine, ChatError, Question, Sent};
use rill_core::chat::{Chat, MessageStatus, PageCursor};
use rill_dialects::ai_sdk::{STREAM_HEADER, UiStream, error_frames, ui_message};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::json::{ApiPath, ApiQuery, read_body, require_json};
use crate::limits::StreamSlot;
use crate::openapi::{ErrorBody, UiMessage};
use crate::routes::Routes;
use crate::{ApiError, AppState, Principal, sse};

pub(crate) fn router() -> Routes {
    Routes::new()
        .route("/api/ai-sdk/chat", &["POST"], post(chat))
        .route("/api/ai-sdk/chat/{id}/stream", &["GET"], get(resume))
        .route("/api/ai-sdk/chat/{id}/stop", &["POST"], post(stop))
        .route("/api/ai-sdk/chat/{id}/messages", &["GET"], get(messages))
}

/// The largest request body. The transport sends the whole conversation each time, although
/// only its last message is read; a client with longer ones sends only that
/// (`prepareSendMessagesRequest`, see docs/ai-sdk.md).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// What `DefaultChatTransport` POSTs. Other fields (the app's own `body`) are ignored.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"id": "chat-1", "trigger": "submit-message", "messages": [
    {"id": "msg-1", "role": "user", "parts": [{"type": "text", "text": "Hello"}]}
]}))]
pub(crate) struct ChatRequest {
    /// The chat id the client chose (created on first use, owned by the caller).
    id: String,
    /// The conversation as `UIMessage`s; only the last one is read: for `submit-message` a
    /// user's message with text, whose `id` is the exchange's idempotency key.
    #[serde(default)]
    #[schema(value_type = Vec<UiMessageInput>, min_items = 1)]
    messages: Vec<Box<RawValue>>,
    /// `submit-message` (the default) or `regenerate-message`.
    #[serde(default)]
    #[schema(pattern = "^(submit-message|regenerate-message)$")]
    trigger: Option<String>,
    /// The bot of a chat this request creates; the first configured bot when absent.
    #[serde(default)]
    bot: Option<String>,
}

/// A `UIMessage` of a request: its `id` (for the last one, the exchange's idempotency key),
/// `role` and `parts` (the text of `text` parts is the question).
#[derive(ToSchema)]
#[allow(dead_code)] // Describes `UiMessageIn` and the messages before it; never built.
pub(crate) struct UiMessageInput {
    #[schema(pattern = "^[!-~]{1,255}$")]
    id: String,
    #[schema(value_type = crate::openapi::RoleSchema)]
    role: String,
    #[schema(value_type = Vec<Object>)]
    parts: Vec<Value>,
}

/// A `UIMessage`, as much of it as a question needs.
#[derive(Deserialize)]
struct UiMessageIn {
    id: String,
    role: String,
    #[serde(default)]
    parts: Vec<Value>,
}

#[utoipa::path(
    post,
    path = "/api/ai-sdk/chat",
    operation_id = "ai_sdk_chat",
    tag = "ai-sdk",
    summary = "Send (or regenerate) as `useChat` does",
    description = "The answer streams as the AI SDK's UI message stream (SSE, \
                   `x-vercel-ai-ui-message-stream: v1`), from `start` to `[DONE]`. A repeated \
                   request with the same last message id gets the first one's exchange.",
    request_body(content = ChatRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The UI message stream.", content(("text/event-stream")),
         headers(("x-vercel-ai-ui-message-stream" = String, description = "`v1`."))),
        (status = 400, description = "`invalid_body`, `invalid_json`, `invalid_trigger`, \
         `unsupported_message`, `empty_content`, `invalid_content`, `invalid_idempotency_key`, \
         `invalid_chat_id`.", body = ErrorBody),
        (status = 404, description = "`not_found` (regenerating a chat that does not exist), `unknown_bot`.", body = ErrorBody),
        (status = 409, description = "`generation_running`, `chat_id_taken`, `nothing_to_answer`.", body = ErrorBody),
        (status = 413, description = "`content_too_long`, `body_too_large`.", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`.", body = ErrorBody),
        (status = 429, description = "`too_many_user_streams`.", body = ErrorBody),
    ),
)]
pub(crate) async fn chat(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    require_json(request.headers())?;
    let body = read_body(request.into_body(), MAX_BODY).await?;
    let body: ChatRequest = crate::json::parse_object(&body)?;
    let user = &principal.user;
    let question = match body.trigger.as_deref().unwrap_or("submit-message") {
        "submit-message" => Some(question(engine, &body.messages)?),
        "regenerate-message" => None,
        other => {
            return Err(ApiError::bad_request(
                "invalid_trigger",
                format!("trigger {other:?} is not submit-message or regenerate-message"),
            ));
        }
    };
    // Every limit is checked before anything is stored: a refused request changes nothing.
    let slot = state.streams.acquire(user)?;
    let chat = match question {
        Some(_) => own_chat(engine, user, &body.id, body.bot.as_deref()).await?,
        // A regeneration answers a chat's question again: there must be a chat.
        None => engine.chat(user, &body.id).await?,
    };
    let chat = engine.answerable(user, chat)?;
    let sent = match question {
        Some((content, key)) => {
            let question = Question {
                content,
                key: Some(key),
                ..Question::default()
            };
            engine.ask_in(&chat, &question).await?
        }
        None => engine.regenerate_in(&chat).await?,
    };
    let repeated = sent.repeated;
    let mut response = stream(&state, &principal, slot, &sent).await?;
    if repeated {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The text and key (the client's message id) of the question: the last message, a user's,
/// with text. Checked here as the engine would, before the chat is created.
fn question(engine: &ChatEngine, messages: &[Box<RawValue>]) -> Result<(String, String), ApiError> {
    let last = messages.last().ok_or_else(|| {
        ApiError::bad_request(
            "invalid_body",
            "`messages` is empty: there is nothing to answer",
        )
    })?;
    let message: UiMessageIn = crate::json::parse_object(last.get().as_bytes()).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the last message is not a UIMessage: {}", e.message),
        )
    })?;
    if message.role != "user" {
        return Err(ApiError::bad_request(
            "unsupported_message",
            "the last message must be the user's: rill answers new user messages \
             (tool results and approvals from the client are not supported)",
        ));
    }
    let text: String = message
        .parts
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("");
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "empty_content",
            "the last message has no text",
        ));
    }
    if text.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_content",
            "content contains a NUL character",
        ));
    }
    let max = engine.settings().max_content_chars;
    if text.chars().count() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "content_too_long",
            format!("content is longer than {max} characters"),
        ));
    }
    // The id is the exchange's idempotency key, under the engine's rule for keys.
    if message.id.is_empty()
        || message.id.len() > 255
        || !message.id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "the last message's id is not 1 to 255 visible ASCII characters",
        ));
    }
    Ok((text, message.id))
}

/// Makes sure `chat_id` is `user`'s chat: it is already, or it is created now with `bot`. An
/// id another user has is refused as taken, which says nothing of that chat.
async fn own_chat(
    engine: &ChatEngine,
    user: &str,
    chat_id: &str,
    bot: Option<&str>,
) -> Result<Chat, ApiError> {
    match engine.chat(user, chat_id).await {
        Ok(chat) => return Ok(chat),
        Err(ChatError::NotFound) => {}
        Err(error) => return Err(error.into()),
    }
    let bot = match bot {
        Some(bot) => bot.to_owned(),
        None => engine
            .bots()
            .first()
            .map(|b| b.config.id.clone())
            .ok_or_else(|| ChatError::UnknownBot(String::new()))?,
    };
    match engine.create_chat_with_id(user, chat_id, &bot).await {
        Ok(chat) => Ok(chat),
        // Two first requests of the same user raced: the other one created it.
        Err(error @ ChatError::Conflict { .. }) => match engine.chat(user, chat_id).await {
            Ok(chat) => Ok(chat),
            Err(_) => Err(error.into()),
        },
        Err(error) => Err(error.into()),
    }
}

/// Streams `sent`'s answer, from its `start` to `[DONE]`, as the UI message stream.
async fn stream(
    state: &AppState,
    principal: &Principal,
    slot: StreamSlot,
    sent: &Sent,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    let plan = engine.exchange(sent).await?;
    let encoder = Box::new(UiStream::new(sent.assistant_message.id.clone()));
    let stream = state
        .hub
        .open(plan.into_request(Some(encoder)))
        .await
        .map_err(ChatError::from)?;
    let mut response =
        sse::respond_closing(state, principal, slot, sse::hub_chunks(stream), closing);
    let (name, value) = STREAM_HEADER;
    response
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
    Ok(response)
}

/// The stream cut short by the server (shutdown, maximum duration, expired credential), as the
/// client reads an end: an `error` chunk, then `[DONE]`.
fn closing(_code: &str, message: &str, _reconnect: bool) -> Bytes {
    Bytes::from(error_frames(message))
}

/// `GET /api/ai-sdk/chat/{id}/stream`: the running answer from its start, or `204`. A chat
/// that does not exist (a new chat's first page load) or is not the caller's is `204` too: the
/// client must not see an error, and learns nothing.
#[utoipa::path(
    get,
    path = "/api/ai-sdk/chat/{id}/stream",
    operation_id = "ai_sdk_resume",
    tag = "ai-sdk",
    summary = "Resume the running answer (`resumeStream()`)",
    params(("id" = String, Path, description = "The chat's id.")),
    responses(
        (status = 200, description = "The running answer's UI message stream, from its start.",
         content(("text/event-stream"))),
        (status = 204, description = "No answer runs (or no such chat of the caller's)."),
        (status = 429, description = "`too_many_user_streams`.", body = ErrorBody),
    ),
)]
pub(crate) async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    match engine.chat(&principal.user, &id).await {
        Ok(_) => {}
        Err(ChatError::NotFound) => return Ok(StatusCode::NO_CONTENT.into_response()),
        Err(error) => return Err(error.into()),
    }
    let Some(running) = engine.snapshot(&id).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let slot = state.streams.acquire(&principal.user)?;
    let sent = engine
        .exchange_of(&principal.user, &running.message.id)
        .await?;
    stream(&state, &principal, slot, &sent).await
}

/// `POST /api/ai-sdk/chat/{id}/stop`: the engine's stop (the upstream request is closed, the
/// text kept, the status `stopped`); the answer as a `UIMessage`.
/// The stopped answer, as a `UIMessage`.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct UiStopped {
    message: UiMessage,
}

/// A page of the stored history as `UIMessage`s.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct UiMessagePage {
    messages: Vec<UiMessage>,
    /// The `before` of the next (older) page; `null` on the last one.
    next_before: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/ai-sdk/chat/{id}/stop",
    operation_id = "ai_sdk_stop",
    tag = "ai-sdk",
    summary = "Stop the answer being written",
    params(("id" = String, Path, description = "The chat's id.")),
    responses(
        (status = 200, description = "The stopped answer.", body = UiStopped),
        (status = 404, description = "`not_found`: no such chat (or another user's).", body = ErrorBody),
        (status = 409, description = "`not_generating`.", body = ErrorBody),
    ),
)]
pub(crate) async fn stop(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let message = state.chat()?.stop(&principal.user, &id).await?;
    Ok(Json(json!({ "message": ui_message(&message) })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct MessagesQuery {
    before: Option<String>,
    limit: Option<String>,
}

/// The most messages one page gives.
const MAX_LIMIT: u32 = 100;

/// `GET /api/ai-sdk/chat/{id}/messages`: the newest page of the stored history (`limit`, at
/// most 100, by default 100; older pages with `before` = `next_before`), oldest first, as
/// `UIMessage`s, without the answer still being written. Empty for a chat that does not exist
/// or is not the caller's.
#[utoipa::path(
    get,
    path = "/api/ai-sdk/chat/{id}/messages",
    operation_id = "ai_sdk_messages",
    tag = "ai-sdk",
    summary = "The stored history as `UIMessage`s",
    params(("id" = String, Path, description = "The chat's id."), crate::chats::MessagePageParams),
    responses(
        (status = 200, description = "The newest page, oldest first, without the answer being \
         written; empty for a chat that is not the caller's.", body = UiMessagePage),
        (status = 400, description = "`invalid_cursor`, `invalid_limit`, `bad_query`.", body = ErrorBody),
    ),
)]
pub(crate) async fn messages(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    let before = match q.before.as_deref() {
        None => None,
        Some(s) => Some(PageCursor::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "`before` is not a cursor returned by this API",
            )
        })?),
    };
    let limit = match q.limit.as_deref() {
        None => MAX_LIMIT,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_limit",
                    format!("`limit` must be an integer from 1 to {MAX_LIMIT}"),
                ));
            }
        },
    };
    match engine.chat(&principal.user, &id).await {
        Ok(_) => {}
        Err(ChatError::NotFound) => {
            return Ok(Json(json!({ "messages": [], "next_before": null })).into_response());
        }
        Err(error) => return Err(error.into()),
    }
    let page = engine
        .store()
        .list_messages(&id, before, limit)
        .await
        .map_err(ChatError::from)?;
    let messages: Vec<Value> = page
        .items
        .iter()
        .filter(|m| m.status != MessageStatus::Streaming)
        .map(ui_message)
        .collect();
    Ok(Json(json!({ "messages": messages, "next_before": page.next_before })).into_response())
}
