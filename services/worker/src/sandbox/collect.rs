//! Feeding a started sandbox its program and collecting what it does until it ends.

use bollard::container::LogOutput;
use bollard::query_parameters::WaitContainerOptions;
use chrono::Utc;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use voidrunner_shared::events::StreamName;

use super::docker::{bounded, docker_error, DockerSandbox, DOCKER_CALL_TIMEOUT};
use super::pool::Started;
use super::program::{before_marker, ending, strip_markers, MARKER_ROOM};
use super::{Exit, Interruptions, OutputChunk, RunLimits, RunReport, SandboxError, Truncated};

impl DockerSandbox {
    /// Feeds the program to a started sandbox and collects what it does until it ends.
    pub(super) async fn collect(
        &self,
        started: Started,
        payload: Vec<u8>,
        nonce: &str,
        limits: RunLimits,
        output: Option<mpsc::Sender<OutputChunk>>,
        interruptions: Interruptions<'_>,
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
                _ = interruptions.shutdown.cancelled() => break End::Early(Exit::Stopped),
                _ = interruptions.cancel.cancelled() => break End::Early(Exit::Cancelled),
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
                            let visible = before_marker(&bytes, nonce);
                            if !visible.is_empty() {
                                let chunk = OutputChunk { stream: name, bytes: bytes.slice_ref(visible) };
                                let _ = output.try_send(chunk);
                            }
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
            note: None,
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
    /// Which streams lost bytes: (stdout, stderr).
    cut: (bool, bool),
}

impl Capture {
    fn new(limit: usize) -> Self {
        Capture {
            limit,
            stdout: Vec::new(),
            stderr: Vec::new(),
            flooded: false,
            cut: (false, false),
        }
    }

    /// Appends what fits; returns true once a stream went past its cap.
    fn push(&mut self, stream: StreamName, bytes: &[u8]) -> bool {
        let (buffer, cut) = match stream {
            StreamName::Stdout => (&mut self.stdout, &mut self.cut.0),
            StreamName::Stderr => (&mut self.stderr, &mut self.cut.1),
        };
        let room = self.limit + MARKER_ROOM - buffer.len();
        if bytes.len() > room {
            buffer.extend_from_slice(&bytes[..room]);
            *cut = true;
            self.flooded = true;
        } else {
            buffer.extend_from_slice(bytes);
        }
        self.flooded
    }

    /// Cuts both streams back to the cap once the markers are gone; true if anything was
    /// dropped.
    fn finish(&mut self) -> Truncated {
        for (buffer, cut) in [
            (&mut self.stdout, &mut self.cut.0),
            (&mut self.stderr, &mut self.cut.1),
        ] {
            if buffer.len() > self.limit {
                buffer.truncate(self.limit);
                *cut = true;
            }
        }
        Truncated {
            stdout: self.cut.0,
            stderr: self.cut.1,
        }
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
        assert_eq!(
            capture.finish(),
            Truncated {
                stdout: true,
                stderr: false
            }
        );
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
        assert!(!capture.finish().any());
        assert_eq!(capture.stdout, b"abcd");
        assert_eq!(capture.stderr, b"wxyz");
    }
}
