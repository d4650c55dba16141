//! The OpenAI face (`/v1`, docs/openai.md): the official `openai` SDKs, pointed at rill with
//! `base_url=http://host/v1`, work unmodified.
//!
//! - `GET /v1/models`, `GET /v1/models/{id}`: the bots, as models (`id` = the bot id).
//! - `POST /v1/chat/completions`: stateless, like OpenAI's. The bot's provider is called
//!   directly (nothing is stored) and its events are translated into chunks
//!   (`rill_dialects::openai_out::ChunkWriter`). The provider's stream lives in the response
//!   body: a client that goes away drops it, which closes the upstream request.
//! - `POST /v1/responses`: a response is one exchange of a rill chat (a new chat, or the chat
//!   of `previous_response_id`), so it runs detached from the request, is stored, survives
//!   client disconnects, and streams from the chat's log on any instance. Its id is
//!   `resp_<answer message id>`, so any instance finds it from the store alone.
//! - `GET /v1/responses/{id}`: the response as it stands; with `stream=true`, its events from
//!   the log (after `starting_after`), then live.
//! - `POST /v1/responses/{id}/cancel`: the engine's stop (idempotent; the text is kept).
//!
//! Errors are OpenAI's shape, `{"error":{"message","type","param","code"}}`, with the statuses
//! the SDKs map to their exception classes; [`openai_errors`] rewrites rill's own error bodies
//! (auth, limits, extractors) into it, so no `/v1` route answers another shape.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use rill_chat::protocol::ChatEvent;
use rill_chat::{AskOptions, ChatEngine, ChatError, Question, Sent, ToolOutput};
use rill_core::chat::Role;
use rill_core::{
    CompletionRequest, ProviderError, ProviderErrorKind, RequestContext, Start, StreamRequest,
    Topic, WhenFull, Wire,
};
use rill_dialects::openai_in::{ChatCompletionRequest, InvalidRequest, ResponsesRequest};
use rill_dialects::openai_out::{
    ChunkWriter, DONE_FRAME, PER_EVENT, ResponseMeta, ResponsesStream, Seed, data_frame,
    error_frame, message_id_of, response_object, seed_before,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::json::{ApiPath, ApiQuery, read_body};
use crate::routes::Routes;
use crate::{ApiError, AppState, Principal, sse};

pub(crate) fn router() -> Routes {
    Routes::new()
        .route("/v1/models", &["GET"], get(models))
        .route("/v1/models/{id}", &["GET"], get(model))
        .route("/v1/chat/completions", &["POST"], post(chat_completions))
        .route("/v1/responses", &["POST"], post(create_response))
        .route("/v1/responses/{id}", &["GET"], get(retrieve))
        .route("/v1/responses/{id}/cancel", &["POST"], post(cancel))
        .map_router(|router| router.layer(axum::middleware::map_response(openai_errors)))
}

/// An error of the OpenAI face: `{"error":{"message","type","param","code"}}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the JSON `OpenAiError` writes; never built.
pub(crate) struct OpenAiErrorBody {
    error: OpenAiErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the JSON `OpenAiError` writes; never built.
pub(crate) struct OpenAiErrorDetail {
    message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`, `rate_limit_error`,
    /// `server_error`, ...
    #[serde(rename = "type")]
    kind: String,
    param: Option<String>,
    code: Option<String>,
}

/// A request body of the OpenAI API (OpenAI's own schema; see docs/openai.md for what rill reads).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the bodies `ChatCompletionRequest` parses; never built.
pub(crate) struct ChatCompletionBody {
    /// A bot id (`GET /v1/models`).
    #[schema(example = "demo")]
    model: String,
    /// OpenAI chat messages (`{"role","content"}` and the rest of OpenAI's shapes).
    #[schema(value_type = Vec<Object>, min_items = 1)]
    messages: Vec<Value>,
    stream: Option<bool>,
}

/// A Responses API request body (OpenAI's own schema; see docs/openai.md for what rill reads).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the bodies `ResponsesRequest` parses; never built.
pub(crate) struct ResponsesBody {
    /// A bot id (`GET /v1/models`).
    #[schema(example = "demo")]
    model: String,
    /// A string, or OpenAI input items.
    #[schema(value_type = Object)]
    input: Value,
    previous_response_id: Option<String>,
    stream: Option<bool>,
}

/// Query parameters of `GET /v1/responses/{id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from `RetrieveQuery`; this is its description.
pub(crate) struct RetrieveParams {
    /// `true`: the response's events as SSE (from the log, then live).
    stream: Option<bool>,
    /// With `stream=true`: only events after this `sequence_number`.
    #[param(minimum = 0)]
    starting_after: Option<u64>,
}

/// The largest request body (a whole conversation, for Chat Completions).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub(crate) struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<String>,
}

impl OpenAiError {
    fn invalid(error: InvalidRequest) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: error.message,
            kind: "invalid_request_error",
            param: error.param,
            code: error.code.map(str::to_owned),
        }
    }

    fn bad(param: &str, message: impl Into<String>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_owned()),
            code: None,
        }
    }

    /// What OpenAI answers for a model that does not exist.
    fn model_not_found(model: &str) -> Self {
        OpenAiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist or you do not have access to it."),
            kind: "invalid_request_error",
            param: Some("model".to_owned()),
            code: Some("model_not_found".to_owned()),
        }
    }

    fn response_not_found(id: &str, param: Option<&str>) -> Self {
        OpenAiError {
            status: StatusCode::NOT_FOUND,
            message: format!("No response found with id '{id}'."),
            kind: "invalid_request_error",
            param: param.map(str::to_owned),
            code: None,
        }
    }

    /// A provider that failed before answering (Chat Completions).
    fn provider(error: &ProviderError) -> Self {
        let (status, kind) = match error.kind {
            ProviderErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            ProviderErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "server_error"),
            ProviderErrorKind::Config => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            _ => (StatusCode::BAD_GATEWAY, "server_error"),
        };
        OpenAiError {
            status,
            message: error.message.clone(),
            kind,
            param: None,
            code: Some(error.kind.as_str().to_owned()),
        }
    }
}

