//! The worker's own HTTP endpoint, on `VOIDRUNNER_METRICS_ADDR`: `/metrics` for Prometheus,
//! `/health` (the process answers) and `/ready` (connected to NATS and taking work).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Probe {
    nats: async_nats::Client,
    /// Cancelled when the worker stops taking work.
    stopping: CancellationToken,
}

/// Serves until `until` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    nats: async_nats::Client,
    stopping: CancellationToken,
    until: CancellationToken,
) {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/ready", get(ready))
        .with_state(Probe { nats, stopping });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { until.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::warn!(error = %error, "the metrics endpoint stopped");
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            voidrunner_shared::metrics::CONTENT_TYPE,
        )],
        voidrunner_shared::metrics::recorder().render(),
    )
}

async fn ready(State(probe): State<Probe>) -> impl IntoResponse {
    let nats = matches!(
        probe.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let taking_work = !probe.stopping.is_cancelled();
    let status = if nats && taking_work {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "nats": nats, "taking_work": taking_work })),
    )
}
