//! The chat API: bots, chats, history pages, sending (three response styles, retries and
//! idempotency), the chat's event stream, stop and regenerate.
//!
//! Every chat belongs to the user who created it; another user gets 404, exactly as for a chat
//! that does not exist. The handlers only validate and map HTTP onto the chat engine: what a
//! stream carries, where it starts and ends is the engine's plan (`rill_chat`), and the hub
//! (`rill-hub`) runs it.

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rill_chat::protocol::PlainText;
use rill_chat::{ChatError, Plan, Question, Resume, Sent};
use rill_core::Topic;
use rill_core::chat::{Chat, Message, PageCursor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{MintingPrincipal, StreamPrincipal};
use crate::json::{ApiPath, ApiQuery, JsonBody, read_body, require_json};
use crate::limits::StreamSlot;
use crate::openapi::{ErrorBody, MessageSchema};
use crate::routes::Routes;
use crate::tickets::TicketResponse;
use crate::{ApiError, AppState, Principal, sse};

pub(crate) fn router() -> Routes {
    Routes::new()
        .route("/api/bots", &["GET"], get(list_bots))
        .route(
            "/api/chats",
            &["GET", "POST"],
            post(create_chat).get(list_chats),
        )
        .route(
            "/api/chats/{id}",
            &["GET", "DELETE"],
            get(get_chat).delete(delete_chat),
        )
        .route(
            "/api/chats/{id}/messages",
            &["GET", "POST"],
            get(list_messages).post(send_message),
        )
        .route("/api/chats/{id}/regenerate", &["POST"], post(regenerate))
        .route("/api/chats/{id}/stop", &["POST"], post(stop))
        .route("/api/chats/{id}/events", &["GET"], get(chat_events))
        .route("/api/chats/{id}/ticket", &["POST"], post(ticket))
}

/// The largest page of a listing.
const MAX_LIMIT: u32 = 100;
const DEFAULT_LIMIT: u32 = 20;

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::NotFound => ApiError::not_found("no such chat"),
            ChatError::UnknownBot(bot) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_bot",
                format!("no bot {bot:?} is configured"),
            ),
            ChatError::Busy => ApiError::new(
                StatusCode::CONFLICT,
                "generation_running",
                "a generation is already running in this chat; stop it or wait for it to finish",
            ),
            ChatError::Conflict { code, message } => {
                let status = if code == "idempotency_key_reused" {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::CONFLICT
                };
                ApiError::new(status, code, message)
            }
            ChatError::InvalidContent { code, message } => {
                let status = if code == "content_too_long" {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                ApiError::new(status, code, message)
            }
            // The broker's own words (Redis error text) are for the log only.
            ChatError::Broker(error) => ApiError::broker(error),
            ChatError::Draining => ApiError::draining(),
            ChatError::Store(e) => ApiError::internal(e),
        }
    }
}

/// A configured bot.
#[derive(Serialize, ToSchema)]
pub(crate) struct BotView {
    #[schema(example = "demo")]
    id: String,
    name: String,
    description: String,
    /// `openai`, `anthropic`, `demo` or `ai_sdk`.
    #[schema(value_type = String)]
    provider: rill_core::provider::ProviderKind,
    model: String,
}

/// The configured bots.
#[derive(Serialize, ToSchema)]
pub(crate) struct BotList {
    bots: Vec<BotView>,
}

#[utoipa::path(
    get,
    path = "/api/bots",
    tag = "chats",
    summary = "The configured bots",
    responses((status = 200, description = "The bots.", body = BotList)),
)]
pub(crate) async fn list_bots(
    State(state): State<AppState>,
    _principal: Principal,
) -> Result<Response, ApiError> {
    let bots = state
        .chat()?
        .bots()
        .iter()
        .map(|b| BotView {
            id: b.config.id.clone(),
            name: b.config.name.clone(),
            description: b.config.description.clone(),
            provider: b.config.provider,
            model: b.config.model.clone(),
        })
        .collect();
    Ok(Json(BotList { bots }).into_response())
}