/// OpenAI's `type` for a status.
fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 405 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        OpenAiError {
            status: error.status,
            kind: kind_of(error.status),
            message: error.message,
            param: None,
            code: Some(error.code.to_owned()),
        }
    }
}

impl From<ChatError> for OpenAiError {
    fn from(error: ChatError) -> Self {
        ApiError::from(error).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        (self.status, Json(body)).into_response()
    }
}

/// Rewrites rill's error bodies (`{"error":{"code","message"}}`: auth, limits, extractors) into
/// OpenAI's shape; OpenAI-shaped ones (with `type`) and successes pass untouched.
async fn openai_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Error bodies are ours and small.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let error = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let Some(error) = error.filter(|e| e.get("type").is_none()) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let body = json!({"error": {
        "message": error.get("message").cloned().unwrap_or(Value::Null),
        "type": kind_of(status),
        "param": null,
        "code": error.get("code").cloned().unwrap_or(Value::Null),
    }});
    let mut response = Response::from_parts(parts, Body::from(body.to_string()));
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

type Result<T, E = OpenAiError> = std::result::Result<T, E>;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The body as JSON (any content type: some clients send none).
async fn json_body(request: Request) -> Result<Value> {
    let body = read_body(request.into_body(), MAX_BODY).await?;
    serde_json::from_slice(&body).map_err(|_| OpenAiError {
        status: StatusCode::BAD_REQUEST,
        message:
            "We could not parse the JSON body of your request. The body must be a JSON object."
                .to_owned(),
        kind: "invalid_request_error",
        param: None,
        code: None,
    })
}

fn model_json(engine_bot: &rill_chat::Bot) -> Value {
    json!({
        "id": engine_bot.config.id,
        "object": "model",
        "created": 0,
        "owned_by": "rill",
    })
}

#[utoipa::path(get, path = "/v1/models", tag = "openai", operation_id = "openai_models",
    summary = "The bots, as OpenAI models",
    responses((status = 200, description = "`{\"object\":\"list\",\"data\":[model...]}`.", body = Object)))]
pub(crate) async fn models(
    State(state): State<AppState>,
    _principal: Principal,
) -> Result<Response> {
    let data: Vec<Value> = state.chat()?.bots().iter().map(model_json).collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai", operation_id = "openai_model",
    summary = "A bot, as an OpenAI model",
    params(("id" = String, Path, description = "A bot id.")),
    responses(
        (status = 200, description = "The model.", body = Object),
        (status = 404, description = "`model_not_found`.", body = OpenAiErrorBody),
    ))]
