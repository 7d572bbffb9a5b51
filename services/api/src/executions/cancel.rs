//! Cancelling, and running a dead letter again.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter};
use uuid::Uuid;
use voidrunner_shared::events::ResultV1;
use voidrunner_shared::report::{self, Stored};
use voidrunner_shared::Status;

use super::transitions::Transition;
use super::{ExecutionError, Lifecycle, NewExecution, Submitted, REPORTER};
use crate::entity::execution::{self, Column};

impl Lifecycle {
    /// Cancels the user's execution. A queued one is taken off its lane and ends `cancelled`
    /// here; a running one is killed by the worker holding it, which reports it `cancelled`.
    /// Returns the execution as it is now.
    pub async fn cancel(
        &self,
        user_id: Uuid,
        execution_id: Uuid,
    ) -> Result<execution::Model, ExecutionError> {
        let execution = self.find_owned(user_id, execution_id).await?;
        if execution.status.is_final() {
            return Err(ExecutionError::AlreadyEnded);
        }
        // Recorded first: whichever worker holds the execution, or takes it later, sees it.
        let bucket = self
            .jetstream
            .get_key_value(self.namespace.cancellation_bucket())
            .await
            .map_err(|e| ExecutionError::Cancellation(e.into()))?;
        let request = serde_json::json!({ "requested_at": Utc::now(), "user_id": user_id });
        bucket
            .put(execution_id.to_string(), request.to_string().into())
            .await
            .map_err(|e| ExecutionError::Cancellation(e.into()))?;
        if execution.status == Status::Queued {
            self.cancel_queued(&execution).await?;
        }
        self.find_owned(user_id, execution_id).await
    }

    /// Ends a queued execution `cancelled`. The reply subject decides between the cancellation
    /// and a worker that took the execution meanwhile: the cancellation is published there
    /// first, under the message id the worker's result has, and only if it is stored first
    /// does the execution end cancelled. So the bus, the live streams and the database tell one
    /// outcome, and a worker that pulls the dispatch later finds the result and leaves it.
    async fn cancel_queued(&self, execution: &execution::Model) -> Result<(), ExecutionError> {
        self.take_off_lane(execution).await;
        let finished_at = Utc::now();
        let error = "cancelled on request before it started";
        let mut announced = ResultV1::fleet_error(
            execution.id,
            REPORTER,
            u32::try_from(execution.attempt).unwrap_or(0),
            error.to_owned(),
        );
        announced.status = Status::Cancelled;
        announced.runs = 0;
        announced.finished_at = finished_at;
        announced.dispatch_token = execution.dispatch_token.clone();
        let stored = report::publish_result(
            &self.jetstream,
            &self.namespace,
            execution.task_id,
            &announced,
        )
        .await
        .map_err(|e| ExecutionError::Cancellation(e.into()))?;
        if stored == Stored::Duplicate {
            // A worker's result is there first: the execution ends as that says, when the
            // recorder applies it.
            return Err(ExecutionError::AlreadyEnded);
        }
        let columns = vec![
            (Column::Error, Expr::value(error)),
            (Column::FinishedAt, Expr::value(finished_at)),
        ];
        // The recorder may have applied the announcement already (then nothing is written).
        // A worker that started meanwhile cannot report any more (its result would be a
        // duplicate): it is told by the cancellation bucket and stops.
        self.change(
            execution.id,
            Transition::Cancel,
            Status::Cancelled,
            columns,
            Condition::all(),
        )
        .await?;
        Ok(())
    }

    /// Deletes a queued execution's dispatch from TASKS, so no worker pulls it.
    async fn take_off_lane(&self, execution: &execution::Model) {
        let Some(sequence) = execution.stream_sequence else {
            return;
        };
        let removed = match self
            .jetstream
            .get_stream(self.namespace.tasks_stream())
            .await
        {
            Ok(tasks) => tasks
                .delete_message(u64::try_from(sequence).unwrap_or_default())
                .await
                .unwrap_or(false),
            Err(_) => false,
        };
        tracing::debug!(execution_id = %execution.id, removed, "queued dispatch taken off its lane");
    }

    /// Runs a dead-lettered execution of the user's again, as a new execution of the same task
    /// with the same stdin and callback. Each dead letter is re-run at most once.
    pub async fn rerun(&self, user_id: Uuid, dead_id: Uuid) -> Result<Submitted, ExecutionError> {
        let dead = self.find_owned(user_id, dead_id).await?;
        if dead.dead_lettered_at.is_none() {
            return Err(ExecutionError::NotDeadLetter);
        }
        let already = execution::Entity::find()
            .filter(Column::RerunOf.eq(dead.id))
            .one(&self.db)
            .await?;
        if already.is_some() {
            return Err(ExecutionError::AlreadyRerun);
        }
        let task = crate::tasks::find_owned(&self.db, user_id, dead.task_id)
            .await
            .map_err(|error| match error {
                crate::tasks::TaskError::Database(error) => ExecutionError::Database(error),
                _ => ExecutionError::TaskGone,
            })?;
        self.submit(
            user_id,
            NewExecution {
                id: Uuid::now_v7(),
                callback_url: dead.callback_url.clone(),
                task,
                stdin: dead.stdin,
                idempotency_key: None,
                rerun_of: Some(dead.id),
            },
        )
        .await
    }
}
