//! One-shot runs: a program, its stdin and limits in one request, no task needed. With
//! `wait=true` the answer holds the result when it comes within the wait; batches take up to
//! 100 runs at once.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use voidrunner_shared::events::SourceFile;

use crate::entity::execution;
use crate::error::{ApiError, Json, Query};
use crate::executions::view::ExecutionResponse;
use crate::executions::{NewExecution, NewRun, Submitted};
use crate::http::{self, AuthUser};
use crate::openapi::{BodyErrors, Common, Conflict, Malformed};
use crate::rules;
use crate::state::AppState;
use crate::tasks::{self, Field, FieldError, Naming, TaskDraft, TaskRules, TaskSpec};

const DEFAULT_WAIT_SECONDS: u64 = 30;

/// A program to run once.
#[derive(Deserialize, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// `python`, `javascript`, `bash` or `go` (or an alias).
    language: String,
    /// The main file. (The api also takes a run without it whose `files` hold the language's
    /// main file, `main.py`, `main.js`, `main.sh` or `main.go`.)
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    files: Option<Vec<SourceFile>>,
    #[serde(default)]
    stdin: String,
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
    priority: Option<i64>,
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
    timeout_seconds: Option<i64>,
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
    memory_mb: Option<i64>,
    #[serde(default)]
    cpus: Option<f64>,
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
    output_limit_bytes: Option<u64>,
    #[serde(default)]
    network: Option<bool>,
    /// Where to POST the result when the run ends.
    #[serde(default)]
    callback_url: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Wait for the result (up to `wait_seconds`) instead of answering 202 at once.
    #[serde(default)]
    wait: bool,
    /// How long to wait for the result, in seconds; giving it means waiting.
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

/// The run's main file and its other files: `code` and `files`, or, without `code`, the file
/// in `files` named like the language's main file and the rest.
fn program_of(run: &RunRequest) -> Result<(String, Vec<SourceFile>), FieldError> {
    let mut files = run.files.clone().unwrap_or_default();
    if let Some(code) = &run.code {
        return Ok((code.clone(), files));
    }
    let main = run
        .language
        .parse::<voidrunner_shared::Language>()
        .map(|language| language.main_file())
        .map_err(|e| FieldError {
            field: Field::Language,
            problem: e.to_string(),
        })?;
    let position = files
        .iter()
        .position(|file| file.path == main)
        .ok_or_else(|| FieldError {
            field: Field::Code,
            problem: format!("is required unless `files` holds the main file, {main}"),
        })?;
    let code = files.remove(position).content;
    Ok((code, files))
}

/// The task a run stands for, checked by the same rules as any task.
fn spec_of(run: &RunRequest, rules: &TaskRules) -> Result<TaskSpec, FieldError> {
    let (code, files) = program_of(run)?;
    let draft = TaskDraft {
        name: "run".into(),
        script_type: run.language.clone(),
        script_content: code,
        files: (!files.is_empty()).then_some(files),
        priority: run.priority,
        timeout_seconds: run.timeout_seconds,
        memory_mb: run.memory_mb,
        cpus: run.cpus,
        output_limit_bytes: run.output_limit_bytes,
        network: run.network,
        ..TaskDraft::default()
    };
    TaskSpec::parse(draft, rules)
}

/// A run that passed every check, ready to store.
struct ValidRun {
    spec: TaskSpec,
    stdin: String,
    callback_url: Option<String>,
}

/// Checks a run; errors name the run's fields and, in a batch, its index.
fn check(state: &AppState, run: RunRequest, index: Option<usize>) -> Result<ValidRun, ApiError> {
    let at_index = |error: ApiError| in_batch(error, index);
    let spec = spec_of(&run, &state.task_rules())
        .map_err(|error| at_index(ApiError::field(error, Naming::Run)))?;
    let limit = state.config.max_stdin_bytes;
    if run.stdin.len() > limit {
        return Err(at_index(ApiError::invalid_field(
            "stdin",
            format!("is {} bytes; the limit is {limit}", run.stdin.len()),
        )));
    }
    let callback_url = http::callback_url(state, run.callback_url.as_deref()).map_err(at_index)?;
    Ok(ValidRun {
        spec,
        stdin: run.stdin,
        callback_url,
    })
}

/// A batch's errors say which run broke the rule.
fn in_batch(error: ApiError, index: Option<usize>) -> ApiError {
    match (error, index) {
        (
            ApiError::Validation {
                message,
                mut details,
            },
            Some(index),
        ) => {
            if details.is_object() {
                details["index"] = json!(index);
            } else {
                details = json!({ "index": index });
            }
            ApiError::Validation {
                message: format!("runs[{index}]: {message}"),
                details,
            }
        }
        (error, _) => error,
    }
}

