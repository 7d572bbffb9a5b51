use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{hash_password, verify_password};
use crate::entity::user;
use crate::error::{ApiError, Json};
use crate::state::AppState;

const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    email: String,
    password: String,
}

#[derive(Serialize)]
pub struct UserResponse {
    id: Uuid,
    email: String,
    created_at: chrono::DateTime<Utc>,
}

#[derive(Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

fn normalized_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_ascii_lowercase();
    let valid = email.len() <= 320
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid_field(
            "email",
            "must be an email address like user@example.com",
        ))
    }
}

#[tracing::instrument(skip_all)]
pub async fn register(
    State(state): State<AppState>,
    Json(credentials): Json<Credentials>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let email = normalized_email(&credentials.email)?;
    if credentials.password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid_field(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if credentials.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid_field(
            "password",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
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
    Ok(Json(TokenResponse {
        access_token: state.tokens.issue(user.id)?,
        token_type: "Bearer",
        expires_in: state.tokens.ttl_seconds(),
    }))
}
