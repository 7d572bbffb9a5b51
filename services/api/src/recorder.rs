//! Records what the fleet reports into the database: results from RESULTS and `started` events
//! from EVENTS, through durable consumers that every api replica shares.
//!
//! Each transition is a guarded `UPDATE ... WHERE status IN (...)`, so a redelivered, duplicate
//! or late message changes nothing, and the message is acked only after the write committed.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use chrono::Utc;
use futures::StreamExt;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use voidrunner_shared::events::{Encoding, ExecutionEvent, ExecutionResult, ResultV1, StartedV1};

use crate::admission;
use crate::entity::execution::{self, Status};
use crate::entity::task;
use crate::state::AppState;

const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Messages pulled at a time, and how long a pull waits for them to arrive.
const RECORD_BATCH: usize = 32;
const BATCH_WAIT: Duration = Duration::from_millis(500);

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Utf8 => "utf-8",
        Encoding::Base64 => "base64",
    }
}

/// Applies a final result; returns whether it changed the execution (false for duplicates).
pub async fn apply_result(db: &DatabaseConnection, result: &ResultV1) -> Result<bool, DbErr> {
    let status = Status::from(result.status);
    let mut update = execution::Entity::update_many()
        .col_expr(execution::Column::Status, Expr::value(status))
        .col_expr(execution::Column::ExitCode, Expr::value(result.exit_code))
        .col_expr(
            execution::Column::Stdout,
            Expr::value(result.stdout.text.clone()),
        )
        .col_expr(
            execution::Column::StdoutEncoding,
            Expr::value(encoding_name(result.stdout.encoding)),
        )
        .col_expr(
            execution::Column::Stderr,
            Expr::value(result.stderr.text.clone()),
        )
        .col_expr(
            execution::Column::StderrEncoding,
            Expr::value(encoding_name(result.stderr.encoding)),
        )
        .col_expr(
            execution::Column::OutputTruncated,
            Expr::value(result.output_truncated),
        )
        .col_expr(
            execution::Column::StdoutTruncated,
            Expr::value(result.stdout_truncated),
        )
        .col_expr(
            execution::Column::StderrTruncated,
            Expr::value(result.stderr_truncated),
        )
        .col_expr(execution::Column::OomKilled, Expr::value(result.oom_killed))
        .col_expr(
            execution::Column::CompileError,
            Expr::value(result.compile_error),
        )
        .col_expr(
            execution::Column::PeakMemoryBytes,
            Expr::value(
                result
                    .peak_memory_bytes
                    .and_then(|bytes| i64::try_from(bytes).ok()),
            ),
        )
        .col_expr(execution::Column::Error, Expr::value(result.error.clone()))
        .col_expr(
            execution::Column::WorkerId,
            Expr::value(result.worker_id.clone()),
        )
        .col_expr(
            execution::Column::Attempt,
            Expr::value(i32::try_from(result.attempt).unwrap_or(i32::MAX)),
        )
        .col_expr(
            execution::Column::FinishedAt,
            Expr::value(result.finished_at),
        )
        .col_expr(
            execution::Column::Runs,
            Expr::value(i32::try_from(result.runs).unwrap_or(i32::MAX)),
        )
        .col_expr(execution::Column::UpdatedAt, Expr::value(Utc::now()));
    if let Some(started_at) = result.started_at {
        update = update.col_expr(execution::Column::StartedAt, Expr::value(started_at));
    }
    if result.dead_lettered {
        update = update.col_expr(
            execution::Column::DeadLetteredAt,
            Expr::value(result.finished_at),
        );
    }
    let outcome = update
        .filter(execution::Column::Id.eq(result.execution_id))
        .filter(execution::Column::Status.is_in(Status::UNFINISHED))
        .exec(db)
        .await?;
    Ok(outcome.rows_affected > 0)
}

