//! Handling one dispatch: from the pulled message to the result on the reply subject.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use voidrunner_shared::config::SandboxPolicy;
use voidrunner_shared::events::{
    Captured, Dispatch, DispatchV1, ExecutionEvent, OutputV1, ResultV1, StartedV1,
};
use voidrunner_shared::headers::{self, message_id};
use voidrunner_shared::publish::{publish_json, PublishError};
use voidrunner_shared::subjects::EventKind;
use voidrunner_shared::{report, Language, Namespace, Status};

use async_nats::jetstream::stream::LastRawMessageErrorKind;

use crate::ack::Outcome;
use crate::cancellations::Cancellations;
use crate::config::WorkerConfig;
use crate::sandbox::{
    ContainerLimits, Exit, Interruptions, OutputChunk, Program, RunLimits, RunReport, Sandbox,
    BOOTSTRAP_FAILED_EXIT, COMPILE_FAILED_EXIT,
};

/// No execution runs longer than this, whatever its dispatch says.
const MAX_TIMEOUT_SECONDS: u32 = 3600;

/// Progress acks continue this long past a run's timeout before the message is let go.
const PROGRESS_GRACE: Duration = Duration::from_secs(60);

/// How one attempt at an execution ended, before the ack policy has its say.
enum Tried {
    /// A result is on the reply subject.
    Resulted,
    /// The fleet could not run it or report it; another attempt may succeed.
    Failed(String),
    /// The worker is stopping; another worker may take it.
    Interrupted(String),
}

/// Reasons a worker refuses to run an execution at all.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the task asks for network access, which this deployment does not allow (VOIDRUNNER_SANDBOX_NETWORK=none)")]
    NetworkForbidden,
}
/// Output chunks are coalesced into events of at most this size, sent at least this often.
const OUTPUT_EVENT_BYTES: usize = 16 * 1024;
const OUTPUT_EVENT_INTERVAL: Duration = Duration::from_millis(100);

/// Everything a worker needs to handle dispatches; cheap to clone into each execution's task.
#[derive(Clone)]
pub struct Runner {
    pub jetstream: jetstream::Context,
    pub nats: async_nats::Client,
    pub namespace: Namespace,
    pub sandbox: Sandbox,
    pub config: WorkerConfig,
    pub policy: SandboxPolicy,
    pub worker_id: String,
    /// The machine it runs on, as the fleet view shows it.
    pub host: String,
    /// Languages whose image is present here.
    pub languages: Vec<Language>,
    pub results: jetstream::stream::Stream,
    pub max_deliver: u32,
    pub ack_wait: Duration,
    pub cancellations: std::sync::Arc<Cancellations>,
}

impl Runner {
    /// Handles one pulled message and acknowledges it according to the ack policy.
    pub async fn handle(&self, message: jetstream::Message, stop: CancellationToken) {
        let attempt = message
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let outcome = match serde_json::from_slice::<Dispatch>(&message.payload) {
            Ok(Dispatch::V1(dispatch)) => {
                let span = tracing::info_span!("execution", execution_id = %dispatch.execution_id, attempt, trace_id = tracing::field::Empty);
                voidrunner_shared::telemetry::continue_trace(
                    &span,
                    voidrunner_shared::headers::traceparent(message.headers.as_ref()),
                );
                self.handle_dispatch(&message, dispatch, attempt, &stop)
                    .instrument(span)
                    .await
            }
            Err(error) => {
                tracing::error!(subject = %message.subject, error = %error, "dispatch is not voidrunner.dispatch.v1; dropping it");
                Outcome::Unreadable
            }
        };
        let kind = crate::ack::ack_for(outcome);
        let acked = if matches!(kind, AckKind::Ack) {
            message.double_ack().await
        } else {
            message.ack_with(kind).await
        };
        if let Err(error) = acked {
            // The message comes back after ack_wait; the result check makes that harmless.
            tracing::warn!(error = %error, ?outcome, "acknowledging dispatch failed");
        }
    }

