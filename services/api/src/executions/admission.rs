//! Per-user admission: at most `VOIDRUNNER_MAX_ACTIVE_PER_USER` of a user's executions are on the
//! lanes or running at once, across every api replica and worker. The others are held in the
//! database, in submission order, and admitted as earlier ones finish.
//!
//! Holding work back in the database rather than on a lane keeps one user's burst from filling
//! the lanes ahead of everybody else, and needs no per-user bookkeeping on the workers.
//!
//! The user's row counts both (`active_executions`, `held_executions`), kept by the same
//! transactions that admit, hold and end executions: admitting costs one guarded row update,
//! never a count over the user's executions. The update is a row lock (the write lock on
//! SQLite) that serialises admission per user, so callers make it their last write before
//! committing, to hold it as briefly as possible. `admit_held` recounts from the executions
//! themselves, so a count that drifted (a row edited by hand) heals within a sweep.
//!
//! With the limit `unlimited` nothing is counted and no user row is touched: every execution
//! is admitted as it is submitted. An api that starts with a limit recounts every user with
//! unfinished executions first (`recount_all`), so counts left stale by unlimited replicas
//! (or by a change of the limit) are right before it admits anything.

use sea_orm::sea_query::{Expr, ExprTrait, Query, QueryStatementBuilder, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use uuid::Uuid;
use voidrunner_shared::Status;

use super::{ExecutionError, Lifecycle};
use crate::config::ActiveLimit;
use crate::entity::{execution, user};

/// Takes a place under the user's limit for a new execution, inside the caller's transaction:
/// true if it is admitted now, false if it is held (no room, or older ones wait first).
pub(super) async fn admit_new<C: ConnectionTrait>(
    txn: &C,
    user_id: Uuid,
    limit: ActiveLimit,
) -> Result<bool, DbErr> {
    let ActiveLimit::PerUser(limit) = limit else {
        return Ok(true);
    };
    let admitted = user::Entity::update_many()
        .col_expr(
            user::Column::ActiveExecutions,
            Expr::col(user::Column::ActiveExecutions).add(1),
        )
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::HeldExecutions.eq(0))
        .filter(user::Column::ActiveExecutions.lt(i64::from(limit)))
        .exec(txn)
        .await?
        .rows_affected
        > 0;
    if !admitted {
        user::Entity::update_many()
            .col_expr(
                user::Column::HeldExecutions,
                Expr::col(user::Column::HeldExecutions).add(1),
            )
            .filter(user::Column::Id.eq(user_id))
            .exec(txn)
            .await?;
    }
    Ok(admitted)
}

