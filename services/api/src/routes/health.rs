use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use voidrunner_shared::events::SandboxBackendKind;

use crate::error::{ApiError, Json};
use crate::openapi::Malformed;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthBody {
    /// Always `ok`.
    status: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadyBody {
    database: bool,
    nats: bool,
    /// Live workers that take work.
    workers: usize,
    /// Of those, how many per sandbox backend. Any under `instant` run no code: this fleet is
    /// set up for load tests.
    backends: std::collections::BTreeMap<SandboxBackendKind, usize>,
}

/// Liveness: the process answers.
#[utoipa::path(
    operation_id = "service_health",
    get,
    path = "/health",
    tag = "fleet",
    responses((status = 200, description = "The process answers", body = HealthBody), Malformed)
)]
pub async fn health() -> Json<HealthBody> {
    Json(HealthBody { status: "ok" })
}

/// Readiness: the database answers, NATS is connected and at least one worker is alive.
#[utoipa::path(
    operation_id = "service_ready",
    get,
    path = "/ready",
    tag = "fleet",
    responses((status = 200, description = "Ready to take work", body = ReadyBody), (status = 503, description = "Not ready: the body says what is missing", body = ReadyBody), Malformed)
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadyBody>) {
    let database = state.db.ping().await.is_ok();
    let nats = matches!(
        state.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let taking_work: Vec<_> = if nats {
        super::workers::live_workers(&state)
            .await
            .map(|workers| workers.into_iter().filter(|w| !w.is_draining()).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let workers = taking_work.len();
    let mut backends = std::collections::BTreeMap::new();
    for worker in &taking_work {
        *backends.entry(worker.backend()).or_insert(0) += 1;
    }
    let status = if database && nats && workers > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(ReadyBody {
            database,
            nats,
            workers,
            backends,
        }),
    )
}

/// Prometheus metrics of this api (and, under `serve`, of its worker): executions, latencies,
/// HTTP requests, the queue as the database and JetStream see it, and the process.
#[utoipa::path(
    operation_id = "service_metrics",
    get,
    path = "/metrics",
    tag = "fleet",
    responses((status = 200, description = "Prometheus' text exposition format", content_type = "text/plain", body = String), Malformed)
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Err(error) = state.executions.measure_queue().await {
        tracing::warn!(error = %error, "the queue's gauges are stale in this scrape");
    }
    (
        [(
            header::CONTENT_TYPE,
            voidrunner_shared::metrics::CONTENT_TYPE,
        )],
        voidrunner_shared::metrics::recorder().render(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint: see the README for the API")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