    async fn handle_dispatch(
        &self,
        message: &jetstream::Message,
        dispatch: DispatchV1,
        attempt: u32,
        stop: &CancellationToken,
    ) -> Outcome {
        let execution_id = dispatch.execution_id;
        let result_subject = self.namespace.result_subject(execution_id);
        // From the stream's leader, not a direct get: any replica answers those, and one that
        // is still catching up after a restart says "not found" for a result it has not got yet
        // (the cluster test caught an execution run twice that way).
        match self
            .results
            .get_last_raw_message_by_subject(&result_subject)
            .await
        {
            Ok(stored) => {
                if answers(&stored.payload, &dispatch) {
                    tracing::info!(%execution_id, "result already published; acknowledging the duplicate");
                    return Outcome::Resulted;
                }
                tracing::warn!(%execution_id, security_event = "foreign_result", "the reply subject holds a result without this dispatch's token; running the execution anyway");
            }
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(error) => {
                // Not knowing whether it already ran (e.g. RESULTS is electing a leader), it
                // waits rather than risk running it twice.
                tracing::warn!(%execution_id, error = %error, "cannot tell whether the execution already has a result; trying again later");
                return Outcome::FleetFailed { attempt };
            }
        }
        let registration = self.cancellations.register(execution_id);
        let tried = if self.cancellations.requested(execution_id).await {
            let mut cancelled = ResultV1::fleet_error(
                execution_id,
                &self.worker_id,
                attempt,
                "cancelled on request before it started".into(),
            );
            cancelled.status = Status::Cancelled;
            self.report(&dispatch, &cancelled).await
        } else if dispatch.network && !self.policy.network_allowed() {
            let refused = ResultV1::fleet_error(
                execution_id,
                &self.worker_id,
                attempt,
                Refusal::NetworkForbidden.to_string(),
            );
            self.report(&dispatch, &refused).await
        } else {
            self.run(message, &dispatch, attempt, stop, &registration.token)
                .await
        };
        drop(registration);
        match tried {
            Tried::Resulted => Outcome::Resulted,
            // No delivery follows the last one: the execution ends here, in the DLQ.
            Tried::Failed(reason) | Tried::Interrupted(reason) if attempt >= self.max_deliver => {
                self.give_up(dispatch, attempt, &reason).await
            }
            Tried::Failed(_) => Outcome::FleetFailed { attempt },
            Tried::Interrupted(_) => Outcome::Interrupted,
        }
    }

