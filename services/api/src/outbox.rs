//! The transactional outbox: executions are committed with a null `dispatched_at`, published to
//! TASKS with `Nats-Msg-Id = execution id`, then marked dispatched with their stream sequence.
//! A sweeper republishes whatever a crash left unmarked; the dedup window makes that harmless.

use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio_util::sync::CancellationToken;
use voidrunner_shared::events::{Dispatch, DispatchV1, RequestedLimits, RetryPolicy, SourceFile};
use voidrunner_shared::headers;

use crate::entity::{execution, task};
use crate::state::AppState;

/// How old an undispatched execution must be before the sweeper takes it over from the request
/// that created it.
const SWEEP_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(3);
const SWEEP_BATCH: u64 = 200;
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("publishing dispatch: {0}")]
    Publish(String),
    #[error("marking execution dispatched: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// The dispatch event of an execution of `task`.
pub fn dispatch_event(execution: &execution::Model, task: &task::Model) -> DispatchV1 {
    DispatchV1 {
        execution_id: execution.id,
        task_id: task.id,
        language: task.script_type.into(),
        lane: task.lane(),
        code: task.script_content.clone(),
        files: task
            .files
            .clone()
            .and_then(|files| serde_json::from_value::<Vec<SourceFile>>(files).ok())
            .unwrap_or_default(),
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
    }
}

/// The encoded dispatch of an execution of `task`.
pub fn encode(execution: &execution::Model, task: &task::Model) -> Result<Vec<u8>, OutboxError> {
    serde_json::to_vec(&Dispatch::V1(dispatch_event(execution, task)))
        .map_err(|e| OutboxError::Publish(e.to_string()))
}

/// Publishes the execution to TASKS and marks it dispatched.
#[tracing::instrument(skip_all, fields(execution_id = %execution.id))]
pub async fn dispatch(
    state: &AppState,
    execution: &execution::Model,
    task: &task::Model,
) -> Result<(), OutboxError> {
    let subject = state
        .namespace
        .task_subject(task.lane(), task.script_type.into());
    let payload = encode(execution, task)?;
    let id = execution.id.to_string();
    let headers = headers::for_execution(&id, execution.id, task.id, 0);
    let ack = tokio::time::timeout(PUBLISH_TIMEOUT, async {
        state
            .jetstream
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| OutboxError::Publish(e.to_string()))?
            .await
            .map_err(|e| OutboxError::Publish(e.to_string()))
    })
    .await
    .map_err(|_| OutboxError::Publish("no acknowledgement from JetStream in time".into()))??;

    execution::Entity::update_many()
        .col_expr(execution::Column::DispatchedAt, Expr::value(Utc::now()))
        .col_expr(
            execution::Column::StreamSequence,
            Expr::value(i64::try_from(ack.sequence).unwrap_or(i64::MAX)),
        )
        .filter(execution::Column::Id.eq(execution.id))
        .filter(execution::Column::DispatchedAt.is_null())
        .exec(&state.db)
        .await?;
    tracing::debug!(
        sequence = ack.sequence,
        duplicate = ack.duplicate,
        "dispatched"
    );
    Ok(())
}

/// Republishes undispatched executions until `shutdown`.
pub async fn run_sweeper(state: AppState, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match sweep_once(&state).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "republished undispatched executions"),
            Err(error) => {
                tracing::warn!(error = %error, "outbox sweep failed; retrying on the next tick")
            }
        }
        match admit_held(&state).await {
            Ok(0) => {}
            Ok(admitted) => tracing::info!(admitted, "admitted held executions"),
            Err(error) => tracing::warn!(error = %error, "admitting held executions failed"),
        }
    }
}

/// One pass of the sweeper; returns how many executions it dispatched.
pub async fn sweep_once(state: &AppState) -> Result<usize, OutboxError> {
    let cutoff = Utc::now() - SWEEP_GRACE;
    let pending = execution::Entity::find()
        .filter(execution::Column::DispatchedAt.is_null())
        .filter(execution::Column::Admitted.eq(true))
        .filter(execution::Column::Status.eq(execution::Status::Queued))
        .filter(execution::Column::CreatedAt.lt(cutoff))
        .order_by_asc(execution::Column::CreatedAt)
        .limit(SWEEP_BATCH)
        .find_also_related(task::Entity)
        .all(&state.db)
        .await?;
    let mut dispatched = 0;
    for (execution, task) in pending {
        let Some(task) = task else { continue };
        // One execution that cannot be published must not hold back the others.
        match dispatch(state, &execution, &task).await {
            Ok(()) => dispatched += 1,
            Err(error) => {
                tracing::warn!(execution_id = %execution.id, error = %error, "republishing failed")
            }
        }
    }
    Ok(dispatched)
}

/// Admits held executions of every user with room under the limit.
async fn admit_held(state: &AppState) -> Result<usize, sea_orm::DbErr> {
    let mut admitted = 0;
    for user_id in crate::admission::users_with_held(&state.db).await? {
        admitted += crate::admission::admit_and_dispatch(state, user_id).await?;
    }
    Ok(admitted)
}
