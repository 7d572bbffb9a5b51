//! One-shot runs: a program, its stdin and limits in one request, no task needed. With
//! `wait=true` the answer holds the result when it comes within the wait; batches take up to
//! 100 runs at once.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;
use voidrunner_shared::events::{ExecutionResult, SourceFile};

use super::executions::{
    accepted, enqueue, find_by_idempotency_key, idempotency_key, Enqueued, ExecutionResponse,
    NewExecution,
};
use super::tasks::{self, CreateTask};
use crate::auth::AuthUser;
use crate::entity::{execution, task};
use crate::error::{ApiError, Json, Query};
use crate::openapi::{BodyErrors, Common, Malformed};
use crate::recorder;
use crate::state::AppState;

/// Runs one batch may hold.
const MAX_BATCH: usize = 100;
const DEFAULT_WAIT_SECONDS: u64 = 30;

/// A program to run once.
#[derive(Deserialize, Serialize, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// `python`, `javascript`, `bash` or `go` (or an alias).
    language: String,
    /// The main file. May be left out when `files` holds the main file (`main.py`,
    /// `main.js`, `main.sh` or `main.go`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    files: Option<Vec<SourceFile>>,
    #[serde(default)]
    stdin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network: Option<bool>,
    /// Where to POST the result when the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_url: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Wait for the result (up to `wait_seconds`) instead of answering 202 at once.
    #[serde(default)]
    wait: bool,
    wait_seconds: Option<u64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    runs: Vec<RunRequest>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    items: Vec<ExecutionResponse>,
}

/// The task fields a run stands for, with the run's own names in validation errors.
/// The run's main file and its other files: `code` and `files`, or, without `code`, the file
/// in `files` named like the language's main file and the rest.
fn program_of(run: &RunRequest) -> Result<(String, Vec<SourceFile>), ApiError> {
    let mut files = run.files.clone().unwrap_or_default();
    if let Some(code) = &run.code {
        return Ok((code.clone(), files));
    }
    let main = run
        .language
        .parse::<voidrunner_shared::Language>()
        .map(|language| language.main_file())
        .map_err(|e| ApiError::invalid_field("language", e.to_string()))?;
    let position = files
        .iter()
        .position(|file| file.path == main)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "code",
                format!("is required unless `files` holds the main file, {main}"),
            )
        })?;
    let code = files.remove(position).content;
    Ok((code, files))
}

fn as_task(run: &RunRequest) -> Result<CreateTask, ApiError> {
    let (code, files) = program_of(run)?;
    let mut fields = json!({
        "name": "run",
        "script_type": run.language,
        "script_content": code,
    });
    if !files.is_empty() {
        fields["files"] = serde_json::to_value(&files).map_err(|e| ApiError::Internal(e.into()))?;
    }
    let extra = serde_json::to_value(run).map_err(|e| ApiError::Internal(e.into()))?;
    for key in [
        "priority",
        "timeout_seconds",
        "memory_mb",
        "cpus",
        "output_limit_bytes",
        "network",
    ] {
        if let Some(value) = extra.get(key) {
            fields[key] = value.clone();
        }
    }
    serde_json::from_value(fields).map_err(|error| ApiError::Validation {
        message: format!("the run does not match the expected shape: {error}"),
        details: Value::Null,
    })
}

/// Validation errors name `language` and `code`, the fields a run has.
fn with_run_names(error: ApiError, index: Option<usize>) -> ApiError {
    match error {
        ApiError::Validation {
            message,
            mut details,
        } => {
            let rename = |field: &str| match field {
                "script_type" => "language".to_owned(),
                "script_content" => "code".to_owned(),
                other => other.to_owned(),
            };
            let mut message = message
                .replace("script_type", "language")
                .replace("script_content", "code");
            if let Some(field) = details.get("field").and_then(Value::as_str).map(rename) {
                details["field"] = Value::String(field);
            }
            if let Some(index) = index {
                message = format!("runs[{index}]: {message}");
                if details.is_object() {
                    details["index"] = json!(index);
                } else {
                    details = json!({ "index": index });
                }
            }
            ApiError::Validation { message, details }
        }
        other => other,
    }
}

fn check_stdin(state: &AppState, run: &RunRequest) -> Result<(), ApiError> {
    let limit = state.config.max_stdin_bytes;
    if run.stdin.len() > limit {
        return Err(ApiError::invalid_field(
            "stdin",
            format!("is {} bytes; the limit is {limit}", run.stdin.len()),
        ));
    }
    Ok(())
}

/// Stores the run's program and enqueues its execution.
async fn start(
    state: &AppState,
    user_id: Uuid,
    run: RunRequest,
    id: Uuid,
    idempotency_key: Option<String>,
    index: Option<usize>,
) -> Result<Enqueued, ApiError> {
    let request = as_task(&run).map_err(|e| with_run_names(e, index))?;
    check_stdin(state, &run).map_err(|e| with_run_names(e, index))?;
    let callback_url = crate::webhooks::check_url(state, run.callback_url.as_deref())
        .map_err(|e| with_run_names(e, index))?;
    let task = tasks::insert(state, user_id, request, task::KIND_RUN)
        .await
        .map_err(|e| with_run_names(e, index))?;
    enqueue(
        state,
        user_id,
        NewExecution {
            id,
            callback_url,
            task,
            stdin: run.stdin,
            idempotency_key,
            rerun_of: None,
        },
    )
    .await
}