    /// Runs the execution in a sandbox, again after a failure when its retry policy asks for
    /// it, and publishes the result of the last run.
    async fn run(
        &self,
        message: &jetstream::Message,
        dispatch: &DispatchV1,
        attempt: u32,
        stop: &CancellationToken,
        cancel: &CancellationToken,
    ) -> Tried {
        let execution_id = dispatch.execution_id;
        let (container, limits) = self.limits(dispatch);
        // Announced beside the run, not before it: the sandbox does not wait for the ack.
        let announcement = {
            let runner = self.clone();
            let dispatch = dispatch.clone();
            tokio::spawn(
                async move { runner.publish_started(&dispatch, attempt, Utc::now()).await },
            )
        };
        // Tell JetStream the message is in progress so that a long run is not redelivered, but
        // not past the runs' own limits: a wedged run must not hold its message forever.
        let progress = {
            let message = message.clone();
            let every = self.ack_wait / 3;
            let until = tokio::time::Instant::now() + progress_budget(dispatch, limits.timeout);
            tokio::spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                while ticks.tick().await < until {
                    if message.ack_with(AckKind::Progress).await.is_err() {
                        tracing::debug!("progress ack failed");
                    }
                }
            })
        };
        let (output_sender, output_receiver) = mpsc::channel(256);
        let forwarder = tokio::spawn(forward_output(
            self.nats.clone(),
            self.namespace
                .event_subject(execution_id, EventKind::Output),
            (execution_id, dispatch.task_id, attempt),
            output_receiver,
        ));

        let program = Program {
            language: dispatch.language,
            code: dispatch.code.clone(),
            files: dispatch.files.clone(),
            stdin: dispatch.stdin.clone().into_bytes(),
        };
        let mut run_number = 1;
        let ran = loop {
            let run = self
                .sandbox
                .run(
                    &execution_id.to_string(),
                    &program,
                    container,
                    limits,
                    Some(output_sender.clone()),
                    Interruptions {
                        shutdown: stop,
                        cancel,
                    },
                )
                .instrument(tracing::info_span!(
                    "sandbox",
                    language = dispatch.language.as_str(),
                    run = run_number
                ))
                .await;
            let report = match run {
                Ok(report) if report.exit == Exit::Stopped => {
                    break Err(Tried::Interrupted(
                        "the worker stopped during the run".into(),
                    ))
                }
                Ok(report) => report,
                Err(error) => {
                    tracing::warn!(%execution_id, attempt, error = %error, "sandbox could not run the execution");
                    break Err(if stop.is_cancelled() {
                        Tried::Interrupted(error.to_string())
                    } else {
                        Tried::Failed(error.to_string())
                    });
                }
            };
            let mut result = self.result_of(dispatch, attempt, container, limits, report);
            measure_run(dispatch.language, &result);
            result.runs = run_number;
            if !retryable(&result) || run_number > dispatch.retry.retries {
                break Ok(result);
            }
            let delay = dispatch.retry.delay_before(run_number + 1);
            tracing::info!(%execution_id, run = run_number, status = result.status.as_str(), delay_ms = delay.as_millis() as u64, "run failed; retrying as the task asks");
            tokio::select! {
                _ = tokio::time::sleep(delay) => run_number += 1,
                _ = cancel.cancelled() => {
                    result.status = Status::Cancelled;
                    result.error = Some(format!("cancelled on request while waiting to retry (after {run_number} run(s))"));
                    break Ok(result);
                }
                _ = stop.cancelled() => {
                    break Err(Tried::Interrupted("the worker stopped between retries".into()))
                }
            }
        };
        drop(output_sender);
        progress.abort();
        let _ = forwarder.await;
        let _ = announcement.await;
        match ran {
            Ok(result) => self.report(dispatch, &result).await,
            Err(tried) => tried,
        }
    }

    /// Publishes a result on the execution's reply subject.
    async fn report(&self, dispatch: &DispatchV1, result: &ResultV1) -> Tried {
        let execution_id = result.execution_id;
        match self.publish_result(dispatch, result).await {
            Ok(()) => {
                tracing::info!(%execution_id, status = result.status.as_str(), exit_code = ?result.exit_code, "execution finished");
                Tried::Resulted
            }
            Err(error) => {
                tracing::warn!(%execution_id, error = %error, "publishing the result failed");
                Tried::Failed(format!("publishing the result failed: {error}"))
            }
        }
    }

    fn limits(&self, dispatch: &DispatchV1) -> (ContainerLimits, RunLimits) {
        let limits = self.policy.resolve_for(dispatch.language, &dispatch.limits);
        let container = ContainerLimits::of(&limits, dispatch.network);
        let run = RunLimits {
            output_bytes: usize::try_from(limits.output_bytes).unwrap_or(usize::MAX),
            timeout: Duration::from_secs(u64::from(
                dispatch.timeout_seconds.clamp(1, MAX_TIMEOUT_SECONDS),
            )),
        };
        (container, run)
    }

    fn result_of(
        &self,
        dispatch: &DispatchV1,
        attempt: u32,
        container: ContainerLimits,
        limits: RunLimits,
        report: RunReport,
    ) -> ResultV1 {
        let mut compile_error = false;
        let (status, exit_code, oom_killed, error) = match report.exit {
            Exit::Exited { code, oom_killed: true } => (
                Status::Failed,
                Some(code),
                true,
                Some(format!("killed: out of memory (limit {} MiB)", container.memory_bytes >> 20)),
            ),
            Exit::Exited { code: 0, .. } => (
                Status::Completed,
                Some(0),
                false,
                report.note.map(str::to_owned),
            ),
            Exit::Exited { code, .. } if code == COMPILE_FAILED_EXIT && dispatch.language.is_compiled() => {
                compile_error = true;
                (
                    Status::Failed,
                    None,
                    false,
                    Some("compilation failed: the compiler's report is in stderr".into()),
                )
            }
            Exit::Exited { code, .. } if code == BOOTSTRAP_FAILED_EXIT => (
                Status::Failed,
                None,
                false,
                Some("the sandbox could not unpack the program (are its files larger than the sandbox's /tmp?)".into()),
            ),
            Exit::Exited { code, .. } => (Status::Failed, Some(code), false, None),
            Exit::TimedOut => (
                Status::Timeout,
                None,
                false,
                Some(format!("killed: ran past its {} s timeout", limits.timeout.as_secs())),
            ),
            Exit::OutputFlood => (
                Status::Failed,
                None,
                false,
                Some(format!("killed: wrote more than {} bytes of output", limits.output_bytes)),
            ),
            Exit::Cancelled => (
                Status::Cancelled,
                None,
                false,
                Some("cancelled on request".into()),
            ),
            Exit::Stopped => (Status::Error, None, false, Some("worker stopped".into())),
        };
        ResultV1 {
            execution_id: dispatch.execution_id,
            status,
            exit_code,
            stdout: Captured::from_bytes(&report.stdout),
            stderr: Captured::from_bytes(&report.stderr),
            output_truncated: report.truncated.any(),
            stdout_truncated: report.truncated.stdout,
            stderr_truncated: report.truncated.stderr,
            oom_killed,
            compile_error,
            peak_memory_bytes: report.peak_memory_bytes,
            error,
            worker_id: self.worker_id.clone(),
            attempt,
            runs: 1,
            dead_lettered: false,
            started_at: Some(report.started_at),
            finished_at: report.finished_at,
            dispatch_token: dispatch.dispatch_token.clone(),
        }
    }

    /// The fleet gives up on the execution: the dispatch goes to the DLQ and the execution
    /// ends in `error` with the reason.
    async fn give_up(&self, dispatch: DispatchV1, attempt: u32, last_failure: &str) -> Outcome {
        let execution_id = dispatch.execution_id;
        let reason = format!("gave up after {attempt} attempt(s): {last_failure}");
        match report::publish_dead_letter(
            &self.jetstream,
            &self.namespace,
            &dispatch,
            reason,
            attempt,
            &self.worker_id,
        )
        .await
        {
            Ok(_) => {
                tracing::error!(%execution_id, attempt, "execution dead-lettered");
                Outcome::GaveUp
            }
            Err(error) => {
                tracing::warn!(%execution_id, error = %error, "publishing the dead letter failed");
                Outcome::FleetFailed { attempt }
            }
        }
    }

    async fn publish_started(
        &self,
        dispatch: &DispatchV1,
        attempt: u32,
        started_at: chrono::DateTime<Utc>,
    ) {
        let event = ExecutionEvent::StartedV1(StartedV1 {
            execution_id: dispatch.execution_id,
            worker_id: self.worker_id.clone(),
            attempt,
            started_at,
            dispatch_token: dispatch.dispatch_token.clone(),
        });
        let subject = self
            .namespace
            .event_subject(dispatch.execution_id, EventKind::Started);
        let headers = headers::for_execution(
            &message_id::started(dispatch.execution_id, attempt),
            dispatch.execution_id,
            dispatch.task_id,
            attempt,
        );
        if let Err(error) = publish_json(&self.jetstream, subject, headers, &event).await {
            tracing::warn!(error = %error, "publishing the started event failed; running anyway");
        }
    }

    async fn publish_result(
        &self,
        dispatch: &DispatchV1,
        result: &ResultV1,
    ) -> Result<(), PublishError> {
        // Deduplicated per execution: a run that raced a redelivery cannot record twice.
        let result = ResultV1 {
            dispatch_token: dispatch.dispatch_token.clone(),
            ..result.clone()
        };
        report::publish_result(&self.jetstream, &self.namespace, dispatch.task_id, &result)
            .await
            .map(|_| ())
    }
}