/// A new chat with a bot.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"bot": "demo"}))]
pub(crate) struct CreateChat {
    /// The bot's id (`GET /api/bots`).
    #[schema(example = "demo")]
    bot: String,
}

#[utoipa::path(
    post,
    path = "/api/chats",
    tag = "chats",
    summary = "Create a chat",
    request_body(content = CreateChat, content_type = "application/json"),
    responses(
        (status = 201, description = "The chat.", body = ChatView, links(
            ("GetChat" = (operation_id = "get_chat", parameters(("id" = "$response.body#/id")))),
            ("SendMessage" = (operation_id = "send_message", parameters(("id" = "$response.body#/id")))),
            ("StopAnswer" = (operation_id = "stop_answer", parameters(("id" = "$response.body#/id")))),
            ("AiSdkStop" = (operation_id = "ai_sdk_stop", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 404, description = "`unknown_bot`: no such bot is configured.", body = ErrorBody),
    ),
)]
pub(crate) async fn create_chat(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateChat>,
) -> Result<Response, ApiError> {
    let chat = state
        .chat()?
        .create_chat(&principal.user, &body.bot)
        .await?;
    Ok((StatusCode::CREATED, Json(ChatView::of(&chat))).into_response())
}

/// Query parameters of listings. Unknown ones (`access_token`, cache-busters like `_=1`) are
/// ignored, as on every route.
#[derive(Deserialize)]
pub(crate) struct ListQuery {
    bot: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// Parses the `before` and `limit` of a listing, with errors that say what is wrong.
fn page_params(
    before: Option<&str>,
    limit: Option<&str>,
) -> Result<(Option<PageCursor>, u32), ApiError> {
    let before = match before {
        None => None,
        Some(s) => Some(PageCursor::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "`before` is not a cursor returned by this API",
            )
        })?),
    };
    let limit = match limit {
        None => DEFAULT_LIMIT,
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
    Ok((before, limit))
}

