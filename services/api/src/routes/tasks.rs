use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use voidrunner_shared::{Lane, Language};

use crate::auth::AuthUser;
use crate::entity::task;
use crate::error::{ApiError, Json, Path};
use crate::state::AppState;

const MAX_NAME_CHARS: usize = 255;
const DEFAULT_PRIORITY: i64 = 5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    name: String,
    script_content: String,
    script_type: String,
    priority: Option<i64>,
    timeout_seconds: Option<i64>,
}

#[derive(Serialize)]
pub struct TaskResponse {
    id: Uuid,
    name: String,
    script_type: Language,
    script_content: String,
    priority: i16,
    lane: Lane,
    timeout_seconds: i32,
    created_at: chrono::DateTime<Utc>,
    updated_at: chrono::DateTime<Utc>,
}

impl From<task::Model> for TaskResponse {
    fn from(task: task::Model) -> Self {
        TaskResponse {
            id: task.id,
            lane: Lane::for_priority(u8::try_from(task.priority).unwrap_or(0)),
            name: task.name,
            script_type: task.script_type.into(),
            script_content: task.script_content,
            priority: task.priority,
            timeout_seconds: task.timeout_seconds,
            created_at: task.created_at,
            updated_at: task.updated_at,
        }
    }
}

/// A task request that passed validation.
struct ValidTask {
    name: String,
    language: Language,
    script_content: String,
    priority: i16,
    timeout_seconds: i32,
}

fn validate(request: CreateTask, state: &AppState) -> Result<ValidTask, ApiError> {
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let language: Language = request.script_type.parse().map_err(
        |e: voidrunner_shared::language::UnknownLanguage| {
            ApiError::invalid_field("script_type", e.to_string())
        },
    )?;
    if request.script_content.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "script_content",
            "must not be empty",
        ));
    }
    let max_bytes = state.config.max_script_bytes;
    if request.script_content.len() > max_bytes {
        return Err(ApiError::invalid_field(
            "script_content",
            format!(
                "is {} bytes; the limit is {max_bytes}",
                request.script_content.len()
            ),
        ));
    }
    let priority = request.priority.unwrap_or(DEFAULT_PRIORITY);
    if !(0..=i64::from(Lane::MAX_PRIORITY)).contains(&priority) {
        return Err(ApiError::invalid_field(
            "priority",
            format!(
                "must be between 0 and {}, got {priority}",
                Lane::MAX_PRIORITY
            ),
        ));
    }
    let max_timeout = state.config.max_timeout_seconds;
    let timeout = request
        .timeout_seconds
        .unwrap_or(i64::from(state.config.default_timeout_seconds));
    if !(1..=i64::from(max_timeout)).contains(&timeout) {
        return Err(ApiError::invalid_field(
            "timeout_seconds",
            format!("must be between 1 and {max_timeout}, got {timeout}"),
        ));
    }
    Ok(ValidTask {
        name,
        language,
        script_content: request.script_content,
        priority: i16::try_from(priority).unwrap_or(0),
        timeout_seconds: i32::try_from(timeout).unwrap_or(1),
    })
}

#[tracing::instrument(skip_all, fields(user_id = %user_id))]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Json(request): Json<CreateTask>,
) -> Result<(StatusCode, Json<TaskResponse>), ApiError> {
    let valid = validate(request, &state)?;
    let now = Utc::now();
    let task = task::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        name: Set(valid.name),
        script_type: Set(valid.language.into()),
        script_content: Set(valid.script_content),
        priority: Set(valid.priority),
        timeout_seconds: Set(valid.timeout_seconds),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&state.db)
    .await?;
    Ok((StatusCode::CREATED, Json(task.into())))
}

/// The task with `task_id` if it belongs to `user_id`; someone else's task does not exist.
pub async fn find_owned(
    state: &AppState,
    user_id: Uuid,
    task_id: Uuid,
) -> Result<task::Model, ApiError> {
    task::Entity::find_by_id(task_id)
        .filter(task::Column::UserId.eq(user_id))
        .one(&state.db)
        .await?
        .ok_or(ApiError::NotFound("no task with this id"))
}

pub async fn get(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(task_id): Path<Uuid>,
) -> Result<Json<TaskResponse>, ApiError> {
    Ok(Json(find_owned(&state, user_id, task_id).await?.into()))
}

#[derive(Deserialize)]
pub struct Page {
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    50
}

pub async fn list(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Query(page): Query<Page>,
) -> Result<Json<Vec<TaskResponse>>, ApiError> {
    let tasks = task::Entity::find()
        .filter(task::Column::UserId.eq(user_id))
        .order_by_desc(task::Column::CreatedAt)
        .limit(page.limit.clamp(1, 500))
        .all(&state.db)
        .await?;
    Ok(Json(tasks.into_iter().map(Into::into).collect()))
}