/// Whether a stored result answers this dispatch: it carries the dispatch's token (any result
/// does, for dispatches from before tokens).
fn answers(payload: &[u8], dispatch: &DispatchV1) -> bool {
    match serde_json::from_slice::<voidrunner_shared::events::ExecutionResult>(payload) {
        Ok(voidrunner_shared::events::ExecutionResult::V1(result)) => {
            dispatch.dispatch_token.is_none() || result.dispatch_token == dispatch.dispatch_token
        }
        Err(_) => false,
    }
}

/// Whether the task's retry policy applies to a result: the program failed or timed out, for a
/// reason another run might not meet (a compile error would only repeat itself).
fn retryable(result: &ResultV1) -> bool {
    match result.status {
        Status::Timeout => true,
        Status::Failed => !result.compile_error,
        Status::Completed | Status::Cancelled | Status::Error => false,
        // Not results; a run never reports them.
        Status::Queued | Status::Running => false,
    }
}

/// How long a dispatch may be held in progress: every run it may make, the waits between them,
/// and a grace period.
fn progress_budget(dispatch: &DispatchV1, timeout: Duration) -> Duration {
    let runs = dispatch.retry.retries + 1;
    let waits: Duration = (2..=runs).map(|run| dispatch.retry.delay_before(run)).sum();
    timeout * runs + waits + PROGRESS_GRACE
}

