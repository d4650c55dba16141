//! Who is calling, and what they may do: the [`Principal`] extractor and the [`Auth`] settings.
//!
//! Auth mode `none` (the default, for local use) makes every caller the anonymous user with every
//! right. Mode `jwt` (HS256, RS256, ES256) reads the token from `Authorization: Bearer`, the
//! `rill_token` cookie or the `access_token` query parameter, or a one-time stream ticket from
//! `?ticket=` (see [`crate::tickets`]). Tokens and tickets never reach a log line: nothing here
//! logs a credential, and the request trace redacts those query parameters
//! ([`redacted_path_and_query`]).
//!
//! Credentials in the query string belong to the edge, not to handlers: the
//! [`lift_query_credentials`] layer takes `access_token` and `ticket` out of the URI before any
//! handler sees it, so `?access_token=` works on every route whatever its query parsing, and no
//! handler can echo or log a credential from its query.
//!
//! A stream ticket is a credential only on the stream route its topics name (checked before it is
//! spent, [`crate::tickets::opens`]): on every other route a request holding only a ticket is
//! unauthenticated, whichever extractor its handler uses. Stream handlers take
//! [`StreamPrincipal`], which says so in their signature.
//!
//! Token claims: `sub` (the user, required), `exp` (required), `publish` and `subscribe` (arrays
//! of topic patterns: an exact topic name, `prefix/*` for every topic under `prefix/`, or `*`).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use rill_core::Topic;

use crate::tickets::Tickets;
use crate::{ApiError, AppState};

/// The cookie that may carry the token (for `EventSource` with `withCredentials`).
pub(crate) const TOKEN_COOKIE: &str = "rill_token";
/// The query parameter that may carry the token (`EventSource` cannot set headers).
pub(crate) const TOKEN_QUERY: &str = "access_token";
/// The query parameter that carries a stream ticket.
pub(crate) const TICKET_QUERY: &str = "ticket";

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The user id (`sub`); `"anonymous"` in auth mode `none`.
    pub user: Arc<str>,
    grants: Grants,
    /// When the credential expires: streams opened with it close then.
    pub expires_at: Option<SystemTime>,
}

#[derive(Clone, Debug)]
enum Grants {
    /// Auth mode `none`: everything is allowed.
    All,
    /// A token's `publish` and `subscribe` patterns.
    Patterns {
        publish: Arc<[Pattern]>,
        subscribe: Arc<[Pattern]>,
    },
    /// A stream ticket: subscribe to exactly these topics, publish nothing.
    Ticket(Arc<[Topic]>),
}

/// One topic pattern of a token: `*`, `prefix/*` or an exact topic name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    Any,
    /// Holds `prefix/` (with the slash), so `a/*` matches `a/b` but not `ab` nor `a` itself.
    Prefix(Box<str>),
    Exact(Box<str>),
}

impl Pattern {
    pub(crate) fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            Pattern::Any
        } else if let Some(prefix) = pattern.strip_suffix('*').filter(|p| p.ends_with('/')) {
            Pattern::Prefix(prefix.into())
        } else {
            Pattern::Exact(pattern.into())
        }
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(prefix) => topic.len() > prefix.len() && topic.starts_with(&**prefix),
            Pattern::Exact(name) => **name == *topic,
        }
    }
}

fn any_matches(patterns: &[Pattern], topic: &Topic) -> bool {
    patterns.iter().any(|p| p.matches(topic.as_str()))
}

impl Principal {
    /// The caller of auth mode `none`.
    pub fn anonymous() -> Self {
        Principal {
            user: Arc::from("anonymous"),
            grants: Grants::All,
            expires_at: None,
        }
    }

    /// A caller holding a stream ticket for `topics`; its streams close at `expires_at`.
    pub(crate) fn from_ticket(
        user: Arc<str>,
        topics: Arc<[Topic]>,
        expires_at: Option<SystemTime>,
    ) -> Self {
        Principal {
            user,
            grants: Grants::Ticket(topics),
            expires_at,
        }
    }

