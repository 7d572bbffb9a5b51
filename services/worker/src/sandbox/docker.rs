//! The Docker sandbox runtime, through bollard.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::{
    AttachContainerOptions, Config, CreateContainerOptions, KillContainerOptions,
    ListContainersOptions, LogOutput, RemoveContainerOptions, StartContainerOptions,
    WaitContainerOptions,
};
use bollard::models::{HostConfig, ResourcesUlimits};
use bollard::Docker;
use chrono::Utc;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voidrunner_shared::events::StreamName;

use super::{bootstrap_command, Exit, Limits, OutputChunk, Program, RunReport};

/// Label on every sandbox container; its value is the id of the worker that owns it.
pub const WORKER_LABEL: &str = "io.voidrunner.worker";
/// Label with the execution a sandbox runs.
pub const EXECUTION_LABEL: &str = "io.voidrunner.execution";
const SANDBOX_USER: &str = "65534:65534";
const DOCKER_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_OPEN_FILES: i64 = 256;

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
}

fn docker_error(operation: &'static str) -> impl Fn(bollard::errors::Error) -> SandboxError {
    move |error| SandboxError::Docker {
        operation,
        message: error.to_string(),
    }
}

/// Runs programs in fresh containers, one per execution, never reused.
#[derive(Clone)]
pub struct DockerSandbox {
    docker: Docker,
    worker_id: String,
}

