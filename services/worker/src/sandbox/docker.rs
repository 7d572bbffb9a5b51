//! The Docker sandbox runtime, through bollard.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::WaitContainerOptions;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, RemoveContainerOptions,
    StartContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use voidrunner_shared::events::StreamName;
use voidrunner_shared::metrics as names;
use voidrunner_shared::Language;

use super::collect::{collect, End};
use super::container;
use super::metrics::{record_start, Removal, SandboxMetrics};
use super::pool::{Pools, Started};
use super::settings::SandboxSettings;
use super::{ContainerLimits, Exit, Interruptions, OutputChunk, Program, RunLimits, RunReport};

pub(super) const DOCKER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("docker is unreachable")]
    Unreachable(#[source] bollard::errors::Error),
    /// Docker did not answer in time, or dropped what it was reporting.
    #[error("docker {operation} did not answer")]
    NoAnswer { operation: &'static str },
    #[error("image {image} is not available on this worker: build it with `scripts/build-images.sh` or pull it")]
    ImageMissing { image: String },
    #[error("docker {operation} failed")]
    Docker {
        operation: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("preparing the sandbox: {0}")]
    Program(#[from] std::io::Error),
    /// The host cannot run this backend's sandboxes as configured.
    #[error("{0}")]
    Setup(String),
    /// A sandbox started for the warm pool did not report itself ready.
    #[error("the warm sandbox did not become ready: {0}")]
    NotReady(String),
    /// The OCI runtime of the native backend failed.
    #[error("the sandbox runtime failed to {operation}: {message}")]
    Runtime {
        operation: &'static str,
        message: String,
    },
}

/// Awaits a Docker call for at most `DOCKER_CALL_TIMEOUT`.
pub(super) async fn bounded<T>(
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, SandboxError> {
    tokio::time::timeout(DOCKER_CALL_TIMEOUT, call)
        .await
        .map_err(|_| SandboxError::NoAnswer { operation })?
        .map_err(docker_error(operation))
}

pub(super) fn docker_error(
    operation: &'static str,
) -> impl Fn(bollard::errors::Error) -> SandboxError {
    move |source| SandboxError::Docker { operation, source }
}

/// Runs programs in fresh containers, one per execution, never reused.
#[derive(Clone)]
pub struct DockerSandbox {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) docker: Docker,
    pub(super) settings: SandboxSettings,
    /// Warm containers, known by their ids.
    pub(super) pools: Pools<Started<String>>,
    /// Containers this worker owns right now (running, or waiting in a pool).
    live: Mutex<HashSet<String>>,
    pub(super) metrics: SandboxMetrics,
    /// Removals run beside the result; shutdown waits for them.
    removals: TaskTracker,
}

impl DockerSandbox {
    /// Connects to the local Docker engine (or `DOCKER_HOST`) and negotiates the API version.
    pub async fn connect(settings: SandboxSettings) -> Result<Self, SandboxError> {
        let docker = Docker::connect_with_defaults().map_err(SandboxError::Unreachable)?;
        let docker = bounded("version negotiation", docker.negotiate_version()).await?;
        bounded("ping", docker.ping()).await?;
        let pools = Pools::new(&settings.pool_sizes, &settings.pool_limits);
        Ok(DockerSandbox {
            inner: Arc::new(Inner {
                docker,
                settings,
                pools,
                live: Mutex::new(HashSet::new()),
                metrics: SandboxMetrics::default(),
                removals: TaskTracker::new(),
            }),
        })
    }

    pub fn metrics(&self) -> &SandboxMetrics {
        &self.inner.metrics
    }

    pub fn image(&self, language: Language) -> &str {
        self.inner
            .settings
            .images
            .get(&language)
            .map_or("", String::as_str)
    }

    /// Whether `image` is present locally.
    pub async fn has_image(&self, image: &str) -> bool {
        bounded("image inspect", self.inner.docker.inspect_image(image))
            .await
            .is_ok()
    }

    /// Warm containers ready right now, per language.
    pub fn pool_levels(&self) -> HashMap<Language, usize> {
        self.inner.pools.levels()
    }

    /// Runs `program` in a sandbox and removes the sandbox, whatever happens.
    pub async fn run(
        &self,
        execution_id: &str,
        program: &Program,
        container: ContainerLimits,
        run: RunLimits,
        output: Option<mpsc::Sender<OutputChunk>>,
        interruptions: Interruptions<'_>,
    ) -> Result<RunReport, SandboxError> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let payload = program.stdin_payload(&nonce)?;
        let language = program.language;
        let getting_ready = std::time::Instant::now();
        let warm = self
            .inner
            .pools
            .take(language, container, &self.inner.metrics);
        let was_warm = warm.is_some();
        let started = match warm {
            Some(started) => started,
            None => self.start(language, container, Some(execution_id)).await?,
        };
        record_start(language, was_warm, getting_ready);
        let (id, collected) = collect(started, payload, &nonce, run, output, interruptions).await;
        let exit = match &collected.end {
            End::Early(reason) => {
                self.kill(&id).await;
                Ok(reason.clone())
            }
            // The program ended and all its output is here; the container goes in the background.
            End::Reported(ending) => Ok(ending.exit()),
            End::Closed => self.exit_status(&id).await,
        };
        self.dispose(id, Removal::Used);
        Ok(collected.report(exit?, was_warm))
    }

    /// Creates, attaches and starts a container that waits in its bootstrap for a program.
    pub(super) async fn start(
        &self,
        language: Language,
        limits: ContainerLimits,
        execution_id: Option<&str>,
    ) -> Result<Started<String>, SandboxError> {
        let image = self.image(language).to_owned();
        let config =
            container::config(&self.inner.settings, &image, language, limits, execution_id);
        let created = tokio::time::timeout(
            DOCKER_CALL_TIMEOUT,
            self.inner
                .docker
                .create_container(None::<CreateContainerOptions>, config),
        )
        .await
        .map_err(|_| SandboxError::NoAnswer {
            operation: "create",
        })?;
        let id = match created {
            Ok(response) => response.id,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Err(SandboxError::ImageMissing { image }),
            Err(error) => return Err(docker_error("create")(error)),
        };
        SandboxMetrics::add(&self.inner.metrics.containers_created, 1);
        self.live().insert(id.clone());
        match self.attach_and_start(&id).await {
            Ok(started) => Ok(started),
            Err(error) => {
                self.dispose(id, Removal::FailedStart);
                Err(error)
            }
        }
    }

    async fn attach_and_start(&self, id: &str) -> Result<Started<String>, SandboxError> {
        // Attached before it starts, so not a byte of output is missed.
        let attached = bounded(
            "attach",
            self.inner.docker.attach_container(
                id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            ),
        )
        .await?;
        bounded(
            "start",
            self.inner
                .docker
                .start_container(id, None::<StartContainerOptions>),
        )
        .await?;
        let output = attached.output.filter_map(|log| {
            std::future::ready(match log {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(Ok((StreamName::Stdout, message)))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok((StreamName::Stderr, message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(error) => Some(Err(error.to_string())),
            })
        });
        Ok(Started {
            handle: id.to_owned(),
            output: Box::pin(output),
            input: attached.input,
        })
    }

    /// The exit code of a container whose output has ended, and whether the kernel OOM-killed
    /// a process in it.
    async fn exit_status(&self, id: &str) -> Result<Exit, SandboxError> {
        let mut waits = self
            .inner
            .docker
            .wait_container(id, None::<WaitContainerOptions>);
        let code = match tokio::time::timeout(DOCKER_CALL_TIMEOUT, waits.next()).await {
            Ok(Some(Ok(response))) => response.status_code,
            // bollard reports a non-zero exit as an error that carries the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
            Ok(Some(Err(error))) => return Err(docker_error("wait")(error)),
            Ok(None) | Err(_) => {
                self.kill(id).await;
                return Err(SandboxError::NoAnswer { operation: "wait" });
            }
        };
        // Only a SIGKILL (137) can be the OOM killer's; skip the inspect round trip otherwise.
        let oom_killed = code == 137
            && bounded("inspect", self.inner.docker.inspect_container(id, None))
                .await
                .ok()
                .and_then(|info| info.state)
                .and_then(|state| state.oom_killed)
                .unwrap_or(false);
        Ok(Exit::Exited { code, oom_killed })
    }

    pub(super) async fn kill(&self, id: &str) {
        let kill = self.inner.docker.kill_container(
            id,
            Some(KillContainerOptions {
                signal: "SIGKILL".to_owned(),
            }),
        );
        match tokio::time::timeout(DOCKER_CALL_TIMEOUT, kill).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(container = id, error = %error, "kill failed (it may have exited)")
            }
            Err(_) => tracing::warn!(container = id, "kill timed out; removal will force it"),
        }
    }

    /// Removes a container in the background; `shutdown` waits for every removal.
    pub(super) fn dispose(&self, id: String, reason: Removal) {
        let sandbox = self.clone();
        self.inner.removals.spawn(async move {
            sandbox.remove(&id, reason).await;
            sandbox.live().remove(&id);
        });
    }

    pub(super) async fn remove(&self, id: &str, reason: Removal) {
        let removal = self.inner.docker.remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        );
        match tokio::time::timeout(DOCKER_CALL_TIMEOUT, removal).await {
            Ok(Ok(())) => {
                SandboxMetrics::add(&self.inner.metrics.containers_removed, 1);
                metrics::counter!(names::CONTAINERS_REMOVED, "reason" => reason.as_str())
                    .increment(1);
            }
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => {}
            Ok(Err(error)) => {
                tracing::warn!(container = id, error = %error, "removing sandbox failed")
            }
            Err(_) => tracing::warn!(container = id, "removing sandbox timed out"),
        }
    }

    pub(super) fn live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until every container this worker removes is gone.
    pub async fn wait_for_removals(&self) {
        self.inner.removals.close();
        self.inner.removals.wait().await;
        self.inner.removals.reopen();
    }
}