/// `POST /runs`: runs a program once. 202 with the queued execution, or with `wait=true` 200
/// with the finished one when it ends within the wait (else 202 and its location).
#[tracing::instrument(skip_all, fields(user_id = %user_id))]
#[utoipa::path(
    operation_id = "run_create",
    post,
    path = "/runs",
    tag = "runs",
    params(RunQuery, ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes the submission safe to retry")),
    request_body = RunRequest,
    responses((status = 200, description = "Finished within the wait", body = ExecutionResponse), (status = 202, description = "Queued (or still running when the wait ended)", body = ExecutionResponse), Malformed, BodyErrors, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Query(query): Query<RunQuery>,
    headers: HeaderMap,
    Json(run): Json<RunRequest>,
) -> Result<(StatusCode, HeaderMap, Json<ExecutionResponse>), ApiError> {
    let max_wait = state
        .config
        .request_timeout_seconds
        .saturating_sub(1)
        .max(1);
    let wait = query
        .wait_seconds
        .unwrap_or(DEFAULT_WAIT_SECONDS.min(max_wait));
    if query.wait_seconds.is_some() && !query.wait {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: "wait_seconds applies only with wait=true".into(),
        });
    }
    if !(1..=max_wait).contains(&wait) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("wait_seconds must be between 1 and {max_wait}"),
        });
    }
    let key = idempotency_key(&headers)?;
    if let Some(key) = &key {
        if let Some(earlier) = find_by_idempotency_key(&state, user_id, key).await? {
            return replay_run(&state, earlier, &run).await;
        }
    }
    let id = Uuid::now_v7();
    // Listening before the execution exists, so its result cannot slip past.
    let results = if query.wait {
        Some(
            state
                .nats
                .subscribe(state.namespace.result_subject(id))
                .await
                .map_err(|e| ApiError::Internal(e.into()))?,
        )
    } else {
        None
    };
    let enqueued = start(&state, user_id, run, id, key, None).await?;
    let Some(mut results) = results else {
        return Ok(accepted(enqueued));
    };
    let Enqueued::New(execution) = enqueued else {
        return Ok(accepted(enqueued));
    };
    let arrived = tokio::time::timeout(Duration::from_secs(wait), results.next()).await;
    if let Ok(Some(message)) = arrived {
        // Recorded here rather than waiting for the recorder; whichever comes first wins.
        if let Ok(ExecutionResult::V1(result)) =
            serde_json::from_slice::<ExecutionResult>(&message.payload)
        {
            recorder::apply_result(&state.db, &result).await?;
        }
    }
    let current = execution::Entity::find_by_id(execution.id)
        .one(&state.db)
        .await?
        .unwrap_or(execution);
    if current.status.is_final() {
        let (_, headers, body) = accepted(Enqueued::New(current));
        return Ok((StatusCode::OK, headers, body));
    }
    Ok(accepted(Enqueued::New(current)))
}

/// The execution an earlier run with the same key created, if it ran the same program.
async fn replay_run(
    state: &AppState,
    earlier: execution::Model,
    run: &RunRequest,
) -> Result<(StatusCode, HeaderMap, Json<ExecutionResponse>), ApiError> {
    let task = task::Entity::find_by_id(earlier.task_id)
        .one(&state.db)
        .await?;
    let same = task.is_some_and(|task| {
        task.kind == task::KIND_RUN
            && program_of(run).is_ok_and(|(code, _)| code == task.script_content)
            && run
                .language
                .parse::<voidrunner_shared::Language>()
                .is_ok_and(|language| task::ScriptType::from(language) == task.script_type)
    }) && earlier.stdin == run.stdin;
    if !same {
        return Err(ApiError::Unprocessable {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for a different request; use a new key".into(),
        });
    }
    Ok(accepted(Enqueued::Replayed(earlier)))
}

/// `POST /runs/batch`: up to 100 runs, validated all first (one bad run refuses the batch, with
/// its index), then queued. 202 with the executions in request order.
#[tracing::instrument(skip_all, fields(user_id = %user_id))]
#[utoipa::path(
    operation_id = "run_batch",
    post,
    path = "/runs/batch",
    tag = "runs",
    request_body = BatchRequest,
    responses((status = 202, description = "Every run queued, in request order", body = BatchResponse), Malformed, BodyErrors, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn batch(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Json(batch): Json<BatchRequest>,
) -> Result<(StatusCode, Json<BatchResponse>), ApiError> {
    if batch.runs.is_empty() || batch.runs.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "runs",
            format!("must hold 1 to {MAX_BATCH} runs, got {}", batch.runs.len()),
        ));
    }
    for (index, run) in batch.runs.iter().enumerate() {
        let request = as_task(run).map_err(|e| with_run_names(e, Some(index)))?;
        check_stdin(&state, run).map_err(|e| with_run_names(e, Some(index)))?;
        crate::webhooks::check_url(&state, run.callback_url.as_deref())
            .map_err(|e| with_run_names(e, Some(index)))?;
        tasks::check(request, &state).map_err(|e| with_run_names(e, Some(index)))?;
    }
    let mut items = Vec::with_capacity(batch.runs.len());
    for (index, run) in batch.runs.into_iter().enumerate() {
        let enqueued = start(&state, user_id, run, Uuid::now_v7(), None, Some(index)).await?;
        let (_, _, Json(execution)) = accepted(enqueued);
        items.push(execution);
    }
    Ok((StatusCode::ACCEPTED, Json(BatchResponse { items })))
}
