//! Passwords, access tokens and the authenticated-user extractor.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

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
    /// The session (login) the token belongs to: logging out revokes it.
    sid: Uuid,
    iat: u64,
    exp: u64,
}

/// The prefix of API keys; bearer tokens that start with it are looked up as keys.
pub const API_KEY_PREFIX: &str = "vrk_";
/// The prefix of webhook signing secrets.
pub const WEBHOOK_SECRET_PREFIX: &str = "vrw_";
/// The prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "vrr_";

/// A new secret: `prefix` and 32 random bytes in hex.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    format!("{prefix}{}", hex::encode(bytes))
}

/// How secrets are stored: SHA-256 in hex (they carry 256 bits of entropy; no slow hash needed).
pub fn digest(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Only empty HMAC keys are refused, and the configuration requires a long secret.
const NON_EMPTY_SECRET: &str = "the jwt secret is not empty";

impl TokenKeys {
    pub fn new(secret: &[u8], ttl_seconds: u64) -> Self {
        // A hash of a random password, checked when a login names no known user.
        let decoy_hash = Argon2::default()
            .hash_password(uuid::Uuid::new_v4().as_bytes())
            .map(|hash| hash.to_string())
            .unwrap_or_default();
        TokenKeys {
            encoding: Arc::new(EncodingKey::from_secret(secret).expect(NON_EMPTY_SECRET)),
            decoding: Arc::new(DecodingKey::from_secret(secret).expect(NON_EMPTY_SECRET)),
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

    pub fn issue(&self, user_id: Uuid, session_id: Uuid) -> Result<String, ApiError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| ApiError::Internal(e.into()))?
            .as_secs();
        self.issue_at(user_id, session_id, now)
    }

    /// A token as if issued at `issued_at` (Unix seconds): it expires `ttl_seconds` later.
    pub fn issue_at(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        issued_at: u64,
    ) -> Result<String, ApiError> {
        let claims = Claims {
            sub: user_id,
            sid: session_id,
            iat: issued_at,
            exp: issued_at + self.ttl_seconds,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(e.into()))
    }

    /// The user of a valid, unexpired token (its session is not checked).
    pub fn user_of(&self, token: &str) -> Option<Uuid> {
        self.verify(token).map(|(user, _)| user)
    }

    /// The user and session of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<(Uuid, Uuid)> {
        let validation = Validation::new(Algorithm::HS256);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| (data.claims.sub, data.claims.sid))
    }
}

/// Hashes a password with Argon2id on a blocking thread (it is deliberately slow).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_with_the_key_that_signed_it() {
        let keys = TokenKeys::new(&[7; 32], 3600);
        let user = Uuid::new_v4();
        let session = Uuid::new_v4();
        let token = keys.issue(user, session).expect("token issued");
        assert_eq!(keys.verify(&token), Some((user, session)));
        assert_eq!(TokenKeys::new(&[8; 32], 3600).verify(&token), None);
        assert_eq!(keys.verify("not.a.token"), None);
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_stored_only_as_digests() {
        let a = new_secret(API_KEY_PREFIX);
        let b = new_secret(API_KEY_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX) && a.len() == API_KEY_PREFIX.len() + 64);
        assert_eq!(digest(&a), digest(&a));
        assert_eq!(digest(&a).len(), 64);
        assert!(!digest(&a).contains(&a[4..]));
    }
}