    pub fn may_subscribe(&self, topic: &Topic) -> bool {
        match &self.grants {
            Grants::All => true,
            Grants::Patterns { subscribe, .. } => any_matches(subscribe, topic),
            Grants::Ticket(topics) => topics.contains(topic),
        }
    }

    pub fn may_publish(&self, topic: &Topic) -> bool {
        match &self.grants {
            Grants::All => true,
            Grants::Patterns { publish, .. } => any_matches(publish, topic),
            Grants::Ticket(_) => false,
        }
    }

    /// Whether this credential may follow `topic` of a resource the user owns (a chat): any
    /// token or auth mode `none` may, a ticket only when it names the topic. Ownership itself
    /// is the caller's check.
    pub fn may_follow_owned(&self, topic: &Topic) -> bool {
        match &self.grants {
            Grants::All | Grants::Patterns { .. } => true,
            Grants::Ticket(topics) => topics.contains(topic),
        }
    }

    /// Whether this credential is a stream ticket (which opens one stream and nothing else).
    pub fn is_ticket(&self) -> bool {
        matches!(self.grants, Grants::Ticket(_))
    }

    /// [`Principal::may_subscribe`] as the 403 error the handler returns.
    pub fn check_subscribe(&self, topic: &Topic) -> Result<(), ApiError> {
        if self.may_subscribe(topic) {
            Ok(())
        } else {
            Err(forbidden("subscribe to", topic))
        }
    }

    /// [`Principal::may_publish`] as the 403 error the handler returns.
    pub fn check_publish(&self, topic: &Topic) -> Result<(), ApiError> {
        if self.may_publish(topic) {
            Ok(())
        } else {
            Err(forbidden("publish to", topic))
        }
    }
}

fn forbidden(what: &str, topic: &Topic) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("this credential may not {what} topic {topic:?}"),
    )
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    /// A token from a header, the cookie or `?access_token=`; never a stream ticket (stream
    /// routes take [`StreamPrincipal`]).
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate_cached(parts, state, Sources::Token).await
    }
}

/// The caller of a stream route (`GET /api/events`, `GET /api/chats/{id}/events`): a token, as
/// for [`Principal`], or the one-time stream ticket issued for exactly this stream.
///
/// Whether a ticket opens the request's stream is decided from the ticket's topics and the
/// request's path before the ticket is spent; the handler still checks each topic it serves
/// against the principal ([`Principal::check_subscribe`], [`Principal::may_follow_owned`]).
#[derive(Clone, Debug)]
pub struct StreamPrincipal(pub Principal);

impl FromRequestParts<AppState> for StreamPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate_cached(parts, state, Sources::Stream)
            .await
            .map(StreamPrincipal)
    }
}

/// The caller of a route that mints tickets: a token from the `Authorization` header or the
/// cookie only. A URL credential (`?access_token=`, a ticket) must not be able to mint a
/// ticket, or a leaked URL would be a way to mint more.
#[derive(Clone, Debug)]
pub struct MintingPrincipal(pub Principal);

impl FromRequestParts<AppState> for MintingPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state, Sources::HeaderOrCookie)
            .await
            .map(MintingPrincipal)
    }
}

/// [`authenticate`], once per request: a handler that extracts twice does not spend a
/// single-use ticket twice.
async fn authenticate_cached(
    parts: &mut Parts,
    state: &AppState,
    sources: Sources,
) -> Result<Principal, ApiError> {
    if let Some(principal) = parts.extensions.get::<Principal>() {
        return Ok(principal.clone());
    }
    let principal = authenticate(parts, state, sources).await?;
    parts.extensions.insert(principal.clone());
    Ok(principal)
}

