//! Tasks: create, list, look at, change and delete the programs a user keeps.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use voidrunner_shared::events::SourceFile;
use voidrunner_shared::{Lane, Language, TaskStatus};

use crate::entity::task;
use crate::error::{ApiError, Json, Path, Query};
use crate::http::AuthUser;
use crate::openapi::{BodyErrors, Common, Conflict, Malformed, Missing};
use crate::pagination::{self, Order};
use crate::state::AppState;
use crate::tasks::{self, Naming, TaskDraft, TaskSpec};

#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskResponse {
    id: Uuid,
    name: String,
    description: Option<String>,
    metadata: Option<serde_json::Value>,
    /// The status of the latest execution, or `idle` before the first.
    #[schema(value_type = String, example = "completed")]
    status: TaskStatus,
    script_type: Language,
    script_content: String,
    priority: i16,
    lane: Lane,
    timeout_seconds: i32,
    files: Vec<SourceFile>,
    memory_mb: Option<i32>,
    cpus: Option<f64>,
    output_limit_bytes: Option<i64>,
    network: bool,
    max_retries: i32,
    retry_backoff_seconds: i32,
    created_at: chrono::DateTime<Utc>,
    updated_at: chrono::DateTime<Utc>,
}

impl From<task::Model> for TaskResponse {
    fn from(task: task::Model) -> Self {
        TaskResponse {
            id: task.id,
            lane: task.lane(),
            files: task.files(),
            status: task.status(),
            name: task.name,
            description: task.description,
            metadata: task.metadata,
            script_type: task.script_type,
            script_content: task.script_content,
            priority: task.priority,
            timeout_seconds: task.timeout_seconds,
            memory_mb: task.memory_mb,
            cpus: task.cpu_millis.map(|millis| f64::from(millis) / 1000.0),
            output_limit_bytes: task.output_limit_bytes,
            network: task.network,
            max_retries: task.max_retries,
            retry_backoff_seconds: task.retry_backoff_seconds,
            created_at: task.created_at,
            updated_at: task.updated_at,
        }
    }
}

#[tracing::instrument(skip_all, fields(user_id = %user_id))]
#[utoipa::path(
    operation_id = "task_create",
    post,
    path = "/tasks",
    tag = "tasks",
    request_body = TaskDraft,
    responses((status = 201, description = "Created", body = TaskResponse), Malformed, BodyErrors, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Json(draft): Json<TaskDraft>,
) -> Result<(StatusCode, Json<TaskResponse>), ApiError> {
    let spec = TaskSpec::parse(draft, &state.task_rules())
        .map_err(|error| ApiError::field(error, Naming::Task))?;
    let task = tasks::insert(&state.db, user_id, spec, tasks::KIND_TASK).await?;
    Ok((StatusCode::CREATED, Json(task.into())))
}

