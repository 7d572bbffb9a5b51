use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{
    digest, hash_password, new_secret, verify_password, API_KEY_PREFIX, REFRESH_TOKEN_PREFIX,
    WEBHOOK_SECRET_PREFIX,
};
use crate::entity::{api_key, refresh_token, session, user};
use crate::error::{ApiError, Json, Path};
use crate::http::{AuthUser, Principal};
use crate::openapi::{BodyErrors, Common, Conflict, ErrorBody, Malformed, Missing, Public};
use crate::rules;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    email: String,
    password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserResponse {
    id: Uuid,
    email: String,
    created_at: chrono::DateTime<Utc>,
}

/// `GET /auth/me`: the user, with the secret that signs their webhooks.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MeResponse {
    id: Uuid,
    email: String,
    created_at: chrono::DateTime<Utc>,
    /// Verify a webhook with HMAC-SHA256 of `<t>.<body>` under this secret (see the README).
    webhook_secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    /// Seconds the access token is valid for.
    expires_in: u64,
    /// Exchange it at `POST /auth/refresh` for new tokens; it works once.
    refresh_token: String,
    refresh_expires_in: u64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyResponse {
    id: Uuid,
    name: String,
    /// The key's first characters, to tell keys apart.
    prefix: String,
    /// The key itself: shown once, when it is created; only its digest is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    created_at: chrono::DateTime<Utc>,
    last_used_at: Option<chrono::DateTime<Utc>>,
}

impl From<api_key::Model> for ApiKeyResponse {
    fn from(key: api_key::Model) -> Self {
        ApiKeyResponse {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            key: None,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
        }
    }
}

const MAX_API_KEYS: u64 = 50;

fn normalized_email(email: &str) -> Result<String, ApiError> {
    rules::EMAIL
        .check(email)
        .map_err(|problem| ApiError::invalid_field("email", problem))?;
    Ok(email.to_ascii_lowercase())
}

#[tracing::instrument(skip_all)]
#[utoipa::path(
    operation_id = "auth_register",
    post,
    path = "/auth/register",
    tag = "auth",
    request_body = Credentials,
    responses((status = 201, description = "Registered", body = UserResponse), Malformed, BodyErrors, Conflict, Public)
)]
pub async fn register(
    State(state): State<AppState>,
    Json(credentials): Json<Credentials>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let email = normalized_email(&credentials.email)?;
    rules::PASSWORD
        .check(&credentials.password)
        .map_err(|problem| ApiError::invalid_field("password", problem))?;
    let existing = user::Entity::find()
        .filter(user::Column::Email.eq(&email))
        .one(&state.db)
        .await?;
    if existing.is_some() {
        return Err(ApiError::Conflict(
            "a user with this email already exists: log in instead",
        ));
    }
    let password_hash = hash_password(credentials.password).await?;
    let created = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email),
        password_hash: Set(password_hash),
        created_at: Set(Utc::now()),
        webhook_secret: Set(Some(new_secret(WEBHOOK_SECRET_PREFIX))),
        active_executions: Set(0),
        held_executions: Set(0),
    }
    .insert(&state.db)
    .await
    .map_err(|error| match error.sql_err() {
        // Two registrations raced; the unique index decided.
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            ApiError::Conflict("a user with this email already exists: log in instead")
        }
        _ => error.into(),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(UserResponse {
            id: created.id,
            email: created.email,
            created_at: created.created_at,
        }),
    ))
}