/// The parameters of a listing page.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from `ListQuery`; this is its description.
pub(crate) struct PageParams {
    /// Only chats with this bot (`GET /api/chats`).
    bot: Option<String>,
    /// `next_before` of the previous page: older items.
    #[param(pattern = "^c[0-9]{1,18}$")]
    before: Option<String>,
    /// Items per page, 1 to 100 (20 by default).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// The parameters of a message listing page.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from `ListQuery`; this is its description.
pub(crate) struct MessagePageParams {
    /// `next_before` of the previous page: older messages.
    #[param(pattern = "^c[0-9]{1,18}$")]
    before: Option<String>,
    /// Messages per page, 1 to 100 (20 by default).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of the caller's chats, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatPage {
    chats: Vec<ChatView>,
    /// The `before` of the next (older) page; `null` on the last one.
    next_before: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/chats",
    tag = "chats",
    summary = "The caller's chats",
    params(PageParams),
    responses(
        (status = 200, description = "A page of chats, newest first.", body = ChatPage),
        (status = 400, description = "`invalid_cursor`, `invalid_limit`, `bad_query`.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_chats(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let (before, limit) = page_params(q.before.as_deref(), q.limit.as_deref())?;
    let page = state
        .chat()?
        .store()
        .list_chats(&principal.user, q.bot.as_deref(), before, limit)
        .await
        .map_err(ChatError::from)?;
    let chats = page.items.iter().map(ChatView::of).collect();
    Ok(Json(ChatPage {
        chats,
        next_before: page.next_before,
    })
    .into_response())
}

/// A chat.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatView {
    id: String,
    /// The bot's id.
    bot: String,
    /// From the first message, once there is one.
    title: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    /// The chat's event stream.
    events_url: String,
    /// `GET /api/chats/{id}` only: the id of the answer being written, or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    generating: Option<Option<String>>,
}

impl ChatView {
    fn of(chat: &Chat) -> Self {
        ChatView {
            id: chat.id.clone(),
            bot: chat.bot_id.clone(),
            title: chat.title.clone(),
            created_at_ms: chat.created_at_ms,
            updated_at_ms: chat.updated_at_ms,
            events_url: format!("/api/chats/{}/events", chat.id),
            generating: None,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/chats/{id}",
    tag = "chats",
    summary = "A chat",
    params(("id" = String, Path, description = "The chat's id.")),
    responses(
        (status = 200, description = "The chat, with `generating`.", body = ChatView),
        (status = 404, description = "`not_found`: no such chat (or another user's).", body = ErrorBody),
    ),
)]
pub(crate) async fn get_chat(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    let chat = engine.chat(&principal.user, &id).await?;
    let mut view = ChatView::of(&chat);
    view.generating = Some(engine.snapshot(&id).await?.map(|s| s.message.id));
    Ok(Json(view).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/chats/{id}",
    tag = "chats",
    summary = "Delete a chat",
    description = "Deletes the chat and its messages; its open streams end.",
    params(("id" = String, Path, description = "The chat's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "`not_found`: no such chat (or another user's).", body = ErrorBody),
    ),
)]
pub(crate) async fn delete_chat(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.chat()?.delete_chat(&principal.user, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A page of a chat's messages, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct MessagePage {
    #[schema(value_type = Vec<MessageSchema>)]
    messages: Vec<Message>,
    /// The `before` of the next (older) page; `null` on the last one.
    next_before: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/chats/{id}/messages",
    tag = "chats",
    summary = "A chat's messages",
    params(("id" = String, Path, description = "The chat's id."), MessagePageParams),
    responses(
        (status = 200, description = "The newest page of messages, oldest first.", body = MessagePage),
        (status = 400, description = "`invalid_cursor`, `invalid_limit`, `bad_query`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such chat (or another user's).", body = ErrorBody),
    ),
)]
pub(crate) async fn list_messages(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let (before, limit) = page_params(q.before.as_deref(), q.limit.as_deref())?;
    let engine = state.chat()?;
    engine.chat(&principal.user, &id).await?;
    let page = engine
        .store()
        .list_messages(&id, before, limit)
        .await
        .map_err(ChatError::from)?;
    Ok(Json(MessagePage {
        messages: page.items,
        next_before: page.next_before,
    })
    .into_response())
}

/// A chat request's JSON body. Its size limit follows `max_content_chars` (four bytes a
/// character in UTF-8, six when JSON escapes one), so the content limit, counted in
/// characters, is what refuses long messages, in any script.
pub(crate) struct ChatBody<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for ChatBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        require_json(request.headers())?;
        let chars = state
            .chat
            .as_ref()
            .map_or(0, |e| e.settings().max_content_chars);
        let limit = chars.saturating_mul(6).saturating_add(4096);
        let body = read_body(request.into_body(), limit).await?;
        crate::json::parse_object(&body).map(ChatBody)
    }
}

/// A message to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"content": "Hello"}))]
pub(crate) struct SendMessage {
    /// The text: not blank, no NUL, at most `max_content_chars` characters.
    content: String,
}

/// `202 Accepted`: the exchange, answered in the background.
#[derive(Serialize, ToSchema)]
pub(crate) struct Accepted {
    #[schema(value_type = MessageSchema)]
    user_message: Message,
    /// `streaming` until the answer ends.
    #[schema(value_type = MessageSchema)]
    assistant_message: Message,
    /// The chat's event stream, to follow the answer.
    events_url: String,
}

/// The stopped answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Stopped {
    #[schema(value_type = MessageSchema)]
    message: Message,
}

/// How the sender wants the answer, from its `Accept` header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    /// `text/event-stream`: this exchange's chat events, until its `message.completed`.
    Sse,
    /// `text/plain`: only the answer's text, as chunked plain text.
    Plain,
    /// Anything else: `202` with the messages and the event stream's URL.
    Accepted,
}

/// RFC 9110 negotiation: q-values, then specificity; a missing or `*/*` Accept gets the 202.
fn style(headers: &HeaderMap) -> Style {
    let offers = ["application/json", "text/event-stream", "text/plain"];
    match crate::accept::negotiate_or_default(headers, &offers) {
        "text/event-stream" => Style::Sse,
        "text/plain" => Style::Plain,
        _ => Style::Accepted,
    }
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    last_event_id: Option<String>,
}

/// The `Idempotency-Key` header, if any, checked by the engine's rule for keys.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map(str::trim).map_err(|_| {
        ApiError::bad_request(
            "invalid_idempotency_key",
            "an Idempotency-Key is visible ASCII",
        )
    })?;
    rill_chat::validate_key(key)?;
    Ok(Some(key.to_owned()))
}

