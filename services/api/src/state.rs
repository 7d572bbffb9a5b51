//! The state every handler and background job of the api shares.

use std::sync::Arc;

use async_nats::jetstream;
use sea_orm::DatabaseConnection;
use voidrunner_shared::config::SandboxPolicy;
use voidrunner_shared::Namespace;

use crate::auth::TokenKeys;
use crate::config::ApiConfig;
use crate::executions::Lifecycle;
use crate::tasks::TaskRules;

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
    pub streams: crate::ratelimit::StreamSlots,
    /// The one owner of an execution's life.
    pub executions: Lifecycle,
}

impl AppState {
    /// The limits a task or run is checked against.
    pub fn task_rules(&self) -> TaskRules {
        TaskRules {
            policy: Arc::clone(&self.policy),
            max_script_bytes: self.config.max_script_bytes,
            default_timeout_seconds: self.config.default_timeout_seconds,
            max_timeout_seconds: self.config.max_timeout_seconds,
        }
    }
}
