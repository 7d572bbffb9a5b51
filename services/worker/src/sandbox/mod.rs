//! Running one program in a hardened, single-use container.

mod docker;
mod program;

pub use docker::{DockerSandbox, SandboxError, EXECUTION_LABEL, WORKER_LABEL};
pub use program::{bootstrap_command, Program};

use std::time::Duration;

use chrono::{DateTime, Utc};
use voidrunner_shared::events::StreamName;

/// Limits applied to one sandbox.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids: i64,
    pub tmpfs_bytes: u64,
    pub output_bytes: usize,
    pub timeout: Duration,
}

/// How a program run ended, as observed from outside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The program exited on its own (or was killed by the kernel) with this code.
    Exited { code: i64, oom_killed: bool },
    /// The worker killed it at its wall-clock limit.
    TimedOut,
    /// The worker killed it for writing more than the output cap.
    OutputFlood,
    /// The worker is shutting down and killed it; the execution will run again elsewhere.
    Stopped,
}

/// Everything the worker learned from one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// A piece of output as it streams, for live events.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub stream: StreamName,
    pub bytes: bytes::Bytes,
}
