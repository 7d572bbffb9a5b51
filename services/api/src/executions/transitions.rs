//! The transition table: every way an execution's status may change, and the one guarded
//! write that makes a change. A transition leaves only the states its rule lists, so a late,
//! duplicate or forged message finds the execution elsewhere and changes nothing.

use chrono::Utc;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;
use voidrunner_shared::Status;

use super::ExecutionError;
use crate::entity::execution;

/// A change of an execution's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A worker announced that it started the execution (again, after a redelivery).
    Start,
    /// A result arrived: from its worker, or for a dead letter from the api.
    Finish,
    /// The api cancelled an execution that was queued when asked: its cancellation was the
    /// result stored first on the reply subject (a worker may have started it meanwhile; that
    /// worker's result can no longer be stored, and it stops on the cancellation).
    Cancel,
}

impl Transition {
    pub const ALL: [Transition; 3] = [Transition::Start, Transition::Finish, Transition::Cancel];

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Finish => "finish",
            Transition::Cancel => "cancel",
        }
    }

    /// The states the transition may leave.
    pub fn from(self) -> &'static [Status] {
        match self {
            Transition::Start | Transition::Finish => &Status::UNFINISHED,
            Transition::Cancel => &[Status::Queued, Status::Running],
        }
    }

    /// The states it may reach.
    pub fn to(self) -> &'static [Status] {
        match self {
            Transition::Start => &[Status::Running],
            Transition::Finish => &Status::FINAL,
            Transition::Cancel => &[Status::Cancelled],
        }
    }

    pub fn allows(self, from: Status, to: Status) -> bool {
        self.from().contains(&from) && self.to().contains(&to)
    }
}

/// Moves the execution to `to` by `transition`, writing `changes` beside the status, if it is
/// in a state the transition leaves and meets `guard` (e.g. the message carries the dispatch's
/// token). Returns the execution as written, `None` if nothing was; a `to` the transition never reaches is refused before
/// anything is written.
pub(super) async fn apply<C: ConnectionTrait>(
    db: &C,
    execution_id: Uuid,
    transition: Transition,
    to: Status,
    changes: Vec<(execution::Column, SimpleExpr)>,
    guard: Condition,
) -> Result<Option<execution::Model>, ExecutionError> {
    if !transition.to().contains(&to) {
        return Err(ExecutionError::Unreachable { transition, to });
    }
    let mut update = execution::Entity::update_many()
        .col_expr(execution::Column::Status, Expr::value(to))
        .col_expr(execution::Column::UpdatedAt, Expr::value(Utc::now()));
    for (column, value) in changes {
        update = update.col_expr(column, value);
    }
    let changed = update
        .filter(execution::Column::Id.eq(execution_id))
        .filter(execution::Column::Status.is_in(transition.from().iter().copied()))
        .filter(guard)
        .exec_with_returning(db)
        .await?;
    Ok(changed.into_iter().next())
}

/// The state diagram of an execution in Mermaid, drawn from the table (the README shows it,
/// and a test keeps the two the same).
pub fn mermaid() -> String {
    let mut lines = vec![
        "stateDiagram-v2".to_owned(),
        "    [*] --> queued : submit".to_owned(),
        "    note right of queued : held under the user's limit, then admitted and dispatched"
            .to_owned(),
    ];
    for transition in Transition::ALL {
        for from in transition.from() {
            for to in transition.to() {
                lines.push(format!("    {from} --> {to} : {}", transition.as_str()));
            }
        }
    }
    for status in Status::FINAL {
        lines.push(format!("    {status} --> [*]"));
    }
    lines.join("\n") + "\n"
}

#[cfg(test)]
pub(super) mod tests {
    use sea_orm::{ActiveModelTrait, DatabaseConnection, Set};
    use voidrunner_shared::Language;

    use super::super::submit::queued;
    use super::super::NewExecution;
    use super::*;
    use crate::entity::{task, user};

