//! Removing what a native sandbox leaves: its bundle, the runtime's state, its cgroups, and
//! the sandboxes of workers that died.

use std::collections::HashSet;
use std::path::Path;

use voidrunner_shared::metrics as names;

use super::super::metrics::{Removal, SandboxMetrics};
use super::super::settings::ORPHAN_MIN_AGE;
use super::super::SandboxError;
use super::{bundles_dir, NativeSandbox};

impl NativeSandbox {
    /// Deletes a sandbox's bundle and, with `runtime`, what the runtime keeps of it (its state,
    /// cgroup and any process left).
    pub(super) async fn remove(&self, id: &str, reason: Removal, runtime: bool) {
        if runtime {
            // Fails harmlessly for a sandbox the runtime already deleted.
            self.runtime_call(&["delete", "--force", id]).await;
            self.remove_cgroups(id).await;
            // While the runtime still knows it, the bundle stays: the next sweep tries again.
            let state = super::crun_root(&self.inner.settings).join(id);
            if tokio::fs::try_exists(&state).await.unwrap_or(false) {
                tracing::warn!(
                    sandbox = id,
                    "the runtime could not delete the sandbox; trying again later"
                );
                return;
            }
        }
        let bundle = bundles_dir(&self.inner.settings).join(id);
        match tokio::fs::remove_dir_all(&bundle).await {
            Ok(()) => {
                SandboxMetrics::add(&self.inner.metrics.containers_removed, 1);
                metrics::counter!(names::CONTAINERS_REMOVED, "reason" => reason.as_str())
                    .increment(1);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(sandbox = id, error = %error, "removing the sandbox's bundle failed")
            }
        }
    }

    /// Removes a dead sandbox's cgroups the runtime left (crun 1.8 may leave one of a cgroup v1
    /// hierarchy behind when it deletes a sandbox whose runtime process was killed). Only empty
    /// cgroups can go: a process still in one keeps it, and says so.
    async fn remove_cgroups(&self, id: &str) {
        let relative = Path::new(&self.inner.settings.native.cgroup_parent).join(id);
        let root = Path::new("/sys/fs/cgroup");
        let mut candidates = vec![root.join(&relative)];
        if let Ok(mut hierarchies) = tokio::fs::read_dir(root).await {
            while let Ok(Some(hierarchy)) = hierarchies.next_entry().await {
                candidates.push(hierarchy.path().join(&relative));
            }
        }
        for cgroup in candidates {
            match tokio::fs::remove_dir(&cgroup).await {
                Ok(()) => {
                    tracing::debug!(cgroup = %cgroup.display(), "removed a cgroup the runtime left")
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) if error.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(error) => {
                    tracing::warn!(cgroup = %cgroup.display(), error = %error, "cannot remove a sandbox's cgroup")
                }
            }
        }
    }

    /// Removes this installation's sandboxes that no live execution owns: this worker's that it
    /// does not know, and, when the fleet is known, those of workers not in `live_workers`.
    /// Young ones are spared, except this worker's own at `start_up`.
    pub(super) async fn remove_orphans(
        &self,
        live_workers: Option<&HashSet<String>>,
        start_up: bool,
    ) -> Result<usize, SandboxError> {
        let settings = &self.inner.settings;
        // Every sandbox has a bundle from before its runtime state until after it: the bundles
        // are the list.
        let mut entries = match tokio::fs::read_dir(bundles_dir(settings)).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        let mut orphans = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let id = entry.file_name().to_string_lossy().into_owned();
            let mut parts = id.splitn(3, '.');
            let (Some(installation), Some(owner), Some(_)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if installation != settings.installation {
                continue;
            }
            let young = entry
                .metadata()
                .await
                .ok()
                .and_then(|meta| meta.modified().ok())
                .and_then(|modified| modified.elapsed().ok())
                .is_none_or(|age| age < ORPHAN_MIN_AGE);
            let orphaned = if owner == settings.worker_id {
                !self.live().contains(&id) && (start_up || !young)
            } else {
                live_workers.is_some_and(|live| !live.contains(owner)) && !young
            };
            if orphaned {
                orphans.push(id);
            }
        }
        for id in &orphans {
            self.remove(id, Removal::Orphan, true).await;
        }
        SandboxMetrics::add(&self.inner.metrics.orphans_removed, orphans.len() as u64);
        Ok(orphans.len())
    }
}
