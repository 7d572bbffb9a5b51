//! Running one program in a sandbox: a hardened, single-use container on the Docker engine
//! (`docker.rs`), the same without a daemon (`native/`), or, for load tests, nothing at all
//! (`instant.rs`), behind one trait (`backend.rs`).

mod backend;
mod collect;
mod container;
mod docker;
mod housekeeping;
mod instant;
mod metrics;
mod native;
mod pool;
mod program;
mod settings;

pub use backend::{Sandbox, SandboxBackend};
pub use docker::{DockerSandbox, SandboxError};
pub use instant::{InstantSandbox, NO_CODE_RAN};
pub use metrics::{MetricsSnapshot, SandboxMetrics};
pub use native::{NativeSandbox, DEFAULT_SECCOMP_PROFILE};
pub use program::{
    bootstrap_command, ending, strip_markers, Ending, Program, StartedFor, BOOTSTRAP_FAILED_EXIT,
    COMPILE_FAILED_EXIT,
};
pub use settings::{
    NativeSettings, SandboxSettings, EXECUTION_LABEL, INSTALLATION_LABEL, POOL_LABEL, WORKER_LABEL,
};

use std::time::Duration;

use chrono::{DateTime, Utc};
use voidrunner_shared::events::StreamName;

/// The container properties of a sandbox; sandboxes with equal ones are interchangeable, which
/// is what lets a warm one stand in for a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContainerLimits {
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    /// Run on the deployment's sandbox network instead of none.
    pub network: bool,
}

impl ContainerLimits {
    /// The container side of an execution's effective limits.
    pub fn of(limits: &voidrunner_shared::config::EffectiveLimits, network: bool) -> Self {
        ContainerLimits {
            memory_bytes: i64::from(limits.memory_mb) << 20,
            nano_cpus: i64::from(limits.cpu_millis) * 1_000_000,
            network,
        }
    }
}

/// What the worker enforces on one run, from outside the container.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub output_bytes: usize,
    pub timeout: Duration,
}

/// What may end a run early from outside the sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Interruptions<'a> {
    /// The worker is stopping.
    pub shutdown: &'a tokio_util::sync::CancellationToken,
    /// Someone asked to cancel this execution.
    pub cancel: &'a tokio_util::sync::CancellationToken,
}

/// How a program run ended, as observed from outside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The sandbox exited on its own (or the kernel killed the program) with this code.
    Exited { code: i64, oom_killed: bool },
    /// The worker killed it at its wall-clock limit.
    TimedOut,
    /// The worker killed it for writing more than the output cap.
    OutputFlood,
    /// The worker is shutting down and killed it; the execution will run again elsewhere.
    Stopped,
    /// Its cancellation was requested and the worker killed it.
    Cancelled,
}

/// Which output streams went past the cap and lost the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Truncated {
    pub stdout: bool,
    pub stderr: bool,
}

impl Truncated {
    pub fn any(self) -> bool {
        self.stdout || self.stderr
    }
}

/// Everything the worker learned from one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: Truncated,
    pub peak_memory_bytes: Option<u64>,
    /// Whether a warm container ran it (false: one was created for it).
    pub warm: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Said in the result's `error` when the run itself reports none (the instant backend's
    /// "no code ran").
    pub note: Option<&'static str>,
}

/// A piece of output as it streams, for live events.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub stream: StreamName,
    pub bytes: bytes::Bytes,
}
