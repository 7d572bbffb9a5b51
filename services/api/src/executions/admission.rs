//! Per-user admission: at most `VOIDRUNNER_MAX_ACTIVE_PER_USER` of a user's executions are on the
//! lanes or running at once, across every api replica and worker. The others are held in the
//! database, in submission order, and admitted as earlier ones finish.
//!
//! Holding work back in the database rather than on a lane keeps one user's burst from filling
//! the lanes ahead of everybody else, and needs no per-user bookkeeping on the workers.
//!
//! The user's row counts both (`active_executions`, `held_executions`), kept by the same
//! transactions that admit, hold and end executions: admitting costs two updates of that row,
//! never a count over the user's executions. The first takes the row (the write lock on
//! SQLite), which serialises admission per user: an admission waits for a release in flight
//! and sees the place it frees. Callers make it their last write before committing, to hold
//! the row as briefly as possible. `admit_held` recounts from the executions
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
    Ok(admit_many(txn, user_id, 1, limit).await? == 1)
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
    // Takes the user's row first, then reads the counts from it. Not one update guarded by the
    // counts: on PostgreSQL such an update reads them as of its snapshot, and skips the row
    // without waiting when a release in flight holds it. The execution would then be held
    // with a place free and nobody left to admit it until the next sweep.
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
    // The row first, in a statement of its own: the counting statement then starts after every
    // admission that held the row committed, and its snapshot sees them (PostgreSQL's read
    // committed re-checks a waiting update's row, not its subqueries).
    user::Entity::update_many()
        .col_expr(
            user::Column::HeldExecutions,
            Expr::col(user::Column::HeldExecutions),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec(txn)
        .await?;
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

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set, TransactionTrait};

    use super::super::transitions::tests::{database, execution_in, with_user_and_task};
    use super::*;

    /// A fresh PostgreSQL database on the test cluster, with one user and one task.
    async fn postgres() -> (DatabaseConnection, Uuid, crate::entity::task::Model) {
        let admin_url = std::env::var("VOIDRUNNER_TEST_DATABASE_URL").expect(
            "VOIDRUNNER_TEST_DATABASE_URL is not set: this test needs PostgreSQL \
             (scripts/test.sh starts one and sets it)",
        );
        let admin = crate::db::connect(&admin_url)
            .await
            .expect("reach PostgreSQL");
        let name = format!("vr_test_{}", Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create a database");
        admin.close().await.expect("close");
        let (base, _) = admin_url.rsplit_once('/').expect("a database in the URL");
        let db = crate::db::connect(&format!("{base}/{name}"))
            .await
            .expect("connect");
        with_user_and_task(db).await
    }

    /// Waits until a statement on `db`'s database waits for a row lock.
    async fn until_one_waits_for_a_lock(db: &DatabaseConnection) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let waiting = db
                .query_one_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    "SELECT count(*) AS n FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                ))
                .await
                .expect("pg_stat_activity")
                .expect("a row")
                .try_get::<i64>("", "n")
                .expect("a count");
            if waiting > 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing waited for the user's row"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn counts(db: &DatabaseConnection, user_id: Uuid) -> (i64, i64) {
        let user = user::Entity::find_by_id(user_id)
            .one(db)
            .await
            .expect("query")
            .expect("user");
        (user.active_executions, user.held_executions)
    }

    async fn admitted(db: &DatabaseConnection, id: Uuid) -> bool {
        execution::Entity::find_by_id(id)
            .one(db)
            .await
            .expect("query")
            .expect("execution")
            .admitted
    }

    #[tokio::test]
    async fn past_the_limit_executions_are_held_and_each_end_admits_the_oldest_held() {
        let (db, user_id, task) = database().await;
        let limit = ActiveLimit::PerUser(1);
        let running = execution_in(&db, user_id, &task, Status::Running).await;
        let mut row = running.clone().into_active_model();
        row.admitted = Set(true);
        row.update(&db).await.expect("admitted");
        assert!(admit_new(&db, user_id, limit).await.expect("admit"));
        let older = execution_in(&db, user_id, &task, Status::Queued).await;
        let newer = execution_in(&db, user_id, &task, Status::Queued).await;
        assert!(!admit_new(&db, user_id, limit).await.expect("hold"));
        assert!(!admit_new(&db, user_id, limit).await.expect("hold"));
        assert_eq!(counts(&db, user_id).await, (1, 2));
        // Room under the limit does not let a newcomer pass the held ones.
        assert_eq!(
            admit_many(&db, user_id, 3, ActiveLimit::PerUser(10))
                .await
                .expect("many"),
            0
        );
        assert_eq!(counts(&db, user_id).await, (1, 5));

        let next = release(&db, user_id, true, limit).await.expect("release");
        assert_eq!(next, vec![older.id]);
        assert!(admitted(&db, older.id).await);
        assert!(!admitted(&db, newer.id).await);
        assert_eq!(counts(&db, user_id).await, (1, 4));
        // A held execution that ends (cancelled) gives up its place in line, admitting nobody.
        assert!(release(&db, user_id, false, limit)
            .await
            .expect("release")
            .is_empty());
        assert_eq!(counts(&db, user_id).await, (1, 3));
    }

    #[tokio::test]
    async fn counts_that_drifted_are_recounted_from_the_executions() {
        let (db, user_id, task) = database().await;
        let running = execution_in(&db, user_id, &task, Status::Running).await;
        let mut row = running.into_active_model();
        row.admitted = Set(true);
        row.update(&db).await.expect("admitted");
        execution_in(&db, user_id, &task, Status::Queued).await;
        execution_in(&db, user_id, &task, Status::Completed).await;
        let mut user = user::Entity::find_by_id(user_id)
            .one(&db)
            .await
            .expect("query")
            .expect("user")
            .into_active_model();
        user.active_executions = Set(40);
        user.held_executions = Set(0);
        user.update(&db).await.expect("drift");
        let recounted = recount(&db, user_id).await.expect("recount").expect("user");
        assert_eq!(
            (recounted.active_executions, recounted.held_executions),
            (1, 1)
        );
        assert_eq!(counts(&db, user_id).await, (1, 1));
    }

    #[tokio::test]
    async fn without_a_limit_everything_is_admitted_and_nothing_counted() {
        let (db, user_id, _) = database().await;
        for _ in 0..3 {
            assert!(admit_new(&db, user_id, ActiveLimit::Unlimited)
                .await
                .expect("admit"));
        }
        assert_eq!(
            admit_many(&db, user_id, 5, ActiveLimit::Unlimited)
                .await
                .expect("many"),
            5
        );
        assert!(release(&db, user_id, true, ActiveLimit::Unlimited)
            .await
            .expect("release")
            .is_empty());
        assert_eq!(counts(&db, user_id).await, (0, 0));
    }

    #[tokio::test]
    async fn a_submission_racing_a_release_on_postgres_is_admitted_whichever_commits_first() {
        let limit = ActiveLimit::PerUser(1);
        for release_first in [true, false] {
            let (db, user_id, task) = postgres().await;
            let running = execution_in(&db, user_id, &task, Status::Running).await;
            let mut row = running.into_active_model();
            row.admitted = Set(true);
            row.update(&db).await.expect("admitted");
            recount(&db, user_id).await.expect("recount");
            assert_eq!(counts(&db, user_id).await, (1, 0));

            // The running execution ends in one transaction while a new one is submitted in
            // another; the first to take the user's row commits only once the other waits.
            let ending = db.begin().await.expect("begin");
            let submitting = db.begin().await.expect("begin");
            let new = execution_in(&submitting, user_id, &task, Status::Queued).await;
            let (admitted_at_submit, admitted_at_release) = if release_first {
                let freed = release(&ending, user_id, true, limit)
                    .await
                    .expect("release");
                let submit = tokio::spawn(async move {
                    let admitted = admit_new(&submitting, user_id, limit).await.expect("admit");
                    submitting.commit().await.expect("commit");
                    admitted
                });
                until_one_waits_for_a_lock(&db).await;
                ending.commit().await.expect("commit");
                (submit.await.expect("submit"), freed)
            } else {
                let admitted = admit_new(&submitting, user_id, limit).await.expect("admit");
                let end = tokio::spawn(async move {
                    let freed = release(&ending, user_id, true, limit)
                        .await
                        .expect("release");
                    ending.commit().await.expect("commit");
                    freed
                });
                until_one_waits_for_a_lock(&db).await;
                submitting.commit().await.expect("commit");
                (admitted, end.await.expect("release"))
            };
            let order = if release_first {
                "release first"
            } else {
                "submission first"
            };
            // Admitted by the submission itself, or (marked so) by the release.
            assert!(
                admitted_at_submit
                    || (admitted_at_release == vec![new.id] && admitted(&db, new.id).await),
                "{order}: the new execution was held with a place free"
            );
            assert_eq!(counts(&db, user_id).await, (1, 0), "{order}");
        }
    }

    #[test]
    fn the_limit_is_a_positive_number_or_unlimited() {
        assert_eq!("16".parse(), Ok(ActiveLimit::PerUser(16)));
        assert_eq!("unlimited".parse(), Ok(ActiveLimit::Unlimited));
        for bad in ["0", "-1", "lots", ""] {
            let error = bad.parse::<ActiveLimit>().expect_err(bad);
            assert!(error.contains("unlimited"), "{error}");
        }
    }
}
