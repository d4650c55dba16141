//! Stream tickets: `POST /api/stream-tickets` trades a header or cookie credential for a
//! short-lived, single-use ticket that opens one stream (`?ticket=`), so that long-lived tokens
//! never sit in URLs and access logs.
//!
//! A ticket is self-contained: an HS256-signed JWT carrying the user, the topics, its expiry, the
//! expiry of the credential it was minted from (the stream closes then) and a random nonce
//! (`jti`). Any instance that shares the ticket key (`ticket_secret`) can verify it.
//!
//! - **It opens exactly its stream.** Its topics name one stream route (`_chat/{id}`:
//!   `GET /api/chats/{id}/events`; public topics: `GET /api/events`); on any other request it is
//!   not a credential, and it is not spent there ([`opens`]).
//! - **Single use** is a [`SpentSet`] of nonces, kept until each ticket expires: in memory by
//!   default ([`MemorySpentSet`], one instance), or shared (Redis) so a ticket opens one stream
//!   in the whole deployment.
//! - **No user can exhaust them for others.** Each user may have at most
//!   [`Tickets::DEFAULT_MAX_PER_USER`] tickets issued, and as many spent, per ticket lifetime on
//!   one instance; past that *that user* gets `429 too_many_tickets`. Nothing is shared and
//!   bounded across users, so there is nothing one user can fill for everyone (the spent set
//!   grows with the number of active users, each bounded).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use rill_core::{BrokerError, SpentSet, Topic};

use crate::auth::{MintingPrincipal, Principal, unauthorized};
use crate::json::JsonBody;
use crate::openapi::ErrorBody;
use crate::routes::Routes;
use crate::{ApiError, AppState};

/// The most topics one ticket may name.
pub(crate) const MAX_TICKET_TOPICS: usize = 64;

pub(crate) fn router() -> Routes {
    Routes::new().route(
        "/api/stream-tickets",
        &["POST"],
        crate::topics::only(axum::http::Method::POST, post(create)),
    )
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
    /// Tickets issued per user, until they expire.
    issued: UserQuota,
    /// Tickets spent per user (on this instance), until they expire: bounds each user's share
    /// of the spent set.
    spent: UserQuota,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("ttl", &self.ttl)
            .field("max_per_user", &self.issued.max)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A ticket's `exp` (whole seconds; valid through that second, as `jsonwebtoken` checks it) as
/// the Unix millisecond until which its nonce must stay spent.
fn spent_until_ms(exp: u64) -> u64 {
    exp.saturating_add(1).saturating_mul(1000)
}

impl Tickets {
    pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(30);
    /// Tickets one user may have issued (and spent) per ticket lifetime, on one instance: as many
    /// as streams a user may open by default, so a page opening all its streams at once fits.
    pub(crate) const DEFAULT_MAX_PER_USER: usize = 100;

    pub(crate) fn new(secret: Option<&[u8]>, ttl: Duration, max_per_user: usize) -> Self {
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
            issued: UserQuota::new(max_per_user),
            spent: UserQuota::new(max_per_user),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A ticket for `principal` to open one stream on `topics` (all public topics, or the one
    /// `_chat/{id}` topic of a chat). `429 too_many_tickets` when the user has as many
    /// unexpired tickets as allowed.
    pub(crate) fn issue(
        &self,
        principal: &Principal,
        topics: &[Topic],
    ) -> Result<String, ApiError> {
        let exp = unix_now().saturating_add(self.ttl.as_secs().max(1));
        if !self
            .issued
            .take(&principal.user, spent_until_ms(exp), unix_now_ms())
        {
            return Err(too_many_tickets());
        }
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let claims = TicketClaims {
            sub: principal.user.to_string(),
            exp,
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

    /// Checks that `ticket` opens the stream at `path`, then spends it in `spent`.
    ///
    /// In this order, so that a ticket presented where it cannot open anything is refused
    /// without being spent, and only a ticket that will open its stream costs its user a place.
    pub(crate) async fn redeem(
        &self,
        ticket: &str,
        path: &str,
        spent: &dyn SpentSet,
    ) -> Result<Principal, ApiError> {
        let claims = jsonwebtoken::decode::<TicketClaims>(ticket, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => {
                    unauthorized("ticket_expired", "the stream ticket has expired")
                }
                _ => invalid_ticket(),
            })?
            .claims;
        if claims.sub.is_empty() {
            return Err(invalid_ticket());
        }
        let topics = claims
            .topics
            .iter()
            .map(|t| Topic::new(t))
            .collect::<Result<Arc<[Topic]>, _>>()
            .map_err(|_| invalid_ticket())?;
        if !opens(&topics, path) {
            return Err(unauthorized(
                "unauthorized",
                "a stream ticket opens only the stream it was issued for",
            ));
        }
        let until = spent_until_ms(claims.exp);
        if !self.spent.take(&claims.sub, until, unix_now_ms()) {
            return Err(too_many_tickets());
        }
        let key = format!("ticket:{}", claims.jti);
        match spent.spend(&key, until).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(unauthorized(
                    "ticket_used",
                    "the stream ticket was already used",
                ));
            }
            Err(error) => return Err(ApiError::broker(error)),
        }
        let expires_at = claims.cred_exp.map(|s| UNIX_EPOCH + Duration::from_secs(s));
        Ok(Principal::from_ticket(
            Arc::from(claims.sub),
            topics,
            expires_at,
        ))
    }
}

fn invalid_ticket() -> ApiError {
    unauthorized("invalid_ticket", "the stream ticket is invalid")
}

fn too_many_tickets() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_tickets",
        "this user has as many unexpired stream tickets as allowed; use them or wait until they \
         expire",
    )
}