impl DockerSandbox {
    /// Connects to the local Docker engine (or `DOCKER_HOST`) and negotiates the API version.
    pub async fn connect(worker_id: &str) -> Result<Self, SandboxError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| SandboxError::Unreachable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| SandboxError::Unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| SandboxError::Unreachable(e.to_string()))?;
        Ok(DockerSandbox {
            docker,
            worker_id: worker_id.to_owned(),
        })
    }

    /// Whether `image` is present locally.
    pub async fn has_image(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// Removes containers this worker's earlier incarnations left behind (same worker id), or,
    /// with `all_workers`, every VoidRunner sandbox on the engine.
    pub async fn remove_orphans(&self, all_workers: bool) -> Result<usize, SandboxError> {
        let label = if all_workers {
            WORKER_LABEL.to_owned()
        } else {
            format!("{WORKER_LABEL}={}", self.worker_id)
        };
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions::<String> {
                all: true,
                filters: HashMap::from([("label".to_owned(), vec![label])]),
                ..Default::default()
            }))
            .await
            .map_err(docker_error("list"))?;
        let mut removed = 0;
        for container in containers {
            if let Some(id) = container.id {
                self.remove(&id).await;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Runs `program` in a fresh container and removes the container, whatever happens.
    pub async fn run(
        &self,
        execution_id: &str,
        image: &str,
        program: &Program,
        limits: &Limits,
        output: Option<mpsc::Sender<OutputChunk>>,
        stop: &CancellationToken,
    ) -> Result<RunReport, SandboxError> {
        let id = self.create(execution_id, image, program, limits).await?;
        let report = self
            .attach_start_and_collect(&id, program, limits, output, stop)
            .await;
        self.remove(&id).await;
        report
    }

    async fn create(
        &self,
        execution_id: &str,
        image: &str,
        program: &Program,
        limits: &Limits,
    ) -> Result<String, SandboxError> {
        let host_config = HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                format!("rw,exec,nosuid,nodev,size={},mode=1777", limits.tmpfs_bytes),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(limits.memory_bytes),
            memory_swap: Some(limits.memory_bytes),
            nano_cpus: Some(limits.nano_cpus),
            pids_limit: Some(limits.pids),
            ulimits: Some(vec![
                ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(MAX_OPEN_FILES),
                    hard: Some(MAX_OPEN_FILES),
                },
                ResourcesUlimits {
                    name: Some("fsize".into()),
                    soft: Some(limits.tmpfs_bytes as i64),
                    hard: Some(limits.tmpfs_bytes as i64),
                },
            ]),
            init: Some(true),
            ..Default::default()
        };
        let config = Config {
            image: Some(image.to_owned()),
            cmd: Some(bootstrap_command(program.language)),
            user: Some(SANDBOX_USER.into()),
            working_dir: Some("/tmp".into()),
            env: Some(vec![
                "HOME=/tmp".into(),
                "PATH=/usr/local/bin:/usr/bin:/bin".into(),
                "PYTHONDONTWRITEBYTECODE=1".into(),
                "LANG=C.UTF-8".into(),
            ]),
            labels: Some(HashMap::from([
                (WORKER_LABEL.to_owned(), self.worker_id.clone()),
                (EXECUTION_LABEL.to_owned(), execution_id.to_owned()),
            ])),
            network_disabled: Some(true),
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
            self.docker
                .create_container(None::<CreateContainerOptions<String>>, config),
        )
        .await
        .map_err(|_| SandboxError::Unreachable("container create timed out".into()))?;
        match created {
            Ok(response) => Ok(response.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(SandboxError::ImageMissing {
                image: image.to_owned(),
            }),
            Err(error) => Err(docker_error("create")(error)),
        }
    }

    async fn attach_start_and_collect(
        &self,
        id: &str,
        program: &Program,
        limits: &Limits,
        output: Option<mpsc::Sender<OutputChunk>>,
        stop: &CancellationToken,
    ) -> Result<RunReport, SandboxError> {
        let attached = self
            .docker
            .attach_container(
                id,
                Some(AttachContainerOptions::<String> {
                    stdin: Some(true),
                    stdout: Some(true),
                    stderr: Some(true),
                    stream: Some(true),
                    logs: Some(false),
                    detach_keys: None,
                }),
            )
            .await
            .map_err(docker_error("attach"))?;
        let mut input = attached.input;
        let mut stream = attached.output;

        self.docker
            .start_container(id, None::<StartContainerOptions<String>>)
            .await
            .map_err(docker_error("start"))?;
        let started_at = Utc::now();

        // Feeding stdin runs beside the output loop: a program may fill its pipes before reading.
        let payload = program.stdin_payload();
        let feeder = tokio::spawn(async move {
            let _ = input.write_all(&payload).await;
            let _ = input.shutdown().await;
        });

        let mut capture = Capture::new(limits.output_bytes);
        let deadline = tokio::time::sleep(limits.timeout);
        tokio::pin!(deadline);
        let stopped_early = loop {
            tokio::select! {
                _ = &mut deadline => break Some(Exit::TimedOut),
                _ = stop.cancelled() => break Some(Exit::Stopped),
                next = stream.next() => match next {
                    None => break None,
                    Some(Err(error)) => {
                        tracing::warn!(container = id, error = %error, "output stream broke");
                        break None;
                    }
                    Some(Ok(log)) => {
                        let (name, bytes) = match log {
                            LogOutput::StdOut { message } => (StreamName::Stdout, message),
                            LogOutput::StdErr { message } => (StreamName::Stderr, message),
                            LogOutput::Console { message } => (StreamName::Stdout, message),
                            LogOutput::StdIn { .. } => continue,
                        };
                        if let Some(output) = &output {
                            // Live events are best effort; the result carries the full output.
                            let _ = output.try_send(OutputChunk { stream: name, bytes: bytes.clone() });
                        }
                        if capture.push(name, &bytes) {
                            break Some(Exit::OutputFlood);
                        }
                    }
                },
            }
        };
        feeder.abort();

        let exit = match stopped_early {
            Some(reason) => {
                self.kill(id).await;
                reason
            }
            None => self.exit_status(id, limits.timeout).await?,
        };
        Ok(RunReport {
            exit,
            truncated: capture.truncated,
            stdout: capture.stdout,
            stderr: capture.stderr,
            started_at,
            finished_at: Utc::now(),
        })
    }

    /// The exit code of a container whose output has ended, and whether the kernel OOM-killed it.
    async fn exit_status(&self, id: &str, timeout: Duration) -> Result<Exit, SandboxError> {
        let mut waits = self
            .docker
            .wait_container(id, None::<WaitContainerOptions<String>>);
        let code = match tokio::time::timeout(timeout.max(DOCKER_CALL_TIMEOUT), waits.next()).await
        {
            Ok(Some(Ok(response))) => response.status_code,
            // bollard reports a non-zero exit as an error that carries the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
            Ok(Some(Err(error))) => return Err(docker_error("wait")(error)),
            Ok(None) | Err(_) => {
                self.kill(id).await;
                return Ok(Exit::TimedOut);
            }
        };
        let oom_killed = self
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|info| info.state)
            .and_then(|state| state.oom_killed)
            .unwrap_or(false);
        Ok(Exit::Exited { code, oom_killed })
    }

    async fn kill(&self, id: &str) {
        if let Err(error) = self
            .docker
            .kill_container(id, Some(KillContainerOptions { signal: "SIGKILL" }))
            .await
        {
            tracing::debug!(container = id, error = %error, "kill failed (it may have exited)");
        }
    }

    async fn remove(&self, id: &str) {
        let removal = self.docker.remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        );
        match tokio::time::timeout(DOCKER_CALL_TIMEOUT, removal).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(container = id, error = %error, "removing sandbox failed")
            }
            Err(_) => tracing::warn!(container = id, "removing sandbox timed out"),
        }
    }
}

/// Output kept so far, each stream capped at `limit` bytes.
struct Capture {
    limit: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn new(limit: usize) -> Self {
        Capture {
            limit,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
        }
    }

    /// Appends what fits; returns true once a stream went past its cap.
    fn push(&mut self, stream: StreamName, bytes: &[u8]) -> bool {
        let buffer = match stream {
            StreamName::Stdout => &mut self.stdout,
            StreamName::Stderr => &mut self.stderr,
        };
        let room = self.limit - buffer.len();
        if bytes.len() > room {
            buffer.extend_from_slice(&bytes[..room]);
            self.truncated = true;
        } else {
            buffer.extend_from_slice(bytes);
        }
        self.truncated
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
        assert!(capture.push(StreamName::Stdout, b"cdef"));
        assert_eq!(capture.stdout, b"abcd");
        assert_eq!(capture.stderr, b"wxyz");
        assert!(capture.truncated);
    }
}
