//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! Built by `utoipa` from the code: each handler carries its `#[utoipa::path]` (parameters,
//! request body, the responses it returns, their content types), the request and response types
//! derive `ToSchema`, and [`ApiDoc`] gathers them. What every route of an area may answer besides
//! (the edge's errors: `401`, `403 cross_origin_forbidden`, body errors, `503`) is added once by
//! [`EdgeErrors`] from what each operation is (secured, with a body, state-changing).
//!
//! The chat data model (`rill_core::chat`) stays free of any framework: its wire shape is
//! described here by schema types ([`MessageSchema`], [`PartSchema`], ...) that are checked
//! against the real types' JSON in the tests below, so the two cannot drift apart silently.
//!
//! The document follows the server's configuration: in auth mode `none` no operation asks for a
//! credential and none answers `401`, so a client generated from it (or schemathesis) sees the
//! API it talks to. Every route of the router is in the document: the route table
//! (`crate::routes`) is compared with it in the tests.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::AppState;
use crate::routes::Routes;

pub(crate) fn router() -> Routes {
    Routes::new().route(
        "/openapi.json",
        &["GET"],
        crate::topics::only(Method::GET, get(openapi_json)),
    )
}

/// The document for auth mode `jwt` and for `none`, rendered once each.
static JWT_DOCUMENT: LazyLock<String> = LazyLock::new(|| render(true));
static OPEN_DOCUMENT: LazyLock<String> = LazyLock::new(|| render(false));

fn render(jwt: bool) -> String {
    serde_json::to_string_pretty(&document(jwt)).unwrap_or_else(|_| "{}".to_owned())
}

/// `GET /openapi.json`: this document, for this server's auth mode.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This OpenAPI document",
    description = "The OpenAPI 3.1 document of this API, for this server's auth mode (in mode \
                   `none` no operation asks for a credential).",
    responses((status = 200, description = "The document.", content_type = "application/json",
               body = Object)),
)]
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Response {
    let body = if state.config.auth.is_jwt() {
        JWT_DOCUMENT.as_str()
    } else {
        OPEN_DOCUMENT.as_str()
    };
    let mut response = body.to_owned().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The document: for auth mode `jwt` (`jwt`) or `none`.
pub(crate) fn document(jwt: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if !jwt {
        // Auth mode `none`: nothing asks for a credential, nothing answers 401.
        for item in doc.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                operation.security = None;
                operation.responses.responses.remove("401");
            }
        }
        if let Some(components) = doc.components.as_mut() {
            components.security_schemes.clear();
        }
    }
    doc
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "rill",
        description = "rill's HTTP API: topics (publish and subscribe over SSE), chats with \
                       LLM bots (history, sending with three response styles, retries and \
                       idempotency, the chat's event stream, stop, regenerate), the Vercel AI \
                       SDK face, stream tickets, operations. Every error is \
                       `{\"error\":{\"code\",\"message\"}}` (docs/api.md lists the codes).",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        crate::health::healthz,
        crate::health::readyz,
        crate::metrics::metrics,
        openapi_json,
        crate::page::index,
        crate::page::asset,
        crate::topics::publish,
        crate::topics::subscribe,
        crate::tickets::create,
        crate::chats::list_bots,
        crate::chats::create_chat,
        crate::chats::list_chats,
        crate::chats::get_chat,
        crate::chats::delete_chat,
        crate::chats::list_messages,
        crate::chats::send_message,
        crate::chats::regenerate,
        crate::chats::stop,
        crate::chats::chat_events,
        crate::chats::ticket,
        crate::ai_sdk::chat,
        crate::ai_sdk::resume,
        crate::ai_sdk::stop,
        crate::ai_sdk::messages,
        crate::openai::models,
        crate::openai::model,
        crate::openai::chat_completions,
        crate::openai::create_response,
        crate::openai::retrieve,
        crate::openai::cancel,
    ),
    components(schemas(
        ErrorBody,
        MessageSchema,
        PartSchema,
        UsageSchema,
        RoleSchema,
        MessageStatusSchema,
        UiMessage,
        crate::topics::TopicName,
        crate::ai_sdk::UiMessageInput,
        crate::openai::OpenAiErrorBody,
    )),
    modifiers(&SecuritySchemes, &EdgeErrors),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document."),
        (name = "topics", description = "Publish events to topics; subscribe to topics over SSE."),
        (name = "tickets", description = "One-time stream tickets, so no token sits in a URL."),
        (name = "chats", description = "Bots, chats, messages, answers and the chat's event stream."),
        (name = "ai-sdk", description = "The Vercel AI SDK face (`useChat`'s transport)."),
        (name = "page", description = "The chat page and its assets."),
        (name = "openai", description = "The OpenAI face (`/v1`): the official SDKs unmodified; \
                                         errors in OpenAI's shape (docs/openai.md)."),
    ),
)]
struct ApiDoc;