#[utoipa::path(
    post,
    path = "/api/chats/{id}/messages",
    tag = "chats",
    summary = "Send a message",
    description = "Stores the message and starts the answer. The `Accept` header picks the \
                   response: `text/event-stream` streams this exchange's chat events until its \
                   `message.completed`; `text/plain` streams only the answer's text (a body cut \
                   without its last chunk when the answer does not complete); anything else, or \
                   none, gets `202` with both messages. A `Last-Event-ID` of this chat (with \
                   `Accept: text/event-stream`) resumes the exchange it belongs to instead of \
                   sending anything: the rest of its events, or `204` when the client already \
                   has its last one. An `Idempotency-Key` makes a repeated request return the \
                   first one's exchange (`Idempotent-Replayed: true`).",
    params(
        ("id" = String, Path, description = "The chat's id."),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "A key of the client's choosing: a repeated request with it returns the first one's exchange."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume the exchange this event belongs to."),
        ("last_event_id" = Option<String>, Query, description = "As `Last-Event-ID` (the header wins)."),
    ),
    request_body(content = SendMessage, content_type = "application/json"),
    responses(
        (status = 200, description = "The answer, streamed (by `Accept`).", content(
            ("text/event-stream"),
            (String = "text/plain; charset=utf-8"),
        ), headers(("X-Rill-Message-Id" = String, description = "With `text/plain`: the answer's id."))),
        (status = 202, description = "The exchange; the answer runs in the background.", body = Accepted),
        (status = 204, description = "A resume whose client already has the exchange's last event."),
        (status = 400, description = "`empty_content`, `invalid_content`, `invalid_idempotency_key`, \
         `invalid_last_event_id`, `invalid_json`, `invalid_body`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such chat (or another user's).", body = ErrorBody),
        (status = 409, description = "`generation_running`: an answer is being written in this chat.", body = ErrorBody),
        (status = 413, description = "`content_too_long`, `body_too_large`.", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key was used with another request.", body = ErrorBody),
        (status = 429, description = "`too_many_user_streams` (a streamed answer).", body = ErrorBody),
    ),
)]
pub(crate) async fn send_message(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
    body: ChatBody<SendMessage>,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    let style = style(&headers);
    let chat = engine.check_can_answer(&principal.user, &id).await?;
    // Every header is checked before the request is acted on, a resume included.
    let key = idempotency_key(&headers)?;
    // A client that retries its POST after a cut (`fetch-event-source`, `requests-sse`) sends
    // the id of the last event it got: it wants the rest of its exchange, not a new message.
    if let Some(last_id) = sse::last_event_id(&headers, q.last_event_id) {
        if style != Style::Sse {
            return Err(ApiError::bad_request(
                "invalid_last_event_id",
                "Last-Event-ID resumes an event stream: send Accept: text/event-stream",
            ));
        }
        let slot = stream_slot(&state, &principal)?;
        return match engine.resume(&id, &last_id).await? {
            Resume::NoContent => Ok(StatusCode::NO_CONTENT.into_response()),
            Resume::Stream(plan) => stream(&state, &principal, slot, plan).await,
        };
    }
    // Every limit is checked before anything is stored: a refused request changes nothing.
    let slot = match style {
        Style::Sse | Style::Plain => Some(stream_slot(&state, &principal)?),
        Style::Accepted => None,
    };
    let question = Question {
        content: body.0.content,
        key,
        ..Question::default()
    };
    let sent = engine.ask_in(&chat, &question).await?;
    answer(&state, &principal, style, slot, sent).await
}

