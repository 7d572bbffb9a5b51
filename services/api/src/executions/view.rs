//! How an execution looks from outside: in the API's answers and in webhook payloads alike.

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;
use voidrunner_shared::Status;

use crate::entity::{execution, webhook_attempt};

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExecutionResponse {
    id: Uuid,
    task_id: Uuid,
    status: Status,
    lane: String,
    exit_code: Option<i64>,
    stdout: String,
    stdout_encoding: String,
    stderr: String,
    stderr_encoding: String,
    /// stdout or stderr passed the output cap; the two below say which.
    output_truncated: bool,
    stdout_truncated: bool,
    stderr_truncated: bool,
    oom_killed: bool,
    compile_error: bool,
    peak_memory_bytes: Option<i64>,
    error: Option<String>,
    worker_id: Option<String>,
    attempt: i32,
    created_at: chrono::DateTime<Utc>,
    dispatched_at: Option<chrono::DateTime<Utc>>,
    started_at: Option<chrono::DateTime<Utc>>,
    finished_at: Option<chrono::DateTime<Utc>>,
    /// Time spent queued: from submission until the sandbox started.
    queue_ms: Option<i64>,
    /// Wall-clock run time in the sandbox, from start to finish.
    duration_ms: Option<i64>,
    /// How many times the program ran, retries included.
    runs: i32,
    /// False while the execution waits for room under its user's limit of executions at once.
    admitted: bool,
    idempotency_key: Option<String>,
    /// When the fleet gave up on it (its dispatch is in the dead-letter queue).
    dead_lettered_at: Option<chrono::DateTime<Utc>>,
    /// The dead-lettered execution this one re-runs.
    rerun_of: Option<Uuid>,
    /// Where the result is POSTed when the execution ends.
    callback_url: Option<String>,
    /// `pending`, `delivered` or `failed`; null without a callback URL.
    webhook_state: Option<String>,
    /// The OpenTelemetry trace of the execution (32 hex digits): the request that created it,
    /// its dispatch, the worker's run and the recording of its result.
    trace_id: Option<String>,
    /// Every delivery attempt so far (on `GET /executions/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_attempts: Option<Vec<WebhookAttemptResponse>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookAttemptResponse {
    attempt: i32,
    attempted_at: chrono::DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    status_code: Option<i32>,
    error: Option<String>,
    duration_ms: i64,
}

impl From<execution::Model> for ExecutionResponse {
    fn from(execution: execution::Model) -> Self {
        let duration_ms = execution
            .started_at
            .zip(execution.finished_at)
            .map(|(started, finished)| (finished - started).num_milliseconds());
        let queue_ms = execution
            .started_at
            .map(|started| (started - execution.created_at).num_milliseconds().max(0));
        ExecutionResponse {
            id: execution.id,
            task_id: execution.task_id,
            status: execution.status,
            lane: execution.lane,
            exit_code: execution.exit_code,
            stdout: execution.stdout,
            stdout_encoding: execution.stdout_encoding,
            stderr: execution.stderr,
            stderr_encoding: execution.stderr_encoding,
            output_truncated: execution.output_truncated,
            stdout_truncated: execution.stdout_truncated,
            stderr_truncated: execution.stderr_truncated,
            oom_killed: execution.oom_killed,
            compile_error: execution.compile_error,
            peak_memory_bytes: execution.peak_memory_bytes,
            error: execution.error,
            worker_id: execution.worker_id,
            attempt: execution.attempt,
            created_at: execution.created_at,
            dispatched_at: execution.dispatched_at,
            started_at: execution.started_at,
            finished_at: execution.finished_at,
            queue_ms,
            duration_ms,
            runs: execution.runs,
            admitted: execution.admitted,
            idempotency_key: execution.idempotency_key,
            dead_lettered_at: execution.dead_lettered_at,
            rerun_of: execution.rerun_of,
            callback_url: execution.callback_url,
            webhook_state: execution.webhook_state,
            trace_id: execution
                .trace_parent
                .as_deref()
                .and_then(voidrunner_shared::telemetry::trace_id)
                .map(str::to_owned),
            webhook_attempts: None,
        }
    }
}

impl From<webhook_attempt::Model> for WebhookAttemptResponse {
    fn from(attempt: webhook_attempt::Model) -> Self {
        WebhookAttemptResponse {
            attempt: attempt.attempt,
            attempted_at: attempt.attempted_at,
            status_code: attempt.status_code,
            error: attempt.error,
            duration_ms: attempt.duration_ms,
        }
    }
}

/// An execution as the API shows it, as JSON (for payloads sent elsewhere).
pub fn json(execution: execution::Model) -> serde_json::Value {
    serde_json::to_value(ExecutionResponse::from(execution)).unwrap_or_default()
}
