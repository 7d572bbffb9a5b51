//! The Docker sandbox runtime, through bollard.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::{
    AttachContainerOptions, Config, CreateContainerOptions, KillContainerOptions,
    ListContainersOptions, LogOutput, RemoveContainerOptions, StartContainerOptions,
    WaitContainerOptions,
};
use bollard::models::{HostConfig, ResourcesUlimits};
use bollard::Docker;
use chrono::Utc;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use voidrunner_shared::events::StreamName;
use voidrunner_shared::Language;

use super::metrics::SandboxMetrics;
use super::pool::Pool;
use super::program::{bootstrap_command, ending, strip_markers, MARKER_ROOM};
use super::{ContainerLimits, Exit, OutputChunk, Program, RunLimits, RunReport};

/// Label on every sandbox container; its value is the id of the worker that owns it.
pub const WORKER_LABEL: &str = "io.voidrunner.worker";
/// Label with the execution a sandbox was created for (absent on warm-pool containers).
pub const EXECUTION_LABEL: &str = "io.voidrunner.execution";
/// Label with the installation (subject prefix) a sandbox belongs to: housekeeping never
/// touches another installation's sandboxes on a shared Docker engine.
pub const INSTALLATION_LABEL: &str = "io.voidrunner.installation";
/// Label with the language of a warm-pool container.
pub const POOL_LABEL: &str = "io.voidrunner.pool";
const SANDBOX_USER: &str = "65534:65534";
const DOCKER_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_OPEN_FILES: i64 = 256;
/// Containers younger than this are never taken for orphans: their owner may not have
/// recorded them yet.
const ORPHAN_MIN_AGE_SECONDS: i64 = 60;
const REFILL_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("docker is unreachable: {0}")]
    Unreachable(String),
    #[error("image {image} is not available on this worker: build it with `scripts/build-images.sh` or pull it")]
    ImageMissing { image: String },
    #[error("docker {operation} failed: {message}")]
    Docker {
        operation: &'static str,
        message: String,
    },
    #[error("preparing the program: {0}")]
    Program(#[from] std::io::Error),
}