/// Finds and checks the request's credential; a ticket is checked against the request's path
/// and spent in the state's spent-ticket set.
pub(crate) async fn authenticate(
    parts: &Parts,
    state: &AppState,
    sources: Sources,
) -> Result<Principal, ApiError> {
    let auth = &state.config.auth;
    match auth.find(parts, sources)? {
        Found::Principal(principal) => Ok(principal),
        Found::Ticket(ticket) => {
            auth.tickets()
                .redeem(&ticket, parts.uri.path(), state.spent_tickets.as_ref())
                .await
        }
    }
}

/// What a request carries.
enum Found {
    Principal(Principal),
    /// A stream ticket, still to be checked against the route and spent.
    Ticket(String),
}

/// Where a credential may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sources {
    /// Header, cookie or `?access_token=`.
    Token,
    /// [`Sources::Token`], or `?ticket=` on a GET (streams are GETs) to the stream it names.
    Stream,
    /// Header or cookie only: minting a ticket must not be possible with a URL credential.
    HeaderOrCookie,
}

/// Why the auth settings are unusable. Raised before any port is bound.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("the HS256 secret is {0} bytes long; it must be at least {MIN_SECRET_LEN} bytes")]
    SecretTooShort(usize),
    #[error("invalid PEM public key for {algorithm:?}")]
    BadPublicKey {
        algorithm: Algorithm,
        source: jsonwebtoken::errors::Error,
    },
    #[error("cannot sign the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash (32 bytes).
pub const MIN_SECRET_LEN: usize = 32;

