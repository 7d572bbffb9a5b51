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
}
