//! The worker's presence in the fleet: heartbeats in a KV bucket (they expire when the worker
//! stops) and a registration with the NATS service API, so `nats micro ls` lists every worker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::ServiceExt;
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::runner::Runner;
use crate::sandbox::MetricsSnapshot;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What a worker reports about itself, in its heartbeat and on its status endpoint.
#[derive(Serialize)]
struct Status<'a> {
    worker_id: &'a str,
    version: &'static str,
    slots: usize,
    busy: usize,
    warm_pool: HashMap<String, usize>,
    sandbox: MetricsSnapshot,
    seen_at: chrono::DateTime<Utc>,
}

fn status(runner: &Runner, total: usize, free: usize) -> Vec<u8> {
    serde_json::to_vec(&Status {
        worker_id: &runner.worker_id,
        version: env!("CARGO_PKG_VERSION"),
        slots: total,
        busy: total.saturating_sub(free),
        warm_pool: runner
            .sandbox
            .pool_levels()
            .into_iter()
            .map(|(language, ready)| (language.to_string(), ready))
            .collect(),
        sandbox: runner.sandbox.metrics().snapshot(),
        seen_at: Utc::now(),
    })
    .unwrap_or_default()
}

/// Puts one heartbeat.
pub async fn beat(runner: &Runner, total: usize, free: usize) {
    let bucket = runner
        .jetstream
        .get_key_value(runner.namespace.heartbeat_bucket())
        .await;
    let result = match bucket {
        Ok(bucket) => bucket
            .put(&runner.worker_id, status(runner, total, free).into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    if let Err(error) = result {
        tracing::debug!(error = %error, "heartbeat failed");
    }
}

/// The ids of workers whose heartbeat has not expired; None when the bucket cannot be read
/// (then nobody may be taken for dead).
pub async fn live_workers(runner: &Runner) -> Option<HashSet<String>> {
    let bucket = runner
        .jetstream
        .get_key_value(runner.namespace.heartbeat_bucket())
        .await
        .ok()?;
    let mut keys = bucket.keys().await.ok()?;
    let mut live = HashSet::new();
    while let Some(key) = keys.next().await {
        live.insert(key.ok()?);
    }
    Some(live)
}

/// Beats and answers status requests until `shutdown`, then removes its heartbeat.
pub async fn register(
    runner: Runner,
    slots: Arc<Semaphore>,
    total: usize,
    shutdown: CancellationToken,
) {
    let service = runner
        .nats
        .service_builder()
        .description("VoidRunner worker: runs executions in hardened sandboxes")
        .start(
            runner.namespace.worker_service_name(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )
        .await;
    let mut status_requests = match &service {
        Ok(service) => {
            let subject = format!(
                "{}.workers.{}.status",
                runner.namespace.prefix(),
                runner.worker_id
            );
            match service.endpoint_builder().name("status").add(subject).await {
                Ok(endpoint) => Some(endpoint),
                Err(error) => {
                    tracing::warn!(error = %error, "service endpoint unavailable");
                    None
                }
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, "service registration failed; `nats micro ls` will miss this worker");
            None
        }
    };

    let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => beat(&runner, total, slots.available_permits()).await,
            Some(request) = async {
                match status_requests.as_mut() {
                    Some(endpoint) => endpoint.next().await,
                    None => std::future::pending().await,
                }
            } => {
                let body = status(&runner, total, slots.available_permits());
                let _ = request.respond(Ok(body.into())).await;
            }
        }
    }
    if let Ok(bucket) = runner
        .jetstream
        .get_key_value(runner.namespace.heartbeat_bucket())
        .await
    {
        let _ = bucket.delete(&runner.worker_id).await;
    }
    if let Ok(service) = service {
        let _ = service.stop().await;
    }
}
