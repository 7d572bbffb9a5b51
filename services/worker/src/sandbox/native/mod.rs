//! The native backend: each execution in namespaces and cgroups of its own, with no daemon in
//! between. The worker drives an OCI runtime (crun) directly: one `crun run` per sandbox, whose
//! stdio are the sandbox's, on the language images' root filesystems unpacked once per version
//! (`scripts/build-images.sh` puts them under `VOIDRUNNER_SANDBOX_ROOTFS_DIR`). The runtime
//! does the hard parts (user, PID, network, mount namespaces; cgroups v1 and v2; seccomp; the
//! capability drop); what the sandbox is made of is `bundle.rs`.
//!
//! A sandbox is known by an id `<installation>.<worker>.<random>`, its bundle directory and
//! the runtime's state under `VOIDRUNNER_SANDBOX_STATE_DIR`: housekeeping finds what a dead
//! worker left from these alone.

mod bundle;
mod housekeeping;
mod seccomp;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use voidrunner_shared::events::{SandboxBackendKind, StreamName};
use voidrunner_shared::Language;

use super::collect::{collect, End};
use super::metrics::{record_start, Removal, SandboxMetrics};
use super::pool::{Pools, Started};
use super::settings::SandboxSettings;
use super::{
    ContainerLimits, Exit, Interruptions, OutputChunk, Program, RunLimits, RunReport,
    SandboxBackend, SandboxError, StartedFor,
};

pub use seccomp::DEFAULT_PROFILE as DEFAULT_SECCOMP_PROFILE;

/// How long a sandbox may take to go once it was told to.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a sandbox whose program reported its end may take to exit before it is killed (its
/// init exits with the bootstrap, in milliseconds; a program that forged the end would not).
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// The longest a call of the runtime (kill, delete) may take.
pub(super) const RUNTIME_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A started sandbox: its id, the runtime process that runs it, and its bundle.
pub(super) struct Handle {
    id: String,
    process: Child,
    bundle: PathBuf,
}

/// Runs programs in fresh native sandboxes, one per execution, never reused.
#[derive(Clone)]
pub struct NativeSandbox {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SandboxSettings,
    /// The compiled seccomp filter, base64, as every bundle carries it.
    seccomp_bpf: String,
    pools: Pools<Started<Handle>>,
    /// Sandboxes this worker owns right now (running, or waiting in a pool).
    live: Mutex<HashSet<String>>,
    metrics: SandboxMetrics,
    /// Removals run beside the result; shutdown waits for them.
    removals: TaskTracker,
}

fn setup(message: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup(message.to_string())
}

/// Whether this host mixes cgroup v1 controllers with controllers on the v2 hierarchy, which
/// crun does not support (it asks for every controller on one side).
fn mixed_cgroup_hierarchies() -> Option<String> {
    let unified = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let controllers = std::fs::read_to_string(unified).ok()?;
    let controllers = controllers.trim();
    (!controllers.is_empty()).then(|| controllers.to_owned())
}

