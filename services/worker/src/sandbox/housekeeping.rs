//! Keeping the warm pools full, and removing sandboxes that no live execution owns.

use std::collections::{HashMap, HashSet};

use bollard::query_parameters::ListContainersOptions;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::docker::{docker_error, DockerSandbox, DOCKER_CALL_TIMEOUT};
use super::metrics::{Removal, SandboxMetrics};
use super::settings::{INSTALLATION_LABEL, ORPHAN_MIN_AGE, WORKER_LABEL};
use super::SandboxError;

impl DockerSandbox {
    /// Keeps every pool full until `shutdown`, then removes what waits in them.
    pub async fn run_pools(&self, shutdown: CancellationToken) {
        self.inner
            .pools
            .keep_full(
                shutdown,
                |language, limits| self.start(language, limits, None),
                |started| self.dispose(started.handle, Removal::PoolDrained),
            )
            .await;
    }

    /// Removes this installation's sandbox containers that no live execution owns: this
    /// worker's that it does not know (left by an earlier run under the same id), and, when
    /// the fleet is known, those of workers not in `live_workers` (dead ones). Young containers
    /// are spared, since their owner may be creating them, except this worker's own at
    /// `start_up`, when it is creating none.
    pub async fn remove_orphans(
        &self,
        live_workers: Option<&HashSet<String>>,
        start_up: bool,
    ) -> Result<usize, SandboxError> {
        let settings = &self.inner.settings;
        let listing = self
            .inner
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_owned(),
                    vec![
                        WORKER_LABEL.to_owned(),
                        format!("{INSTALLATION_LABEL}={}", settings.installation),
                    ],
                )])),
                ..Default::default()
            }));
        let containers = tokio::time::timeout(DOCKER_CALL_TIMEOUT, listing)
            .await
            .map_err(|_| SandboxError::NoAnswer { operation: "list" })?
            .map_err(docker_error("list"))?;
        let now = Utc::now().timestamp();
        let own = &self.inner.settings.worker_id;
        let mut orphans = Vec::new();
        for container in containers {
            let (Some(id), Some(owner)) = (
                container.id,
                container
                    .labels
                    .and_then(|mut labels| labels.remove(WORKER_LABEL)),
            ) else {
                continue;
            };
            let young = now - container.created.unwrap_or(now) < ORPHAN_MIN_AGE.as_secs() as i64;
            let orphaned = if &owner == own {
                !self.live().contains(&id) && (start_up || !young)
            } else {
                live_workers.is_some_and(|live| !live.contains(&owner)) && !young
            };
            if orphaned {
                orphans.push(id);
            }
        }
        for id in &orphans {
            self.remove(id, Removal::Orphan).await;
        }
        SandboxMetrics::add(&self.inner.metrics.orphans_removed, orphans.len() as u64);
        Ok(orphans.len())
    }
}
