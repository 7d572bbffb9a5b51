//! One change of status, whole: the guarded write, the task's status and the admission of held
//! executions in the same transaction, then everything the change calls for outside the
//! database. Every path that moves an execution on goes through `Lifecycle::change`, so none
//! can forget a follow-up.

use sea_orm::sea_query::SimpleExpr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use uuid::Uuid;
use voidrunner_shared::{Language, Status, TaskStatus};

use super::admission::admit_in;
use super::observe::observe;
use super::transitions::{self, Transition};
use super::{ExecutionError, Lifecycle};
use crate::entity::{execution, task};

impl Lifecycle {
    /// Applies `transition` to `to` with `changes` where `guard` holds; returns the execution
    /// as it now is, or `None` when it was in a state the transition does not leave or the
    /// guard failed (nothing was written).
    pub(super) async fn change(
        &self,
        execution_id: Uuid,
        transition: Transition,
        to: Status,
        changes: Vec<(execution::Column, SimpleExpr)>,
        guard: Condition,
    ) -> Result<Option<execution::Model>, ExecutionError> {
        let txn = self.db.begin().await?;
        if !transitions::apply(&txn, execution_id, transition, to, changes, guard).await? {
            return Ok(None);
        }
        let execution = execution::Entity::find_by_id(execution_id)
            .one(&txn)
            .await?
            .ok_or(ExecutionError::NotFound)?;
        refresh_task_status(&txn, execution.task_id).await?;
        // Its place under the user's limit goes to the next held execution.
        let admitted = if to.is_final() && execution.admitted {
            admit_in(&txn, execution.user_id, self.max_active_per_user).await?
        } else {
            Vec::new()
        };
        // What the final state is counted under.
        let language = if to.is_final() {
            task::Entity::find_by_id(execution.task_id)
                .select_only()
                .column(task::Column::ScriptType)
                .into_tuple::<Language>()
                .one(&txn)
                .await?
        } else {
            None
        };
        txn.commit().await?;
        observe(&execution, transition.as_str(), language);
        self.follow_up(&execution, admitted).await;
        Ok(Some(execution))
    }

    /// What a committed change calls for beyond the database. Each step is best effort: the
    /// sweeper dispatches what was admitted but not published, and the webhook deliverer polls.
    pub(super) async fn follow_up(&self, execution: &execution::Model, admitted: Vec<Uuid>) {
        self.dispatch_admitted(admitted).await;
        if execution.status.is_final() && execution.callback_url.is_some() {
            self.webhooks_due.notify_one();
        }
    }
}

/// Sets a task's status to its latest execution's, after an execution was created or moved on.
pub(super) async fn refresh_task_status<C: ConnectionTrait>(
    db: &C,
    task_id: Uuid,
) -> Result<(), DbErr> {
    let latest = execution::Entity::find()
        .select_only()
        .column(execution::Column::Status)
        .filter(execution::Column::TaskId.eq(task_id))
        .order_by_desc(execution::Column::CreatedAt)
        .order_by_desc(execution::Column::Id)
        .into_tuple::<execution::Status>()
        .one(db)
        .await?;
    task::Entity::update_many()
        .col_expr(
            task::Column::StatusName,
            sea_orm::sea_query::Expr::value(TaskStatus::from(latest).as_str()),
        )
        .filter(task::Column::Id.eq(task_id))
        .exec(db)
        .await?;
    Ok(())
}
