//! The fleet as its heartbeats describe it.

use axum::extract::State;
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use voidrunner_shared::events::{SandboxBackendKind, SandboxCounters, WorkerStatus};
use voidrunner_shared::Language;

use crate::error::{ApiError, Json};
use crate::http::AuthUser;
use crate::openapi::{Common, Malformed};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkerResponse {
    id: String,
    host: String,
    version: String,
    slots: u32,
    busy: u32,
    languages: Vec<Language>,
    warm_pool: std::collections::BTreeMap<String, u32>,
    sandbox: SandboxCounters,
    /// What runs its executions; `instant` runs no code (load tests only).
    backend: SandboxBackendKind,
    draining: bool,
    last_heartbeat: chrono::DateTime<Utc>,
}

impl WorkerResponse {
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    pub fn backend(&self) -> SandboxBackendKind {
        self.backend
    }

    /// Whether its sandbox can run `language` (it has the image).
    pub fn serves(&self, language: Language) -> bool {
        self.languages.contains(&language)
    }
}

/// Every worker whose heartbeat has not expired, by id.
pub async fn live_workers(state: &AppState) -> Result<Vec<WorkerResponse>, ApiError> {
    let unavailable = |error: String| {
        tracing::warn!(%error, "reading the fleet's heartbeats failed");
        ApiError::Unavailable {
            message: "the fleet's heartbeats cannot be read from NATS right now",
            retry_after_seconds: 2,
        }
    };
    let bucket = state
        .jetstream
        .get_key_value(state.namespace.heartbeat_bucket())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut keys = bucket
        .keys()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut workers = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| unavailable(e.to_string()))?;
        let Ok(Some(value)) = bucket.get(&key).await else {
            continue;
        };
        match serde_json::from_slice::<WorkerStatus>(&value) {
            Ok(WorkerStatus::V1(status)) => workers.push(WorkerResponse {
                id: status.worker_id,
                host: status.host,
                version: status.version,
                slots: status.slots,
                busy: status.busy,
                languages: status.languages,
                warm_pool: status.warm_pool,
                sandbox: status.sandbox,
                backend: status.backend,
                draining: status.draining,
                last_heartbeat: status.seen_at,
            }),
            Err(error) => tracing::debug!(%key, %error, "heartbeat in an unknown shape"),
        }
    }
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(workers)
}

/// `GET /api/v1/workers`: the live fleet.
#[utoipa::path(
    operation_id = "worker_list",
    get,
    path = "/workers",
    tag = "fleet",
    responses((status = 200, description = "The live workers", body = Vec<WorkerResponse>), Malformed, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(_): AuthUser,
) -> Result<Json<Vec<WorkerResponse>>, ApiError> {
    Ok(Json(live_workers(&state).await?))
}
