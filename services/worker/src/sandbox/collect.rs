//! Feeding a started sandbox its program and collecting what it does until it ends, whichever
//! backend started it.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use voidrunner_shared::events::StreamName;

use super::pool::Started;
use super::program::{before_marker, ending, strip_markers, Ending, MARKER_ROOM};
use super::{Exit, Interruptions, OutputChunk, RunLimits, RunReport, Truncated};

/// How the output loop of a run ended.
pub(super) enum End {
    /// The bootstrap reported the program's ending and all output arrived.
    Reported(Ending),
    /// The output stream closed: the sandbox stopped.
    Closed,
    /// The worker stops the run.
    Early(Exit),
}

/// What a run wrote and how its output ended; the backend tells the exit from it.
pub(super) struct Collected {
    pub end: End,
    capture: Capture,
    nonce: String,
    started_at: DateTime<Utc>,
}

impl Collected {
    /// The report of the run, once the backend knows how it exited.
    pub fn report(mut self, exit: Exit, warm: bool) -> RunReport {
        let finished_at = Utc::now();
        let reported = strip_markers(
            &mut self.capture.stdout,
            &mut self.capture.stderr,
            &self.nonce,
        );
        let truncated = self.capture.finish();
        RunReport {
            exit,
            truncated,
            stdout: self.capture.stdout,
            stderr: self.capture.stderr,
            peak_memory_bytes: reported.and_then(|ending| ending.peak_memory_bytes),
            warm,
            started_at: self.started_at,
            finished_at,
            note: None,
        }
    }
}

/// Feeds the program to a started sandbox and collects what it writes until the bootstrap
/// reports the end, the output closes, or the run must stop early. Returns the sandbox's handle
/// with what was collected; the output is hung up on before it returns.
pub(super) async fn collect<H>(
    started: Started<H>,
    payload: Vec<u8>,
    nonce: &str,
    limits: RunLimits,
    output: Option<mpsc::Sender<OutputChunk>>,
    interruptions: Interruptions<'_>,
) -> (H, Collected) {
    let Started {
        handle,
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
                    tracing::warn!(error = %error, "output stream broke");
                    break End::Closed;
                }
                Some(Ok((name, bytes))) => {
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
                    // A SIGKILL may be the OOM killer's: when the bootstrap could not read the
                    // sandbox's OOM count, only the backend can tell, once the sandbox stopped.
                    if bytes.ends_with(b"\n") {
                        match ending(&capture.stdout, &capture.stderr, nonce) {
                            Some(ending) if ending.exit_code != 137 || ending.oom_kills.is_some() => {
                                break End::Reported(ending)
                            }
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
    let collected = Collected {
        end,
        capture,
        nonce: nonce.to_owned(),
        started_at,
    };
    (handle, collected)
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
