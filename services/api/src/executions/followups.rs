//! One change of status, whole: the guarded write, the task's status and the admission of held
//! executions in the same transaction, then everything the change calls for outside the
//! database. Every path that moves an execution on goes through `Lifecycle::change`, so none
//! can forget a follow-up.

use sea_orm::sea_query::{Expr, ExprTrait, Query, SimpleExpr};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;
use voidrunner_shared::{Language, Status, TaskStatus};

use super::admission::release;
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
        let Some(execution) =
            transitions::apply(&txn, execution_id, transition, to, changes, guard).await?
        else {
            return Ok(None);
        };
        refresh_task_status(&txn, &execution).await?;
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
        // Its place under the user's limit goes to the next held execution; last, so that the
        // user's row is held only for the commit.
        let admitted = if to.is_final() {
            release(
                &txn,
                execution.user_id,
                execution.admitted,
                self.max_active_per_user,
            )
            .await?
        } else {
            Vec::new()
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

/// Sets a task's status to `execution`'s (created or just moved on), unless a later execution
/// of the task exists: a task shows its latest execution's status. One statement.
pub(super) async fn refresh_task_status<C: ConnectionTrait>(
    db: &C,
    execution: &execution::Model,
) -> Result<(), DbErr> {
    let later = Query::select()
        .expr(Expr::val(1))
        .from(execution::Entity)
        .cond_where(
            Condition::all()
                .add(execution::Column::TaskId.eq(execution.task_id))
                .add(
                    Condition::any()
                        .add(execution::Column::CreatedAt.gt(execution.created_at))
                        .add(
                            Condition::all()
                                .add(execution::Column::CreatedAt.eq(execution.created_at))
                                .add(execution::Column::Id.gt(execution.id)),
                        ),
                ),
        )
        .to_owned();
    task::Entity::update_many()
        .col_expr(
            task::Column::StatusName,
            Expr::value(TaskStatus::from(Some(execution.status)).as_str()),
        )
        .filter(task::Column::Id.eq(execution.task_id))
        .filter(Expr::exists(later).not())
        .exec(db)
        .await?;
    Ok(())
}
