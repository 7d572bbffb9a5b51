//! Per-user admission: at most `VOIDRUNNER_MAX_ACTIVE_PER_USER` of a user's executions are on the
//! lanes or running at once, across every api replica and worker. The others are held in the
//! database, in submission order, and admitted as earlier ones finish.
//!
//! Holding work back in the database rather than on a lane keeps one user's burst from filling
//! the lanes ahead of everybody else, and needs no per-user bookkeeping on the workers.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use uuid::Uuid;
use voidrunner_shared::Status;

use super::{ExecutionError, Lifecycle};
use crate::entity::{execution, user};

/// Admits as many of the user's held executions as `limit` leaves room for, oldest first,
/// inside the caller's transaction; returns the ones it admitted, for the caller to dispatch
/// once committed.
pub(super) async fn admit_in<C: ConnectionTrait>(
    txn: &C,
    user_id: Uuid,
    limit: u32,
) -> Result<Vec<Uuid>, DbErr> {
    // Touching the user's row serialises admission per user: a row lock on PostgreSQL, the
    // write lock on SQLite (the callers write before they read, so no lock upgrade can fail).
    user::Entity::update_many()
        .col_expr(user::Column::Id, Expr::col(user::Column::Id))
        .filter(user::Column::Id.eq(user_id))
        .exec(txn)
        .await?;
    let active = execution::Entity::find()
        .filter(execution::Column::UserId.eq(user_id))
        .filter(execution::Column::Admitted.eq(true))
        .filter(execution::Column::Status.is_in(Status::UNFINISHED))
        .count(txn)
        .await?;
    let room = u64::from(limit).saturating_sub(active);
    if room == 0 {
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
        .all(txn)
        .await?;
    if !held.is_empty() {
        execution::Entity::update_many()
            .col_expr(execution::Column::Admitted, Expr::value(true))
            .filter(execution::Column::Id.is_in(held.clone()))
            .filter(execution::Column::Admitted.eq(false))
            .exec(txn)
            .await?;
    }
    Ok(held)
}

impl Lifecycle {
    /// Admits what the user's limit allows and dispatches it; returns how many it admitted.
    /// Dispatch failures are left to the outbox sweeper; the admission itself is committed.
    pub async fn admit_and_dispatch(&self, user_id: Uuid) -> Result<usize, ExecutionError> {
        let txn = self.db.begin().await?;
        let admitted = admit_in(&txn, user_id, self.max_active_per_user).await?;
        txn.commit().await?;
        let count = admitted.len();
        self.dispatch_admitted(admitted).await;
        Ok(count)
    }

    /// Admits held executions of every user with room under the limit: in case the event that
    /// should have (a result, a cancellation) was handled by a replica that crashed before it
    /// committed.
    pub async fn admit_held(&self) -> Result<usize, ExecutionError> {
        let mut admitted = 0;
        for user_id in users_with_held(&self.db).await? {
            admitted += self.admit_and_dispatch(user_id).await?;
        }
        Ok(admitted)
    }
}

async fn users_with_held(db: &DatabaseConnection) -> Result<Vec<Uuid>, DbErr> {
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