impl NativeSandbox {
    /// Checks the host (the runtime, the seccomp profile, the cgroup layout) and compiles the
    /// seccomp filter.
    pub async fn connect(settings: SandboxSettings) -> Result<Self, SandboxError> {
        let native = &settings.native;
        if settings.network.is_some() {
            return Err(setup(
                "the native backend gives sandboxes no network: set VOIDRUNNER_SANDBOX_NETWORK=none \
                 or use the docker backend",
            ));
        }
        let version = Command::new(&native.runtime)
            .arg("--version")
            .output()
            .await
            .map_err(|e| {
                setup(format_args!(
                    "cannot run the OCI runtime {}: {e} (install crun, or set VOIDRUNNER_SANDBOX_RUNTIME)",
                    native.runtime.display()
                ))
            })?;
        let version = String::from_utf8_lossy(&version.stdout);
        tracing::info!(runtime = %version.lines().next().unwrap_or_default(), "native sandbox backend");
        if let Some(controllers) = mixed_cgroup_hierarchies() {
            return Err(setup(format_args!(
                "cgroups: this host keeps controllers ({controllers}) on the v2 hierarchy beside \
                 v1's, which crun cannot use; mount them on v1 (e.g. `mkdir -p \
                 /sys/fs/cgroup/{controllers} && mount -t cgroup -o {controllers} cgroup \
                 /sys/fs/cgroup/{controllers}`) or boot with cgroup v2 only"
            )));
        }
        let (profile, source) = match &settings.seccomp_profile {
            Some(profile) => (
                profile.clone(),
                "VOIDRUNNER_SANDBOX_SECCOMP_PROFILE".to_owned(),
            ),
            None => (
                std::fs::read_to_string(seccomp::DEFAULT_PROFILE).map_err(|e| {
                    setup(format_args!(
                        "the native backend needs a seccomp profile in Docker's format: {}: {e} \
                         (install containers-common, or set VOIDRUNNER_SANDBOX_SECCOMP_PROFILE)",
                        seccomp::DEFAULT_PROFILE
                    ))
                })?,
                seccomp::DEFAULT_PROFILE.to_owned(),
            ),
        };
        let (program, unknown) = seccomp::compile(&profile)
            .map_err(|e| setup(format_args!("seccomp profile {source}: {e}")))?;
        tracing::info!(profile = %source, bytes = program.len(), unknown_syscalls = unknown, "seccomp filter compiled");
        for dir in [crun_root(&settings), bundles_dir(&settings)] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| setup(format_args!("{}: {e}", dir.display())))?;
        }
        let pools = Pools::new(&settings.pool_sizes, &settings.pool_limits);
        Ok(NativeSandbox {
            inner: Arc::new(Inner {
                seccomp_bpf: base64::engine::general_purpose::STANDARD.encode(program),
                settings,
                pools,
                live: Mutex::new(HashSet::new()),
                metrics: SandboxMetrics::default(),
                removals: TaskTracker::new(),
            }),
        })
    }

    fn image(&self, language: Language) -> &str {
        self.inner
            .settings
            .images
            .get(&language)
            .map_or("", String::as_str)
    }

    /// The unpacked image of `language` in use now: its root filesystem and its environment.
    fn unpacked(&self, language: Language) -> Result<(PathBuf, Vec<String>), SandboxError> {
        let image = self.image(language);
        let version = self
            .inner
            .settings
            .native
            .rootfs_dir
            .join(image)
            .join("current");
        let missing = || SandboxError::ImageMissing {
            image: format!("{image} (unpacked at {})", version.display()),
        };
        let version = version.canonicalize().map_err(|_| missing())?;
        let rootfs = version.join("rootfs");
        if !rootfs.join(bundle::INIT.trim_start_matches('/')).exists() {
            return Err(missing());
        }
        let env = std::fs::read_to_string(version.join("env"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains('='))
            .map(str::to_owned)
            .collect();
        Ok((rootfs, env))
    }

    /// Runs the runtime with `args` (kill, delete) for at most `RUNTIME_CALL_TIMEOUT`; true if
    /// it succeeded.
    async fn runtime_call(&self, args: &[&str]) -> bool {
        let mut command = self.crun();
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(RUNTIME_CALL_TIMEOUT, command.status()).await {
            Ok(Ok(status)) => status.success(),
            Ok(Err(error)) => {
                tracing::warn!(?args, error = %error, "the sandbox runtime could not be run");
                false
            }
            Err(_) => {
                tracing::warn!(?args, "the sandbox runtime did not answer in time");
                false
            }
        }
    }

    fn crun(&self) -> Command {
        let mut command = Command::new(&self.inner.settings.native.runtime);
        command.arg("--root").arg(crun_root(&self.inner.settings));
        command
    }

    /// Creates a sandbox's bundle and starts it; it waits in its bootstrap for a program.
    async fn start(
        &self,
        language: Language,
        limits: ContainerLimits,
        started_for: StartedFor,
    ) -> Result<Started<Handle>, SandboxError> {
        let settings = &self.inner.settings;
        let (rootfs, image_env) = self.unpacked(language)?;
        let id = format!(
            "{}.{}.{}",
            settings.installation,
            settings.worker_id,
            uuid::Uuid::new_v4().simple()
        );
        let bundle = bundles_dir(settings).join(&id);
        let cgroup = format!("/{}/{id}", settings.native.cgroup_parent);
        let config = bundle::config(
            settings,
            &bundle::Sandbox {
                language,
                started_for,
                limits,
                rootfs: &rootfs,
                image_env: &image_env,
                cgroup: &cgroup,
                seccomp_bpf: &self.inner.seccomp_bpf,
            },
        );
        tokio::fs::create_dir_all(&bundle).await?;
        tokio::fs::write(bundle.join("config.json"), config.to_string()).await?;
        self.live().insert(id.clone());
        // If the worker dies, the runtime process dies with it (util-linux's setpriv sets that
        // up), and the sandbox's init with that (`tini -p`): nothing runs on unwatched.
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&settings.native.runtime)
            .arg("--root")
            .arg(crun_root(settings))
            .arg(format!("--log={}", bundle.join("runtime.log").display()))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = match command.spawn() {
            Ok(process) => process,
            Err(error) => {
                self.live().remove(&id);
                let _ = tokio::fs::remove_dir_all(&bundle).await;
                return Err(SandboxError::Runtime {
                    operation: "start",
                    message: format!("{}: {error}", settings.native.runtime.display()),
                });
            }
        };
        SandboxMetrics::add(&self.inner.metrics.containers_created, 1);
        let (Some(stdin), Some(stdout), Some(stderr)) = (
            process.stdin.take(),
            process.stdout.take(),
            process.stderr.take(),
        ) else {
            unreachable!("all three were piped");
        };
        let stdout = ReaderStream::new(stdout).map(|chunk| Ok((StreamName::Stdout, chunk?)));
        let stderr = ReaderStream::new(stderr).map(|chunk| Ok((StreamName::Stderr, chunk?)));
        let output = futures::stream::select(stdout, stderr)
            .map(|item: std::io::Result<_>| item.map_err(|e| e.to_string()));
        Ok(Started {
            handle: Handle {
                id,
                process,
                bundle,
            },
            output: Box::pin(output),
            input: Box::pin(stdin),
        })
    }

    /// Runs `program` in a sandbox and removes the sandbox, whatever happens.
    async fn run_program(
        &self,
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
        let mut warm = self
            .inner
            .pools
            .take(language, container, &self.inner.metrics);
        // A warm sandbox whose runtime already exited failed to start: never hand it a program.
        if let Some(mut started) = warm.take() {
            match started.handle.process.try_wait() {
                Ok(None) => warm = Some(started),
                _ => {
                    tracing::warn!(sandbox = %started.handle.id, "a warm sandbox had stopped; starting a fresh one");
                    self.dispose(started.handle, Removal::FailedStart);
                }
            }
        }
        let was_warm = warm.is_some();
        let started = match warm {
            Some(started) => started,
            None => self.start(language, container, StartedFor::Program).await?,
        };
        record_start(language, was_warm, getting_ready);
        let (mut handle, collected) =
            collect(started, payload, &nonce, run, output, interruptions).await;
        let exit = match &collected.end {
            End::Early(reason) => {
                self.kill(&mut handle).await;
                Ok(reason.clone())
            }
            // The program ended and all its output is here; the sandbox goes in the background.
            End::Reported(ending) => Ok(ending.exit()),
            End::Closed => self.exit_status(&mut handle).await,
        };
        self.dispose(handle, Removal::Used);
        Ok(collected.report(exit?, was_warm))
    }

    /// The exit code of a sandbox whose output has ended. A sandbox that never started (the
    /// runtime failed) is an error that says why, not an exit of the program.
    async fn exit_status(&self, handle: &mut Handle) -> Result<Exit, SandboxError> {
        let status = match tokio::time::timeout(STOP_TIMEOUT, handle.process.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                self.kill(handle).await;
                return Err(SandboxError::Runtime {
                    operation: "wait",
                    message: "the sandbox did not stop after its output ended".into(),
                });
            }
        };
        let code = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => i64::from(code),
            (None, Some(signal)) => 128 + i64::from(signal),
            (None, None) => -1,
        };
        let errors = runtime_errors(&handle.bundle).await;
        if code != 0 && !errors.is_empty() {
            return Err(SandboxError::Runtime {
                operation: "run",
                message: errors.join("; "),
            });
        }
        // The bootstrap reports OOM kills with the exit; a sandbox that ended without its
        // report (all its processes killed) had none it could tell.
        Ok(Exit::Exited {
            code,
            oom_killed: false,
        })
    }

    /// Kills every process of a sandbox and waits for its runtime process to clean up.
    async fn kill(&self, handle: &mut Handle) {
        let killed = self
            .runtime_call(&["kill", "--all", &handle.id, "KILL"])
            .await;
        if !killed {
            // Not created yet, or already gone: the runtime process goes, and its init with it.
            let _ = handle.process.start_kill();
        }
        if tokio::time::timeout(STOP_TIMEOUT, handle.process.wait())
            .await
            .is_err()
        {
            tracing::warn!(sandbox = %handle.id, "the sandbox did not stop; removal will force it");
            let _ = handle.process.start_kill();
        }
    }

    /// Removes a sandbox in the background (once its runtime process is done with it); the
    /// worker's shutdown waits for every removal.
    fn dispose(&self, mut handle: Handle, reason: Removal) {
        let sandbox = self.clone();
        self.inner.removals.spawn(async move {
            // Closing its stdin lets a sandbox that waits for a program (a drained warm one)
            // end on its own.
            drop(handle.process.stdin.take());
            let stopped = match tokio::time::timeout(EXIT_GRACE, handle.process.wait()).await {
                Ok(Ok(status)) => Some(status),
                _ => {
                    sandbox.kill(&mut handle).await;
                    handle.process.try_wait().ok().flatten()
                }
            };
            // A runtime process that exited by itself, without an error, deleted the sandbox
            // (its state, cgroup and processes); one that was killed or failed left that to us.
            let cleaned = stopped.is_some_and(|status| status.code().is_some())
                && runtime_errors(&handle.bundle).await.is_empty();
            sandbox.remove(&handle.id, reason, !cleaned).await;
            sandbox.live().remove(&handle.id);
        });
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn crun_root(settings: &SandboxSettings) -> PathBuf {
    settings.native.state_dir.join("crun")
}

/// The errors the runtime logged for a sandbox (it logs only its own there, never the
/// program's).
async fn runtime_errors(bundle: &Path) -> Vec<String> {
    tokio::fs::read_to_string(bundle.join("runtime.log"))
        .await
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.to_ascii_lowercase().contains("warn"))
        .map(str::to_owned)
        .collect()
}