#[utoipa::path(
    post,
    path = "/api/chats/{id}/regenerate",
    tag = "chats",
    summary = "Answer the last question again",
    description = "Replaces the last answer with a new one; the response styles are those of \
                   sending (by `Accept`).",
    params(("id" = String, Path, description = "The chat's id.")),
    responses(
        (status = 200, description = "The answer, streamed (by `Accept`).", content(
            ("text/event-stream"),
            (String = "text/plain; charset=utf-8"),
        )),
        (status = 202, description = "The exchange; the answer runs in the background.", body = Accepted),
        (status = 404, description = "`not_found`: no such chat (or another user's).", body = ErrorBody),
        (status = 409, description = "`generation_running`; `nothing_to_answer`: no question to answer.", body = ErrorBody),
        (status = 429, description = "`too_many_user_streams` (a streamed answer).", body = ErrorBody),
    ),
)]
pub(crate) async fn regenerate(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    let style = style(&headers);
    let chat = engine.check_can_answer(&principal.user, &id).await?;
    let slot = match style {
        Style::Sse | Style::Plain => Some(stream_slot(&state, &principal)?),
        Style::Accepted => None,
    };
    let sent = engine.regenerate_in(&chat).await?;
    answer(&state, &principal, style, slot, sent).await
}

/// A place among the caller's open streams (429/503 when there is none).
fn stream_slot(state: &AppState, principal: &Principal) -> Result<StreamSlot, ApiError> {
    state.streams.acquire(&principal.user)
}