/// Takes places under the user's limit for `count` new executions at once: how many of them
/// (the first ones) are admitted now; the rest are held.
pub(super) async fn admit_many<C: ConnectionTrait>(
    txn: &C,
    user_id: Uuid,
    count: usize,
    limit: ActiveLimit,
) -> Result<usize, DbErr> {
    let ActiveLimit::PerUser(limit) = limit else {
        return Ok(count);
    };
    // Takes the user's row, to read the counts it then sets.
    let counts = user::Entity::update_many()
        .col_expr(
            user::Column::HeldExecutions,
            Expr::col(user::Column::HeldExecutions),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec_with_returning(txn)
        .await?;
    let Some(counts) = counts.first() else {
        return Ok(0);
    };
    let room = if counts.held_executions > 0 {
        0
    } else {
        usize::try_from(i64::from(limit).saturating_sub(counts.active_executions)).unwrap_or(0)
    };
    let admitted = count.min(room);
    let as_count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    user::Entity::update_many()
        .col_expr(
            user::Column::ActiveExecutions,
            Expr::col(user::Column::ActiveExecutions).add(as_count(admitted)),
        )
        .col_expr(
            user::Column::HeldExecutions,
            Expr::col(user::Column::HeldExecutions).add(as_count(count - admitted)),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec(txn)
        .await?;
    Ok(admitted)
}

/// An execution of the user's reached a final state: frees its place (or its place in line, if
/// it was held) and admits the held executions that now have room, oldest first. Returns those,
/// for the caller to dispatch once committed.
pub(super) async fn release<C: ConnectionTrait>(
    txn: &C,
    user_id: Uuid,
    was_admitted: bool,
    limit: ActiveLimit,
) -> Result<Vec<Uuid>, DbErr> {
    let ActiveLimit::PerUser(limit) = limit else {
        return Ok(Vec::new());
    };
    let column = if was_admitted {
        user::Column::ActiveExecutions
    } else {
        user::Column::HeldExecutions
    };
    let counts = user::Entity::update_many()
        .col_expr(column, Expr::col(column).sub(1))
        .filter(user::Column::Id.eq(user_id))
        .exec_with_returning(txn)
        .await?;
    match counts.first() {
        Some(counts) => admit_waiting(txn, counts, limit).await,
        None => Ok(Vec::new()),
    }
}

/// Admits as many held executions as the counts leave room for (the caller holds the user's
/// row), and moves them from held to active.
async fn admit_waiting<C: ConnectionTrait>(
    txn: &C,
    counts: &user::Model,
    limit: u32,
) -> Result<Vec<Uuid>, DbErr> {
    let room = i64::from(limit).saturating_sub(counts.active_executions);
    if counts.held_executions <= 0 || room <= 0 {
        return Ok(Vec::new());
    }
    let held: Vec<Uuid> = execution::Entity::find()
        .select_only()
        .column(execution::Column::Id)
        .filter(execution::Column::UserId.eq(counts.id))
        .filter(execution::Column::Admitted.eq(false))
        .filter(execution::Column::Status.eq(Status::Queued))
        .order_by_asc(execution::Column::CreatedAt)
        .order_by_asc(execution::Column::Id)
        .limit(u64::try_from(room).unwrap_or(0))
        .into_tuple()
        .all(txn)
        .await?;
    if held.is_empty() {
        return Ok(held);
    }
    let moved = execution::Entity::update_many()
        .col_expr(execution::Column::Admitted, Expr::value(true))
        .filter(execution::Column::Id.is_in(held.clone()))
        .filter(execution::Column::Admitted.eq(false))
        .exec(txn)
        .await?
        .rows_affected;
    let moved = i64::try_from(moved).unwrap_or(i64::MAX);
    user::Entity::update_many()
        .col_expr(
            user::Column::ActiveExecutions,
            Expr::col(user::Column::ActiveExecutions).add(moved),
        )
        .col_expr(
            user::Column::HeldExecutions,
            Expr::col(user::Column::HeldExecutions).sub(moved),
        )
        .filter(user::Column::Id.eq(counts.id))
        .exec(txn)
        .await?;
    Ok(held)
}

/// Sets the user's counts to what their executions say, taking the user's row.
async fn recount<C: ConnectionTrait>(txn: &C, user_id: Uuid) -> Result<Option<user::Model>, DbErr> {
    let counted = |admitted: bool, statuses: &[Status]| {
        Query::select()
            .expr(Expr::col(execution::Column::Id).count())
            .from(execution::Entity)
            .and_where(execution::Column::UserId.eq(user_id))
            .and_where(execution::Column::Admitted.eq(admitted))
            .and_where(execution::Column::Status.is_in(statuses.iter().copied()))
            .to_owned()
    };
    let counts = user::Entity::update_many()
        .col_expr(
            user::Column::ActiveExecutions,
            SimpleExpr::SubQuery(
                None,
                Box::new(counted(true, &Status::UNFINISHED).into_sub_query_statement()),
            ),
        )
        .col_expr(
            user::Column::HeldExecutions,
            SimpleExpr::SubQuery(
                None,
                Box::new(counted(false, &[Status::Queued]).into_sub_query_statement()),
            ),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec_with_returning(txn)
        .await?;
    Ok(counts.into_iter().next())
}

impl Lifecycle {
    /// Recounts the user's executions and admits what the limit allows, then dispatches it;
    /// returns how many it admitted. Dispatch failures are left to the outbox sweeper; the
    /// admission itself is committed.
    pub async fn admit_and_dispatch(&self, user_id: Uuid) -> Result<usize, ExecutionError> {
        let txn = self.db.begin().await?;
        let counts = recount(&txn, user_id).await?;
        let admitted = match (counts, self.max_active_per_user) {
            (Some(counts), ActiveLimit::PerUser(limit)) => {
                admit_waiting(&txn, &counts, limit).await?
            }
            // Held before the limit was lifted: admitted now.
            (Some(counts), ActiveLimit::Unlimited) => {
                admit_waiting(&txn, &counts, u32::MAX).await?
            }
            (None, _) => Vec::new(),
        };
        txn.commit().await?;
        let count = admitted.len();
        self.dispatch_admitted(admitted).await;
        Ok(count)
    }

    /// Recounts every user with unfinished executions or counts that are not zero; returns how
    /// many users it recounted. Run when an api starts with a limit.
    pub async fn recount_all(&self) -> Result<usize, ExecutionError> {
        let mut users: Vec<Uuid> = execution::Entity::find()
            .select_only()
            .column(execution::Column::UserId)
            .distinct()
            .filter(execution::Column::Status.is_in(Status::UNFINISHED))
            .into_tuple()
            .all(&self.db)
            .await?;
        let counted: Vec<Uuid> = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .filter(
                sea_orm::Condition::any()
                    .add(user::Column::ActiveExecutions.ne(0))
                    .add(user::Column::HeldExecutions.ne(0)),
            )
            .into_tuple()
            .all(&self.db)
            .await?;
        for user_id in counted {
            if !users.contains(&user_id) {
                users.push(user_id);
            }
        }
        for user_id in &users {
            self.admit_and_dispatch(*user_id).await?;
        }
        Ok(users.len())
    }

    /// Admits held executions of every user with room under the limit: in case the event that
    /// should have (a result, a cancellation) was handled by a replica that crashed before it
    /// committed, or a count drifted.
    pub async fn admit_held(&self) -> Result<usize, ExecutionError> {
        let mut admitted = 0;
        for user_id in users_with_held(&self.db).await? {
            admitted += self.admit_and_dispatch(user_id).await?;
        }
        Ok(admitted)
    }
}

/// Users with held executions, or with counts that say so.
async fn users_with_held(db: &DatabaseConnection) -> Result<Vec<Uuid>, DbErr> {
    let mut users: Vec<Uuid> = execution::Entity::find()
        .select_only()
        .column(execution::Column::UserId)
        .distinct()
        .filter(execution::Column::Admitted.eq(false))
        .filter(execution::Column::Status.eq(Status::Queued))
        .into_tuple()
        .all(db)
        .await?;
    let counted: Vec<Uuid> = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .filter(user::Column::HeldExecutions.ne(0))
        .into_tuple()
        .all(db)
        .await?;
    for user_id in counted {
        if !users.contains(&user_id) {
            users.push(user_id);
        }
    }
    Ok(users)
}