pub(super) fn bundles_dir(settings: &SandboxSettings) -> PathBuf {
    settings.native.state_dir.join("bundles")
}

impl SandboxBackend for NativeSandbox {
    fn kind(&self) -> SandboxBackendKind {
        SandboxBackendKind::Native
    }

    fn metrics(&self) -> &SandboxMetrics {
        &self.inner.metrics
    }

    fn pool_levels(&self) -> HashMap<Language, usize> {
        self.inner.pools.levels()
    }

    fn has_language(&self, language: Language) -> BoxFuture<'_, bool> {
        std::future::ready(self.unpacked(language).is_ok()).boxed()
    }

    fn run<'a>(
        &'a self,
        _execution_id: &'a str,
        program: &'a Program,
        container: ContainerLimits,
        run: RunLimits,
        output: Option<mpsc::Sender<OutputChunk>>,
        interruptions: Interruptions<'a>,
    ) -> BoxFuture<'a, Result<RunReport, SandboxError>> {
        self.run_program(program, container, run, output, interruptions)
            .boxed()
    }

    fn keep_warm(&self, shutdown: CancellationToken) -> BoxFuture<'_, ()> {
        self.inner
            .pools
            .keep_full(
                shutdown,
                |language, limits| self.start(language, limits, StartedFor::Pool),
                |started| self.dispose(started.handle, Removal::PoolDrained),
            )
            .boxed()
    }

    fn remove_orphans<'a>(
        &'a self,
        live_workers: Option<&'a HashSet<String>>,
        start_up: bool,
    ) -> BoxFuture<'a, Result<usize, SandboxError>> {
        NativeSandbox::remove_orphans(self, live_workers, start_up).boxed()
    }

    fn wait_for_removals(&self) -> BoxFuture<'_, ()> {
        async move {
            self.inner.removals.close();
            self.inner.removals.wait().await;
            self.inner.removals.reopen();
        }
        .boxed()
    }
}