/// Publishes output as `voidrunner.output.v1` events, coalescing small writes.
async fn forward_output(
    nats: async_nats::Client,
    subject: String,
    (execution_id, task_id, attempt): (uuid::Uuid, uuid::Uuid, u32),
    mut chunks: mpsc::Receiver<OutputChunk>,
) {
    let publish = |seq: u64, payload: Bytes| {
        let headers = headers::for_execution(
            &message_id::output(execution_id, attempt, seq),
            execution_id,
            task_id,
            attempt,
        );
        // Core publish: the EVENTS stream stores it; live output is best effort.
        nats.publish_with_headers(subject.clone(), headers, payload)
    };
    let mut seq = 0u64;
    let mut pending: Option<(voidrunner_shared::events::StreamName, Vec<u8>)> = None;
    let flush = |pending: &mut Option<(voidrunner_shared::events::StreamName, Vec<u8>)>,
                 seq: &mut u64| {
        pending.take().map(|(stream, bytes)| {
            let event = ExecutionEvent::OutputV1(OutputV1 {
                execution_id,
                stream,
                seq: *seq,
                data: Captured::from_bytes(&bytes),
            });
            *seq += 1;
            serde_json::to_vec(&event).map(Bytes::from).ok()
        })
    };
    let mut ticks = tokio::time::interval(OUTPUT_EVENT_INTERVAL);
    loop {
        let payload = tokio::select! {
            chunk = chunks.recv() => match chunk {
                Some(chunk) => {
                    let same_stream = pending.as_ref().is_some_and(|(s, b)| *s == chunk.stream && b.len() + chunk.bytes.len() <= OUTPUT_EVENT_BYTES);
                    if same_stream {
                        if let Some((_, bytes)) = pending.as_mut() {
                            bytes.extend_from_slice(&chunk.bytes);
                        }
                        None
                    } else {
                        let ready = flush(&mut pending, &mut seq);
                        pending = Some((chunk.stream, chunk.bytes.to_vec()));
                        ready.flatten()
                    }
                }
                None => {
                    if let Some(Some(payload)) = flush(&mut pending, &mut seq) {
                        let _ = publish(seq - 1, payload).await;
                    }
                    return;
                }
            },
            _ = ticks.tick() => flush(&mut pending, &mut seq).flatten(),
        };
        if let Some(payload) = payload {
            let _ = publish(seq - 1, payload).await;
        }
    }
}

/// The metrics of one run in a sandbox.
fn measure_run(language: Language, result: &ResultV1) {
    use voidrunner_shared::metrics as names;
    if let Some(started_at) = result.started_at {
        let seconds = (result.finished_at - started_at).as_seconds_f64().max(0.0);
        metrics::histogram!(names::SANDBOX_RUN_SECONDS, "language" => language.as_str(), "status" => result.status.as_str())
            .record(seconds);
    }
    if result.oom_killed {
        metrics::counter!(names::OOM_KILLS).increment(1);
    }
    if result.output_truncated {
        metrics::counter!(names::OUTPUT_TRUNCATED).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voidrunner_shared::events::RetryPolicy;

    fn result(status: Status, compile_error: bool) -> ResultV1 {
        ResultV1 {
            status,
            compile_error,
            ..ResultV1::fleet_error(uuid::Uuid::nil(), "w", 1, String::new())
        }
    }

    #[test]
    fn failures_and_timeouts_are_retried_but_not_compile_errors_cancellations_or_successes() {
        assert!(retryable(&result(Status::Failed, false)));
        assert!(retryable(&result(Status::Timeout, false)));
        assert!(!retryable(&result(Status::Failed, true)));
        assert!(!retryable(&result(Status::Completed, false)));
        assert!(!retryable(&result(Status::Cancelled, false)));
        assert!(!retryable(&result(Status::Error, false)));
    }

    #[test]
    fn progress_covers_every_run_and_every_wait_between_them() {
        let mut dispatch = DispatchV1 {
            execution_id: uuid::Uuid::nil(),
            task_id: uuid::Uuid::nil(),
            language: "bash".parse().expect("in the catalog"),
            lane: voidrunner_shared::Lane::Normal,
            code: String::new(),
            files: Vec::new(),
            stdin: String::new(),
            timeout_seconds: 10,
            limits: Default::default(),
            network: false,
            retry: RetryPolicy::default(),
            submitted_at: Utc::now(),
            dispatch_token: None,
        };
        let timeout = Duration::from_secs(10);
        assert_eq!(
            progress_budget(&dispatch, timeout),
            timeout + PROGRESS_GRACE
        );
        dispatch.retry = RetryPolicy {
            retries: 2,
            backoff_seconds: 3,
        };
        // Three runs, then waits of 3 s and 6 s.
        assert_eq!(
            progress_budget(&dispatch, timeout),
            Duration::from_secs(30 + 9) + PROGRESS_GRACE
        );
    }
}
