//! Passwords, access tokens and the authenticated-user extractor.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Signs and checks HS256 access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: Arc<EncodingKey>,
    decoding: Arc<DecodingKey>,
    ttl_seconds: u64,
    decoy_hash: Arc<str>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    iat: u64,
    exp: u64,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl_seconds: u64) -> Self {
        // A hash of a random password, checked when a login names no known user.
        let salt = SaltString::generate(&mut OsRng);
        let decoy_hash = Argon2::default()
            .hash_password(uuid::Uuid::new_v4().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .unwrap_or_default();
        TokenKeys {
            encoding: Arc::new(EncodingKey::from_secret(secret)),
            decoding: Arc::new(DecodingKey::from_secret(secret)),
            ttl_seconds,
            decoy_hash: decoy_hash.into(),
        }
    }

    /// A password hash no password matches, for logins of unknown users.
    pub fn decoy_hash(&self) -> &str {
        &self.decoy_hash
    }

    pub fn ttl_seconds(&self) -> u64 {
        self.ttl_seconds
    }

    pub fn issue(&self, user_id: Uuid) -> Result<String, ApiError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| ApiError::Internal(e.into()))?
            .as_secs();
        let claims = Claims {
            sub: user_id,
            iat: now,
            exp: now + self.ttl_seconds,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(e.into()))
    }

    fn verify(&self, token: &str) -> Option<Uuid> {
        let validation = Validation::new(Algorithm::HS256);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims.sub)
    }
}

/// Hashes a password with Argon2id on a blocking thread (it is deliberately slow).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing password: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
}

/// Checks a password against a stored hash on a blocking thread.
pub async fn verify_password(password: String, stored_hash: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let hash = PasswordHash::new(&stored_hash)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored password hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok())
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
}

/// The user a request's bearer token belongs to.
pub struct AuthUser(pub Uuid);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header =
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .ok_or(ApiError::Unauthorized(
                "missing `Authorization: Bearer <token>` header: log in at POST /api/v1/auth/login",
            ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        state
            .tokens
            .verify(token.trim())
            .map(AuthUser)
            .ok_or(ApiError::Unauthorized(
                "the token is invalid or expired: log in again",
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_with_the_key_that_signed_it() {
        let keys = TokenKeys::new(&[7; 32], 3600);
        let user = Uuid::new_v4();
        let token = keys.issue(user).expect("token issued");
        assert_eq!(keys.verify(&token), Some(user));
        assert_eq!(TokenKeys::new(&[8; 32], 3600).verify(&token), None);
        assert_eq!(keys.verify("not.a.token"), None);
    }
}