pub(crate) async fn model(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response> {
    let bot = state
        .chat()?
        .bot(&id)
        .ok_or_else(|| OpenAiError::model_not_found(&id))?;
    Ok(Json(model_json(bot)).into_response())
}

/// Content rill would refuse in a chat, checked before anything is stored.
fn check_text(engine: &ChatEngine, param: &str, text: &str) -> Result<()> {
    if text.contains('\0') {
        return Err(OpenAiError::bad(
            param,
            format!("'{param}' contains a NUL character."),
        ));
    }
    let max = engine.settings().max_content_chars;
    if text.chars().count() > max {
        return Err(OpenAiError::bad(
            param,
            format!("'{param}' is longer than {max} characters."),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Chat Completions

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", operation_id = "openai_chat_completions",
    summary = "Chat Completions (stateless)",
    description = "OpenAI's Chat Completions: a completion object, or with `stream: true` \
                   `chat.completion.chunk`s as SSE ending in `[DONE]` (docs/openai.md).",
    request_body(content = ChatCompletionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The completion, or its chunks.", content(
            (Object = "application/json"),
            ("text/event-stream"),
        )),
        (status = 404, description = "`model_not_found`.", body = OpenAiErrorBody),
        (status = 429, description = "A rate limit (the upstream's, or too many streams).", body = OpenAiErrorBody),
        (status = 502, description = "The upstream failed.", body = OpenAiErrorBody),
        (status = 504, description = "The upstream timed out.", body = OpenAiErrorBody),
    ))]
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response> {
    let engine = state.chat()?;
    let body = json_body(request).await?;
    let request = ChatCompletionRequest::parse(&body).map_err(OpenAiError::invalid)?;
    let bot = engine
        .bot(&request.model)
        .ok_or_else(|| OpenAiError::model_not_found(&request.model))?
        .clone();
    let slot = state.streams.acquire(&principal.user)?;
    let sampling = request.sampling;
    let completion = CompletionRequest {
        model: bot.config.model.clone(),
        system: request.system.or_else(|| bot.config.system_prompt.clone()),
        messages: request.messages,
        temperature: sampling.temperature.or(bot.config.temperature),
        max_tokens: sampling.max_tokens.or(bot.config.max_tokens),
        stop: sampling.stop,
        tools: sampling.tools,
        tool_choice: sampling.tool_choice,
        context: RequestContext {
            user_id: Some(principal.user.to_string()),
            chat_id: None,
            message_id: None,
        },
        prefill: Vec::new(),
    };
    let id = format!("chatcmpl-{:032x}", rand::random::<u128>());
    let mut writer = ChunkWriter::new(id, now_secs(), request.model.clone());
    // Failures before the upstream answers are the request's status, as OpenAI's are.
    let mut upstream = bot
        .provider
        .stream(completion)
        .await
        .map_err(|e| OpenAiError::provider(&e))?;
    if !request.stream {
        // Dropped with the handler when the client goes away: the upstream request closes.
        while let Some(event) = upstream.next().await {
            match event {
                Ok(event) => {
                    let done = matches!(event, rill_core::ProviderEvent::Finish { .. });
                    writer.push(event);
                    if done {
                        break;
                    }
                }
                Err(error) => return Err(OpenAiError::provider(&error)),
            }
        }
        drop(slot);
        return Ok(Json(writer.completion()).into_response());
    }
    let include_usage = request.include_usage;
    let first = Bytes::from(data_frame(&writer.start()));
    // The provider's stream is the state of the body: dropping the body (a client that went
    // away) drops it, which closes the upstream request.
    let chunks = futures::stream::unfold(Some((upstream, writer)), move |state| async move {
        let (mut upstream, mut writer) = state?;
        loop {
            match upstream.next().await {
                Some(Ok(event)) => {
                    let finish = matches!(event, rill_core::ProviderEvent::Finish { .. });
                    let mut out = Vec::new();
                    for chunk in writer.push(event) {
                        out.extend(data_frame(&chunk));
                    }
                    if finish {
                        if include_usage {
                            out.extend(data_frame(&writer.usage_chunk()));
                        }
                        out.extend_from_slice(DONE_FRAME);
                        return Some((Bytes::from(out), None));
                    }
                    if !out.is_empty() {
                        return Some((Bytes::from(out), Some((upstream, writer))));
                    }
                }
                Some(Err(error)) => {
                    let frame = error_frame(&error.message, error.kind.as_str());
                    return Some((Bytes::from(frame), None));
                }
                None => {
                    let error = rill_dialects::ended_early();
                    let frame = error_frame(&error.message, error.kind.as_str());
                    return Some((Bytes::from(frame), None));
                }
            }
        }
    });
    let chunks = futures::stream::once(async move { first }).chain(chunks);
    Ok(sse::respond_closing(
        &state,
        &principal,
        slot,
        chunks,
        chunk_closing,
    ))
}

/// A stream cut short by the server (shutdown, maximum duration): an error OpenAI's SDKs raise.
fn chunk_closing(code: &str, message: &str, _reconnect: bool) -> Bytes {
    Bytes::from(error_frame(message, code))
}

// ---------------------------------------------------------------------------------------------
// Responses

#[utoipa::path(post, path = "/v1/responses", tag = "openai", operation_id = "openai_create_response",
    summary = "Create a response (Responses API)",
    description = "A response is one exchange of a rill chat: stored, detached from the request, \
                   resumable. A response object, or with `stream: true` its events as SSE.",
    request_body(content = ResponsesBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The response, or its events.", content(
            (Object = "application/json"),
            ("text/event-stream"),
        )),
        (status = 404, description = "`model_not_found`; an unknown `previous_response_id`.", body = OpenAiErrorBody),
        (status = 409, description = "A response is already running in that conversation.", body = OpenAiErrorBody),
        (status = 429, description = "Too many streams.", body = OpenAiErrorBody),
    ))]
