//! Reporting how an execution ended, on the bus: its result on the reply subject and, when the
//! fleet gave up on it, its dead letter. Workers report their own runs; an api replica reports
//! for workers that vanished. Both go through here, with the same message ids, so whichever
//! reports first is stored and the other is dropped as a duplicate.

use async_nats::jetstream;
use chrono::Utc;

use crate::events::{DeadLetter, DeadLetterV1, DispatchV1, ExecutionResult, ResultV1};
use crate::headers::{self, message_id};
use crate::publish::{publish_json, PublishError};
use crate::Namespace;

/// Results larger than this once encoded switch their output to base64 (NATS carries 8 MB).
const MAX_RESULT_BYTES: usize = 6 * 1024 * 1024;

/// How a published result fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// It is the execution's result on the bus.
    First,
    /// Another result for the same dispatch was stored before it; this one was dropped.
    Duplicate,
}

/// Publishes `result` on the execution's reply subject and waits for RESULTS to store it (or
/// to answer that a result for the same dispatch is there already).
pub async fn publish_result(
    jetstream: &jetstream::Context,
    namespace: &Namespace,
    task_id: uuid::Uuid,
    result: &ResultV1,
) -> Result<Stored, PublishError> {
    let execution_id = result.execution_id;
    let headers = headers::for_execution(
        &message_id::result(execution_id, result.dispatch_token.as_deref()),
        execution_id,
        task_id,
        result.attempt,
    );
    let mut event = ExecutionResult::V1(result.clone());
    if serde_json::to_vec(&event)?.len() > MAX_RESULT_BYTES {
        // JSON escapes can grow text sixfold; base64 grows it by a third at most.
        let ExecutionResult::V1(result) = &mut event;
        result.stdout = std::mem::take(&mut result.stdout).into_base64();
        result.stderr = std::mem::take(&mut result.stderr).into_base64();
    }
    publish_json(
        jetstream,
        namespace.result_subject(execution_id),
        headers,
        &event,
    )
    .await
    .map(|ack| {
        if ack.duplicate {
            Stored::Duplicate
        } else {
            Stored::First
        }
    })
}

/// Gives up on a dispatch for `reason` after `attempts` deliveries: its dead letter goes to DLQ
/// and the execution ends in `error`, reported by `reporter` (a worker id, or `api`).
pub async fn publish_dead_letter(
    jetstream: &jetstream::Context,
    namespace: &Namespace,
    dispatch: &DispatchV1,
    reason: String,
    attempts: u32,
    reporter: &str,
) -> Result<Stored, PublishError> {
    let execution_id = dispatch.execution_id;
    let letter = DeadLetter::V1(DeadLetterV1 {
        dispatch: dispatch.clone(),
        reason: reason.clone(),
        attempts,
        worker_id: reporter.to_owned(),
        failed_at: Utc::now(),
    });
    publish_json(
        jetstream,
        namespace.dead_letter_subject(dispatch.lane, dispatch.language),
        headers::for_execution(
            &message_id::dead_letter(execution_id),
            execution_id,
            dispatch.task_id,
            attempts,
        ),
        &letter,
    )
    .await?;
    let result = ResultV1 {
        dead_lettered: true,
        dispatch_token: dispatch.dispatch_token.clone(),
        ..ResultV1::fleet_error(execution_id, reporter, attempts, reason)
    };
    publish_result(jetstream, namespace, dispatch.task_id, &result).await
}