    /// A migrated in-memory database with one user and one task.
    pub(in crate::executions) async fn database() -> (DatabaseConnection, Uuid, task::Model) {
        let db = sea_orm::Database::connect("sqlite::memory:")
            .await
            .expect("in-memory sqlite");
        with_user_and_task(db).await
    }

    /// Migrates `db` and gives it one user and one task.
    pub(in crate::executions) async fn with_user_and_task(
        db: DatabaseConnection,
    ) -> (DatabaseConnection, Uuid, task::Model) {
        crate::db::migrate(&db).await.expect("migrations apply");
        let now = Utc::now();
        let user = user::ActiveModel {
            id: Set(Uuid::now_v7()),
            email: Set(format!("{}@example.com", Uuid::new_v4().simple())),
            password_hash: Set("x".into()),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(&db)
        .await
        .expect("user");
        let task = task::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id),
            name: Set("t".into()),
            script_type: Set("bash".parse::<Language>().expect("in the catalog")),
            script_content: Set("true".into()),
            priority: Set(5),
            timeout_seconds: Set(5),
            network: Set(false),
            max_retries: Set(0),
            retry_backoff_seconds: Set(1),
            status_name: Set("idle".into()),
            kind: Set(task::KIND_TASK.into()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&db)
        .await
        .expect("task");
        (db, user.id, task)
    }

    pub(in crate::executions) async fn execution_in(
        db: &impl sea_orm::ConnectionTrait,
        user_id: Uuid,
        task: &task::Model,
        status: Status,
    ) -> execution::Model {
        let new = NewExecution {
            id: Uuid::now_v7(),
            callback_url: None,
            task: task.clone(),
            stdin: String::new(),
            idempotency_key: None,
            rerun_of: None,
        };
        let mut row = queued(user_id, &new);
        row.status = status;
        row.updated_at -= chrono::TimeDelta::seconds(5);
        execution::ActiveModel::from(row)
            .reset_all()
            .insert(db)
            .await
            .expect("execution")
    }

    #[tokio::test]
    async fn every_transition_between_every_pair_of_states_is_allowed_or_refused_without_a_write() {
        let (db, user_id, task) = database().await;
        let mut allowed = Vec::new();
        for transition in Transition::ALL {
            for from in Status::ALL {
                for to in Status::ALL {
                    let before = execution_in(&db, user_id, &task, from).await;
                    let changes = vec![(execution::Column::WorkerId, Expr::value("w"))];
                    let outcome =
                        apply(&db, before.id, transition, to, changes, Condition::all()).await;
                    let after = execution::Entity::find_by_id(before.id)
                        .one(&db)
                        .await
                        .expect("query")
                        .expect("row");
                    if transition.allows(from, to) {
                        let written = outcome.as_ref().ok().and_then(Option::as_ref);
                        assert_eq!(written, Some(&after), "{transition:?} {from} -> {to}");
                        assert_eq!(after.status, to);
                        assert_eq!(after.worker_id.as_deref(), Some("w"));
                        allowed.push((transition, from, to));
                    } else {
                        assert!(
                            matches!(outcome, Ok(None) | Err(ExecutionError::Unreachable { .. })),
                            "{transition:?} {from} -> {to}: {outcome:?}"
                        );
                        assert_eq!(after, before, "{transition:?} {from} -> {to} wrote");
                    }
                }
            }
        }
        // Start: queued or running to running; finish: either to each final state; cancel:
        // either to cancelled. Nothing leaves a final state.
        assert_eq!(allowed.len(), 2 + 2 * 5 + 2);
        assert!(allowed.iter().all(|(_, from, _)| !from.is_final()));
    }

    #[test]
    fn the_readme_shows_the_state_diagram_of_the_transition_table() {
        let readme = include_str!("../../../../README.md");
        let diagram = format!("```mermaid\n{}```", mermaid());
        assert!(
            readme.contains(&diagram),
            "the README's state diagram is not the table's; put this in its place:\n{diagram}"
        );
    }
}
