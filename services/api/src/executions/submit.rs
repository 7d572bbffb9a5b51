//! Submitting: a new execution is committed queued — the outbox entry — with the task's status
//! and its admission in the same transaction, then dispatched. A 2xx after this means the
//! execution will reach a final state.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, SqlErr, TransactionTrait};
use uuid::Uuid;
use voidrunner_shared::{Status, TaskStatus};

use super::admission::{admit_many, admit_new};
use super::dispatch::encode;
use super::{callback, ExecutionError, Lifecycle};
use crate::entity::{execution, task};

/// What a new execution is made of.
pub struct NewExecution {
    /// Chosen by the caller, so that it can listen for the result before the execution exists.
    pub id: Uuid,
    /// Where the result is POSTed when the execution ends (checked by `callback::check_url`).
    pub callback_url: Option<String>,
    pub task: task::Model,
    pub stdin: String,
    pub idempotency_key: Option<String>,
    pub rerun_of: Option<Uuid>,
}

/// A one-shot run to submit with others: its task, not yet stored, and its execution's input.
pub struct NewRun {
    pub task: task::ActiveModel,
    pub id: Uuid,
    pub callback_url: Option<String>,
    pub stdin: String,
}

/// How a submission was taken.
pub enum Submitted {
    /// A new execution, committed, admitted and dispatched as the user's limit allows.
    New(execution::Model),
    /// The execution an earlier request with the same idempotency key created.
    Replayed(execution::Model),
}

impl Submitted {
    pub fn execution(&self) -> &execution::Model {
        match self {
            Submitted::New(execution) | Submitted::Replayed(execution) => execution,
        }
    }
}

impl Lifecycle {
    /// The execution an earlier request of the user's with `key` created.
    pub async fn find_by_idempotency_key(
        &self,
        user_id: Uuid,
        key: &str,
    ) -> Result<Option<execution::Model>, ExecutionError> {
        Ok(execution::Entity::find()
            .filter(execution::Column::UserId.eq(user_id))
            .filter(execution::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?)
    }

    /// The earlier execution of a one-shot run with `key`, if the run asked for the same
    /// program and stdin; another request under the same key is refused.
    pub async fn earlier_run(
        &self,
        user_id: Uuid,
        key: &str,
        spec: &crate::tasks::TaskSpec,
        stdin: &str,
    ) -> Result<Option<execution::Model>, ExecutionError> {
        let Some(earlier) = self.find_by_idempotency_key(user_id, key).await? else {
            return Ok(None);
        };
        let task = task::Entity::find_by_id(earlier.task_id)
            .one(&self.db)
            .await?;
        let same = task.is_some_and(|task| {
            task.kind == task::KIND_RUN
                && task.script_content == spec.script_content()
                && task.script_type == spec.language()
        }) && earlier.stdin == stdin;
        if same {
            Ok(Some(earlier))
        } else {
            Err(ExecutionError::KeyReused)
        }
    }

    /// Commits a new execution, then admits and dispatches what the user's limit allows.
    pub async fn submit(
        &self,
        user_id: Uuid,
        new: NewExecution,
    ) -> Result<Submitted, ExecutionError> {
        if let Some(key) = &new.idempotency_key {
            if let Some(earlier) = self.find_by_idempotency_key(user_id, key).await? {
                return replay(earlier, &new);
            }
        }
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(ExecutionError::BrokerDown);
        }
        let queued = queued(user_id, &new);
        // Refused now rather than left in the outbox for good: JSON escapes can make a dispatch
        // much larger than its script and stdin.
        let max = self.nats.server_info().max_payload;
        let size = encode(&queued, &new.task)?.len();
        if size > max {
            return Err(ExecutionError::TooLarge { size, max });
        }
        let txn = self.db.begin().await?;
        let inserted = execution::ActiveModel::from(queued)
            .reset_all()
            .insert(&txn)
            .await;
        let execution = match inserted {
            Ok(execution) => execution,
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                drop(txn);
                // A concurrent request with the same key, or a second re-run, won the race.
                if let Some(key) = &new.idempotency_key {
                    if let Some(earlier) = self.find_by_idempotency_key(user_id, key).await? {
                        return replay(earlier, &new);
                    }
                }
                return Err(ExecutionError::AlreadyRerun);
            }
            Err(error) => return Err(error.into()),
        };
        super::followups::refresh_task_status(&txn, &execution).await?;
        // Last, so that the user's row is held only for the commit.
        let admitted = admit_new(&txn, user_id, self.max_active_per_user).await?;
        let mut execution = execution;
        if admitted {
            execution::Entity::update_many()
                .col_expr(execution::Column::Admitted, Expr::value(true))
                .filter(execution::Column::Id.eq(execution.id))
                .exec(&txn)
                .await?;
            execution.admitted = true;
        }
        txn.commit().await?;
        super::observe::observe(&execution, "submit", None);
        if admitted {
            // A failure is left to the outbox sweeper: the execution is committed.
            match self.dispatch(&execution, &new.task).await {
                Ok(dispatched) => execution = dispatched,
                Err(error) => {
                    tracing::warn!(execution_id = %execution.id, error = %error, "dispatch deferred to the outbox sweeper")
                }
            }
        }
        Ok(Submitted::New(execution))
    }
}

