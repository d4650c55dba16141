//! The chat API: bots, chats, history pages, sending (three response styles, retries and
//! idempotency), the chat's event stream, stop and regenerate.
//!
//! Every chat belongs to the user who created it; another user gets 404, exactly as for a chat
//! that does not exist. The handlers only validate and map HTTP onto the chat engine: what a
//! stream carries, where it starts and ends is the engine's plan (`rill_chat`), and the hub
//! (`rill-hub`) runs it.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rill_chat::protocol::PlainText;
use rill_chat::{ChatError, Plan, Resume, Sent};
use rill_core::Topic;
use rill_core::chat::{Chat, Message, PageCursor};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::auth::{MintingPrincipal, StreamPrincipal};
use crate::json::{ApiPath, ApiQuery, JsonBody, read_body, require_json};
use crate::limits::StreamSlot;
use crate::{ApiError, AppState, Principal, sse};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/bots", get(list_bots))
        .route("/api/chats", post(create_chat).get(list_chats))
        .route("/api/chats/{id}", get(get_chat).delete(delete_chat))
        .route(
            "/api/chats/{id}/messages",
            get(list_messages).post(send_message),
        )
        .route("/api/chats/{id}/regenerate", post(regenerate))
        .route("/api/chats/{id}/stop", post(stop))
        .route("/api/chats/{id}/events", get(chat_events))
        .route("/api/chats/{id}/ticket", post(ticket))
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

async fn list_bots(
    State(state): State<AppState>,
    _principal: Principal,
) -> Result<Response, ApiError> {
    let bots: Vec<serde_json::Value> = state
        .chat()?
        .bots()
        .iter()
        .map(|b| {
            json!({
                "id": b.config.id,
                "name": b.config.name,
                "description": b.config.description,
                "provider": b.config.provider,
                "model": b.config.model,
            })
        })
        .collect();
    Ok(Json(json!({ "bots": bots })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateChat {
    bot: String,
}

async fn create_chat(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateChat>,
) -> Result<Response, ApiError> {
    let chat = state
        .chat()?
        .create_chat(&principal.user, &body.bot)
        .await?;
    Ok((StatusCode::CREATED, Json(chat_view(&chat))).into_response())
}

/// Query parameters of listings. Unknown ones (`access_token`, cache-busters like `_=1`) are
/// ignored, as on every route.
#[derive(Deserialize)]
struct ListQuery {
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

async fn list_chats(
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
    let chats: Vec<_> = page.items.iter().map(chat_view).collect();
    Ok(Json(json!({ "chats": chats, "next_before": page.next_before })).into_response())
}

fn chat_view(chat: &Chat) -> serde_json::Value {
    json!({
        "id": chat.id,
        "bot": chat.bot_id,
        "title": chat.title,
        "created_at_ms": chat.created_at_ms,
        "updated_at_ms": chat.updated_at_ms,
        "events_url": format!("/api/chats/{}/events", chat.id),
    })
}

async fn get_chat(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    let chat = engine.chat(&principal.user, &id).await?;
    let mut view = chat_view(&chat);
    view["generating"] = json!(engine.snapshot(&id).await?.map(|s| s.message.id));
    Ok(Json(view).into_response())
}

async fn delete_chat(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.chat()?.delete_chat(&principal.user, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_messages(
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
    Ok(Json(json!({ "messages": page.items, "next_before": page.next_before })).into_response())
}

/// A chat request's JSON body. Its size limit follows `max_content_chars` (four bytes a
/// character in UTF-8, six when JSON escapes one), so the content limit, counted in
/// characters, is what refuses long messages, in any script.
struct ChatBody<T>(T);

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
        let value = serde_json::from_slice(&body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                ApiError::bad_request("invalid_body", format!("unexpected body: {e}"))
            }
            _ => ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")),
        })?;
        Ok(ChatBody(value))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendMessage {
    content: String,
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
struct EventsQuery {
    last_event_id: Option<String>,
}

/// The `Idempotency-Key` header, if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim().to_owned())).map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "an Idempotency-Key is visible ASCII",
            )
        }),
    }
}

async fn send_message(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
    body: ChatBody<SendMessage>,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    let style = style(&headers);
    engine.check_can_answer(&principal.user, &id).await?;
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
    let key = idempotency_key(&headers)?;
    // Every limit is checked before anything is stored: a refused request changes nothing.
    let slot = match style {
        Style::Sse | Style::Plain => Some(stream_slot(&state, &principal)?),
        Style::Accepted => None,
    };
    let sent = engine
        .send(&principal.user, &id, &body.0.content, key.as_deref())
        .await?;
    answer(&state, &principal, style, slot, sent).await
}

async fn regenerate(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let engine = state.chat()?;
    let style = style(&headers);
    engine.check_can_answer(&principal.user, &id).await?;
    let slot = match style {
        Style::Sse | Style::Plain => Some(stream_slot(&state, &principal)?),
        Style::Accepted => None,
    };
    let sent = engine.regenerate(&principal.user, &id).await?;
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
            let body = json!({
                "user_message": sent.user_message,
                "assistant_message": sent.assistant_message,
                "events_url": format!("/api/chats/{chat_id}/events"),
            });
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

async fn stop(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let message = state.chat()?.stop(&principal.user, &id).await?;
    Ok(Json(json!({ "message": message })).into_response())
}

/// `POST /api/chats/{id}/ticket`: a one-time ticket to open this chat's event stream, so a
/// long-lived token never sits in an `EventSource` URL.
async fn ticket(
    State(state): State<AppState>,
    MintingPrincipal(principal): MintingPrincipal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.chat()?.chat(&principal.user, &id).await?;
    let tickets = state.config.auth.tickets();
    let ticket = tickets.issue(&principal, &[Topic::for_chat(&id)])?;
    Ok(Json(json!({ "ticket": ticket, "expires_in": tickets.ttl().as_secs() })).into_response())
}

/// `GET /api/chats/{id}/events`: the chat's live stream for every tab (see
/// `rill_chat::ChatEngine::follow` for where it starts).
async fn chat_events(
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
