use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::error::{ApiError, Json};
use crate::state::AppState;

/// Liveness: the process answers.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and NATS is connected.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.db.ping().await.is_ok();
    let nats = matches!(
        state.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let status = if database && nats {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "database": database, "nats": nats })))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint: see the README for the API")
}