/// The names of the security schemes, as operations name them.
pub(crate) const BEARER: &str = "bearer";
pub(crate) const COOKIE: &str = "cookie";
pub(crate) const ACCESS_TOKEN: &str = "access_token";
pub(crate) const TICKET: &str = "ticket";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".to_owned());
        bearer.description = Some(
            "A JWT (HS256, RS256 or ES256, as configured) with `sub` (the user), `exp`, and the \
             `publish` / `subscribe` topic patterns."
                .to_owned(),
        );
        components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
        components.add_security_scheme(
            COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "rill_token",
                "The same JWT in the `rill_token` cookie (for `EventSource` with credentials).",
            ))),
        );
        components.add_security_scheme(
            ACCESS_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The same JWT in the query string (for `EventSource`, which cannot set headers; \
                 prefer a ticket).",
            ))),
        );
        components.add_security_scheme(
            TICKET,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A one-time stream ticket (`POST /api/stream-tickets`, \
                 `POST /api/chats/{id}/ticket`): opens exactly the stream it was issued for, \
                 once, within its lifetime.",
            ))),
        );
        // Every API operation that names no security of its own takes a token.
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !(path.starts_with("/api/") || path.starts_with("/v1/")) {
                continue;
            }
            for operation in operations_mut(item) {
                if operation.security.is_none() {
                    operation.security = Some(token_security());
                }
            }
        }
    }
}

/// A token from the header, the cookie or the query string.
fn token_security() -> Vec<utoipa::openapi::security::SecurityRequirement> {
    use utoipa::openapi::security::SecurityRequirement;
    [BEARER, COOKIE, ACCESS_TOKEN]
        .into_iter()
        .map(|name| SecurityRequirement::new(name, Vec::<String>::new()))
        .collect()
}

/// The operations of a path item.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Adds the errors the edge (and the shared extractors) may answer on an operation, where the
/// operation's own annotation does not already list that status:
///
/// - every operation: `431` (a request head over 8 KiB, answered by the HTTP layer);
/// - every `/api/` operation: `400` (a malformed query string or path), `401` (no or a bad
///   credential; removed in auth mode `none`), `500`, `503` (draining, broker unavailable);
/// - a state-changing one (`POST`, `DELETE`): `403 cross_origin_forbidden`;
/// - one with a request body: `408 body_timeout`, `413 body_too_large`,
///   `415 unsupported_media_type`, `400 invalid_json` / `invalid_body`.
struct EdgeErrors;

