//! The transactional outbox: executions are committed with a null `dispatched_at`, published to
//! TASKS with their dispatch's message id, then marked dispatched with their stream sequence.
//! The sweeper republishes whatever a crash left unmarked; the dedup window makes that harmless.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tracing::Instrument;
use uuid::Uuid;
use voidrunner_shared::events::{Dispatch, DispatchV1, RequestedLimits, RetryPolicy};
use voidrunner_shared::headers::{self, message_id};
use voidrunner_shared::publish::publish_acked;
use voidrunner_shared::Status;

use super::{ExecutionError, Lifecycle};
use crate::entity::{execution, task};

/// How old an undispatched execution must be before the sweeper takes it over from the request
/// that created it.
const SWEEP_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(3);
const SWEEP_BATCH: u64 = 200;
/// How long a dispatch may wait for JetStream: a request is waiting on it.
const DISPATCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// The dispatch event of an execution of `task`.
pub(super) fn dispatch_event(execution: &execution::Model, task: &task::Model) -> DispatchV1 {
    DispatchV1 {
        execution_id: execution.id,
        task_id: task.id,
        language: task.script_type,
        lane: task.lane(),
        code: task.script_content.clone(),
        files: task.files(),
        stdin: execution.stdin.clone(),
        timeout_seconds: u32::try_from(task.timeout_seconds).unwrap_or(1),
        limits: RequestedLimits {
            memory_mb: task.memory_mb.and_then(|mb| u32::try_from(mb).ok()),
            cpu_millis: task
                .cpu_millis
                .and_then(|millis| u32::try_from(millis).ok()),
            output_bytes: task
                .output_limit_bytes
                .and_then(|bytes| u64::try_from(bytes).ok()),
        },
        network: task.network,
        retry: RetryPolicy {
            retries: u32::try_from(task.max_retries).unwrap_or(0),
            backoff_seconds: u32::try_from(task.retry_backoff_seconds).unwrap_or(1),
        },
        submitted_at: execution.created_at,
        dispatch_token: execution.dispatch_token.clone(),
    }
}

/// The encoded dispatch of an execution of `task`.
pub(super) fn encode(
    execution: &execution::Model,
    task: &task::Model,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Dispatch::V1(dispatch_event(execution, task)))
}

impl Lifecycle {
    /// Publishes the execution to TASKS and marks it dispatched, in the execution's trace
    /// (whether the request that created it or the outbox sweeper publishes); returns the
    /// execution as marked.
    pub(super) async fn dispatch(
        &self,
        execution: &execution::Model,
        task: &task::Model,
    ) -> Result<execution::Model, ExecutionError> {
        let span = tracing::info_span!("dispatch", execution_id = %execution.id, trace_id = tracing::field::Empty);
        voidrunner_shared::telemetry::continue_trace(&span, execution.trace_parent.as_deref());
        self.publish_dispatch(execution, task)
            .instrument(span)
            .await
    }

    async fn publish_dispatch(
        &self,
        execution: &execution::Model,
        task: &task::Model,
    ) -> Result<execution::Model, ExecutionError> {
        let subject = self.namespace.task_subject(task.lane(), task.script_type);
        let payload = encode(execution, task)?;
        let headers = headers::for_execution(
            &message_id::dispatch(execution.id),
            execution.id,
            task.id,
            0,
        );
        let ack = publish_acked(
            &self.jetstream,
            subject,
            headers,
            payload.into(),
            DISPATCH_DEADLINE,
        )
        .await?;
        let dispatched_at = Utc::now();
        let sequence = i64::try_from(ack.sequence).unwrap_or(i64::MAX);
        execution::Entity::update_many()
            .col_expr(execution::Column::DispatchedAt, Expr::value(dispatched_at))
            .col_expr(execution::Column::StreamSequence, Expr::value(sequence))
            .filter(execution::Column::Id.eq(execution.id))
            .filter(execution::Column::DispatchedAt.is_null())
            .exec(&self.db)
            .await?;
        tracing::debug!(
            sequence = ack.sequence,
            duplicate = ack.duplicate,
            "dispatched"
        );
        Ok(execution::Model {
            dispatched_at: execution.dispatched_at.or(Some(dispatched_at)),
            stream_sequence: execution.stream_sequence.or(Some(sequence)),
            ..execution.clone()
        })
    }

    /// Dispatches executions just admitted, oldest first; one that cannot be published is left
    /// to the sweeper and does not hold back the others.
    pub(super) async fn dispatch_admitted(&self, admitted: Vec<Uuid>) {
        if admitted.is_empty() {
            return;
        }
        let rows = execution::Entity::find()
            .filter(execution::Column::Id.is_in(admitted))
            .order_by_asc(execution::Column::CreatedAt)
            .find_also_related(task::Entity)
            .all(&self.db)
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(error = %error, "dispatch of admitted executions deferred to the sweeper");
                return;
            }
        };
        let rows: Vec<_> = rows
            .into_iter()
            .filter_map(|(execution, task)| Some((execution, task?)))
            .collect();
        self.dispatch_all(
            rows.iter()
                .map(|(execution, task)| (execution.clone(), task)),
        )
        .await;
    }

    /// Dispatches executions all at once, their publishes pipelined on the connection (in the
    /// order given) and each marked as its acknowledgement comes. Returns them as marked; one
    /// that could not be published is returned as it was, left to the outbox sweeper.
    pub(super) async fn dispatch_all<'t>(
        &self,
        rows: impl Iterator<Item = (execution::Model, &'t task::Model)>,
    ) -> Vec<execution::Model> {
        futures::future::join_all(rows.map(|(execution, task)| async move {
            match self.dispatch(&execution, task).await {
                Ok(dispatched) => dispatched,
                Err(error) => {
                    tracing::warn!(execution_id = %execution.id, error = %error, "dispatch deferred to the outbox sweeper");
                    execution
                }
            }
        }))
        .await
    }

    /// One pass of the outbox sweeper; returns how many executions it dispatched.
    pub async fn sweep_undispatched(&self) -> Result<usize, ExecutionError> {
        let cutoff = Utc::now() - SWEEP_GRACE;
        let pending = execution::Entity::find()
            .filter(execution::Column::DispatchedAt.is_null())
            .filter(execution::Column::Admitted.eq(true))
            .filter(execution::Column::Status.eq(Status::Queued))
            .filter(execution::Column::CreatedAt.lt(cutoff))
            .order_by_asc(execution::Column::CreatedAt)
            .limit(SWEEP_BATCH)
            .find_also_related(task::Entity)
            .all(&self.db)
            .await?;
        let mut dispatched = 0;
        for (execution, task) in pending {
            let Some(task) = task else { continue };
            match self.dispatch(&execution, &task).await {
                Ok(_) => dispatched += 1,
                Err(error) => {
                    tracing::warn!(execution_id = %execution.id, error = %error, "republishing failed")
                }
            }
        }
        Ok(dispatched)
    }
}