#[tracing::instrument(skip_all)]
#[utoipa::path(
    operation_id = "auth_login",
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = Credentials,
    responses((status = 200, description = "Logged in: a new session", body = TokenResponse), (status = 401, description = "Wrong email or password", body = ErrorBody), Malformed, BodyErrors, Public)
)]
pub async fn login(
    State(state): State<AppState>,
    Json(credentials): Json<Credentials>,
) -> Result<Json<TokenResponse>, ApiError> {
    const REFUSED: ApiError = ApiError::Unauthorized("wrong email or password");
    let email = credentials.email.trim().to_ascii_lowercase();
    let user = user::Entity::find()
        .filter(user::Column::Email.eq(&email))
        .one(&state.db)
        .await?;
    // An unknown email costs the same hash check as a wrong password, so that response times
    // do not tell which emails are registered.
    let stored_hash = user.as_ref().map_or_else(
        || state.tokens.decoy_hash().to_owned(),
        |user| user.password_hash.clone(),
    );
    let verified = verify_password(credentials.password, stored_hash).await?;
    let Some(user) = user.filter(|_| verified) else {
        return Err(REFUSED);
    };
    let session = session::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user.id),
        created_at: Set(Utc::now()),
        revoked_at: Set(None),
        revoked_reason: Set(None),
    }
    .insert(&state.db)
    .await?;
    Ok(Json(tokens_for(&state, user.id, session.id).await?))
}

/// A new access token and a new refresh token in `session_id`.
async fn tokens_for(
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<TokenResponse, ApiError> {
    let refresh_token = new_secret(REFRESH_TOKEN_PREFIX);
    let refresh_ttl = state.config.refresh_ttl_seconds;
    let now = Utc::now();
    refresh_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        session_id: Set(session_id),
        token_hash: Set(digest(&refresh_token)),
        expires_at: Set(
            now + chrono::TimeDelta::seconds(i64::try_from(refresh_ttl).unwrap_or(i64::MAX / 2))
        ),
        used_at: Set(None),
        created_at: Set(now),
    }
    .insert(&state.db)
    .await?;
    Ok(TokenResponse {
        access_token: state.tokens.issue(user_id, session_id)?,
        token_type: "Bearer",
        expires_in: state.tokens.ttl_seconds(),
        refresh_token,
        refresh_expires_in: refresh_ttl,
    })
}

async fn revoke_session(state: &AppState, session_id: Uuid, reason: &str) -> Result<(), ApiError> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(&state.db)
        .await?;
    Ok(())
}

/// Exchanges a refresh token for new tokens. Each refresh token works once: presenting a used
/// one again means it was copied, so the whole session is revoked.
#[tracing::instrument(skip_all)]
#[utoipa::path(
    operation_id = "auth_refresh",
    post,
    path = "/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses((status = 200, description = "New tokens; the old refresh token is spent", body = TokenResponse), (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = ErrorBody), Malformed, BodyErrors, Public)
)]
pub async fn refresh(
    State(state): State<AppState>,
    Json(request): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    const REFUSED: ApiError =
        ApiError::Unauthorized("the refresh token is invalid, expired or revoked: log in again");
    let Some(token) = refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(digest(request.refresh_token.trim())))
        .one(&state.db)
        .await?
    else {
        return Err(REFUSED);
    };
    let Some(session) = session::Entity::find_by_id(token.session_id)
        .one(&state.db)
        .await?
    else {
        return Err(REFUSED);
    };
    if session.revoked_at.is_some() || token.expires_at < Utc::now() {
        return Err(REFUSED);
    }
    // Marked used only if nobody used it first: of two racing exchanges, one wins.
    let claimed = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedAt, Expr::value(Utc::now()))
        .filter(refresh_token::Column::Id.eq(token.id))
        .filter(refresh_token::Column::UsedAt.is_null())
        .exec(&state.db)
        .await?;
    if claimed.rows_affected == 0 {
        tracing::warn!(session_id = %session.id, user_id = %session.user_id, "refresh token reused; revoking its session");
        revoke_session(&state, session.id, "refresh_token_reuse").await?;
        return Err(ApiError::Unauthorized(
            "this refresh token was already used, so the session has been revoked: log in again",
        ));
    }
    Ok(Json(tokens_for(&state, session.user_id, session.id).await?))
}

