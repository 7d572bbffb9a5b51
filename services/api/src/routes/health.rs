use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::error::{ApiError, Json};
use crate::state::AppState;

/// Liveness: the process answers.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers, NATS is connected and at least one worker is alive.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.db.ping().await.is_ok();
    let nats = matches!(
        state.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let workers = if nats {
        super::workers::live_workers(&state)
            .await
            .map(|workers| workers.iter().filter(|w| !w.is_draining()).count())
            .unwrap_or(0)
    } else {
        0
    };
    let status = if database && nats && workers > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "database": database, "nats": nats, "workers": workers })),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint: see the README for the API")
}
