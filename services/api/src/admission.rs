//! Per-user admission: at most `VOIDRUNNER_MAX_ACTIVE_PER_USER` of a user's executions are on the
//! lanes or running at once, across every api replica and worker. The others are held in the
//! database, in submission order, and admitted as earlier ones finish.
//!
//! Holding work back in the database rather than on a lane keeps one user's burst from filling
//! the lanes ahead of everybody else, and needs no per-user bookkeeping on the workers.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use uuid::Uuid;

use crate::entity::execution::{self, Status};
use crate::entity::{task, user};
use crate::outbox;
use crate::state::AppState;

/// Admits as many of the user's held executions as the limit leaves room for, oldest first;
/// returns the ones it admitted, which the caller dispatches.
pub async fn admit(db: &DatabaseConnection, user_id: Uuid, limit: u32) -> Result<Vec<Uuid>, DbErr> {
    let txn = db.begin().await?;
    // Touching the user's row serialises admission per user: a row lock on PostgreSQL, the
    // write lock on SQLite (taken before anything is read, so no lock upgrade can fail).
    user::Entity::update_many()
        .col_expr(user::Column::Id, Expr::col(user::Column::Id).into())
        .filter(user::Column::Id.eq(user_id))
        .exec(&txn)
        .await?;
    let active = execution::Entity::find()
        .filter(execution::Column::UserId.eq(user_id))
        .filter(execution::Column::Admitted.eq(true))
        .filter(execution::Column::Status.is_in(Status::UNFINISHED))
        .count(&txn)
        .await?;
    let room = u64::from(limit).saturating_sub(active);
    if room == 0 {
        txn.commit().await?;
        return Ok(Vec::new());
    }
    let held: Vec<Uuid> = execution::Entity::find()
        .select_only()
        .column(execution::Column::Id)
        .filter(execution::Column::UserId.eq(user_id))
        .filter(execution::Column::Admitted.eq(false))
        .filter(execution::Column::Status.eq(Status::Queued))
        .order_by_asc(execution::Column::CreatedAt)
        .order_by_asc(execution::Column::Id)
        .limit(room)
        .into_tuple()
        .all(&txn)
        .await?;
    if !held.is_empty() {
        execution::Entity::update_many()
            .col_expr(execution::Column::Admitted, Expr::value(true))
            .filter(execution::Column::Id.is_in(held.clone()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(held)
}

/// Admits what the user's limit allows and dispatches it. Dispatch failures are left to the
/// outbox sweeper; the admission itself is committed.
pub async fn admit_and_dispatch(state: &AppState, user_id: Uuid) -> Result<usize, DbErr> {
    let admitted = admit(&state.db, user_id, state.config.max_active_per_user).await?;
    if admitted.is_empty() {
        return Ok(0);
    }
    let rows = execution::Entity::find()
        .filter(execution::Column::Id.is_in(admitted.clone()))
        .order_by_asc(execution::Column::CreatedAt)
        .find_also_related(task::Entity)
        .all(&state.db)
        .await?;
    for (execution, task) in rows {
        let Some(task) = task else { continue };
        if let Err(error) = outbox::dispatch(state, &execution, &task).await {
            tracing::warn!(execution_id = %execution.id, error = %error, "dispatch deferred to the outbox sweeper");
        }
    }
    Ok(admitted.len())
}

/// Users with held executions: the sweeper admits for them, in case the event that should have
/// (a result, a cancellation) was handled by a replica that crashed before admitting.
pub async fn users_with_held(db: &DatabaseConnection) -> Result<Vec<Uuid>, DbErr> {
    execution::Entity::find()
        .select_only()
        .column(execution::Column::UserId)
        .distinct()
        .filter(execution::Column::Admitted.eq(false))
        .filter(execution::Column::Status.eq(Status::Queued))
        .into_tuple()
        .all(db)
        .await
}