/// Whether a ticket for `topics` opens the stream at `path` (the request's raw path): the one
/// topic `_chat/{id}` opens `/api/chats/{id}/events`; public topics open `/api/events` (whose
/// handler then checks each requested topic against them). Nothing else.
pub(crate) fn opens(topics: &[Topic], path: &str) -> bool {
    if let [topic] = topics
        && let Some(chat) = topic.as_str().strip_prefix("_chat/")
    {
        return path
            .strip_prefix("/api/chats/")
            .and_then(|rest| rest.strip_suffix("/events"))
            .filter(|segment| !segment.contains('/'))
            .and_then(percent_decode)
            .is_some_and(|id| id == chat);
    }
    !topics.is_empty() && path == "/api/events" && topics.iter().all(|t| !t.is_reserved())
}

/// A path segment with its `%XX` escapes decoded (as the router decodes `{id}`), or `None` when
/// an escape is malformed or the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How many unexpired things each user holds, each with its own expiry, at most `max` per user.
/// Users are independent: one user at the bound refuses only that user.
#[derive(Debug)]
struct UserQuota {
    max: usize,
    /// A std mutex: held for a few vector operations, never across an await.
    inner: Mutex<QuotaInner>,
}

#[derive(Debug, Default)]
struct QuotaInner {
    /// Per user, the expiries (Unix ms) of what they hold; at most `max` each.
    per_user: HashMap<Box<str>, Vec<u64>>,
    /// Users whose holdings all expired are removed when the map reaches this size, which then
    /// doubles the live count: amortised O(1) per call, memory proportional to active users.
    sweep_at: usize,
}

impl UserQuota {
    fn new(max: usize) -> Self {
        UserQuota {
            max,
            inner: Mutex::new(QuotaInner::default()),
        }
    }

    /// Takes one place for `user` until `until_ms`; `false` when the user already holds `max`
    /// unexpired ones.
    fn take(&self, user: &str, until_ms: u64, now_ms: u64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.per_user.len() >= inner.sweep_at {
            inner.per_user.retain(|_, held| {
                held.retain(|&until| until > now_ms);
                !held.is_empty()
            });
            inner.sweep_at = (inner.per_user.len() * 2).max(1024);
        }
        let held = match inner.per_user.get_mut(user) {
            Some(held) => held,
            None => inner.per_user.entry(Box::from(user)).or_default(),
        };
        if held.len() >= self.max {
            held.retain(|&until| until > now_ms);
            if held.len() >= self.max {
                return false;
            }
        }
        held.push(until_ms);
        true
    }
}

/// The spent-ticket set of one instance: nonces in a hash map until their ticket expires.
///
/// It has no global bound on purpose: a global bound is a resource one user can fill for
/// everyone. Each user's share is bounded before a nonce gets here (see the module docs), so
/// the set holds at most that many entries per active user; expired ones are swept when the
/// map has doubled since the last sweep.
#[derive(Debug, Default)]
pub struct MemorySpentSet {
    /// A std mutex: held for one hash-map operation (or a sweep), never across an await.
    inner: Mutex<SpentInner>,
}

#[derive(Debug, Default)]
struct SpentInner {
    keys: HashMap<Box<str>, u64>,
    sweep_at: usize,
}

impl MemorySpentSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys held now, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn spend_at(&self, key: &str, expires_at_ms: u64, now_ms: u64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.keys.len() >= inner.sweep_at {
            inner.keys.retain(|_, until| *until > now_ms);
            inner.sweep_at = (inner.keys.len() * 2).max(1024);
        }
        match inner.keys.get_mut(key) {
            // Expired but not yet swept: the key may be spent again (its ticket is refused by
            // its signature check long before that anyway).
            Some(until) if *until <= now_ms => {
                *until = expires_at_ms;
                true
            }
            Some(_) => false,
            None => {
                inner.keys.insert(key.into(), expires_at_ms);
                true
            }
        }
    }
}

#[async_trait::async_trait]
impl SpentSet for MemorySpentSet {
    async fn spend(&self, key: &str, expires_at_ms: u64) -> Result<bool, BrokerError> {
        Ok(self.spend_at(key, expires_at_ms, unix_now_ms()))
    }
}

/// The topics a ticket is for.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"topics": ["orders"]}))]
pub(crate) struct TicketRequest {
    /// 1 to 64 public topics the credential may subscribe to.
    #[schema(value_type = Vec<crate::topics::TopicName>, min_items = 1, max_items = 64)]
    topics: Vec<String>,
}