/// The key that verifies tokens.
#[derive(Clone)]
pub struct JwtKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl JwtKey {
    /// An HS256 shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthConfigError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthConfigError::SecretTooShort(secret.len()));
        }
        Ok(JwtKey {
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        })
    }

    /// An RS256 public key (PEM, `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, AuthConfigError> {
        let key =
            DecodingKey::from_rsa_pem(pem).map_err(|source| AuthConfigError::BadPublicKey {
                algorithm: Algorithm::RS256,
                source,
            })?;
        Ok(JwtKey {
            algorithm: Algorithm::RS256,
            key,
        })
    }

    /// An ES256 (P-256) public key (PEM, `BEGIN PUBLIC KEY`).
    pub fn es256_pem(pem: &[u8]) -> Result<Self, AuthConfigError> {
        let key =
            DecodingKey::from_ec_pem(pem).map_err(|source| AuthConfigError::BadPublicKey {
                algorithm: Algorithm::ES256,
                source,
            })?;
        Ok(JwtKey {
            algorithm: Algorithm::ES256,
            key,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

impl fmt::Debug for JwtKey {
    /// Never prints the key: an HS256 key is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The auth settings of a server, with its stream tickets. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Auth {
    inner: Arc<AuthInner>,
}

#[derive(Debug)]
struct AuthInner {
    /// `None` is auth mode `none`.
    jwt: Option<(JwtKey, Validation)>,
    tickets: Tickets,
}

impl Default for Auth {
    fn default() -> Self {
        Auth::none()
    }
}

impl Auth {
    /// Auth mode `none`: every caller is [`Principal::anonymous`].
    pub fn none() -> Self {
        Auth {
            inner: Arc::new(AuthInner {
                jwt: None,
                tickets: Tickets::new(None, Tickets::DEFAULT_TTL, Tickets::DEFAULT_MAX_PER_USER),
            }),
        }
    }

    /// Auth mode `jwt`. Tickets are signed with `ticket_secret`, or with a random per-process key
    /// when it is `None` (then a ticket only works on the instance that issued it).
    pub fn jwt(key: JwtKey, ticket_secret: Option<&[u8]>, ticket_ttl: Duration) -> Self {
        Self::jwt_with_ticket_limit(
            key,
            ticket_secret,
            ticket_ttl,
            Tickets::DEFAULT_MAX_PER_USER,
        )
    }

    /// [`Auth::jwt`] where each user may hold at most `max_tickets_per_user` unexpired tickets
    /// (issued, and spent) on this instance.
    pub fn jwt_with_ticket_limit(
        key: JwtKey,
        ticket_secret: Option<&[u8]>,
        ticket_ttl: Duration,
        max_tickets_per_user: usize,
    ) -> Self {
        let mut validation = Validation::new(key.algorithm);
        // No leeway: a stream is closed exactly at `exp`, so a token must not be accepted after it.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        Auth {
            inner: Arc::new(AuthInner {
                jwt: Some((key, validation)),
                tickets: Tickets::new(ticket_secret, ticket_ttl, max_tickets_per_user),
            }),
        }
    }

    /// Whether auth mode is `jwt`.
    pub fn is_jwt(&self) -> bool {
        self.inner.jwt.is_some()
    }

    pub(crate) fn tickets(&self) -> &Tickets {
        &self.inner.tickets
    }

    /// Finds the request's credential and checks it, unless it is a ticket (which needs the
    /// route and the spent set: [`authenticate`]).
    fn find(&self, parts: &Parts, sources: Sources) -> Result<Found, ApiError> {
        let Some((key, validation)) = &self.inner.jwt else {
            return Ok(Found::Principal(Principal::anonymous()));
        };
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = bearer(value).ok_or_else(|| {
                unauthorized(
                    "invalid_token",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
            return verify_token(token, key, validation).map(Found::Principal);
        }
        if let Some(token) = cookie(parts, TOKEN_COOKIE) {
            return verify_token(token, key, validation).map(Found::Principal);
        }
        if sources == Sources::HeaderOrCookie {
            return Err(unauthorized(
                "unauthorized",
                "a bearer token is required, in the Authorization header or the cookie",
            ));
        }
        if let Some(token) = query_credential(parts, TOKEN_QUERY) {
            return verify_token(&token, key, validation).map(Found::Principal);
        }
        // A ticket opens one stream, and streams are GETs: elsewhere it is not a credential,
        // so it is not spent by a request it could never authorize.
        if sources == Sources::Stream
            && parts.method == Method::GET
            && let Some(ticket) = query_credential(parts, TICKET_QUERY)
        {
            return Ok(Found::Ticket(ticket.into_owned()));
        }
        Err(unauthorized("unauthorized", "a bearer token is required"))
    }
}

pub(crate) fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// The claims rill reads from a token. Unknown claims are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Topic patterns the holder may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic patterns the holder may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl Claims {
    /// Claims for `sub` that expire `ttl` from now.
    pub fn new(sub: impl Into<String>, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Claims {
            sub: sub.into(),
            exp: now.saturating_add(ttl.as_secs()),
            publish: Vec::new(),
            subscribe: Vec::new(),
        }
    }
}

/// Signs `claims` with an HS256 `secret`: development tokens (`rill token`) and tests.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, AuthConfigError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthConfigError::SecretTooShort(secret.len()));
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, &key)
        .map_err(AuthConfigError::Sign)
}

fn verify_token(token: &str, key: &JwtKey, validation: &Validation) -> Result<Principal, ApiError> {
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => unauthorized("token_expired", "the token has expired"),
            _ => unauthorized("invalid_token", "the token is invalid"),
        })?
        .claims;
    // `sub` names the user: chats' owner, the unit of the per-user limits. An empty one would
    // make one user of every token that lacks a real subject.
    if claims.sub.trim().is_empty() {
        return Err(unauthorized(
            "invalid_token",
            "the token's `sub` (the user) is empty",
        ));
    }
    let patterns = |list: Vec<String>| {
        list.iter()
            .map(|p| Pattern::parse(p))
            .collect::<Arc<[Pattern]>>()
    };
    Ok(Principal {
        user: Arc::from(claims.sub),
        grants: Grants::Patterns {
            publish: patterns(claims.publish),
            subscribe: patterns(claims.subscribe),
        },
        expires_at: Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
    })
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of cookie `name`. Parsed by hand: a `Cookie` header is `a=b; c=d`, and only one
/// value is needed, which does not justify a cookie-jar crate.
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.trim_matches('"'))
}

fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<Cow<'a, str>> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// The credentials the [`lift_query_credentials`] layer took out of the query string.
#[derive(Clone, Debug, Default)]
pub(crate) struct QueryCredentials {
    access_token: Option<String>,
    ticket: Option<String>,
}

/// The query-string credential `name` (`access_token` or `ticket`): the first non-empty one.
/// Read from what the edge layer lifted, or from the URI when no layer ran (a router used
/// without [`crate::edge_layers`]).
fn query_credential<'a>(parts: &'a Parts, name: &str) -> Option<Cow<'a, str>> {
    match parts.extensions.get::<QueryCredentials>() {
        Some(lifted) => {
            let value = if name == TOKEN_QUERY {
                &lifted.access_token
            } else {
                &lifted.ticket
            };
            value.as_deref().map(Cow::Borrowed)
        }
        None => query_param(&parts.uri, name),
    }
}

/// Whether a raw query key names a credential (keys may be percent-encoded: `access%5Ftoken`).
fn is_credential_key(raw_key: &str) -> bool {
    let key = url::form_urlencoded::parse(raw_key.as_bytes())
        .next()
        .map(|(k, _)| k);
    matches!(key.as_deref(), Some(TOKEN_QUERY | TICKET_QUERY))
}

/// The edge layer that takes `access_token` and `ticket` out of the request's query string into
/// a [`QueryCredentials`] extension. Handlers then never see them: `?access_token=` works on
/// every route (even one whose query parsing refuses unknown parameters), and no handler can
/// log or echo a credential from its query. A request without them is passed on untouched.
pub(crate) async fn lift_query_credentials(mut request: Request) -> Request {
    let Some(query) = request.uri().query() else {
        return request;
    };
    if !query
        .split('&')
        .any(|pair| is_credential_key(pair.split('=').next().unwrap_or(pair)))
    {
        return request;
    }
    let mut lifted = QueryCredentials::default();
    let mut kept = String::with_capacity(query.len());
    for pair in query.split('&') {
        let raw_key = pair.split('=').next().unwrap_or(pair);
        if !is_credential_key(raw_key) {
            if !kept.is_empty() {
                kept.push('&');
            }
            kept.push_str(pair);
            continue;
        }
        let Some((key, value)) = url::form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        let slot = if key == TOKEN_QUERY {
            &mut lifted.access_token
        } else {
            &mut lifted.ticket
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value.into_owned());
        }
    }
    let path = request.uri().path();
    let target = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{kept}")
    };
    let mut uri_parts = request.uri().clone().into_parts();
    if let Ok(target) = PathAndQuery::try_from(target) {
        uri_parts.path_and_query = Some(target);
        if let Ok(uri) = Uri::from_parts(uri_parts) {
            *request.uri_mut() = uri;
        }
    }
    request.extensions_mut().insert(lifted);
    request
}

