use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use voidrunner_shared::events::{RequestedLimits, RetryPolicy, SourceFile};
use voidrunner_shared::{Lane, Language};

use crate::auth::AuthUser;
use crate::entity::task;
use crate::error::{ApiError, Json, Path};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    name: String,
    script_content: String,
    script_type: String,
    priority: Option<i64>,
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

#[derive(Serialize)]
pub struct TaskResponse {
    id: Uuid,
    name: String,
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
    if request.script_content.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "script_content",
            "must not be empty",
        ));
    }
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
        files: Set((!valid.files.is_empty())
            .then(|| serde_json::to_value(&valid.files))
            .transpose()
            .map_err(|e| ApiError::Internal(e.into()))?),
        memory_mb: Set(valid.limits.memory_mb.and_then(|mb| i32::try_from(mb).ok())),
        cpu_millis: Set(valid
            .limits
            .cpu_millis
            .and_then(|millis| i32::try_from(millis).ok())),
        output_limit_bytes: Set(valid
            .limits
            .output_bytes
            .and_then(|bytes| i64::try_from(bytes).ok())),
        network: Set(valid.network),
        max_retries: Set(valid.max_retries),
        retry_backoff_seconds: Set(valid.retry_backoff_seconds),
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