impl super::SandboxBackend for DockerSandbox {
    fn kind(&self) -> voidrunner_shared::events::SandboxBackendKind {
        voidrunner_shared::events::SandboxBackendKind::Docker
    }

    fn metrics(&self) -> &SandboxMetrics {
        DockerSandbox::metrics(self)
    }

    fn pool_levels(&self) -> HashMap<Language, usize> {
        DockerSandbox::pool_levels(self)
    }

    fn has_language(&self, language: Language) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async move { self.has_image(self.image(language)).await })
    }

    fn run<'a>(
        &'a self,
        execution_id: &'a str,
        program: &'a Program,
        container: ContainerLimits,
        run: RunLimits,
        output: Option<mpsc::Sender<OutputChunk>>,
        interruptions: Interruptions<'a>,
    ) -> futures::future::BoxFuture<'a, Result<RunReport, SandboxError>> {
        Box::pin(DockerSandbox::run(
            self,
            execution_id,
            program,
            container,
            run,
            output,
            interruptions,
        ))
    }

    fn keep_warm(&self, shutdown: CancellationToken) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(self.run_pools(shutdown))
    }

    fn remove_orphans<'a>(
        &'a self,
        live_workers: Option<&'a HashSet<String>>,
        start_up: bool,
    ) -> futures::future::BoxFuture<'a, Result<usize, SandboxError>> {
        Box::pin(DockerSandbox::remove_orphans(self, live_workers, start_up))
    }

    fn wait_for_removals(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(DockerSandbox::wait_for_removals(self))
    }
}