/// The request target with the values of `access_token` and `ticket` replaced by `REDACTED`: the
/// only form of a URI that may be logged.
pub fn redacted_path_and_query(uri: &Uri) -> Cow<'_, str> {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return Cow::Borrowed(path);
    };
    let secret = |key: &str| {
        let key = url::form_urlencoded::parse(key.as_bytes())
            .next()
            .map(|(k, _)| k);
        matches!(key.as_deref(), Some(TOKEN_QUERY | TICKET_QUERY))
    };
    if !query
        .split('&')
        .any(|pair| secret(pair.split('=').next().unwrap_or(pair)))
    {
        return Cow::Borrowed(uri.path_and_query().map_or(path, |pq| pq.as_str()));
    }
    let mut out = String::with_capacity(path.len() + 1 + query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let key = pair.split('=').next().unwrap_or(pair);
        if secret(key) {
            out.push_str(key);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    Cow::Owned(out)
}

/// Adds `WWW-Authenticate: Bearer` to every 401 (RFC 6750 §3), whichever handler produced it.
pub(crate) async fn www_authenticate(mut response: Response) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(pattern: &str, topic: &str, expected: bool) {
        assert_eq!(
            Pattern::parse(pattern).matches(topic),
            expected,
            "{pattern:?} vs {topic:?}"
        );
    }

    #[test]
    fn patterns() {
        check("*", "a", true);
        check("*", "_chat/1", true);
        check("a", "a", true);
        check("a", "ab", false);
        check("a/*", "a/b", true);
        check("a/*", "a/b/c", true);
        check("a/*", "a", false);
        check("a/*", "ab", false);
        check("a*", "a*", true);
        check("a*", "ab", false);
        check("a/b/*", "a/b/c", true);
        check("a/b/*", "a/c", false);
    }

    #[track_caller]
    fn redacts(uri: &str, expected: &str) {
        let uri: Uri = uri.parse().unwrap();
        assert_eq!(redacted_path_and_query(&uri), expected);
    }

    #[test]
    fn redaction() {
        redacts("/api/events", "/api/events");
        redacts("/api/events?topic=a", "/api/events?topic=a");
        redacts(
            "/api/events?topic=a&access_token=xyz",
            "/api/events?topic=a&access_token=REDACTED",
        );
        redacts(
            "/api/events?ticket=xyz&topic=a",
            "/api/events?ticket=REDACTED&topic=a",
        );
        redacts("/x?access%5Ftoken=xyz", "/x?access%5Ftoken=REDACTED");
        redacts("/x?ticket", "/x?ticket=REDACTED");
    }

    #[track_caller]
    fn lifts(uri: &str, rest: &str, token: Option<&str>, ticket: Option<&str>) {
        let request = axum::http::Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let request = futures::executor::block_on(lift_query_credentials(request));
        assert_eq!(request.uri().to_string(), rest, "{uri}");
        let lifted = request.extensions().get::<QueryCredentials>();
        assert_eq!(
            lifted.and_then(|l| l.access_token.as_deref()),
            token,
            "{uri}"
        );
        assert_eq!(lifted.and_then(|l| l.ticket.as_deref()), ticket, "{uri}");
    }

    #[test]
    fn query_credentials_are_lifted_out_of_the_uri() {
        lifts("/api/chats", "/api/chats", None, None);
        lifts(
            "/api/chats?limit=5&_=1",
            "/api/chats?limit=5&_=1",
            None,
            None,
        );
        lifts(
            "/api/chats?access_token=abc",
            "/api/chats",
            Some("abc"),
            None,
        );
        lifts(
            "/api/chats?limit=5&access_token=a%2Bb&_=1",
            "/api/chats?limit=5&_=1",
            Some("a+b"),
            None,
        );
        lifts(
            "/api/events?ticket=t1&topic=x&access%5Ftoken=tok&ticket=t2",
            "/api/events?topic=x",
            Some("tok"),
            Some("t1"),
        );
        // An empty value is no credential, but it is still not the handler's.
        lifts("/x?access_token=&a=1", "/x?a=1", None, None);
        // An absolute-form target (HTTP/2) keeps its scheme and authority.
        lifts(
            "http://h:1/x?access_token=abc&a=1",
            "http://h:1/x?a=1",
            Some("abc"),
            None,
        );
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(&HeaderValue::from_static("Bearer abc")), Some("abc"));
        assert_eq!(
            bearer(&HeaderValue::from_static("bearer  abc ")),
            Some("abc")
        );
        assert_eq!(bearer(&HeaderValue::from_static("Basic abc")), None);
        assert_eq!(bearer(&HeaderValue::from_static("Bearer ")), None);
    }
}