/// Changes some of a task's fields (`null` clears an optional one); the result is validated as
/// a whole. 409 while an execution of the task is queued or running.
#[tracing::instrument(skip_all, fields(user_id = %user_id, task_id = %task_id))]
#[utoipa::path(
    operation_id = "task_update",
    patch,
    path = "/tasks/{task_id}",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task")),
    request_body = TaskPatch,
    responses((status = 200, description = "Updated", body = TaskResponse), Malformed, BodyErrors, Missing, Conflict, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(task_id): Path<Uuid>,
    Json(patch): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<TaskResponse>, ApiError> {
    let current = tasks::find_owned(&state.db, user_id, task_id).await?;
    let mut merged =
        serde_json::to_value(TaskDraft::of(&current)).map_err(|e| ApiError::Internal(e.into()))?;
    if let Some(fields) = merged.as_object_mut() {
        for (key, value) in patch {
            fields.insert(key, value);
        }
    }
    let draft: TaskDraft =
        serde_json::from_value(merged).map_err(|error| ApiError::Validation {
            message: format!("the request body does not match the expected shape: {error}"),
            details: serde_json::Value::Null,
        })?;
    let spec = TaskSpec::parse(draft, &state.task_rules())
        .map_err(|error| ApiError::field(error, Naming::Task))?;
    Ok(Json(tasks::update(&state.db, current, spec).await?.into()))
}

/// Deletes a task and its executions. 409 while one of them is queued or running.
#[tracing::instrument(skip_all, fields(user_id = %user_id, task_id = %task_id))]
#[utoipa::path(
    operation_id = "task_delete",
    delete,
    path = "/tasks/{task_id}",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task")),
    responses((status = 204, description = "Deleted with its executions"), Malformed, Missing, Conflict, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(task_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let task = tasks::find_owned(&state.db, user_id, task_id).await?;
    tasks::delete(&state.db, task).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    operation_id = "task_get",
    get,
    path = "/tasks/{task_id}",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task")),
    responses((status = 200, description = "The task", body = TaskResponse), Malformed, Missing, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(task_id): Path<Uuid>,
) -> Result<Json<TaskResponse>, ApiError> {
    Ok(Json(
        tasks::find_owned(&state.db, user_id, task_id).await?.into(),
    ))
}

/// `PATCH /tasks/{id}`: any of a task's fields; `null` clears an optional one.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TaskPatch {
    name: Option<String>,
    script_content: Option<String>,
    script_type: Option<Language>,
    description: Option<String>,
    metadata: Option<serde_json::Value>,
    priority: Option<i64>,
    timeout_seconds: Option<i64>,
    files: Option<Vec<SourceFile>>,
    memory_mb: Option<i64>,
    cpus: Option<f64>,
    output_limit_bytes: Option<u64>,
    network: Option<bool>,
    max_retries: Option<i64>,
    retry_backoff_seconds: Option<i64>,
}

/// The fields the task list sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    #[default]
    CreatedAt,
    UpdatedAt,
    Priority,
    Name,
}

impl SortField {
    fn name(self) -> &'static str {
        match self {
            SortField::CreatedAt => "created_at",
            SortField::UpdatedAt => "updated_at",
            SortField::Priority => "priority",
            SortField::Name => "name",
        }
    }

    fn column(self) -> task::Column {
        match self {
            SortField::CreatedAt => task::Column::CreatedAt,
            SortField::UpdatedAt => task::Column::UpdatedAt,
            SortField::Priority => task::Column::Priority,
            SortField::Name => task::Column::Name,
        }
    }

    fn key(self, task: &task::Model) -> serde_json::Value {
        match self {
            SortField::CreatedAt => serde_json::json!(task.created_at),
            SortField::UpdatedAt => serde_json::json!(task.updated_at),
            SortField::Priority => serde_json::json!(task.priority),
            SortField::Name => serde_json::json!(task.name),
        }
    }

    /// A cursor's sort value as the column's type.
    fn value(self, value: &serde_json::Value) -> Option<sea_orm::Value> {
        match self {
            SortField::CreatedAt | SortField::UpdatedAt => {
                serde_json::from_value::<chrono::DateTime<Utc>>(value.clone())
                    .ok()
                    .map(Into::into)
            }
            SortField::Priority => value
                .as_i64()
                .and_then(|p| i16::try_from(p).ok())
                .map(Into::into),
            SortField::Name => value.as_str().map(|name| name.to_owned().into()),
        }
    }
}

/// `GET /tasks` query parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListTasks {
    limit: Option<u64>,
    cursor: Option<String>,
    /// The field to sort by.
    #[serde(default)]
    #[param(inline)]
    sort: SortField,
    /// `desc` (the default) or `asc`.
    #[serde(default)]
    #[param(inline)]
    order: Order,
    /// The latest execution's status (`idle` for tasks that never ran).
    status: Option<String>,
    /// The language (`script_type`).
    script_type: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskPage {
    items: Vec<TaskResponse>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The caller's tasks, a page at a time, in a stable order.
#[utoipa::path(
    operation_id = "task_list",
    get,
    path = "/tasks",
    tag = "tasks",
    params(ListTasks),
    responses((status = 200, description = "A page of your tasks", body = TaskPage), Malformed, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Query(query): Query<ListTasks>,
) -> Result<Json<TaskPage>, ApiError> {
    let limit = pagination::page_size(query.limit)?;
    let mut select = task::Entity::find()
        .filter(task::Column::UserId.eq(user_id))
        .filter(task::Column::Kind.eq(tasks::KIND_TASK));
    if let Some(status) = &query.status {
        let status: TaskStatus = status.parse().map_err(|_| ApiError::BadRequest {
            code: "invalid_query",
            message: format!(
                "status must be one of {}",
                TaskStatus::all()
                    .map(TaskStatus::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        select = select.filter(task::Column::StatusName.eq(status.as_str()));
    }
    if let Some(language) = &query.script_type {
        let language: Language =
            language
                .parse()
                .map_err(|e: voidrunner_shared::language::UnknownLanguage| {
                    ApiError::BadRequest {
                        code: "invalid_query",
                        message: format!("script_type: {e}"),
                    }
                })?;
        select = select.filter(task::Column::ScriptType.eq(language));
    }
    let sort = query.sort;
    // An empty cursor is the first page, as no cursor is.
    let after = match query.cursor.as_deref().filter(|cursor| !cursor.is_empty()) {
        Some(cursor) => {
            let cursor = pagination::decode(cursor, sort.name(), query.order)?;
            let value = sort.value(&cursor.value).ok_or(ApiError::BadRequest {
                code: "invalid_cursor",
                message: "the cursor is not one this API issued".into(),
            })?;
            Some((value, cursor.id))
        }
        None => None,
    };
    let select = pagination::after(select, sort.column(), task::Column::Id, query.order, after);
    let mut tasks = select.limit(limit + 1).all(&state.db).await?;
    let next_cursor = pagination::finish_page(&mut tasks, limit, |last| {
        pagination::encode(sort.name(), query.order, sort.key(last), last.id)
    });
    Ok(Json(TaskPage {
        items: tasks.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
