//! The worker's presence in the fleet: heartbeats in a KV bucket (they expire when the worker
//! stops) and a registration with the NATS service API, so `nats micro ls` lists every worker.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::ServiceExt;
use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use voidrunner_shared::events::{WorkerStatus, WorkerStatusV1};

use crate::runner::Runner;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What a worker reports about itself, in its heartbeat and on its status endpoint.
fn status(runner: &Runner, total: usize, busy: usize, draining: bool) -> Vec<u8> {
    serde_json::to_vec(&WorkerStatus::V1(WorkerStatusV1 {
        worker_id: runner.worker_id.clone(),
        host: runner.host.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        slots: u32::try_from(total).unwrap_or(u32::MAX),
        busy: u32::try_from(busy).unwrap_or(u32::MAX),
        languages: runner.languages.clone(),
        warm_pool: runner
            .sandbox
            .pool_levels()
            .into_iter()
            .map(|(language, ready)| {
                (
                    language.to_string(),
                    u32::try_from(ready).unwrap_or(u32::MAX),
                )
            })
            .collect(),
        sandbox: runner.sandbox.metrics().snapshot(),
        backend: runner.sandbox.kind(),
        draining,
        seen_at: Utc::now(),
    }))
    .unwrap_or_default()
}

/// Puts one heartbeat.
pub async fn beat(runner: &Runner, total: usize, busy: usize, draining: bool) {
    let bucket = runner
        .jetstream
        .get_key_value(runner.namespace.heartbeat_bucket())
        .await;
    let result = match bucket {
        Ok(bucket) => bucket
            .put(
                &runner.worker_id,
                status(runner, total, busy, draining).into(),
            )
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
    busy: Arc<AtomicUsize>,
    total: usize,
    stopping: CancellationToken,
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
            let subject = runner.namespace.worker_status_subject(&runner.worker_id);
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
            _ = ticks.tick() => beat(&runner, total, busy.load(Ordering::Relaxed), stopping.is_cancelled()).await,
            Some(request) = async {
                match status_requests.as_mut() {
                    Some(endpoint) => endpoint.next().await,
                    None => std::future::pending().await,
                }
            } => {
                let body = status(&runner, total, busy.load(Ordering::Relaxed), stopping.is_cancelled());
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
