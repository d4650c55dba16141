//! The chat API: bots, chats, history pages, sending (three response styles), the chat's event
//! stream, stop and regenerate.
//!
//! Every chat belongs to the user who created it; another user gets 404, exactly as for a chat
//! that does not exist. The handlers only validate and translate: the chat engine (`rill-chat`)
//! does the work, and the hub (`rill-hub`) turns the chat's topic into SSE.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use rill_chat::events::{self, MessageView};
use rill_chat::{ChatError, Sent};
use rill_core::chat::{Chat, PageCursor};
use rill_core::{StreamCursor, Topic};
use rill_hub::{HubStream, PreludeEvent, Start, StreamRequest, WhenFull, Wire};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::json::JsonBody;
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
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            ChatError::InvalidContent { code, message } => {
                let status = if code == "content_too_long" {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                ApiError::new(status, code, message)
            }
            ChatError::Broker(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                e.to_string(),
            ),
            ChatError::Store(e) => ApiError::internal(e),
        }
    }
}

#[derive(Serialize)]
struct BotView<'a> {
    id: &'a str,
    name: &'a str,
    description: &'a str,
    provider: rill_core::ProviderKind,
    model: &'a str,
}

async fn list_bots(
    State(state): State<AppState>,
    _principal: Principal,
) -> Result<Response, ApiError> {
    let bots: Vec<BotView<'_>> = state
        .chat()?
        .bots()
        .iter()
        .map(|b| BotView {
            id: &b.config.id,
            name: &b.config.name,
            description: &b.config.description,
            provider: b.config.provider,
            model: &b.config.model,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
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
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (before, limit) = page_params(query.before.as_deref(), query.limit.as_deref())?;
    let page = state
        .chat()?
        .store()
        .list_chats(&principal.user, query.bot.as_deref(), before, limit)
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

async fn owned_chat(state: &AppState, principal: &Principal, id: &str) -> Result<Chat, ApiError> {
    state
        .chat()?
        .store()
        .get_chat(&principal.user, id)
        .await
        .map_err(ChatError::from)?
        .ok_or_else(|| ApiError::not_found("no such chat"))
}

async fn get_chat(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let chat = owned_chat(&state, &principal, &id).await?;
    let mut view = chat_view(&chat);
    view["generating"] = json!(state.chat()?.snapshot(&id).await?.map(|s| s.message.id));
    Ok(Json(view).into_response())
}

async fn delete_chat(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    owned_chat(&state, &principal, &id).await?;
    // A running generation would write into a deleted chat: stop it first.
    if state.chat()?.is_running(&id) {
        let _ = state.chat()?.stop(&principal.user, &id).await;
    }
    if state
        .chat()?
        .store()
        .delete_chat(&principal.user, &id)
        .await
        .map_err(ChatError::from)?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found("no such chat"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    before: Option<String>,
    limit: Option<String>,
}

async fn list_messages(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (before, limit) = page_params(query.before.as_deref(), query.limit.as_deref())?;
    owned_chat(&state, &principal, &id).await?;
    let page = state
        .chat()?
        .store()
        .list_messages(&id, before, limit)
        .await
        .map_err(ChatError::from)?;
    let messages: Vec<MessageView<'_>> = page.items.iter().map(MessageView::from).collect();
    Ok(Json(json!({ "messages": messages, "next_before": page.next_before })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendMessage {
    content: String,
}

/// How the sender wants the answer, from its `Accept` header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    /// `text/event-stream`: this exchange's chat events, until `message.completed`.
    Sse,
    /// `text/plain`: only the answer's text, as chunked plain text.
    Plain,
    /// Anything else: `202` with the messages and the event stream's URL.
    Accepted,
}

fn style(headers: &HeaderMap) -> Style {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let types = accept.split(',').map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    for t in types {
        match t.as_str() {
            "text/event-stream" => return Style::Sse,
            "text/plain" => return Style::Plain,
            _ => {}
        }
    }
    Style::Accepted
}

async fn send_message(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SendMessage>,
) -> Result<Response, ApiError> {
    let sent = state
        .chat()?
        .send(&principal.user, &id, &body.content)
        .await?;
    answer(&state, &principal, &id, style(&headers), sent).await
}

async fn regenerate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sent = state.chat()?.regenerate(&principal.user, &id).await?;
    answer(&state, &principal, &id, style(&headers), sent).await
}

/// Answers a started exchange in the requested style.
async fn answer(
    state: &AppState,
    principal: &Principal,
    chat_id: &str,
    style: Style,
    sent: Sent,
) -> Result<Response, ApiError> {
    match style {
        Style::Accepted => {
            let body = json!({
                "user_message": MessageView::from(&sent.user_message),
                "assistant_message": MessageView::from(&sent.assistant_message),
                "events_url": format!("/api/chats/{chat_id}/events"),
            });
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
        Style::Sse => {
            let exchange = open_exchange(state, chat_id, &sent).await?;
            Ok(sse::response(state, principal, exchange.map(|f| f.bytes)))
        }
        Style::Plain => {
            let exchange = open_exchange(state, chat_id, &sent).await?;
            let text = exchange.filter_map(|f| async move { f.delta_text.map(Bytes::from) });
            let body = Body::from_stream(text.map(Ok::<_, std::convert::Infallible>));
            Ok(Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header(header::CACHE_CONTROL, "no-cache, no-transform")
                .header("x-accel-buffering", "no")
                .header("x-rill-message-id", sent.assistant_message.id.as_str())
                .body(body)
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
        }
    }
}

/// The exchange's events, replayed from the log from just before its first one: nothing
/// published between the POST and this stream opening can be missed.
async fn open_exchange(
    state: &AppState,
    chat_id: &str,
    sent: &Sent,
) -> Result<impl futures::Stream<Item = Frame> + Send + use<>, ApiError> {
    let topic = Topic::for_chat(chat_id);
    let stream = state
        .hub
        .open(StreamRequest {
            topics: vec![topic.clone()],
            start: Start::After(vec![(topic, sent.published_before.offset)]),
            wire: Wire::Raw,
            when_full: WhenFull::MergeDeltas,
            prelude: Vec::new(),
        })
        .await
        .map_err(ChatError::from)?;
    Ok(exchange_frames(stream, sent.assistant_message.id.clone()))
}

/// One SSE event of an exchange stream, with the answer's text when it is a delta of it.
struct Frame {
    bytes: Bytes,
    delta_text: Option<String>,
}

/// Re-frames a hub stream into single events, ending after the `message.completed` of
/// `assistant_id`.
///
/// The hub writes batches of frames; to know where the exchange ends, and to pull out the
/// text for the plain style, each batch is parsed back with our own parser. This runs for one
/// connection per POST, not on the fan-out path.
fn exchange_frames(
    stream: HubStream,
    assistant_id: String,
) -> impl futures::Stream<Item = Frame> + Send {
    struct St {
        stream: HubStream,
        parser: rill_sse::Parser,
        assistant_id: String,
        pending: std::collections::VecDeque<Frame>,
        done: bool,
    }
    let st = St {
        stream,
        parser: rill_sse::Parser::new(),
        assistant_id,
        pending: Default::default(),
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((frame, st));
            }
            if st.done {
                return None;
            }
            let chunk = st.stream.next().await?;
            let mut frames = Vec::new();
            let assistant_id = st.assistant_id.clone();
            let mut finished = false;
            st.parser.feed(&chunk, |item| {
                let rill_sse::Item::Event(e) = item else {
                    return;
                };
                if finished {
                    return;
                }
                let mut out = Vec::new();
                let _ = rill_sse::encode_event(&mut out, Some(e.id), Some(e.event), e.data);
                let mut delta_text = None;
                if e.event == events::DELTA {
                    if let Ok(d) = serde_json::from_str::<events::DeltaData>(e.data) {
                        if d.message_id == assistant_id {
                            delta_text = Some(d.text);
                        }
                    }
                } else if e.event == events::COMPLETED {
                    finished = serde_json::from_str::<serde_json::Value>(e.data)
                        .ok()
                        .and_then(|v| {
                            v.get("message_id")
                                .and_then(|m| m.as_str())
                                .map(|m| m == assistant_id)
                        })
                        .unwrap_or(false);
                } else if e.event == "reset" {
                    // The exchange can no longer be followed exactly: end; the client reads the
                    // stored message.
                    finished = true;
                }
                frames.push(Frame {
                    bytes: Bytes::from(out),
                    delta_text,
                });
            });
            st.pending.extend(frames);
            st.done = finished;
        }
    })
}

async fn stop(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let message = state.chat()?.stop(&principal.user, &id).await?;
    Ok(Json(json!({ "message": MessageView::from(&message) })).into_response())
}

/// `POST /api/chats/{id}/ticket`: a one-time ticket to open this chat's event stream, so a
/// long-lived token never sits in an `EventSource` URL.
async fn ticket(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if principal.is_ticket() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a ticket cannot mint another ticket",
        ));
    }
    owned_chat(&state, &principal, &id).await?;
    let tickets = state.config.auth.tickets();
    let ticket = tickets.issue(&principal, &[Topic::for_chat(&id)])?;
    Ok(Json(json!({ "ticket": ticket, "expires_in": tickets.ttl().as_secs() })).into_response())
}

#[derive(Deserialize)]
struct EventsQuery {
    last_event_id: Option<String>,
}

/// `GET /api/chats/{id}/events`: the chat's live stream for every tab.
///
/// With a `Last-Event-ID` that can still be replayed exactly: replay, then live. Otherwise (no
/// id, or one that cannot be replayed) a generation in progress is sent as one `snapshot` at an
/// offset, and the stream continues strictly after that offset: no gap, no duplicate.
async fn chat_events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    owned_chat(&state, &principal, &id).await?;
    let topic = Topic::for_chat(&id);
    // Owning the chat is what grants its stream; a ticket must also name it.
    if !principal.may_follow_owned(&topic) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this ticket is not for this chat",
        ));
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id)
        .filter(|s| !s.is_empty());

    let broker = state.hub.broker().clone();
    let replayable = match &last_event_id {
        Some(id) => match StreamCursor::parse(id) {
            Some(cursor) => {
                let read = broker
                    .read(&topic, u64::MAX, 0)
                    .await
                    .map_err(ChatError::from)?;
                let offset = cursor.offsets.first().copied().unwrap_or(0);
                cursor.matches(&read.epoch, std::slice::from_ref(&topic))
                    && offset + 1 >= read.first
                    && offset <= read.head
            }
            None => false,
        },
        None => false,
    };
    let (start, prelude) = if let (true, Some(id)) = (replayable, last_event_id) {
        (Start::LastEventId(id), Vec::new())
    } else {
        // The head before the snapshot: anything published after it is replayed, so a
        // generation that starts right now is not missed.
        let head = broker
            .read(&topic, u64::MAX, 0)
            .await
            .map_err(ChatError::from)?
            .head;
        match state.chat()?.snapshot(&id).await? {
            Some(snapshot) => {
                let data = serde_json::to_string(&MessageView::from(&snapshot.message))
                    .unwrap_or_default();
                (
                    Start::After(vec![(topic.clone(), snapshot.offset)]),
                    vec![PreludeEvent {
                        event: events::SNAPSHOT.to_owned(),
                        data,
                    }],
                )
            }
            None => (Start::After(vec![(topic.clone(), head)]), Vec::new()),
        }
    };
    let stream = state
        .hub
        .open(StreamRequest {
            topics: vec![topic],
            start,
            wire: Wire::Raw,
            when_full: WhenFull::MergeDeltas,
            prelude,
        })
        .await
        .map_err(ChatError::from)?;
    Ok(sse::hub_response(&state, &principal, stream))
}
