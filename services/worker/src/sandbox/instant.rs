//! The `instant` backend: runs nothing. Each execution is answered at once with exit 0, no
//! output, and an `error` text that says no code ran, so that the control plane (api, database,
//! NATS, recorder) can be load-tested without a container engine in the way. Workers with it
//! say so in their heartbeat, `/workers` and the api's `/ready`.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voidrunner_shared::events::SandboxBackendKind;
use voidrunner_shared::Language;

use super::{
    ContainerLimits, Exit, Interruptions, OutputChunk, Program, RunLimits, RunReport,
    SandboxBackend, SandboxError, SandboxMetrics, Truncated,
};

/// What an instant run's result says instead of an error.
pub const NO_CODE_RAN: &str =
    "instant sandbox backend: no code ran (VOIDRUNNER_SANDBOX_BACKEND=instant is for load tests)";

#[derive(Default)]
pub struct InstantSandbox {
    metrics: SandboxMetrics,
}

impl SandboxBackend for InstantSandbox {
    fn kind(&self) -> SandboxBackendKind {
        SandboxBackendKind::Instant
    }

    fn metrics(&self) -> &SandboxMetrics {
        &self.metrics
    }

    fn pool_levels(&self) -> HashMap<Language, usize> {
        HashMap::new()
    }

    fn has_language(&self, _language: Language) -> BoxFuture<'_, bool> {
        std::future::ready(true).boxed()
    }

    fn run<'a>(
        &'a self,
        _execution_id: &'a str,
        _program: &'a Program,
        _container: ContainerLimits,
        _run: RunLimits,
        _output: Option<mpsc::Sender<OutputChunk>>,
        interruptions: Interruptions<'a>,
    ) -> BoxFuture<'a, Result<RunReport, SandboxError>> {
        let now = Utc::now();
        let exit = if interruptions.cancel.is_cancelled() {
            Exit::Cancelled
        } else {
            Exit::Exited {
                code: 0,
                oom_killed: false,
            }
        };
        std::future::ready(Ok(RunReport {
            exit,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: Truncated::default(),
            peak_memory_bytes: None,
            warm: true,
            started_at: now,
            finished_at: now,
            note: Some(NO_CODE_RAN),
        }))
        .boxed()
    }

    fn keep_warm(&self, shutdown: CancellationToken) -> BoxFuture<'_, ()> {
        async move { shutdown.cancelled().await }.boxed()
    }

    fn remove_orphans<'a>(
        &'a self,
        _live_workers: Option<&'a HashSet<String>>,
        _start_up: bool,
    ) -> BoxFuture<'a, Result<usize, SandboxError>> {
        std::future::ready(Ok(0)).boxed()
    }

    fn wait_for_removals(&self) -> BoxFuture<'_, ()> {
        std::future::ready(()).boxed()
    }
}
