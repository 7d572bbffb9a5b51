use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use voidrunner_shared::events::{RequestedLimits, RetryPolicy, SourceFile};
use voidrunner_shared::{Lane, Language};

use crate::auth::AuthUser;
use crate::entity::{execution, task};
use crate::error::{ApiError, Json, Path, Query};
use crate::openapi::{BodyErrors, Common, Conflict, Malformed, Missing};
use crate::pagination::{self, Order};
use crate::state::AppState;

const MAX_NAME_CHARS: usize = 255;
const DEFAULT_PRIORITY: i64 = 5;
const MAX_FILES: usize = 32;
const MAX_PATH_CHARS: usize = 128;
const MIN_MEMORY_MB: i64 = 16;
const MIN_CPUS: f64 = 0.01;
const MIN_OUTPUT_LIMIT_BYTES: u64 = 1024;
const MAX_RETRIES: i64 = 10;
const DEFAULT_RETRY_BACKOFF_SECONDS: i64 = 1;
const MAX_DESCRIPTION_CHARS: usize = 1000;
const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTask {
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    /// The main file, 1 byte to 64 KiB with `files`.
    #[schema(min_length = 1, max_length = 65536)]
    script_content: String,
    /// python, javascript, bash or go (aliases: py, js, node, sh, golang).
    #[schema(example = "python")]
    script_type: String,
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// Any JSON object of the user's, at most 16 KiB.
    metadata: Option<serde_json::Value>,
    #[schema(minimum = 0, maximum = 10)]
    priority: Option<i64>,
    #[schema(minimum = 1, maximum = 3600)]
    timeout_seconds: Option<i64>,
    files: Option<Vec<SourceFile>>,
    memory_mb: Option<i64>,
    cpus: Option<f64>,
    output_limit_bytes: Option<u64>,
    network: Option<bool>,
    /// Runs after the first when the program fails or times out.
    max_retries: Option<i64>,
    /// Delay before the first retry, doubling for each further one.
    retry_backoff_seconds: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskResponse {
    id: Uuid,
    name: String,
    description: Option<String>,
    metadata: Option<serde_json::Value>,
    /// The status of the latest execution, or `idle` before the first.
    status: String,
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
            name: task.name,
            description: task.description,
            metadata: task.metadata,
            status: task.status,
            script_type: task.script_type.into(),
            script_content: task.script_content,
            priority: task.priority,
            timeout_seconds: task.timeout_seconds,
            files: task
                .files
                .and_then(|files| serde_json::from_value(files).ok())
                .unwrap_or_default(),
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

/// A task request that passed validation.
struct ValidTask {
    name: String,
    description: Option<String>,
    metadata: Option<serde_json::Value>,
    language: Language,
    script_content: String,
    priority: i16,
    timeout_seconds: i32,
    files: Vec<SourceFile>,
    limits: RequestedLimits,
    network: bool,
    max_retries: i32,
    retry_backoff_seconds: i32,
}

/// A relative path inside the work directory: no `..`, no absolute paths, plain characters.
fn valid_file_path(path: &str) -> bool {
    !path.is_empty()
        && path.chars().count() <= MAX_PATH_CHARS
        && !path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

fn validate_files(files: Vec<SourceFile>, main_file: &str) -> Result<Vec<SourceFile>, ApiError> {
    if files.len() > MAX_FILES {
        return Err(ApiError::invalid_field(
            "files",
            format!("at most {MAX_FILES} files, got {}", files.len()),
        ));
    }
    let mut seen = std::collections::HashSet::from([main_file.to_owned()]);
    for file in &files {
        if !valid_file_path(&file.path) {
            return Err(ApiError::invalid_field(
                "files",
                format!(
                    "path {:?} must be relative, at most {MAX_PATH_CHARS} characters from A-Z a-z 0-9 . _ - /, without . or .. parts",
                    file.path
                ),
            ));
        }
        if !seen.insert(file.path.clone()) {
            return Err(ApiError::invalid_field(
                "files",
                format!(
                    "path {:?} appears twice (or is the main file, {main_file})",
                    file.path
                ),
            ));
        }
    }
    Ok(files)
}

fn validate_limits(request: &CreateTask, state: &AppState) -> Result<RequestedLimits, ApiError> {
    let policy = &state.policy;
    let memory_mb = match request.memory_mb {
        Some(mb) if !(MIN_MEMORY_MB..=i64::from(policy.sandbox_max_memory_mb)).contains(&mb) => {
            return Err(ApiError::invalid_field(
                "memory_mb",
                format!(
                    "must be between {MIN_MEMORY_MB} and {}, got {mb}",
                    policy.sandbox_max_memory_mb
                ),
            ))
        }
        mb => mb.and_then(|mb| u32::try_from(mb).ok()),
    };
    let cpu_millis = match request.cpus {
        Some(cpus) if !(MIN_CPUS..=policy.sandbox_max_cpus).contains(&cpus) => {
            return Err(ApiError::invalid_field(
                "cpus",
                format!(
                    "must be between {MIN_CPUS} and {}, got {cpus}",
                    policy.sandbox_max_cpus
                ),
            ))
        }
        cpus => cpus.map(|cpus| (cpus * 1000.0).round() as u32),
    };
    let max_output = policy.sandbox_max_output_limit_bytes;
    let output_bytes = match request.output_limit_bytes {
        Some(bytes) if !(MIN_OUTPUT_LIMIT_BYTES..=max_output).contains(&bytes) => {
            return Err(ApiError::invalid_field(
                "output_limit_bytes",
                format!("must be between {MIN_OUTPUT_LIMIT_BYTES} and {max_output}, got {bytes}"),
            ))
        }
        bytes => bytes,
    };
    Ok(RequestedLimits {
        memory_mb,
        cpu_millis,
        output_bytes,
    })
}

fn validate(mut request: CreateTask, state: &AppState) -> Result<ValidTask, ApiError> {
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
    if request.script_content.is_empty() {
        return Err(ApiError::invalid_field(
            "script_content",
            "must not be empty",
        ));
    }
    let description = request
        .description
        .take()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    if description
        .as_ref()
        .is_some_and(|text| text.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(ApiError::invalid_field(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    let metadata = match request.metadata.take() {
        None | Some(serde_json::Value::Null) => None,
        Some(value @ serde_json::Value::Object(_)) => {
            let size = value.to_string().len();
            if size > MAX_METADATA_BYTES {
                return Err(ApiError::invalid_field(
                    "metadata",
                    format!("is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"),
                ));
            }
            Some(value)
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "metadata",
                "must be a JSON object, like {\"team\": \"search\"}",
            ))
        }
    };

    let max_bytes = state.config.max_script_bytes;
    let files = validate_files(
        request.files.take().unwrap_or_default(),
        language.main_file(),
    )?;
    let program_bytes =
        request.script_content.len() + files.iter().map(|file| file.content.len()).sum::<usize>();
    if program_bytes > max_bytes {
        return Err(ApiError::invalid_field(
            "script_content",
            format!("the program (script_content and files) is {program_bytes} bytes; the limit is {max_bytes}"),
        ));
    }
    let limits = validate_limits(&request, state)?;
    let network = request.network.unwrap_or(false);
    if network && !state.policy.network_allowed() {
        return Err(ApiError::invalid_field(
            "network",
            "network access is disabled in this deployment (VOIDRUNNER_SANDBOX_NETWORK=none)",
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
    let max_retries = request.max_retries.unwrap_or(0);
    if !(0..=MAX_RETRIES).contains(&max_retries) {
        return Err(ApiError::invalid_field(
            "max_retries",
            format!("must be between 0 and {MAX_RETRIES}, got {max_retries}"),
        ));
    }
    let max_backoff = i64::from(RetryPolicy::MAX_BACKOFF_SECONDS);
    let retry_backoff = request
        .retry_backoff_seconds
        .unwrap_or(DEFAULT_RETRY_BACKOFF_SECONDS);
    if !(1..=max_backoff).contains(&retry_backoff) {
        return Err(ApiError::invalid_field(
            "retry_backoff_seconds",
            format!("must be between 1 and {max_backoff}, got {retry_backoff}"),
        ));
    }
    Ok(ValidTask {
        description,
        metadata,
        max_retries: i32::try_from(max_retries).unwrap_or(0),
        retry_backoff_seconds: i32::try_from(retry_backoff).unwrap_or(1),
        name,
        language,
        script_content: request.script_content,
        priority: i16::try_from(priority).unwrap_or(0),
        timeout_seconds: i32::try_from(timeout).unwrap_or(1),
        files,
        limits,
        network,
    })
}

impl ValidTask {
    /// The columns a valid task sets, on `model`.
    fn apply(self, model: &mut task::ActiveModel) -> Result<(), ApiError> {
        model.name = Set(self.name);
        model.description = Set(self.description);
        model.metadata = Set(self.metadata);
        model.script_type = Set(self.language.into());
        model.script_content = Set(self.script_content);
        model.priority = Set(self.priority);
        model.timeout_seconds = Set(self.timeout_seconds);
        model.files = Set((!self.files.is_empty())
            .then(|| serde_json::to_value(&self.files))
            .transpose()
            .map_err(|e| ApiError::Internal(e.into()))?);
        model.memory_mb = Set(self.limits.memory_mb.and_then(|mb| i32::try_from(mb).ok()));
        model.cpu_millis = Set(self
            .limits
            .cpu_millis
            .and_then(|millis| i32::try_from(millis).ok()));
        model.output_limit_bytes = Set(self
            .limits
            .output_bytes
            .and_then(|bytes| i64::try_from(bytes).ok()));
        model.network = Set(self.network);
        model.max_retries = Set(self.max_retries);
        model.retry_backoff_seconds = Set(self.retry_backoff_seconds);
        Ok(())
    }
}

use crate::entity::task::{IDLE, KIND_TASK};

#[tracing::instrument(skip_all, fields(user_id = %user_id))]
#[utoipa::path(
    operation_id = "task_create",
    post,
    path = "/tasks",
    tag = "tasks",
    request_body = CreateTask,
    responses((status = 201, description = "Created", body = TaskResponse), Malformed, BodyErrors, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Json(request): Json<CreateTask>,
) -> Result<(StatusCode, Json<TaskResponse>), ApiError> {
    let task = insert(&state, user_id, request, KIND_TASK).await?;
    Ok((StatusCode::CREATED, Json(task.into())))
}

/// Validates a task request without storing anything.
pub(crate) fn check(request: CreateTask, state: &AppState) -> Result<(), ApiError> {
    validate(request, state).map(|_| ())
}

/// Validates and stores a task of `kind`.
pub(crate) async fn insert(
    state: &AppState,
    user_id: Uuid,
    request: CreateTask,
    kind: &str,
) -> Result<task::Model, ApiError> {
    let valid = validate(request, state)?;
    let now = Utc::now();
    let mut model = task::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        status: Set(IDLE.to_owned()),
        kind: Set(kind.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    valid.apply(&mut model)?;
    Ok(model.insert(&state.db).await?)
}

/// The task as a create request would describe it, for merging a partial update onto.
fn as_request(task: &task::Model) -> CreateTask {
    CreateTask {
        name: task.name.clone(),
        script_content: task.script_content.clone(),
        script_type: Language::from(task.script_type).to_string(),
        description: task.description.clone(),
        metadata: task.metadata.clone(),
        priority: Some(i64::from(task.priority)),
        timeout_seconds: Some(i64::from(task.timeout_seconds)),
        files: task
            .files
            .clone()
            .and_then(|files| serde_json::from_value(files).ok()),
        memory_mb: task.memory_mb.map(i64::from),
        cpus: task.cpu_millis.map(|millis| f64::from(millis) / 1000.0),
        output_limit_bytes: task
            .output_limit_bytes
            .and_then(|bytes| u64::try_from(bytes).ok()),
        network: Some(task.network),
        max_retries: Some(i64::from(task.max_retries)),
        retry_backoff_seconds: Some(i64::from(task.retry_backoff_seconds)),
    }
}

/// Refuses to change a task while one of its executions is queued or running.
async fn ensure_idle(state: &AppState, task_id: Uuid) -> Result<(), ApiError> {
    let unfinished = execution::Entity::find()
        .filter(execution::Column::TaskId.eq(task_id))
        .filter(execution::Column::Status.is_in(execution::Status::UNFINISHED))
        .count(&state.db)
        .await?;
    if unfinished > 0 {
        return Err(ApiError::Conflict(
            "the task has an execution queued or running: cancel it or wait for it to end",
        ));
    }
    Ok(())
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
    let current = find_owned(&state, user_id, task_id).await?;
    let mut merged =
        serde_json::to_value(as_request(&current)).map_err(|e| ApiError::Internal(e.into()))?;
    if let Some(fields) = merged.as_object_mut() {
        for (key, value) in patch {
            fields.insert(key, value);
        }
    }
    let request: CreateTask =
        serde_json::from_value(merged).map_err(|error| ApiError::Validation {
            message: format!("the request body does not match the expected shape: {error}"),
            details: serde_json::Value::Null,
        })?;
    let valid = validate(request, &state)?;
    ensure_idle(&state, task_id).await?;
    let mut model: task::ActiveModel = current.into();
    valid.apply(&mut model)?;
    model.updated_at = Set(Utc::now());
    Ok(Json(model.update(&state.db).await?.into()))
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
    let task = find_owned(&state, user_id, task_id).await?;
    ensure_idle(&state, task.id).await?;
    execution::Entity::delete_many()
        .filter(execution::Column::TaskId.eq(task.id))
        .exec(&state.db)
        .await?;
    task::Entity::delete_by_id(task.id).exec(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
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
    Ok(Json(find_owned(&state, user_id, task_id).await?.into()))
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

const TASK_STATUSES: [&str; 8] = [
    IDLE,
    "queued",
    "running",
    "completed",
    "failed",
    "timeout",
    "cancelled",
    "error",
];

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
        .filter(task::Column::Kind.eq(KIND_TASK));
    if let Some(status) = &query.status {
        if !TASK_STATUSES.contains(&status.as_str()) {
            return Err(ApiError::BadRequest {
                code: "invalid_query",
                message: format!("status must be one of {}", TASK_STATUSES.join(", ")),
            });
        }
        select = select.filter(task::Column::Status.eq(status.as_str()));
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
        select = select.filter(task::Column::ScriptType.eq(task::ScriptType::from(language)));
    }
    let sort = query.sort;
    let after = match &query.cursor {
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