pub(crate) async fn create_response(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response> {
    let engine = state.chat()?;
    let user = principal.user.to_string();
    let body = json_body(request).await?;
    let request = ResponsesRequest::parse(&body).map_err(OpenAiError::invalid)?;
    if engine.bot(&request.model).is_none() {
        return Err(OpenAiError::model_not_found(&request.model));
    }
    if !request.content.is_empty() {
        check_text(engine, "input", &request.content)?;
    }
    // The chat to continue, checked before anything is stored.
    let previous = match &request.previous_response_id {
        Some(id) => {
            let not_found = || OpenAiError::response_not_found(id, Some("previous_response_id"));
            let message_id = message_id_of(id).ok_or_else(not_found)?;
            let sent = match engine.exchange_of(&user, message_id).await {
                Ok(sent) => sent,
                Err(ChatError::NotFound) => return Err(not_found()),
                Err(error) => return Err(error.into()),
            };
            let chat = engine.chat(&user, &sent.assistant_message.chat_id).await?;
            if chat.bot_id != request.model {
                return Err(OpenAiError::bad(
                    "model",
                    format!(
                        "The previous response was answered by model `{}`: a conversation keeps its model.",
                        chat.bot_id
                    ),
                ));
            }
            let latest = engine
                .store()
                .list_messages(&chat.id, None, 1)
                .await
                .map_err(ChatError::from)?;
            if latest.items.first().map(|m| m.id.as_str()) != Some(message_id) {
                return Err(OpenAiError::bad(
                    "previous_response_id",
                    "rill continues a conversation from its latest response only.",
                ));
            }
            Some(chat.id)
        }
        None => None,
    };
    let slot = if request.stream {
        Some(state.streams.acquire(&principal.user)?)
    } else {
        None
    };
    let question = Question {
        content: request.content.clone(),
        key: None,
        options: AskOptions {
            system: request.instructions.clone(),
            temperature: request.sampling.temperature,
            max_tokens: request.sampling.max_tokens,
            stop: request.sampling.stop.clone(),
            tools: request.sampling.tools.clone(),
            tool_choice: request.sampling.tool_choice.clone(),
        },
        tool_results: request
            .tool_results
            .iter()
            .map(|(call_id, output)| ToolOutput {
                call_id: call_id.clone(),
                output: Some(Value::String(output.clone())),
                error: None,
            })
            .collect(),
    };
    let (chat_id, created) = match previous {
        Some(chat_id) => (chat_id, false),
        None => (engine.create_chat(&user, &request.model).await?.id, true),
    };
    let sent = match engine.ask(&user, &chat_id, &question).await {
        Ok(sent) => sent,
        Err(error) => {
            // Nothing stays of a refused request.
            if created && let Err(e) = engine.delete_chat(&user, &chat_id).await {
                tracing::warn!(error = %e, chat_id, "cannot remove the chat of a refused response");
            }
            return Err(match error {
                ChatError::InvalidContent { message, .. } => OpenAiError::bad("input", message),
                other => other.into(),
            });
        }
    };
    let meta = ResponseMeta {
        model: request.model.clone(),
        instructions: request.instructions.clone(),
        previous_response_id: request.previous_response_id.clone(),
        background: request.background,
        temperature: request.sampling.temperature,
        max_output_tokens: request.sampling.max_tokens,
    };
    if let Some(slot) = slot {
        // A foreground stream is the answer's only reader: like OpenAI, rill cancels the
        // response when its client goes away. A background one runs on (resume it, or cancel).
        let cancel = (!request.background).then(|| CancelOnDisconnect {
            engine: engine.clone(),
            user: user.clone(),
            chat_id: sent.assistant_message.chat_id.clone(),
            draining: state.draining.clone(),
            armed: true,
        });
        return stream_response(&state, &principal, slot, &sent, meta, None, cancel).await;
    }
    if request.background {
        let mut response = response_object(&sent.assistant_message, &meta);
        response["status"] = json!("queued");
        return Ok(Json(response).into_response());
    }
    // Not streamed, not in the background: the answer, once it is over. It runs detached, so
    // a client that goes away now finds it later with `GET /v1/responses/{id}`.
    wait_for(&state, &sent, &meta).await?;
    let message = engine
        .store()
        .get_message(&sent.assistant_message.id)
        .await
        .map_err(ChatError::from)?
        .ok_or(ChatError::NotFound)?;
    Ok(Json(response_object(&message, &meta)).into_response())
}

/// The hub request of a response's events from its exchange's start; `None` when the log no
/// longer holds them.
async fn response_events(
    state: &AppState,
    sent: &Sent,
    meta: ResponseMeta,
    after: Option<u64>,
) -> Result<Option<StreamRequest>> {
    let engine = state.chat()?;
    let Some(start) = &sent.start else {
        return Ok(None);
    };
    let topic = Topic::for_chat(&sent.assistant_message.chat_id);
    let head = engine
        .broker()
        .read(&topic, u64::MAX, 0)
        .await
        .map_err(ApiError::from)?;
    if start.epoch != head.epoch {
        return Ok(None);
    }
    let message_id = sent.assistant_message.id.clone();
    let (from, encoder) = if start.offset.saturating_add(1) >= head.first {
        // The whole exchange is in the log: replayed from its start, written after `after`.
        let encoder = ResponsesStream::new(message_id, meta, start.offset, after);
        (start.offset, encoder)
    } else {
        // Its start has left the log (a long answer): from the event of `after`, if that is
        // still there, with the response as it stood before it rebuilt from a later state.
        let Some(after) = after else {
            return Ok(None);
        };
        let first = start.offset.saturating_add(1);
        let Some(event) = first.checked_add(after / PER_EVENT) else {
            return Ok(None);
        };
        if event < head.first || event > head.head {
            return Ok(None);
        }
        let Some(seed) = seed_at(engine, sent, &topic, event - 1).await? else {
            return Ok(None);
        };
        let encoder = ResponsesStream::seeded(message_id, meta, start.offset, Some(after), seed);
        (event - 1, encoder)
    };
    Ok(Some(StreamRequest {
        topics: vec![topic.clone()],
        start: Start::After(vec![(topic, from)]),
        wire: Wire::Custom(Box::new(encoder)),
        when_full: WhenFull::Resync,
        prelude: Vec::new(),
        // Every log event keeps its own number: merged deltas would renumber them.
        coalesce: None,
    }))
}

/// Where the response of `sent` stood at log offset `at`: its answer now (a running one's
/// snapshot, or the stored final one), with the answer's events logged after `at` taken off.
/// `None` when those events are not all in the log any more.
async fn seed_at(engine: &ChatEngine, sent: &Sent, topic: &Topic, at: u64) -> Result<Option<Seed>> {
    let answer = &sent.assistant_message;
    let (later, end) = match engine.snapshot(&answer.chat_id).await? {
        Some(snapshot) if snapshot.message.id == answer.id => (snapshot.message, snapshot.offset),
        _ => {
            let stored = engine
                .store()
                .get_message(&answer.id)
                .await
                .map_err(ChatError::from)?
                .ok_or(ChatError::NotFound)?;
            if !stored.status.is_final() {
                // It is running, but not here and not yet snapshotted: retry later.
                return Ok(None);
            }
            (stored, u64::MAX)
        }
    };
    let mut events = Vec::new();
    let mut after = at;
    // Bounded: the log holds at most its retention, read 1024 at a time.
    for _ in 0..1024 {
        let read = engine
            .broker()
            .read(topic, after, 1024)
            .await
            .map_err(ApiError::from)?;
        if read.first > after.saturating_add(1) {
            return Ok(None);
        }
        let Some(last) = read.events.last().map(|e| e.offset) else {
            break;
        };
        for logged in read.events.iter().filter(|e| e.offset <= end) {
            if let Ok(Some(event)) = ChatEvent::decode(&logged.name, &logged.data) {
                events.push(event);
            }
        }
        if last >= end || last >= read.head {
            break;
        }
        after = last;
    }
    Ok(seed_before(&answer.id, &later, &events))
}

fn replay_gone() -> OpenAiError {
    OpenAiError {
        status: StatusCode::CONFLICT,
        message: "The events of this response are no longer retained; retrieve it without \
                  `stream` for its state."
            .to_owned(),
        kind: "invalid_request_error",
        param: None,
        code: Some("replay_unavailable".to_owned()),
    }
}

async fn stream_response(
    state: &AppState,
    principal: &Principal,
    slot: crate::StreamSlot,
    sent: &Sent,
    meta: ResponseMeta,
    after: Option<u64>,
    cancel: Option<CancelOnDisconnect>,
) -> Result<Response> {
    let request = response_events(state, sent, meta, after)
        .await?
        .ok_or_else(replay_gone)?;
    let stream = state.hub.open(request).await.map_err(ApiError::from)?;
    // The guard lives in the body stream: disarmed when the stream reaches its end (the
    // response is over), dropped armed when the body is dropped early (the client left).
    let chunks = futures::stream::unfold(
        (Box::pin(sse::hub_chunks(stream)), cancel),
        |(mut chunks, mut cancel)| async move {
            match chunks.next().await {
                Some(chunk) => Some((chunk, (chunks, cancel))),
                None => {
                    if let Some(cancel) = cancel.as_mut() {
                        cancel.armed = false;
                    }
                    None
                }
            }
        },
    );
    Ok(sse::respond_closing(
        state,
        principal,
        slot,
        chunks,
        response_closing,
    ))
}

/// Stops a foreground response whose stream was dropped before its end (its client went
/// away), unless the instance is draining (then the client resumes elsewhere and the answer
/// goes on).
struct CancelOnDisconnect {
    engine: ChatEngine,
    user: String,
    chat_id: String,
    draining: tokio_util::sync::CancellationToken,
    armed: bool,
}

impl Drop for CancelOnDisconnect {
    fn drop(&mut self) {
        if !self.armed || self.draining.is_cancelled() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (engine, user, chat_id) = (
            self.engine.clone(),
            std::mem::take(&mut self.user),
            std::mem::take(&mut self.chat_id),
        );
        runtime.spawn(async move {
            match engine.stop(&user, &chat_id).await {
                // Already over (it ended as the client left): nothing to do.
                Ok(_) | Err(ChatError::Conflict { .. }) => {}
                Err(error) => {
                    tracing::warn!(%error, chat_id, "cannot cancel a response whose client left")
                }
            }
        });
    }
}

/// A stream cut short by the server: an `error` event (resume with `starting_after`).
fn response_closing(code: &str, message: &str, _reconnect: bool) -> Bytes {
    let data = json!({"type": "error", "code": code, "message": message, "param": null});
    let mut out = Vec::new();
    let _ = rill_sse::encode_event(&mut out, None, Some("error"), &data.to_string());
    Bytes::from(out)
}

/// Waits until the answer of `sent` is over (its events, read to the end).
async fn wait_for(state: &AppState, sent: &Sent, meta: &ResponseMeta) -> Result<()> {
    let Some(request) = response_events(state, sent, meta.clone(), None).await? else {
        return Ok(());
    };
    let mut stream = state.hub.open(request).await.map_err(ApiError::from)?;
    while stream.next().await.is_some() {}
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct RetrieveQuery {
    stream: Option<String>,
    starting_after: Option<String>,
}

/// The exchange of response `id`, if it is the caller's.
async fn exchange_of(engine: &ChatEngine, user: &str, id: &str) -> Result<Sent> {
    let message_id = message_id_of(id).ok_or_else(|| OpenAiError::response_not_found(id, None))?;
    match engine.exchange_of(user, message_id).await {
        Ok(sent) => Ok(sent),
        Err(ChatError::NotFound) => Err(OpenAiError::response_not_found(id, None)),
        Err(error) => Err(error.into()),
    }
}

/// The answer of `sent` as it stands now (exact while it runs, on any instance).
async fn current(engine: &ChatEngine, sent: &Sent) -> Result<rill_core::chat::Message> {
    let answer = &sent.assistant_message;
    if !answer.status.is_final() {
        if let Some(snapshot) = engine.snapshot(&answer.chat_id).await?
            && snapshot.message.id == answer.id
        {
            return Ok(snapshot.message);
        }
        // It ended between the two reads: the stored one is final now.
        if let Some(stored) = engine
            .store()
            .get_message(&answer.id)
            .await
            .map_err(ChatError::from)?
        {
            return Ok(stored);
        }
    }
    Ok(answer.clone())
}

fn meta_of(message: &rill_core::chat::Message) -> ResponseMeta {
    ResponseMeta {
        model: message.bot_id.clone().unwrap_or_default(),
        ..ResponseMeta::default()
    }
}

#[utoipa::path(get, path = "/v1/responses/{id}", tag = "openai", operation_id = "openai_retrieve_response",
    summary = "A response as it stands, or its events",
    params(("id" = String, Path, description = "`resp_...`."), RetrieveParams),
    responses(
        (status = 200, description = "The response, or (`stream=true`) its events.", content(
            (Object = "application/json"),
            ("text/event-stream"),
        )),
        (status = 404, description = "No such response of the caller's.", body = OpenAiErrorBody),
        (status = 409, description = "The events after `starting_after` are no longer kept.", body = OpenAiErrorBody),
        (status = 429, description = "Too many streams.", body = OpenAiErrorBody),
    ))]
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RetrieveQuery>,
) -> Result<Response> {
    let engine = state.chat()?;
    let stream = match query.stream.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(OpenAiError::bad(
                "stream",
                "'stream' must be true or false.",
            ));
        }
    };
    let after = match query.starting_after.as_deref() {
        None | Some("") => None,
        Some(n) => Some(n.parse::<u64>().map_err(|_| {
            OpenAiError::bad(
                "starting_after",
                "'starting_after' must be a sequence number.",
            )
        })?),
    };
    let sent = exchange_of(engine, &principal.user, &id).await?;
    if sent.assistant_message.role != Role::Assistant {
        return Err(OpenAiError::response_not_found(&id, None));
    }
    let meta = meta_of(&sent.assistant_message);
    if stream {
        let slot = state.streams.acquire(&principal.user)?;
        return stream_response(&state, &principal, slot, &sent, meta, after, None).await;
    }
    let message = current(engine, &sent).await?;
    Ok(Json(response_object(&message, &meta)).into_response())
}

