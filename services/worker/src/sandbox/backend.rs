//! What the runner needs from a sandbox, whichever kind runs the executions: the Docker engine
//! (`docker.rs`), an OCI runtime driven without a daemon (`native/`), or nothing at all for load
//! tests of the control plane (`instant.rs`). The runner, the fleet view and housekeeping see
//! only this trait.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voidrunner_shared::events::SandboxBackendKind;
use voidrunner_shared::Language;

use super::{
    ContainerLimits, Interruptions, OutputChunk, Program, RunLimits, RunReport, SandboxError,
    SandboxMetrics,
};

/// A sandbox backend, shared by every execution of a worker.
pub type Sandbox = Arc<dyn SandboxBackend>;

pub trait SandboxBackend: Send + Sync {
    /// Which kind it is, as the heartbeat and `/workers` say.
    fn kind(&self) -> SandboxBackendKind;

    /// Counters since it started.
    fn metrics(&self) -> &SandboxMetrics;

    /// Sandboxes prepared ahead and ready right now, per language.
    fn pool_levels(&self) -> HashMap<Language, usize>;

    /// Whether it can run `language` here (e.g. its image is present).
    fn has_language(&self, language: Language) -> BoxFuture<'_, bool>;

    /// Runs `program` in a sandbox of its own (prepared ahead or made for it): feeds it its
    /// input, streams its output to `output`, enforces `run`'s limits and `interruptions`, and
    /// cleans the sandbox up whatever happens.
    fn run<'a>(
        &'a self,
        execution_id: &'a str,
        program: &'a Program,
        container: ContainerLimits,
        run: RunLimits,
        output: Option<mpsc::Sender<OutputChunk>>,
        interruptions: Interruptions<'a>,
    ) -> BoxFuture<'a, Result<RunReport, SandboxError>>;

    /// Keeps sandboxes prepared ahead until `shutdown`, then cleans them up.
    fn keep_warm(&self, shutdown: CancellationToken) -> BoxFuture<'_, ()>;

    /// Cleans up sandboxes no live execution owns: this worker's own leftovers and those of
    /// workers no longer in `live_workers`. Returns how many.
    fn remove_orphans<'a>(
        &'a self,
        live_workers: Option<&'a HashSet<String>>,
        start_up: bool,
    ) -> BoxFuture<'a, Result<usize, SandboxError>>;

    /// Waits until the clean-ups in flight are done (before the worker exits).
    fn wait_for_removals(&self) -> BoxFuture<'_, ()>;
}