/// A one-time stream ticket.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TicketResponse {
    /// Opens one stream, once (`?ticket=`).
    pub(crate) ticket: String,
    /// Seconds it stays valid.
    pub(crate) expires_in: u64,
}

/// `POST /api/stream-tickets` with `{"topics": [...]}`.
#[utoipa::path(
    post,
    path = "/api/stream-tickets",
    operation_id = "stream_ticket",
    tag = "tickets",
    summary = "A one-time ticket for a topics stream",
    description = "Trades a token (header or cookie, never a URL credential) for a ticket that \
                   opens `GET /api/events` on these topics once (`?ticket=`).",
    request_body(content = TicketRequest, content_type = "application/json"),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The ticket.", body = TicketResponse),
        (status = 400, description = "`invalid_topics`, `invalid_topic`, `reserved_topic`, \
         `invalid_json`, `invalid_body`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token may not subscribe to a topic; \
         `cross_origin_forbidden`.", body = ErrorBody),
        (status = 429, description = "`too_many_tickets`: this user has as many unexpired tickets as allowed.", body = ErrorBody),
    ),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    MintingPrincipal(principal): MintingPrincipal,
    JsonBody(request): JsonBody<TicketRequest>,
) -> Result<impl IntoResponse, ApiError> {
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
        // Such a ticket could open no stream: reserved topics are not on `GET /api/events`, and
        // a chat's stream has its own ticket route.
        if topic.is_reserved() {
            return Err(ApiError::bad_request(
                "reserved_topic",
                format!(
                    "topic {name:?} is reserved; for a chat's stream use POST /api/chats/{{id}}/ticket"
                ),
            ));
        }
        principal.check_subscribe(&topic)?;
        topics.push(topic);
    }
    let tickets = state.config.auth.tickets();
    let ticket = tickets.issue(&principal, &topics)?;
    Ok((
        StatusCode::OK,
        Json(TicketResponse {
            ticket,
            expires_in: tickets.ttl().as_secs().max(1),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<Topic> {
        names
            .iter()
            .map(|n| Topic::new(n).expect("topic"))
            .collect()
    }

    #[test]
    fn a_ticket_opens_only_its_stream_route() {
        let chat = topics(&["_chat/c1"]);
        assert!(opens(&chat, "/api/chats/c1/events"));
        assert!(opens(&chat, "/api/chats/%63%31/events"));
        for path in [
            "/api/chats/c1",
            "/api/chats/c1/messages",
            "/api/chats/c2/events",
            "/api/chats/c1/events/",
            "/api/chats/c1/x/events",
            "/api/events",
            "/api/chats/%ZZ/events",
        ] {
            assert!(!opens(&chat, path), "{path}");
        }
        let public = topics(&["news/1", "prices"]);
        assert!(opens(&public, "/api/events"));
        assert!(!opens(&public, "/api/events/"));
        assert!(!opens(&public, "/api/chats/c1/events"));
        assert!(!opens(&public, "/api/topics/prices/events"));
        // A chat topic among others, or another reserved topic, opens nothing.
        assert!(!opens(&topics(&["_chat/c1", "news"]), "/api/events"));
        assert!(!opens(
            &topics(&["_chat/c1/control"]),
            "/api/chats/c1/events"
        ));
        assert!(!opens(&topics(&["_chat/c1/control"]), "/api/events"));
        assert!(!opens(&[], "/api/events"));
    }

    #[test]
    fn quotas_are_per_user() {
        let quota = UserQuota::new(3);
        let (alice, bob): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("bob"));
        for _ in 0..3 {
            assert!(quota.take(&alice, 2_000, 1_000));
        }
        assert!(!quota.take(&alice, 2_000, 1_000), "alice is at her bound");
        assert!(quota.take(&bob, 2_000, 1_000), "bob is not affected");
        // Once they expire, alice has room again.
        assert!(quota.take(&alice, 4_000, 2_000));
    }

    #[test]
    fn quota_forgets_users_whose_holdings_expired() {
        let quota = UserQuota::new(1);
        let mut most = 0;
        for i in 0..10_000u64 {
            let user: Arc<str> = Arc::from(format!("u{i}"));
            assert!(quota.take(&user, i + 1, i));
            most = most.max(quota.inner.lock().expect("lock").per_user.len());
        }
        assert!(
            most <= 2048,
            "the map stays bounded by the active users: {most}"
        );
    }

    #[test]
    fn memory_spent_set_is_single_use_until_expiry() {
        let set = MemorySpentSet::new();
        assert!(set.spend_at("a", 2_000, 1_000));
        assert!(!set.spend_at("a", 2_000, 1_500), "a replay");
        assert!(set.spend_at("b", 2_000, 1_500));
        // Past its expiry a key is forgotten.
        assert!(set.spend_at("a", 9_000, 2_500));
        assert!(!set.spend_at("a", 9_000, 2_600));
    }

    #[test]
    fn memory_spent_set_sweeps_expired_keys() {
        let set = MemorySpentSet::new();
        let mut most = 0;
        for i in 0..10_000u64 {
            assert!(set.spend_at(&format!("k{i}"), i + 1, i));
            most = most.max(set.len());
        }
        assert!(most <= 2048, "expired keys are swept: {most}");
    }
}