#[utoipa::path(post, path = "/v1/responses/{id}/cancel", tag = "openai", operation_id = "openai_cancel_response",
    summary = "Cancel a response (idempotent; the text is kept)",
    params(("id" = String, Path, description = "`resp_...`.")),
    responses(
        (status = 200, description = "The response.", body = Object),
        (status = 404, description = "No such response of the caller's.", body = OpenAiErrorBody),
    ))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response> {
    let engine = state.chat()?;
    let sent = exchange_of(engine, &principal.user, &id).await?;
    let answer = &sent.assistant_message;
    let meta = meta_of(answer);
    let message = current(engine, &sent).await?;
    if message.status.is_final() {
        // Idempotent: a response that is over stays as it ended.
        return Ok(Json(response_object(&message, &meta)).into_response());
    }
    let stopped = match engine.stop(&principal.user, &answer.chat_id).await {
        Ok(stopped) if stopped.id == answer.id => stopped,
        // It ended meanwhile (or nothing ran any more): as it is stored.
        Ok(_) | Err(ChatError::Conflict { .. }) => engine
            .store()
            .get_message(&answer.id)
            .await
            .map_err(ChatError::from)?
            .ok_or(ChatError::NotFound)?,
        Err(error) => return Err(error.into()),
    };
    Ok(Json(response_object(&stopped, &meta)).into_response())
}