impl Modify for EdgeErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            // The OpenAI face answers every error in OpenAI's shape.
            let openai = path.starts_with("/v1/");
            let api = path.starts_with("/api/") || openai;
            let schema = if openai {
                "OpenAiErrorBody"
            } else {
                "ErrorBody"
            };
            let methods = [
                (Method::GET, item.get.as_mut()),
                (Method::POST, item.post.as_mut()),
                (Method::DELETE, item.delete.as_mut()),
            ];
            for (method, operation) in methods {
                let Some(operation) = operation else { continue };
                let responses = &mut operation.responses.responses;
                if !responses.contains_key("431") {
                    // Written by the HTTP layer before any route runs: the one error that is
                    // not JSON (docs/api.md).
                    responses.insert(
                        "431".to_owned(),
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(
                                    "The request head (request line and headers) is larger \
                                     than 8 KiB; an empty body.",
                                )
                                .build(),
                        ),
                    );
                }
                let mut add = |status: &str, description: &str| {
                    let responses = &mut operation.responses.responses;
                    if !responses.contains_key(status) {
                        responses.insert(status.to_owned(), error_response(description, schema));
                    }
                };
                if operation.request_body.is_some() {
                    add(
                        "400",
                        "`invalid_json` (the body is not JSON), `invalid_body` (JSON of the \
                         wrong shape), `bad_query`, `bad_path`.",
                    );
                    add("408", "`body_timeout`: the body did not arrive in time.");
                    add(
                        "413",
                        "`body_too_large`: the body is larger than the route accepts.",
                    );
                    add(
                        "415",
                        "`unsupported_media_type`: the body is not `application/json`.",
                    );
                }
                if !api {
                    continue;
                }
                add(
                    "400",
                    "`bad_query` (the query string cannot be read, or a parameter is given \
                     twice), `bad_path` (a path parameter is not UTF-8).",
                );
                add(
                    "401",
                    "`unauthorized` (no credential), `invalid_token`, `token_expired`.",
                );
                if method == Method::POST || method == Method::DELETE {
                    add(
                        "403",
                        "`cross_origin_forbidden`: a state-changing request from a page of \
                         another origin.",
                    );
                }
                add("500", "`internal`: a failure of ours (details in the log).");
                add(
                    "503",
                    "`draining` (this instance is shutting down; `Retry-After: 1`), \
                     `broker_unavailable`, `broker_limit`, `chat_disabled`.",
                );
            }
        }
    }
}

/// A response with the JSON error body (`schema`: `ErrorBody`, or `OpenAiErrorBody` on `/v1`).
fn error_response(description: &str, schema: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
            .build(),
    )
}

// --- schemas ----------------------------------------------------------------------------------

/// Every error: `{"error":{"code","message"}}`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "no such chat"}}))]
#[allow(dead_code)] // Describes JSON written elsewhere; never built.
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes JSON written elsewhere; never built.
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable, snake_case (docs/api.md lists them).
    code: String,
    /// For people.
    message: String,
}

/// `rill_core::chat::Role`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Role)]
#[allow(dead_code)] // Describes JSON written elsewhere; never built.
pub(crate) enum RoleSchema {
    System,
    User,
    Assistant,
}

/// `rill_core::chat::MessageStatus`: only `streaming` ever changes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = MessageStatus)]
#[allow(dead_code)] // Describes JSON written elsewhere; never built.
pub(crate) enum MessageStatusSchema {
    Streaming,
    Complete,
    Stopped,
    Error,
    Interrupted,
}

/// `rill_core::chat::Usage`: token counts reported by the provider.
#[derive(Serialize, ToSchema)]
#[schema(as = Usage)]
#[allow(dead_code)] // Describes JSON written elsewhere; never built.
pub(crate) struct UsageSchema {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_tokens: Option<u64>,
}

