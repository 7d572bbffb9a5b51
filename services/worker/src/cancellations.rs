//! Cancellation requests. The api puts an execution's id into the cancellation bucket; every
//! worker watches the bucket and stops the run it holds for that id at once. A worker also
//! looks the id up before it starts a run, for requests that came first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use voidrunner_shared::Namespace;

const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The runs this worker holds, by execution, and the requests to cancel them.
pub struct Cancellations {
    bucket: Option<kv::Store>,
    running: Mutex<HashMap<Uuid, CancellationToken>>,
}

/// A run's registration; dropping it forgets the run.
pub struct Registration {
    cancellations: Arc<Cancellations>,
    execution_id: Uuid,
    pub token: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cancellations.running().remove(&self.execution_id);
    }
}

impl Cancellations {
    pub async fn new(jetstream: &jetstream::Context, namespace: &Namespace) -> Arc<Self> {
        let bucket = jetstream
            .get_key_value(namespace.cancellation_bucket())
            .await
            .map_err(|error| {
                tracing::warn!(error = %error, "cancellation bucket unavailable; runs cannot be cancelled");
            })
            .ok();
        Arc::new(Cancellations {
            bucket,
            running: Mutex::new(HashMap::new()),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a run before anything else, so that no request can slip between the look-up
    /// and the watch.
    pub fn register(self: &Arc<Self>, execution_id: Uuid) -> Registration {
        let token = CancellationToken::new();
        self.running().insert(execution_id, token.clone());
        Registration {
            cancellations: Arc::clone(self),
            execution_id,
            token,
        }
    }

    /// Whether cancelling the execution was requested.
    pub async fn requested(&self, execution_id: Uuid) -> bool {
        let Some(bucket) = &self.bucket else {
            return false;
        };
        matches!(
            bucket.entry(execution_id.to_string()).await,
            Ok(Some(entry)) if entry.operation == kv::Operation::Put
        )
    }

    /// Cancels registered runs as their requests arrive, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(bucket) = self.bucket.clone() else {
            return;
        };
        while !shutdown.is_cancelled() {
            let mut requests = match bucket.watch_all().await {
                Ok(requests) => requests,
                Err(error) => {
                    tracing::warn!(error = %error, "watching cancellations failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_DELAY) => continue,
                    }
                }
            };
            loop {
                let request = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = requests.next() => match next {
                        Some(Ok(request)) => request,
                        Some(Err(error)) => {
                            tracing::warn!(error = %error, "cancellation watch broke; re-watching");
                            break;
                        }
                        None => break,
                    },
                };
                if request.operation != kv::Operation::Put {
                    continue;
                }
                let Ok(execution_id) = request.key.parse::<Uuid>() else {
                    continue;
                };
                if let Some(token) = self.running().get(&execution_id) {
                    tracing::info!(%execution_id, "cancelling on request");
                    token.cancel();
                }
            }
        }
    }
}
