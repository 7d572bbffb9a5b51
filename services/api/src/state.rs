//! The state every handler and background job of the api shares.

use std::sync::Arc;

use async_nats::jetstream;
use sea_orm::DatabaseConnection;
use voidrunner_shared::config::SandboxPolicy;
use voidrunner_shared::Namespace;

use crate::auth::TokenKeys;
use crate::config::ApiConfig;

#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub namespace: Namespace,
    pub tokens: TokenKeys,
    pub config: Arc<ApiConfig>,
    pub policy: Arc<SandboxPolicy>,
    pub limiter: crate::ratelimit::Limiter,
}