/// Answers an exchange in the requested style.
async fn answer(
    state: &AppState,
    principal: &Principal,
    style: Style,
    slot: Option<StreamSlot>,
    sent: Sent,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    let chat_id = sent.assistant_message.chat_id.clone();
    let mut response = match (style, slot) {
        (Style::Sse, Some(slot)) => {
            let plan = engine.exchange(&sent).await?;
            stream(state, principal, slot, plan).await?
        }
        (Style::Plain, Some(slot)) => {
            let plan = engine.exchange(&sent).await?;
            let encoder = Box::new(PlainText::new(sent.assistant_message.id.clone()));
            let stream = state
                .hub
                .open(plan.into_request(Some(encoder)))
                .await
                .map_err(ChatError::from)?;
            plain_text(slot, stream, &sent.assistant_message)
        }
        _ => {
            let body = Accepted {
                user_message: sent.user_message,
                assistant_message: sent.assistant_message,
                events_url: format!("/api/chats/{chat_id}/events"),
            };
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
    };
    if sent.repeated {
        // As Stripe and the IETF draft name it: this is the first request's exchange.
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Runs a plan as rill's SSE.
async fn stream(
    state: &AppState,
    principal: &Principal,
    slot: StreamSlot,
    plan: Plan,
) -> Result<Response, ApiError> {
    let stream = state
        .hub
        .open(plan.into_request(None))
        .await
        .map_err(ChatError::from)?;
    Ok(sse::respond(
        state,
        principal,
        slot,
        sse::hub_chunks(stream),
    ))
}

/// The answer's text as chunked `text/plain`. An answer that does not complete (stopped,
/// failed, interrupted) ends the body abruptly, without its last chunk, so a plain reader
/// (`curl` exits 18) sees it did not finish; the message's id is in `X-Rill-Message-Id` for a
/// client that wants the details.
fn plain_text(slot: StreamSlot, stream: rill_hub::HubStream, answer: &Message) -> Response {
    let body = futures::stream::unfold((stream, Some(slot)), |(mut stream, slot)| async move {
        slot.as_ref()?;
        match stream.next().await {
            Some(chunk) => Some((Ok(chunk), (stream, slot))),
            None if stream.aborted() => Some((
                Err(std::io::Error::other("the answer did not complete")),
                (stream, None),
            )),
            None => None,
        }
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(id) = HeaderValue::from_str(&answer.id) {
        headers.insert("x-rill-message-id", id);
    }
    response
}

#[utoipa::path(
    post,
    path = "/api/chats/{id}/stop",
    operation_id = "stop_answer",
    tag = "chats",
    summary = "Stop the answer being written",
    params(("id" = String, Path, description = "The chat's id.")),
    responses(
        (status = 200, description = "The stopped answer (`stopped`, with the text that had arrived).", body = Stopped),
        (status = 404, description = "`not_found`: no such chat (or another user's).", body = ErrorBody),
        (status = 409, description = "`not_generating`: no answer is being written.", body = ErrorBody),
    ),
)]
pub(crate) async fn stop(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let message = state.chat()?.stop(&principal.user, &id).await?;
    Ok(Json(Stopped { message }).into_response())
}

/// `POST /api/chats/{id}/ticket`: a one-time ticket to open this chat's event stream, so a
/// long-lived token never sits in an `EventSource` URL.
#[utoipa::path(
    post,
    path = "/api/chats/{id}/ticket",
    operation_id = "chat_ticket",
    tag = "chats",
    summary = "A one-time ticket for the chat's event stream",
    params(("id" = String, Path, description = "The chat's id.")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The ticket.", body = TicketResponse),
        (status = 404, description = "`not_found`: no such chat (or another user's).", body = ErrorBody),
        (status = 429, description = "`too_many_tickets`.", body = ErrorBody),
    ),
)]
pub(crate) async fn ticket(
    State(state): State<AppState>,
    MintingPrincipal(principal): MintingPrincipal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.chat()?.chat(&principal.user, &id).await?;
    let tickets = state.config.auth.tickets();
    let ticket = tickets.issue(&principal, &[Topic::for_chat(&id)])?;
    Ok(Json(TicketResponse {
        ticket,
        expires_in: tickets.ttl().as_secs(),
    })
    .into_response())
}

/// `GET /api/chats/{id}/events`: the chat's live stream for every tab (see
/// `rill_chat::ChatEngine::follow` for where it starts).
#[utoipa::path(
    get,
    path = "/api/chats/{id}/events",
    tag = "chats",
    summary = "The chat's event stream (SSE)",
    description = "The chat's events for every tab: from the current message (a `snapshot` \
                   first while an answer runs), or resumed exactly after `Last-Event-ID`; \
                   `reset` with a reason when that is impossible. The stream stays open.",
    params(
        ("id" = String, Path, description = "The chat's id."),
        ("last_event_id" = Option<String>, Query, description = "Resume after this id (the header wins)."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this id."),
    ),
    security(("bearer" = []), ("cookie" = []), ("access_token" = []), ("ticket" = [])),
    responses(
        (status = 200, description = "The event stream.", content(("text/event-stream"))),
        (status = 403, description = "`forbidden`: the ticket is not for this chat.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such chat (or another user's).", body = ErrorBody),
        (status = 429, description = "`too_many_user_streams`.", body = ErrorBody),
    ),
)]
pub(crate) async fn chat_events(
    State(state): State<AppState>,
    StreamPrincipal(principal): StreamPrincipal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    engine.chat(&principal.user, &id).await?;
    // Owning the chat is what grants its stream; a ticket must also name it.
    if !principal.may_follow_owned(&Topic::for_chat(&id)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this ticket is not for this chat",
        ));
    }
    let last_id = sse::last_event_id(&headers, q.last_event_id);
    let slot = stream_slot(&state, &principal)?;
    let plan = engine.follow(&id, last_id.as_deref()).await?;
    stream(&state, &principal, slot, plan).await
}
