//! What every sandbox of a worker shares: its settings and the labels that mark its containers.

use std::collections::HashMap;

use voidrunner_shared::Language;

use super::ContainerLimits;

/// Label on every sandbox container; its value is the id of the worker that owns it.
pub const WORKER_LABEL: &str = "io.voidrunner.worker";
/// Label with the execution a sandbox was created for (absent on warm-pool containers).
pub const EXECUTION_LABEL: &str = "io.voidrunner.execution";
/// Label with the installation (subject prefix) a sandbox belongs to: housekeeping never
/// touches another installation's sandboxes on a shared Docker engine.
pub const INSTALLATION_LABEL: &str = "io.voidrunner.installation";
/// Label with the language of a warm-pool container.
pub const POOL_LABEL: &str = "io.voidrunner.pool";
/// Sandboxes younger than this are never taken for orphans: their owner may not have recorded
/// them yet.
pub(super) const ORPHAN_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);
/// Programs run as `nobody`, never as root.
pub(super) const SANDBOX_UID: u32 = 65534;
/// Files a sandboxed process may hold open.
pub(super) const MAX_OPEN_FILES: u64 = 256;
/// The environment of every sandbox, over its image's own (a language's variables, such as
/// Go's `GOCACHE`, come from its image: the catalog's `env`).
pub(super) const SANDBOX_ENV: &[&str] = &[
    "HOME=/tmp",
    "PATH=/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "LANG=C.UTF-8",
];

/// Where the native backend finds what it needs on its host.
#[derive(Debug, Clone)]
pub struct NativeSettings {
    /// The OCI runtime it drives (crun).
    pub runtime: std::path::PathBuf,
    /// Unpacked images: `<dir>/<image>/current` names the version in use, whose `rootfs`
    /// directory is the root filesystem and whose `env` file the image's environment.
    pub rootfs_dir: std::path::PathBuf,
    /// The runtime's state and the sandboxes' bundles (a tmpfs such as /run: nothing there
    /// outlives a reboot, as no sandbox does).
    pub state_dir: std::path::PathBuf,
    /// The cgroup under which each sandbox gets its own.
    pub cgroup_parent: String,
}

impl Default for NativeSettings {
    fn default() -> Self {
        NativeSettings {
            runtime: "crun".into(),
            rootfs_dir: "/var/lib/voidrunner/rootfs".into(),
            state_dir: "/run/voidrunner".into(),
            cgroup_parent: "voidrunner".into(),
        }
    }
}

/// What every sandbox of this worker shares.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub worker_id: String,
    /// The installation's subject prefix.
    pub installation: String,
    pub images: HashMap<Language, String>,
    pub pool_sizes: HashMap<Language, usize>,
    pub pids: i64,
    pub tmpfs_bytes: u64,
    /// A seccomp profile (JSON) to use instead of Docker's default.
    pub seccomp_profile: Option<String>,
    /// The Docker network of sandboxes whose task asked for network; None: never.
    pub network: Option<String>,
    /// The container limits of each language's warm-pool sandboxes: an execution that asked
    /// for nothing gets these, and so takes a pooled sandbox.
    pub pool_limits: HashMap<Language, ContainerLimits>,
    /// The native backend's host paths (unused by the others).
    pub native: NativeSettings,
}