impl Lifecycle {
    /// Commits new executions of one-shot runs, with their tasks, in one transaction: all are
    /// queued or none is. Then admits what the user's limit allows, oldest first, and
    /// dispatches those at once (their publishes pipelined). Returns them in the order given.
    pub async fn submit_runs(
        &self,
        user_id: Uuid,
        runs: Vec<NewRun>,
    ) -> Result<Vec<execution::Model>, ExecutionError> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(ExecutionError::BrokerDown);
        }
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin().await?;
        let tasks = task::Entity::insert_many(runs.iter().map(|run| run.task.clone()))
            .exec_with_returning(&txn)
            .await?;
        let mut tasks: std::collections::HashMap<Uuid, task::Model> =
            tasks.into_iter().map(|task| (task.id, task)).collect();
        let max = self.nats.server_info().max_payload;
        let mut news = Vec::with_capacity(runs.len());
        for run in runs {
            let task = run
                .task
                .id
                .try_as_ref()
                .and_then(|id| tasks.remove(id))
                .ok_or(ExecutionError::NotFound)?;
            let new = NewExecution {
                id: run.id,
                callback_url: run.callback_url,
                task,
                stdin: run.stdin,
                idempotency_key: None,
                rerun_of: None,
            };
            news.push(new);
        }
        let mut rows = Vec::with_capacity(news.len());
        for new in &news {
            let row = queued(user_id, new);
            let size = encode(&row, &new.task)?.len();
            if size > max {
                return Err(ExecutionError::TooLarge { size, max });
            }
            rows.push(row);
        }
        execution::Entity::insert_many(
            rows.iter()
                .map(|row| execution::ActiveModel::from(row.clone()).reset_all()),
        )
        .exec(&txn)
        .await?;
        // Each run's task is new and has this one execution.
        task::Entity::update_many()
            .col_expr(
                task::Column::StatusName,
                Expr::value(TaskStatus::from(Some(Status::Queued)).as_str()),
            )
            .filter(task::Column::Id.is_in(news.iter().map(|new| new.task.id)))
            .exec(&txn)
            .await?;
        let admitted = admit_many(&txn, user_id, rows.len(), self.max_active_per_user).await?;
        if admitted > 0 {
            execution::Entity::update_many()
                .col_expr(execution::Column::Admitted, Expr::value(true))
                .filter(execution::Column::Id.is_in(rows[..admitted].iter().map(|row| row.id)))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        for row in &mut rows[..admitted] {
            row.admitted = true;
        }
        for row in &rows {
            super::observe::observe(row, "submit", None);
        }
        let dispatched = self
            .dispatch_all(rows.drain(..admitted).zip(news.iter().map(|new| &new.task)))
            .await;
        Ok(dispatched.into_iter().chain(rows).collect())
    }
}

/// The earlier execution with the same key, if it was for the same request.
fn replay(earlier: execution::Model, new: &NewExecution) -> Result<Submitted, ExecutionError> {
    if earlier.task_id == new.task.id && earlier.stdin == new.stdin {
        Ok(Submitted::Replayed(earlier))
    } else {
        Err(ExecutionError::KeyReused)
    }
}

/// The row of a new execution: queued, held until admission, not yet dispatched.
pub(super) fn queued(user_id: Uuid, new: &NewExecution) -> execution::Model {
    let now = Utc::now();
    execution::Model {
        id: new.id,
        task_id: new.task.id,
        user_id,
        status: Status::Queued,
        lane: new.task.lane().as_str().to_owned(),
        exit_code: None,
        stdout: String::new(),
        stdout_encoding: "utf-8".into(),
        stderr: String::new(),
        stderr_encoding: "utf-8".into(),
        output_truncated: false,
        oom_killed: false,
        compile_error: false,
        peak_memory_bytes: None,
        stdin: new.stdin.clone(),
        error: None,
        worker_id: None,
        attempt: 0,
        dispatched_at: None,
        stream_sequence: None,
        created_at: now,
        started_at: None,
        finished_at: None,
        updated_at: now,
        idempotency_key: new.idempotency_key.clone(),
        admitted: false,
        dead_lettered_at: None,
        rerun_of: new.rerun_of,
        runs: 0,
        webhook_state: new
            .callback_url
            .as_ref()
            .map(|_| callback::PENDING.to_owned()),
        callback_url: new.callback_url.clone(),
        webhook_next_at: None,
        stdout_truncated: false,
        stderr_truncated: false,
        // 122 random bits from the OS: what a worker proves it holds the dispatch with.
        dispatch_token: Some(Uuid::new_v4().simple().to_string()),
        trace_parent: voidrunner_shared::telemetry::current_traceparent(),
    }
}