/// Ends the session of the access token: its refresh tokens and access tokens stop working.
#[tracing::instrument(skip_all)]
#[utoipa::path(
    operation_id = "auth_logout",
    post,
    path = "/auth/logout",
    tag = "auth",
    responses((status = 204, description = "The session is over"), Malformed, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<StatusCode, ApiError> {
    match principal.session_id {
        Some(session_id) => {
            revoke_session(&state, session_id, "logout").await?;
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::BadRequest {
            code: "not_a_session",
            message: "an API key has no session to log out of: revoke it with DELETE /api/v1/auth/api-keys/{id}".into(),
        }),
    }
}

/// The calling user.
#[utoipa::path(
    operation_id = "auth_me",
    get,
    path = "/auth/me",
    tag = "auth",
    responses((status = 200, description = "The calling user", body = MeResponse), Malformed, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn me(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
) -> Result<Json<MeResponse>, ApiError> {
    let user = user::Entity::find_by_id(user_id)
        .one(&state.db)
        .await?
        .ok_or(ApiError::Unauthorized("the user no longer exists"))?;
    let webhook_secret = crate::executions::callback::secret_of(&state.db, &user).await?;
    Ok(Json(MeResponse {
        id: user.id,
        email: user.email,
        created_at: user.created_at,
        webhook_secret,
    }))
}

/// Creates an API key; the response is the only time the key is shown.
#[tracing::instrument(skip_all, fields(user_id = %user_id))]
#[utoipa::path(
    operation_id = "auth_create_api_key",
    post,
    path = "/auth/api-keys",
    tag = "auth",
    request_body = NewApiKey,
    responses((status = 201, description = "The key, shown this once", body = ApiKeyResponse), Malformed, BodyErrors, Conflict, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Json(request): Json<NewApiKey>,
) -> Result<(StatusCode, Json<ApiKeyResponse>), ApiError> {
    rules::API_KEY_NAME
        .check(&request.name)
        .map_err(|problem| ApiError::invalid_field("name", problem))?;
    let name = request.name.trim_matches(rules::is_blank).to_owned();
    let live = api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .count(&state.db)
        .await?;
    if live >= MAX_API_KEYS {
        return Err(ApiError::Conflict(
            "you have the most API keys allowed (50): revoke one first",
        ));
    }
    let key = new_secret(API_KEY_PREFIX);
    let created = api_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        name: Set(name),
        prefix: Set(key[..API_KEY_PREFIX.len() + 8].to_owned()),
        key_hash: Set(digest(&key)),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(&state.db)
    .await?;
    let mut response = ApiKeyResponse::from(created);
    response.key = Some(key);
    Ok((StatusCode::CREATED, Json(response)))
}

/// The caller's API keys that are not revoked, newest first; the keys themselves are not shown.
#[utoipa::path(
    operation_id = "auth_list_api_keys",
    get,
    path = "/auth/api-keys",
    tag = "auth",
    responses((status = 200, description = "Your keys, without the keys themselves", body = Vec<ApiKeyResponse>), Malformed, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
) -> Result<Json<Vec<ApiKeyResponse>>, ApiError> {
    let keys = api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .order_by_desc(api_key::Column::CreatedAt)
        .all(&state.db)
        .await?;
    Ok(Json(keys.into_iter().map(Into::into).collect()))
}

/// Revokes an API key at once.
#[utoipa::path(
    operation_id = "auth_revoke_api_key",
    delete,
    path = "/auth/api-keys/{key_id}",
    tag = "auth",
    params(("key_id" = Uuid, Path, description = "The API key")),
    responses((status = 204, description = "Revoked"), Malformed, Missing, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(key_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let revoked = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(api_key::Column::Id.eq(key_id))
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(&state.db)
        .await?;
    if revoked.rows_affected == 0 {
        return Err(ApiError::NotFound("no API key with this id"));
    }
    Ok(StatusCode::NO_CONTENT)
}
