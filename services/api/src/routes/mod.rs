//! The REST API: `/api/v1/...`, plus `/health` and `/ready`.

mod auth;
mod events;
mod executions;
mod health;
mod tasks;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// Room for JSON syntax and escapes around the largest script or stdin a request may carry.
const BODY_LIMIT_SLACK: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    // Escaping can double a string's size in JSON; anything larger is refused unread.
    let body_limit = state
        .config
        .max_script_bytes
        .max(state.config.max_stdin_bytes)
        * 2
        + BODY_LIMIT_SLACK;
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/tasks", post(tasks::create).get(tasks::list))
        .route("/tasks/{task_id}", get(tasks::get))
        .route(
            "/tasks/{task_id}/executions",
            post(executions::create).get(executions::list_for_task),
        )
        .route(
            "/executions/{execution_id}",
            get(executions::get).delete(executions::cancel),
        )
        .route(
            "/executions/{execution_id}/cancel",
            post(executions::cancel),
        )
        .route("/executions/{execution_id}/events", get(events::stream))
        .route("/dead-letters", get(executions::list_dead_letters))
        .route(
            "/dead-letters/{execution_id}/rerun",
            post(executions::rerun_dead_letter),
        );
    Router::new()
        .nest("/api/v1", api)
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .fallback(health::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let path = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or(request.uri().path(), |p| p.as_str());
                tracing::info_span!("http", method = %request.method(), path)
            }),
        )
        .with_state(state)
}