/// Stores the run's program and submits its execution.
async fn start(
    state: &AppState,
    user_id: Uuid,
    run: ValidRun,
    id: Uuid,
    idempotency_key: Option<String>,
) -> Result<Submitted, ApiError> {
    let task = tasks::insert(&state.db, user_id, run.spec, tasks::KIND_RUN).await?;
    let submitted = state
        .executions
        .submit(
            user_id,
            NewExecution {
                id,
                callback_url: run.callback_url,
                task,
                stdin: run.stdin,
                idempotency_key,
                rerun_of: None,
            },
        )
        .await?;
    Ok(submitted)
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
    responses((status = 200, description = "Finished within the wait", body = ExecutionResponse), (status = 202, description = "Queued (or still running when the wait ended)", body = ExecutionResponse), Malformed, BodyErrors, Conflict, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Query(query): Query<RunQuery>,
    headers: HeaderMap,
    Json(run): Json<RunRequest>,
) -> Result<(StatusCode, HeaderMap, Json<ExecutionResponse>), ApiError> {
    let max_wait = state.config.max_wait_seconds();
    let wait = query
        .wait_seconds
        .unwrap_or(DEFAULT_WAIT_SECONDS.min(max_wait));
    let waits = query.wait || query.wait_seconds.is_some();
    if !(1..=max_wait).contains(&wait) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("wait_seconds must be between 1 and {max_wait}"),
        });
    }
    let key = http::idempotency_key(&headers)?;
    let run = check(&state, run, None)?;
    if let Some(key) = &key {
        if let Some(earlier) = state
            .executions
            .earlier_run(user_id, key, &run.spec, &run.stdin)
            .await?
        {
            return Ok(http::submitted(
                StatusCode::ACCEPTED,
                Submitted::Replayed(earlier),
            ));
        }
    }
    let id = Uuid::now_v7();
    // Listening before the execution exists, so its result cannot slip past.
    let results = if waits {
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
    let submitted = start(&state, user_id, run, id, key).await?;
    let (Some(results), Submitted::New(execution)) = (results, &submitted) else {
        return Ok(http::submitted(StatusCode::ACCEPTED, submitted));
    };
    let wait = Duration::from_secs(wait);
    Ok(
        match wait_for_result(&state, execution.id, results, wait).await? {
            Some(finished) => http::submitted(StatusCode::OK, Submitted::New(finished)),
            None => http::submitted(StatusCode::ACCEPTED, submitted),
        },
    )
}

/// Waits up to `wait` for the execution's result and records it: whether the recorder or this
/// waiter applies it first, the lifecycle moves it on once, with every follow-up. Returns the
/// execution if it is final by then.
async fn wait_for_result(
    state: &AppState,
    execution_id: Uuid,
    mut results: async_nats::Subscriber,
    wait: Duration,
) -> Result<Option<execution::Model>, ApiError> {
    let arrived = tokio::time::timeout(wait, results.next()).await;
    if let Ok(Some(message)) = arrived {
        state
            .executions
            .finish_seen(execution_id, &message.payload)
            .await?;
    }
    let current = execution::Entity::find_by_id(execution_id)
        .one(&state.db)
        .await?;
    Ok(current.filter(|execution| execution.status.is_final()))
}

/// `POST /runs/batch`: up to 100 runs, validated all first (one bad run refuses the batch, with
/// its index), then queued in one transaction (all or none). 202 with the executions in
/// request order.
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
    rules::BATCH_RUNS
        .check(batch.runs.len())
        .map_err(|problem| ApiError::invalid_field("runs", format!("{problem} runs")))?;
    let runs = batch
        .runs
        .into_iter()
        .enumerate()
        .map(|(index, run)| check(&state, run, Some(index)))
        .collect::<Result<Vec<_>, _>>()?;
    let runs = runs
        .into_iter()
        .map(|run| NewRun {
            task: tasks::new_task(user_id, run.spec, tasks::KIND_RUN),
            id: Uuid::now_v7(),
            callback_url: run.callback_url,
            stdin: run.stdin,
        })
        .collect();
    let items = state
        .executions
        .submit_runs(user_id, runs)
        .await?
        .into_iter()
        .map(|execution| {
            let (_, _, Json(execution)) =
                http::submitted(StatusCode::ACCEPTED, Submitted::New(execution));
            execution
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(BatchResponse { items })))
}
