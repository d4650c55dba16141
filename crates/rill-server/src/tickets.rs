//! Stream tickets: `POST /api/stream-tickets` trades a header or cookie credential for a
//! short-lived, single-use ticket that opens one stream (`?ticket=`), so that long-lived tokens
//! never sit in URLs and access logs.
//!
//! A ticket is self-contained: an HS256-signed JWT carrying the user, the topics, its expiry, the
//! expiry of the credential it was minted from (the stream closes then) and a random nonce
//! (`jti`). Any instance that shares the ticket key (`ticket_secret`) can verify it. Single use is
//! enforced by a set of spent nonces kept in memory until each ticket expires: it holds on one
//! instance only; across instances a ticket could be redeemed once per instance within its short
//! lifetime (documented in docs/api.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use rill_core::Topic;

use crate::auth::{Principal, Sources};
use crate::{ApiError, AppState};

/// The most topics one ticket may name.
pub(crate) const MAX_TICKET_TOPICS: usize = 64;

/// The most spent nonces remembered at once. Each is kept only until its ticket expires, so this
/// bounds memory (about 100 bytes each) while allowing thousands of stream openings per second.
const MAX_SPENT: usize = 100_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/stream-tickets", post(create))
}

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TicketError {
    Invalid,
    Expired,
    Used,
    /// The spent-nonce set is full of unexpired tickets.
    Full,
}

#[derive(Serialize, Deserialize)]
struct TicketClaims {
    sub: String,
    /// When the ticket stops opening streams (Unix seconds).
    exp: u64,
    topics: Vec<String>,
    /// The nonce that makes the ticket single-use.
    jti: String,
    /// When the credential the ticket was minted from expires: the stream closes then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cred_exp: Option<u64>,
}

/// Mints and redeems tickets.
pub(crate) struct Tickets {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// Spent nonces and when their ticket expires. A std mutex: held for a hash-map operation,
    /// never across an await.
    spent: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tickets {
    pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(30);

    pub(crate) fn new(secret: Option<&[u8]>, ttl: Duration) -> Self {
        let random;
        let secret = match secret {
            Some(secret) => secret,
            None => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                random = key;
                &random[..]
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "jti"]);
        validation.validate_aud = false;
        Tickets {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            spent: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A ticket for `principal` to open one stream on `topics`.
    pub(crate) fn issue(
        &self,
        principal: &Principal,
        topics: &[Topic],
    ) -> Result<String, ApiError> {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let claims = TicketClaims {
            sub: principal.user.to_string(),
            exp: unix_now() + self.ttl.as_secs().max(1),
            topics: topics.iter().map(|t| t.as_str().to_owned()).collect(),
            jti: nonce.iter().map(|b| format!("{b:02x}")).collect(),
            cred_exp: principal
                .expires_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// Checks a ticket and spends it.
    pub(crate) fn redeem(&self, ticket: &str) -> Result<Principal, TicketError> {
        let claims = jsonwebtoken::decode::<TicketClaims>(ticket, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TicketError::Expired,
                _ => TicketError::Invalid,
            })?
            .claims;
        let topics = claims
            .topics
            .iter()
            .map(|t| Topic::new(t))
            .collect::<Result<Arc<[Topic]>, _>>();
        let topics = topics.map_err(|_| TicketError::Invalid)?;
        self.spend(claims.jti, claims.exp)?;
        let expires_at = claims.cred_exp.map(|s| UNIX_EPOCH + Duration::from_secs(s));
        Ok(Principal::from_ticket(
            Arc::from(claims.sub),
            topics,
            expires_at,
        ))
    }

    fn spend(&self, nonce: String, exp: u64) -> Result<(), TicketError> {
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if spent.len() >= MAX_SPENT {
            // Expired tickets are refused by their signature check anyway: forget their nonces.
            let now = unix_now();
            spent.retain(|_, exp| *exp >= now);
            if spent.len() >= MAX_SPENT {
                return Err(TicketError::Full);
            }
        }
        match spent.entry(nonce) {
            std::collections::hash_map::Entry::Occupied(_) => Err(TicketError::Used),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(exp);
                Ok(())
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketRequest {
    topics: Vec<String>,
}

#[derive(Serialize)]
struct TicketResponse {
    ticket: String,
    expires_in: u64,
}

/// `POST /api/stream-tickets` with `{"topics": [...]}`.
async fn create(
    State(state): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let auth = &state.config.auth;
    let principal = auth.authenticate(&parts, Sources::HeaderOrCookie)?;
    let request = parse_body(&parts.headers, &body)?;
    if request.topics.is_empty() || request.topics.len() > MAX_TICKET_TOPICS {
        return Err(ApiError::bad_request(
            "invalid_topics",
            format!("`topics` must list 1 to {MAX_TICKET_TOPICS} topics"),
        ));
    }
    let mut topics = Vec::with_capacity(request.topics.len());
    for name in &request.topics {
        let topic = Topic::new(name).map_err(|error| {
            ApiError::bad_request("invalid_topic", format!("topic {name:?}: {error}"))
        })?;
        principal.check_subscribe(&topic)?;
        topics.push(topic);
    }
    let tickets = auth.tickets();
    let ticket = tickets.issue(&principal, &topics)?;
    Ok((
        StatusCode::OK,
        Json(TicketResponse {
            ticket,
            expires_in: tickets.ttl().as_secs().max(1),
        }),
    ))
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<TicketRequest, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request("invalid_json", format!("invalid request body: {error}"))
    })
}
