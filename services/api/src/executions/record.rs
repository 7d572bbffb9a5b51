//! What the fleet reports, applied: `started` events and results.

use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{ColumnTrait, Condition, EntityTrait};
use voidrunner_shared::events::{Encoding, ExecutionResult, ResultV1, StartedV1};
use voidrunner_shared::Status;

use super::transitions::Transition;
use super::{ExecutionError, Lifecycle};
use crate::entity::execution::{self, Column};

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Utf8 => "utf-8",
        Encoding::Base64 => "base64",
    }
}

fn count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The columns a result sets.
fn result_columns(result: &ResultV1) -> Vec<(Column, SimpleExpr)> {
    let mut columns = vec![
        (Column::ExitCode, Expr::value(result.exit_code)),
        (Column::Stdout, Expr::value(result.stdout.text.clone())),
        (
            Column::StdoutEncoding,
            Expr::value(encoding_name(result.stdout.encoding)),
        ),
        (Column::Stderr, Expr::value(result.stderr.text.clone())),
        (
            Column::StderrEncoding,
            Expr::value(encoding_name(result.stderr.encoding)),
        ),
        (
            Column::OutputTruncated,
            Expr::value(result.output_truncated),
        ),
        (
            Column::StdoutTruncated,
            Expr::value(result.stdout_truncated),
        ),
        (
            Column::StderrTruncated,
            Expr::value(result.stderr_truncated),
        ),
        (Column::OomKilled, Expr::value(result.oom_killed)),
        (Column::CompileError, Expr::value(result.compile_error)),
        (
            Column::PeakMemoryBytes,
            Expr::value(
                result
                    .peak_memory_bytes
                    .and_then(|bytes| i64::try_from(bytes).ok()),
            ),
        ),
        (Column::Error, Expr::value(result.error.clone())),
        (Column::WorkerId, Expr::value(result.worker_id.clone())),
        (Column::Attempt, Expr::value(count(result.attempt))),
        (Column::FinishedAt, Expr::value(result.finished_at)),
        (Column::Runs, Expr::value(count(result.runs))),
    ];
    if let Some(started_at) = result.started_at {
        columns.push((Column::StartedAt, Expr::value(started_at)));
    }
    if result.dead_lettered {
        columns.push((Column::DeadLetteredAt, Expr::value(result.finished_at)));
    }
    columns
}

/// Only a message with the dispatch's token may move the execution on (executions from before
/// tokens have none and take any).
fn holds_token(token: Option<&str>) -> Condition {
    let matching = match token {
        Some(token) => Condition::any()
            .add(Column::DispatchToken.is_null())
            .add(Column::DispatchToken.eq(token)),
        None => Condition::all().add(Column::DispatchToken.is_null()),
    };
    Condition::all().add(matching)
}

/// What a result must meet besides the token: while the execution runs, a result for the
/// delivery in progress comes from the worker that announced it. (A result of an earlier
/// delivery may still come, from a worker the fleet gave up on too soon; the fleet's own dead
/// letter speaks for a worker that vanished.)
fn answers_the_dispatch(result: &ResultV1) -> Condition {
    let token = holds_token(result.dispatch_token.as_deref());
    if result.dead_lettered {
        return token;
    }
    let impersonates = Condition::all()
        .add(Column::Status.eq(Status::Running))
        .add(Column::Attempt.eq(count(result.attempt)))
        .add(Column::WorkerId.is_not_null())
        .add(Column::WorkerId.ne(result.worker_id.clone()));
    token.add(impersonates.not())
}

impl Lifecycle {
    /// Records that a message for the execution was refused: it did not come from the
    /// execution's dispatch. Nothing of the execution changes.
    async fn refused(&self, execution_id: uuid::Uuid, kind: &'static str, worker_id: &str) {
        let still_open = execution::Entity::find_by_id(execution_id)
            .one(&self.db)
            .await
            .ok()
            .flatten()
            .is_some_and(|execution| !execution.status.is_final());
        // A duplicate of what ended it is no event; a refused message for an open one is.
        if still_open {
            metrics::counter!(voidrunner_shared::metrics::SECURITY_EVENTS, "kind" => kind)
                .increment(1);
            tracing::warn!(%execution_id, security_event = kind, claimed_worker = worker_id, "refused a message that does not answer the execution's dispatch");
        }
    }

    /// A worker started the execution; a late `started` after the result changes nothing.
    pub async fn start(
        &self,
        started: &StartedV1,
    ) -> Result<Option<execution::Model>, ExecutionError> {
        let columns = vec![
            (Column::StartedAt, Expr::value(started.started_at)),
            (Column::WorkerId, Expr::value(started.worker_id.clone())),
            (Column::Attempt, Expr::value(count(started.attempt))),
        ];
        let changed = self
            .change(
                started.execution_id,
                Transition::Start,
                Status::Running,
                columns,
                holds_token(started.dispatch_token.as_deref()),
            )
            .await?;
        if changed.is_none() {
            self.refused(started.execution_id, "started_refused", &started.worker_id)
                .await;
        }
        Ok(changed)
    }

    /// A result arrived: the execution ends as it says, once. `None` for a duplicate or a
    /// result that came after the execution ended otherwise (e.g. cancelled while queued).
    pub async fn finish(
        &self,
        result: &ResultV1,
    ) -> Result<Option<execution::Model>, ExecutionError> {
        let changed = self
            .change(
                result.execution_id,
                Transition::Finish,
                result.status,
                result_columns(result),
                answers_the_dispatch(result),
            )
            .await?;
        if changed.is_none() {
            self.refused(result.execution_id, "result_refused", &result.worker_id)
                .await;
        }
        Ok(changed)
    }

    /// A message the api itself saw on the execution's reply subject (a request waiting for
    /// the result, a live-output stream about to send it): recorded at once when it is the
    /// execution's final result, so that what the client reads next already holds it, whether
    /// the recorder has come to it or not. Anything else is left to the recorder.
    pub async fn finish_seen(
        &self,
        execution_id: uuid::Uuid,
        payload: &[u8],
    ) -> Result<(), ExecutionError> {
        if let Ok(ExecutionResult::V1(result)) = serde_json::from_slice::<ExecutionResult>(payload)
        {
            if result.execution_id == execution_id && result.status.is_final() {
                self.finish(&result).await?;
            }
        }
        Ok(())
    }
}