/// `rill_core::chat::Part`: one part of a message.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schema(as = Part)]
#[allow(dead_code)] // Describes JSON written elsewhere; never built.
pub(crate) enum PartSchema {
    Text {
        text: String,
    },
    Reasoning {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        redacted: Option<String>,
    },
    ToolCall {
        id: String,
        name: String,
        input_text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Object>)]
        input: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Object>)]
        output: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Source {
        url: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

/// `rill_core::chat::Message`: one message of a chat.
#[derive(Serialize, ToSchema)]
#[schema(as = Message)]
#[allow(dead_code)] // Describes JSON written elsewhere; never built.
pub(crate) struct MessageSchema {
    id: String,
    chat_id: String,
    role: RoleSchema,
    /// The concatenated text of the text parts.
    content: String,
    parts: Vec<PartSchema>,
    status: MessageStatusSchema,
    finish_reason: Option<String>,
    usage: Option<UsageSchema>,
    error: Option<String>,
    bot_id: Option<String>,
    model: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

/// An AI SDK `UIMessage` (`id`, `role`, `parts`; an assistant's `metadata`).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes JSON written elsewhere; never built.
pub(crate) struct UiMessage {
    id: String,
    role: RoleSchema,
    /// UI message parts (`text`, `reasoning`, `step-start`, `tool-*`, `source-url`, ...).
    #[schema(value_type = Vec<Object>)]
    parts: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use rill_core::chat::{Message, MessageStatus, Part, Role, Usage};
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;

    fn json_doc(jwt: bool) -> Value {
        serde_json::from_str(&render(jwt)).expect("the document is JSON")
    }

    /// Every (path, method) of the route table, as the document names them.
    fn table() -> BTreeSet<(String, String)> {
        crate::api_routes()
            .table()
            .iter()
            .flat_map(|r| {
                r.methods
                    .iter()
                    .map(|m| (r.doc_path.to_owned(), m.to_ascii_lowercase()))
            })
            .collect()
    }

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_route() {
        for jwt in [true, false] {
            let doc = json_doc(jwt);
            assert_eq!(doc["openapi"], "3.1.0");
            let mut documented = BTreeSet::new();
            let mut operation_ids = BTreeSet::new();
            for (path, item) in doc["paths"].as_object().expect("paths") {
                for (method, operation) in item.as_object().expect("a path item") {
                    assert!(
                        operation["responses"]
                            .as_object()
                            .is_some_and(|r| !r.is_empty()),
                        "{method} {path} has no responses"
                    );
                    let id = operation["operationId"].as_str().expect("an operationId");
                    assert!(
                        operation_ids.insert(id.to_owned()),
                        "operationId {id} twice"
                    );
                    documented.insert((path.clone(), method.clone()));
                }
            }
            // Every link names an operation of the document.
            for link in doc["paths"]
                .as_object()
                .into_iter()
                .flat_map(|p| p.values())
                .flat_map(|item| item.as_object().into_iter().flat_map(|i| i.values()))
                .flat_map(|op| {
                    op["responses"]
                        .as_object()
                        .into_iter()
                        .flat_map(|r| r.values())
                })
                .flat_map(|r| r["links"].as_object().into_iter().flat_map(|l| l.values()))
            {
                let id = link["operationId"].as_str().expect("a link's operationId");
                assert!(
                    operation_ids.contains(id),
                    "a link to {id}, which is not there"
                );
            }
            assert_eq!(
                documented,
                table(),
                "the document and the router's route table must list the same operations"
            );
        }
    }

    #[test]
    fn security_follows_the_auth_mode() {
        let jwt = json_doc(true);
        assert!(jwt["components"]["securitySchemes"]["bearer"].is_object());
        let chats = &jwt["paths"]["/api/chats"]["get"];
        assert!(chats["security"].is_array() && chats["responses"]["401"].is_object());
        let events = &jwt["paths"]["/api/chats/{id}/events"]["get"]["security"];
        assert!(events.to_string().contains("ticket"));
        assert!(jwt["paths"]["/healthz"]["get"]["security"].is_null());
        let open = json_doc(false);
        assert!(open["paths"]["/api/chats"]["get"]["security"].is_null());
        assert!(open["paths"]["/api/chats"]["get"]["responses"]["401"].is_null());
    }

    /// The route table names exactly the methods the router answers: any other method gets 405.
    #[tokio::test]
    async fn the_route_table_is_what_the_router_serves() {
        let state = AppState::new(Default::default(), CancellationToken::new());
        let app = crate::app(state);
        for route in crate::api_routes().table() {
            let uri = route
                .path
                .replace("{*rest}", "t/events")
                .replace("{id}", "x")
                .replace("{name}", "app.js");
            for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
                let response = app
                    .clone()
                    .oneshot(
                        Request::builder()
                            .method(method)
                            .uri(&uri)
                            .body(Body::empty())
                            .expect("request"),
                    )
                    .await
                    .expect("infallible");
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body");
                if route.methods.contains(&method) {
                    assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
                    assert!(
                        !String::from_utf8_lossy(&body).contains("no such route"),
                        "{method} {uri}"
                    );
                } else {
                    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
                }
            }
        }
    }

    #[tokio::test]
    async fn served_at_openapi_json() {
        let state = AppState::new(Default::default(), CancellationToken::new());
        let response = crate::app(state)
            .oneshot(
                Request::builder()
                    .uri("/openapi.json")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .expect("body");
        let doc: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(doc, json_doc(false));
    }

    /// The schema types describe exactly the JSON of the real types: every field of the real
    /// JSON is a property of the schema, and every required property is in the real JSON.
    #[test]
    fn the_chat_schemas_match_the_real_types() {
        let doc = json_doc(true);
        let schemas = &doc["components"]["schemas"];
        let message = Message {
            id: "m".into(),
            chat_id: "c".into(),
            seq: 7,
            role: Role::Assistant,
            content: "hi".into(),
            parts: vec![
                Part::text("hi"),
                Part::Reasoning {
                    text: "r".into(),
                    signature: Some("s".into()),
                    redacted: Some("x".into()),
                },
                Part::ToolCall {
                    id: "t".into(),
                    name: "n".into(),
                    input_text: "{}".into(),
                    input: Some(json!({})),
                    output: Some(json!(1)),
                    error: Some("e".into()),
                },
                Part::Source {
                    url: "u".into(),
                    title: Some("t".into()),
                },
            ],
            status: MessageStatus::Complete,
            finish_reason: Some("stop".into()),
            usage: Some(Usage {
                input_tokens: 1,
                output_tokens: 2,
                reasoning_tokens: Some(1),
            }),
            error: Some("e".into()),
            bot_id: Some("demo".into()),
            model: Some("m".into()),
            created_at_ms: 1,
            updated_at_ms: 2,
        };
        let real = serde_json::to_value(&message).expect("JSON");
        fits(schemas, &schemas["Message"], &real, "Message");
        for (index, part) in real["parts"].as_array().expect("parts").iter().enumerate() {
            let kind = part["type"].as_str().expect("a type");
            let variant = schemas["Part"]["oneOf"]
                .as_array()
                .expect("oneOf")
                .iter()
                .find(|v| v["properties"]["type"]["enum"][0] == kind)
                .unwrap_or_else(|| panic!("Part has no variant {kind}"));
            fits(schemas, variant, part, &format!("parts[{index}]"));
        }
        for status in ["streaming", "complete", "stopped", "error", "interrupted"] {
            assert!(MessageStatus::parse(status).is_some());
            assert!(
                schemas["MessageStatus"]["enum"]
                    .as_array()
                    .expect("enum")
                    .contains(&json!(status))
            );
        }
    }

    /// Checks the object `value` against `schema`'s properties (one level; `$ref`s resolved).
    #[track_caller]
    fn fits(schemas: &Value, schema: &Value, value: &Value, what: &str) {
        let schema = match schema["$ref"].as_str() {
            Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
            None => schema,
        };
        let properties = schema["properties"].as_object().expect("properties");
        for key in value.as_object().expect("an object").keys() {
            assert!(
                properties.contains_key(key),
                "{what}: `{key}` is not in the schema"
            );
        }
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().expect("a name");
            assert!(
                value.get(key).is_some(),
                "{what}: required `{key}` is missing"
            );
        }
    }
}