/// Marks a queued execution running; a late `started` after the result changes nothing.
pub async fn apply_started(db: &DatabaseConnection, started: &StartedV1) -> Result<bool, DbErr> {
    let outcome = execution::Entity::update_many()
        .col_expr(execution::Column::Status, Expr::value(Status::Running))
        .col_expr(
            execution::Column::StartedAt,
            Expr::value(started.started_at),
        )
        .col_expr(
            execution::Column::WorkerId,
            Expr::value(started.worker_id.clone()),
        )
        .col_expr(
            execution::Column::Attempt,
            Expr::value(i32::try_from(started.attempt).unwrap_or(i32::MAX)),
        )
        .col_expr(execution::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(execution::Column::Id.eq(started.execution_id))
        .filter(execution::Column::Status.is_in(Status::UNFINISHED))
        .exec(db)
        .await?;
    Ok(outcome.rows_affected > 0)
}

/// What to do with a message once its handling ended.
#[derive(Debug, PartialEq, Eq)]
enum Disposition {
    Ack,
    /// The database is unavailable: try again soon.
    Retry,
    /// The payload can never be applied.
    Reject,
}

/// After an execution changed state: its task's status follows it. Returns the execution.
async fn moved_on(db: &DatabaseConnection, execution_id: Uuid) -> Option<execution::Model> {
    let execution = execution::Entity::find_by_id(execution_id)
        .one(db)
        .await
        .ok()
        .flatten()?;
    if let Err(error) = task::refresh_status(db, execution.task_id).await {
        tracing::warn!(task_id = %execution.task_id, error = %error, "task status not refreshed");
    }
    Some(execution)
}

/// Records a result; also returns the execution's user when the result ended the execution,
/// since that frees room under the user's limit.
async fn record_result(db: &DatabaseConnection, payload: &[u8]) -> (Disposition, Option<Uuid>) {
    match serde_json::from_slice::<ExecutionResult>(payload) {
        Ok(ExecutionResult::V1(result)) => match apply_result(db, &result).await {
            Ok(changed) => {
                tracing::info!(execution_id = %result.execution_id, status = result.status.as_str(), changed, "result recorded");
                let user = if changed {
                    moved_on(db, result.execution_id)
                        .await
                        .map(|execution| execution.user_id)
                } else {
                    None
                };
                (Disposition::Ack, user)
            }
            Err(error) => {
                tracing::warn!(execution_id = %result.execution_id, error = %error, "recording result failed");
                (Disposition::Retry, None)
            }
        },
        Err(error) => {
            tracing::error!(error = %error, "result payload does not match voidrunner.result.v1");
            (Disposition::Reject, None)
        }
    }
}

async fn record_started(db: &DatabaseConnection, payload: &[u8]) -> Disposition {
    match serde_json::from_slice::<ExecutionEvent>(payload) {
        Ok(ExecutionEvent::StartedV1(started)) => match apply_started(db, &started).await {
            Ok(changed) => {
                if changed {
                    moved_on(db, started.execution_id).await;
                }
                Disposition::Ack
            }
            Err(error) => {
                tracing::warn!(execution_id = %started.execution_id, error = %error, "recording start failed");
                Disposition::Retry
            }
        },
        Ok(_) => Disposition::Ack,
        Err(error) => {
            tracing::error!(error = %error, "started payload does not match voidrunner.started.v1");
            Disposition::Reject
        }
    }
}

/// Which consumer a recorder loop drains.
#[derive(Debug, Clone, Copy)]
pub enum Feed {
    Results,
    Started,
}

/// Drains one feed into the database until `shutdown`, re-binding after connection trouble.
pub async fn run(state: AppState, feed: Feed, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        if let Err(error) = drain(&state, feed, &shutdown).await {
            tracing::warn!(?feed, error = %error, "recorder interrupted; re-binding");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
        }
    }
}

async fn drain(
    state: &AppState,
    feed: Feed,
    shutdown: &CancellationToken,
) -> Result<(), async_nats::Error> {
    let (stream, consumer_name) = match feed {
        Feed::Results => (
            state.namespace.results_stream(),
            state.namespace.recorder_consumer(),
        ),
        Feed::Started => (
            state.namespace.events_stream(),
            state.namespace.started_recorder_consumer(),
        ),
    };
    let consumer: PullConsumer = state
        .jetstream
        .get_stream(&stream)
        .await?
        .get_consumer(consumer_name)
        .await?;
    // Pulled in small batches, each handled to the end before shutdown is looked at: a stopping
    // replica leaves no message taken but unacknowledged, waiting out ack_wait.
    while !shutdown.is_cancelled() {
        let mut batch = consumer
            .batch()
            .max_messages(RECORD_BATCH)
            .expires(BATCH_WAIT)
            .messages()
            .await?;
        while let Some(message) = batch.next().await {
            let message = message?;
            let disposition = match feed {
                Feed::Results => {
                    let (disposition, freed) = record_result(&state.db, &message.payload).await;
                    if let Some(user_id) = freed {
                        // The sweeper catches up if this fails.
                        if let Err(error) = admission::admit_and_dispatch(state, user_id).await {
                            tracing::warn!(%user_id, error = %error, "admitting held executions failed");
                        }
                    }
                    disposition
                }
                Feed::Started => record_started(&state.db, &message.payload).await,
            };
            acknowledge(&message, disposition).await;
        }
    }
    Ok(())
}

/// The recorder's ack policy: what each disposition tells JetStream.
fn ack_kind(disposition: Disposition) -> AckKind {
    match disposition {
        Disposition::Ack => AckKind::Ack,
        Disposition::Retry => AckKind::Nak(Some(RETRY_DELAY)),
        Disposition::Reject => AckKind::Term,
    }
}

async fn acknowledge(message: &jetstream::Message, disposition: Disposition) {
    if let Err(error) = message.ack_with(ack_kind(disposition)).await {
        // Redelivery will bring it back; applying it again is harmless.
        tracing::warn!(error = %error, "acknowledging recorder message failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_outage_is_retried_and_an_unreadable_payload_dropped() {
        assert!(matches!(ack_kind(Disposition::Ack), AckKind::Ack));
        assert!(matches!(
            ack_kind(Disposition::Retry),
            AckKind::Nak(Some(delay)) if delay == RETRY_DELAY
        ));
        assert!(matches!(ack_kind(Disposition::Reject), AckKind::Term));
    }

    #[tokio::test]
    async fn a_payload_that_is_not_a_result_is_rejected_without_touching_the_database() {
        let db = sea_orm::Database::connect("sqlite::memory:")
            .await
            .expect("in-memory sqlite");
        assert_eq!(
            record_result(&db, b"{\"schema\":\"voidrunner.result.v9\"}")
                .await
                .0,
            Disposition::Reject
        );
        assert_eq!(record_started(&db, b"not json").await, Disposition::Reject);
    }
}