/// Awaits a Docker call for at most `DOCKER_CALL_TIMEOUT`.
async fn bounded<T>(
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, SandboxError> {
    tokio::time::timeout(DOCKER_CALL_TIMEOUT, call)
        .await
        .map_err(|_| SandboxError::Unreachable(format!("docker {operation} timed out")))?
        .map_err(docker_error(operation))
}

fn docker_error(operation: &'static str) -> impl Fn(bollard::errors::Error) -> SandboxError {
    move |error| SandboxError::Docker {
        operation,
        message: error.to_string(),
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
    /// The container limits of warm-pool sandboxes: the defaults.
    pub pool_limits: ContainerLimits,
}

/// A started container blocked in its bootstrap, with its attached streams.
pub(super) struct Started {
    id: String,
    output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// Runs programs in fresh containers, one per execution, never reused.
#[derive(Clone)]
pub struct DockerSandbox {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    settings: SandboxSettings,
    pools: HashMap<Language, Pool>,
    /// Containers this worker owns right now (running, or waiting in a pool).
    live: Mutex<HashSet<String>>,
    metrics: SandboxMetrics,
    /// Removals run beside the result; shutdown waits for them.
    removals: TaskTracker,
}

impl DockerSandbox {
    /// Connects to the local Docker engine (or `DOCKER_HOST`) and negotiates the API version.
    pub async fn connect(settings: SandboxSettings) -> Result<Self, SandboxError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| SandboxError::Unreachable(e.to_string()))?;
        let docker = bounded("version negotiation", docker.negotiate_version()).await?;
        bounded("ping", docker.ping()).await?;
        let pools = settings
            .pool_sizes
            .iter()
            .filter(|(_, size)| **size > 0)
            .map(|(language, size)| (*language, Pool::new(*size)))
            .collect();
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
        self.inner
            .pools
            .iter()
            .map(|(language, pool)| (*language, pool.len()))
            .collect()
    }

    /// Runs `program` in a sandbox and removes the sandbox, whatever happens.
    pub async fn run(
        &self,
        execution_id: &str,
        program: &Program,
        container: ContainerLimits,
        run: RunLimits,
        output: Option<mpsc::Sender<OutputChunk>>,
        stop: &CancellationToken,
    ) -> Result<RunReport, SandboxError> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let payload = program.stdin_payload(&nonce)?;
        let language = program.language;
        let pool = self.inner.pools.get(&language);
        let warm = match pool {
            Some(pool) if container == self.inner.settings.pool_limits => pool.take(),
            _ => None,
        };
        let (started, was_warm) = match warm {
            Some(started) => {
                SandboxMetrics::add(&self.inner.metrics.warm_hits, 1);
                (started, true)
            }
            None => {
                SandboxMetrics::add(&self.inner.metrics.cold_starts, 1);
                if pool.is_some() && container == self.inner.settings.pool_limits {
                    SandboxMetrics::add(&self.inner.metrics.pool_empty, 1);
                    tracing::debug!(%language, "warm pool empty; starting a fresh sandbox");
                }
                let started = self.start(language, container, Some(execution_id)).await?;
                (started, false)
            }
        };
        let id = started.id.clone();
        let report = self
            .collect(started, payload, &nonce, run, output, stop)
            .await;
        self.dispose(id);
        report.map(|report| RunReport {
            warm: was_warm,
            ..report
        })
    }

    /// Creates, attaches and starts a container that waits in its bootstrap for a program.
    async fn start(
        &self,
        language: Language,
        limits: ContainerLimits,
        execution_id: Option<&str>,
    ) -> Result<Started, SandboxError> {
        let image = self.image(language).to_owned();
        let settings = &self.inner.settings;
        let network_mode = match (&settings.network, limits.network) {
            (Some(network), true) => network.clone(),
            _ => "none".to_owned(),
        };
        let mut security_opt = vec!["no-new-privileges".to_owned()];
        if let Some(profile) = &settings.seccomp_profile {
            security_opt.push(format!("seccomp={profile}"));
        }
        let host_config = HostConfig {
            network_mode: Some(network_mode.clone()),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                format!(
                    "rw,exec,nosuid,nodev,size={},mode=1777",
                    settings.tmpfs_bytes
                ),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(security_opt),
            memory: Some(limits.memory_bytes),
            memory_swap: Some(limits.memory_bytes),
            nano_cpus: Some(limits.nano_cpus),
            pids_limit: Some(settings.pids),
            ulimits: Some(vec![
                ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(MAX_OPEN_FILES),
                    hard: Some(MAX_OPEN_FILES),
                },
                ResourcesUlimits {
                    name: Some("fsize".into()),
                    soft: Some(settings.tmpfs_bytes as i64),
                    hard: Some(settings.tmpfs_bytes as i64),
                },
            ]),
            init: Some(true),
            ..Default::default()
        };
        let mut labels = HashMap::from([
            (WORKER_LABEL.to_owned(), settings.worker_id.clone()),
            (INSTALLATION_LABEL.to_owned(), settings.installation.clone()),
        ]);
        match execution_id {
            Some(execution_id) => {
                labels.insert(EXECUTION_LABEL.to_owned(), execution_id.to_owned())
            }
            None => labels.insert(POOL_LABEL.to_owned(), language.to_string()),
        };
        let config = Config {
            image: Some(image.clone()),
            cmd: Some(bootstrap_command(language)),
            user: Some(SANDBOX_USER.into()),
            working_dir: Some("/tmp".into()),
            env: Some(vec![
                "HOME=/tmp".into(),
                "PATH=/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin".into(),
                "PYTHONDONTWRITEBYTECODE=1".into(),
                "LANG=C.UTF-8".into(),
                "GOCACHE=/tmp/.cache/go-build".into(),
                "GOPATH=/tmp/go".into(),
                "CGO_ENABLED=0".into(),
            ]),
            labels: Some(labels),
            network_disabled: Some(network_mode == "none"),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = tokio::time::timeout(
            DOCKER_CALL_TIMEOUT,
            self.inner
                .docker
                .create_container(None::<CreateContainerOptions<String>>, config),
        )
        .await
        .map_err(|_| SandboxError::Unreachable("container create timed out".into()))?;
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
                self.dispose(id);
                Err(error)
            }
        }
    }

    async fn attach_and_start(&self, id: &str) -> Result<Started, SandboxError> {
        // Attached before it starts, so not a byte of output is missed.
        let attached = bounded(
            "attach",
            self.inner.docker.attach_container(
                id,
                Some(AttachContainerOptions::<String> {
                    stdin: Some(true),
                    stdout: Some(true),
                    stderr: Some(true),
                    stream: Some(true),
                    logs: Some(false),
                    detach_keys: None,
                }),
            ),
        )
        .await?;
        bounded(
            "start",
            self.inner
                .docker
                .start_container(id, None::<StartContainerOptions<String>>),
        )
        .await?;
        Ok(Started {
            id: id.to_owned(),
            output: attached.output,
            input: attached.input,
        })
    }

    /// Feeds the program to a started sandbox and collects what it does until it ends.
    async fn collect(
        &self,
        started: Started,
        payload: Vec<u8>,
        nonce: &str,
        limits: RunLimits,
        output: Option<mpsc::Sender<OutputChunk>>,
        stop: &CancellationToken,
    ) -> Result<RunReport, SandboxError> {
        let Started {
            id,
            output: mut stream,
            mut input,
        } = started;
        let started_at = Utc::now();
        // Feeding stdin runs beside the output loop: a program may fill its pipes before reading.
        let feeder = tokio::spawn(async move {
            let _ = input.write_all(&payload).await;
            let _ = input.shutdown().await;
        });

        let mut capture = Capture::new(limits.output_bytes);
        let deadline = tokio::time::sleep(limits.timeout);
        tokio::pin!(deadline);
        let end = loop {
            tokio::select! {
                _ = &mut deadline => break End::Early(Exit::TimedOut),
                _ = stop.cancelled() => break End::Early(Exit::Stopped),
                next = stream.next() => match next {
                    None => break End::Closed,
                    Some(Err(error)) => {
                        tracing::warn!(container = %id, error = %error, "output stream broke");
                        break End::Closed;
                    }
                    Some(Ok(log)) => {
                        let (name, bytes) = match log {
                            LogOutput::StdOut { message } | LogOutput::Console { message } => (StreamName::Stdout, message),
                            LogOutput::StdErr { message } => (StreamName::Stderr, message),
                            LogOutput::StdIn { .. } => continue,
                        };
                        if let Some(output) = &output {
                            // Live events are best effort; the result carries the full output.
                            let _ = output.try_send(OutputChunk { stream: name, bytes: bytes.clone() });
                        }
                        if capture.push(name, &bytes) {
                            break End::Early(Exit::OutputFlood);
                        }
                        // A SIGKILL may be the OOM killer's: only the container's state tells,
                        // so that case waits for the container to stop.
                        if bytes.ends_with(b"\n") {
                            match ending(&capture.stdout, &capture.stderr, nonce) {
                                Some(ending) if ending.exit_code != 137 => break End::Reported(ending.exit_code),
                                _ => {}
                            }
                        }
                    }
                },
            }
        };
        feeder.abort();
        // Hang up before anything else: dockerd does not finish stopping a container while its
        // output waits to be read by an attached client that no longer reads.
        drop(stream);

        let exit = match end {
            End::Early(reason) => {
                self.kill(&id).await;
                reason
            }
            // The program ended and all its output is here; the container goes in the background.
            End::Reported(code) => Exit::Exited {
                code,
                oom_killed: false,
            },
            End::Closed => self.exit_status(&id).await?,
        };
        let finished_at = Utc::now();
        let reported = strip_markers(&mut capture.stdout, &mut capture.stderr, nonce);
        let truncated = capture.finish();
        Ok(RunReport {
            exit,
            truncated,
            stdout: capture.stdout,
            stderr: capture.stderr,
            peak_memory_bytes: reported.and_then(|ending| ending.peak_memory_bytes),
            warm: false,
            started_at,
            finished_at,
        })
    }

    /// The exit code of a container whose output has ended, and whether the kernel OOM-killed
    /// a process in it.
    async fn exit_status(&self, id: &str) -> Result<Exit, SandboxError> {
        let mut waits = self
            .inner
            .docker
            .wait_container(id, None::<WaitContainerOptions<String>>);
        let code = match tokio::time::timeout(DOCKER_CALL_TIMEOUT, waits.next()).await {
            Ok(Some(Ok(response))) => response.status_code,
            // bollard reports a non-zero exit as an error that carries the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
            Ok(Some(Err(error))) => return Err(docker_error("wait")(error)),
            Ok(None) | Err(_) => {
                self.kill(id).await;
                return Err(SandboxError::Unreachable(
                    "the container's exit was not reported".into(),
                ));
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

    async fn kill(&self, id: &str) {
        let kill = self
            .inner
            .docker
            .kill_container(id, Some(KillContainerOptions { signal: "SIGKILL" }));
        match tokio::time::timeout(DOCKER_CALL_TIMEOUT, kill).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(container = id, error = %error, "kill failed (it may have exited)")
            }
            Err(_) => tracing::warn!(container = id, "kill timed out; removal will force it"),
        }
    }

    /// Removes a container in the background; `shutdown` waits for every removal.
    fn dispose(&self, id: String) {
        let sandbox = self.clone();
        self.inner.removals.spawn(async move {
            sandbox.remove(&id).await;
            sandbox.live().remove(&id);
        });
    }

    async fn remove(&self, id: &str) {
        let removal = self.inner.docker.remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        );
        match tokio::time::timeout(DOCKER_CALL_TIMEOUT, removal).await {
            Ok(Ok(())) => SandboxMetrics::add(&self.inner.metrics.containers_removed, 1),
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => {}
            Ok(Err(error)) => {
                tracing::warn!(container = id, error = %error, "removing sandbox failed")
            }
            Err(_) => tracing::warn!(container = id, "removing sandbox timed out"),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps every pool full until `shutdown`, then removes what waits in them.
    pub async fn run_pools(&self, shutdown: CancellationToken) {
        let mut refillers = tokio::task::JoinSet::new();
        for language in self.inner.pools.keys().copied() {
            let sandbox = self.clone();
            let shutdown = shutdown.clone();
            refillers.spawn(async move { sandbox.refill(language, shutdown).await });
        }
        while refillers.join_next().await.is_some() {}
        for pool in self.inner.pools.values() {
            for started in pool.drain() {
                self.dispose(started.id);
            }
        }
    }

    async fn refill(&self, language: Language, shutdown: CancellationToken) {
        let Some(pool) = self.inner.pools.get(&language) else {
            return;
        };
        let limits = self.inner.settings.pool_limits;
        loop {
            while pool.len() < pool.target && !shutdown.is_cancelled() {
                match self.start(language, limits, None).await {
                    Ok(started) => pool.put(started),
                    Err(error) => {
                        tracing::warn!(%language, error = %error, "cannot fill the warm pool; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = tokio::time::sleep(REFILL_RETRY) => {}
                        }
                        break;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = pool.refill.notified() => {}
            }
        }
    }

    /// Waits until every container this worker removes is gone.
    pub async fn wait_for_removals(&self) {
        self.inner.removals.close();
        self.inner.removals.wait().await;
        self.inner.removals.reopen();
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
            .list_containers(Some(ListContainersOptions::<String> {
                all: true,
                filters: HashMap::from([(
                    "label".to_owned(),
                    vec![
                        WORKER_LABEL.to_owned(),
                        format!("{INSTALLATION_LABEL}={}", settings.installation),
                    ],
                )]),
                ..Default::default()
            }));
        let containers = tokio::time::timeout(DOCKER_CALL_TIMEOUT, listing)
            .await
            .map_err(|_| SandboxError::Unreachable("listing containers timed out".into()))?
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
            let young = now - container.created.unwrap_or(now) < ORPHAN_MIN_AGE_SECONDS;
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
            self.remove(id).await;
        }
        SandboxMetrics::add(&self.inner.metrics.orphans_removed, orphans.len() as u64);
        Ok(orphans.len())
    }
}

/// How the output loop of a run ended.
enum End {
    /// The bootstrap reported the program's exit code and all output arrived.
    Reported(i64),
    /// The output stream closed: the container stopped.
    Closed,
    /// The worker stops the run.
    Early(Exit),
}

/// Output kept so far: each stream capped at `limit` bytes, plus room for its end marker.
struct Capture {
    limit: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    flooded: bool,
}

impl Capture {
    fn new(limit: usize) -> Self {
        Capture {
            limit,
            stdout: Vec::new(),
            stderr: Vec::new(),
            flooded: false,
        }
    }

    /// Appends what fits; returns true once a stream went past its cap.
    fn push(&mut self, stream: StreamName, bytes: &[u8]) -> bool {
        let buffer = match stream {
            StreamName::Stdout => &mut self.stdout,
            StreamName::Stderr => &mut self.stderr,
        };
        let room = self.limit + MARKER_ROOM - buffer.len();
        if bytes.len() > room {
            buffer.extend_from_slice(&bytes[..room]);
            self.flooded = true;
        } else {
            buffer.extend_from_slice(bytes);
        }
        self.flooded
    }

    /// Cuts both streams back to the cap once the markers are gone; true if anything was
    /// dropped.
    fn finish(&mut self) -> bool {
        for buffer in [&mut self.stdout, &mut self.stderr] {
            if buffer.len() > self.limit {
                buffer.truncate(self.limit);
                self.flooded = true;
            }
        }
        self.flooded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_first_bytes_up_to_the_cap_and_flags_the_rest() {
        let mut capture = Capture::new(4);
        assert!(!capture.push(StreamName::Stdout, b"ab"));
        assert!(!capture.push(StreamName::Stderr, b"wxyz"));
        assert!(capture.push(StreamName::Stdout, &[b'c'; 1000]));
        assert!(capture.finish());
        assert_eq!(capture.stdout, b"abcc");
        assert_eq!(capture.stderr, b"wxyz");
    }

    #[test]
    fn the_markers_fit_beyond_the_cap_but_nothing_more() {
        let mut capture = Capture::new(4);
        assert!(!capture.push(StreamName::Stdout, b"abcd\x1evoidrunner-end n\n"));
        assert!(!capture.push(
            StreamName::Stderr,
            b"wxyz\x1evoidrunner-end n exit=0 peak=1\n"
        ));
        assert!(strip_markers(&mut capture.stdout, &mut capture.stderr, "n").is_some());
        assert!(!capture.finish());
        assert_eq!(capture.stdout, b"abcd");
        assert_eq!(capture.stderr, b"wxyz");
    }
}
