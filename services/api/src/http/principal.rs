//! Who is calling: the credentials of a request, checked once per request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::auth::{digest, API_KEY_PREFIX};
use crate::entity::{api_key, session};
use crate::error::ApiError;
use crate::state::AppState;

/// Who is calling: the user, and the session its access token belongs to (none for API keys).
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
}

/// The user a request's credentials belong to: `Authorization: Bearer <access token>`, or an
/// API key as `Authorization: Bearer vrk_...` or `X-API-Key: vrk_...`.
pub struct AuthUser(pub Uuid);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Principal::from_request_parts(parts, state)
            .await
            .map(|principal| AuthUser(principal.user_id))
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(*principal);
        }
        let principal = authenticate(parts, state).await?;
        parts.extensions.insert(principal);
        Ok(principal)
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let api_key_header = parts
        .headers
        .get("x-api-key")
        .map(|value| value.to_str().unwrap_or_default().trim().to_owned());
    let bearer = match parts.headers.get(axum::http::header::AUTHORIZATION) {
        Some(header) => Some(
            header
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(|token| token.trim().to_owned())
                .ok_or(ApiError::Unauthorized(
                    "the Authorization header must be `Bearer <token>`",
                ))?,
        ),
        None => None,
    };
    let credential = api_key_header.or(bearer).ok_or(ApiError::Unauthorized(
        "missing credentials: send `Authorization: Bearer <token>` (log in at POST /api/v1/auth/login) or `X-API-Key: <key>`",
    ))?;
    if credential.starts_with(API_KEY_PREFIX) {
        return api_key_principal(state, &credential).await;
    }
    let (user_id, session_id) = state
        .tokens
        .verify(&credential)
        .ok_or(ApiError::Unauthorized(
            "the token is invalid or expired: refresh it or log in again",
        ))?;
    let live = session::Entity::find_by_id(session_id)
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .one(&state.db)
        .await?
        .is_some();
    if !live {
        return Err(ApiError::Unauthorized(
            "the session has ended (logged out or revoked): log in again",
        ));
    }
    Ok(Principal {
        user_id,
        session_id: Some(session_id),
    })
}

async fn api_key_principal(state: &AppState, key: &str) -> Result<Principal, ApiError> {
    let found = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(digest(key)))
        .filter(api_key::Column::RevokedAt.is_null())
        .one(&state.db)
        .await?
        .ok_or(ApiError::Unauthorized("the API key is unknown or revoked"))?;
    // Recorded at most once a minute, so that busy keys do not write on every request.
    let now = chrono::Utc::now();
    if found
        .last_used_at
        .is_none_or(|used| now - used > chrono::TimeDelta::minutes(1))
    {
        let _ = api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
            .filter(api_key::Column::Id.eq(found.id))
            .exec(&state.db)
            .await;
    }
    Ok(Principal {
        user_id: found.user_id,
        session_id: None,
    })
}
