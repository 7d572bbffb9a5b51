//! The worker's presence in the fleet: heartbeats in a KV bucket (they expire when the worker
//! stops) and a registration with the NATS service API, so `nats micro ls` lists every worker.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::runner::Runner;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct Heartbeat<'a> {
    worker_id: &'a str,
    version: &'static str,
    slots: usize,
    busy: usize,
    started_at: chrono::DateTime<Utc>,
    seen_at: chrono::DateTime<Utc>,
}

/// Beats and answers service requests until `shutdown`, then removes its heartbeat.
pub async fn register(
    runner: Runner,
    slots: Arc<Semaphore>,
    total: usize,
    shutdown: CancellationToken,
) {
    let started_at = Utc::now();
    let heartbeat = |busy: usize| {
        serde_json::to_vec(&Heartbeat {
            worker_id: &runner.worker_id,
            version: env!("CARGO_PKG_VERSION"),
            slots: total,
            busy,
            started_at,
            seen_at: Utc::now(),
        })
        .unwrap_or_default()
    };

    let bucket = match runner
        .jetstream
        .get_key_value(runner.namespace.heartbeat_bucket())
        .await
    {
        Ok(bucket) => Some(bucket),
        Err(error) => {
            tracing::warn!(error = %error, "heartbeat bucket unavailable; the fleet view will miss this worker");
            None
        }
    };

    use async_nats::service::ServiceExt;
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
            _ = ticks.tick() => {
                if let Some(bucket) = &bucket {
                    let busy = total - slots.available_permits();
                    if let Err(error) = bucket.put(&runner.worker_id, heartbeat(busy).into()).await {
                        tracing::debug!(error = %error, "heartbeat failed");
                    }
                }
            }
            Some(request) = async {
                match status_requests.as_mut() {
                    Some(endpoint) => endpoint.next().await,
                    None => std::future::pending().await,
                }
            } => {
                let busy = total - slots.available_permits();
                let _ = request.respond(Ok(heartbeat(busy).into())).await;
            }
        }
    }
    if let Some(bucket) = &bucket {
        let _ = bucket.delete(&runner.worker_id).await;
    }
    if let Ok(service) = service {
        let _ = service.stop().await;
    }
}
