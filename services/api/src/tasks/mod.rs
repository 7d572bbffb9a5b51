//! Tasks: the programs users store and run. A request becomes a `TaskSpec` only through
//! `TaskSpec::parse`, which checks every field against the deployment's limits; the store
//! functions take specs, never raw requests.
//!
//! A one-shot run is a task of kind `run` built from the run's fields, so both paths share the
//! same rules; they only name two fields differently (`Naming`).

mod spec;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    Set,
};
use uuid::Uuid;
use voidrunner_shared::{Status, TaskStatus};

use crate::entity::{execution, task};

pub use spec::{Field, FieldError, Naming, TaskDraft, TaskRules, TaskSpec};

/// What a task store operation can meet besides the database failing.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("no task with this id")]
    NotFound,
    #[error("the task has an execution queued or running: cancel it or wait for it to end")]
    Busy,
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

/// The kinds of task.
pub use crate::entity::task::{KIND_RUN, KIND_TASK};

/// Stores a valid task of `kind` for `user_id`.
pub async fn insert(
    db: &DatabaseConnection,
    user_id: Uuid,
    spec: TaskSpec,
    kind: &str,
) -> Result<task::Model, TaskError> {
    Ok(new_task(user_id, spec, kind).insert(db).await?)
}

/// A new task of `user_id`'s, to insert.
pub fn new_task(user_id: Uuid, spec: TaskSpec, kind: &str) -> task::ActiveModel {
    let now = Utc::now();
    let mut model = task::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        status_name: Set(TaskStatus::Idle.as_str().to_owned()),
        kind: Set(kind.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    spec.apply(&mut model);
    model
}

/// Replaces a task's definition with `spec`; refused while one of its executions is unfinished.
pub async fn update(
    db: &DatabaseConnection,
    current: task::Model,
    spec: TaskSpec,
) -> Result<task::Model, TaskError> {
    ensure_idle(db, current.id).await?;
    let mut model: task::ActiveModel = current.into();
    spec.apply(&mut model);
    model.updated_at = Set(Utc::now());
    Ok(model.update(db).await?)
}

/// Deletes a task and its executions; refused while one of them is unfinished.
pub async fn delete(db: &DatabaseConnection, task: task::Model) -> Result<(), TaskError> {
    ensure_idle(db, task.id).await?;
    execution::Entity::delete_many()
        .filter(execution::Column::TaskId.eq(task.id))
        .exec(db)
        .await?;
    task::Entity::delete_by_id(task.id).exec(db).await?;
    Ok(())
}

/// The task with `task_id` if it belongs to `user_id`; someone else's task does not exist.
pub async fn find_owned(
    db: &DatabaseConnection,
    user_id: Uuid,
    task_id: Uuid,
) -> Result<task::Model, TaskError> {
    task::Entity::find_by_id(task_id)
        .filter(task::Column::UserId.eq(user_id))
        .one(db)
        .await?
        .ok_or(TaskError::NotFound)
}

async fn ensure_idle(db: &DatabaseConnection, task_id: Uuid) -> Result<(), TaskError> {
    let unfinished = execution::Entity::find()
        .filter(execution::Column::TaskId.eq(task_id))
        .filter(execution::Column::Status.is_in(Status::UNFINISHED))
        .count(db)
        .await?;
    if unfinished > 0 {
        return Err(TaskError::Busy);
    }
    Ok(())
}
