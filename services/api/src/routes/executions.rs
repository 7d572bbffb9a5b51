use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admission;
use crate::auth::AuthUser;
use crate::entity::execution::{self, Status};
use crate::entity::{task, webhook_attempt};
use crate::error::{ApiError, Json, Path, Query};
use crate::openapi::{BodyErrors, Common, Conflict, Malformed, Missing};
use crate::outbox;
use crate::pagination::{self, Order};
use crate::routes::tasks::find_owned;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExecutionResponse {
    id: Uuid,
    task_id: Uuid,
    /// queued, running, completed, failed, timeout, cancelled or error.
    #[schema(value_type = String)]
    status: &'static str,
    lane: String,
    exit_code: Option<i64>,
    stdout: String,
    stdout_encoding: String,
    stderr: String,
    stderr_encoding: String,
    /// stdout or stderr passed the output cap; the two below say which.
    output_truncated: bool,
    stdout_truncated: bool,
    stderr_truncated: bool,
    oom_killed: bool,
    compile_error: bool,
    peak_memory_bytes: Option<i64>,
    error: Option<String>,
    worker_id: Option<String>,
    attempt: i32,
    created_at: chrono::DateTime<Utc>,
    dispatched_at: Option<chrono::DateTime<Utc>>,
    started_at: Option<chrono::DateTime<Utc>>,
    finished_at: Option<chrono::DateTime<Utc>>,
    /// Time spent queued: from submission until the sandbox started.
    queue_ms: Option<i64>,
    /// Wall-clock run time in the sandbox, from start to finish.
    duration_ms: Option<i64>,
    /// How many times the program ran, retries included.
    runs: i32,
    /// False while the execution waits for room under its user's limit of executions at once.
    admitted: bool,
    idempotency_key: Option<String>,
    /// When the fleet gave up on it (its dispatch is in the dead-letter queue).
    dead_lettered_at: Option<chrono::DateTime<Utc>>,
    /// The dead-lettered execution this one re-runs.
    rerun_of: Option<Uuid>,
    /// Where the result is POSTed when the execution ends.
    callback_url: Option<String>,
    /// `pending`, `delivered` or `failed`; null without a callback URL.
    webhook_state: Option<String>,
    /// Every delivery attempt so far (on `GET /executions/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_attempts: Option<Vec<WebhookAttemptResponse>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookAttemptResponse {
    attempt: i32,
    attempted_at: chrono::DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    status_code: Option<i32>,
    error: Option<String>,
    duration_ms: i64,
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Queued => "queued",
        Status::Running => "running",
        Status::Completed => "completed",
        Status::Failed => "failed",
        Status::Timeout => "timeout",
        Status::Cancelled => "cancelled",
        Status::Error => "error",
    }
}

impl From<execution::Model> for ExecutionResponse {
    fn from(execution: execution::Model) -> Self {
        let duration_ms = execution
            .started_at
            .zip(execution.finished_at)
            .map(|(started, finished)| (finished - started).num_milliseconds());
        let queue_ms = execution
            .started_at
            .map(|started| (started - execution.created_at).num_milliseconds().max(0));
        ExecutionResponse {
            id: execution.id,
            task_id: execution.task_id,
            status: status_name(execution.status),
            lane: execution.lane,
            exit_code: execution.exit_code,
            stdout: execution.stdout,
            stdout_encoding: execution.stdout_encoding,
            stderr: execution.stderr,
            stderr_encoding: execution.stderr_encoding,
            output_truncated: execution.output_truncated,
            stdout_truncated: execution.stdout_truncated,
            stderr_truncated: execution.stderr_truncated,
            oom_killed: execution.oom_killed,
            compile_error: execution.compile_error,
            peak_memory_bytes: execution.peak_memory_bytes,
            error: execution.error,
            worker_id: execution.worker_id,
            attempt: execution.attempt,
            created_at: execution.created_at,
            dispatched_at: execution.dispatched_at,
            started_at: execution.started_at,
            finished_at: execution.finished_at,
            queue_ms,
            duration_ms,
            runs: execution.runs,
            admitted: execution.admitted,
            idempotency_key: execution.idempotency_key,
            dead_lettered_at: execution.dead_lettered_at,
            rerun_of: execution.rerun_of,
            callback_url: execution.callback_url,
            webhook_state: execution.webhook_state,
            webhook_attempts: None,
        }
    }
}

/// The optional body of `POST /tasks/{id}/executions`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartExecution {
    /// What the program reads on its standard input.
    #[serde(default)]
    stdin: String,
    /// Where to POST the result when the execution ends (signed; see the README).
    #[serde(default)]
    callback_url: Option<String>,
}

/// Reads the optional body: empty means defaults; otherwise JSON with the API's error shape.
fn start_request(
    headers: &HeaderMap,
    body: &Bytes,
    max_stdin_bytes: usize,
) -> Result<StartExecution, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(StartExecution::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ));
    }
    let request: StartExecution = serde_json::from_slice(body).map_err(|error| {
        if error.is_syntax() || error.is_eof() {
            ApiError::BadRequest {
                code: "malformed_json",
                message: format!("the request body is not valid JSON: {error}"),
            }
        } else {
            ApiError::Validation {
                message: format!("the request body does not match the expected shape: {error}"),
                details: serde_json::Value::Null,
            }
        }
    })?;
    if request.stdin.len() > max_stdin_bytes {
        return Err(ApiError::invalid_field(
            "stdin",
            format!(
                "is {} bytes; the limit is {max_stdin_bytes}",
                request.stdin.len()
            ),
        ));
    }
    Ok(request)
}

/// The header a client sends to make a submission safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// Set on a response that returns the execution an earlier request with the same key created.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The request's idempotency key, if it sent one: 1 to 255 visible ASCII characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= MAX_IDEMPOTENCY_KEY_CHARS
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::BadRequest {
            code: "invalid_idempotency_key",
            message: format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters (a UUID is a good choice)"
            ),
        }),
    }
}

/// What a new execution is made of.
pub(crate) struct NewExecution {
    /// Chosen by the caller, so that it can listen for the result before the execution exists.
    pub id: Uuid,
    /// Where the result is POSTed when the execution ends (validated).
    pub callback_url: Option<String>,
    pub task: task::Model,
    pub stdin: String,
    pub idempotency_key: Option<String>,
    pub rerun_of: Option<Uuid>,
}

/// How a submission was taken.
pub(crate) enum Enqueued {
    /// A new execution, committed, admitted and dispatched as the user's limit allows.
    New(execution::Model),
    /// The execution an earlier request with the same idempotency key created.
    Replayed(execution::Model),
}

/// NATS must be reachable before anything is written: an execution accepted while it is down
/// would wait for the sweeper with nobody told why.
fn ensure_nats_connected(state: &AppState) -> Result<(), ApiError> {
    if state.nats.connection_state() == async_nats::connection::State::Connected {
        Ok(())
    } else {
        Err(ApiError::Unavailable {
            message:
                "the message broker (NATS) is unreachable; nothing was changed, try again shortly",
            retry_after_seconds: 2,
        })
    }
}

pub(crate) async fn find_by_idempotency_key(
    state: &AppState,
    user_id: Uuid,
    key: &str,
) -> Result<Option<execution::Model>, ApiError> {
    Ok(execution::Entity::find()
        .filter(execution::Column::UserId.eq(user_id))
        .filter(execution::Column::IdempotencyKey.eq(key))
        .one(&state.db)
        .await?)
}

/// The earlier execution with the same key, if it was for the same request.
fn replay(earlier: execution::Model, new: &NewExecution) -> Result<Enqueued, ApiError> {
    if earlier.task_id == new.task.id && earlier.stdin == new.stdin {
        Ok(Enqueued::Replayed(earlier))
    } else {
        Err(ApiError::Unprocessable {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for a different request (another task or stdin); use a new key".into(),
        })
    }
}

/// Commits a new execution (the outbox entry), then admits and dispatches what the user's
/// limit allows. A 2xx after this means the execution will reach a final state.
pub(crate) async fn enqueue(
    state: &AppState,
    user_id: Uuid,
    new: NewExecution,
) -> Result<Enqueued, ApiError> {
    if let Some(key) = &new.idempotency_key {
        if let Some(earlier) = find_by_idempotency_key(state, user_id, key).await? {
            return replay(earlier, &new);
        }
    }
    ensure_nats_connected(state)?;
    let now = Utc::now();
    let task = &new.task;
    let queued = execution::Model {
        id: new.id,
        task_id: task.id,
        user_id,
        status: Status::Queued,
        lane: task.lane().as_str().to_owned(),
        exit_code: None,
        stdout: String::new(),
        stdout_encoding: "utf-8".into(),
        stderr: String::new(),
        stderr_encoding: "utf-8".into(),
        output_truncated: false,
        oom_killed: false,
        compile_error: false,
        peak_memory_bytes: None,
        stdin: new.stdin.clone(),
        error: None,
        worker_id: None,
        attempt: 0,
        dispatched_at: None,
        stream_sequence: None,
        created_at: now,
        started_at: None,
        finished_at: None,
        updated_at: now,
        idempotency_key: new.idempotency_key.clone(),
        admitted: false,
        dead_lettered_at: None,
        rerun_of: new.rerun_of,
        runs: 0,
        webhook_state: new
            .callback_url
            .as_ref()
            .map(|_| crate::webhooks::PENDING.to_owned()),
        callback_url: new.callback_url.clone(),
        webhook_next_at: None,
        stdout_truncated: false,
        stderr_truncated: false,
    };
    // Refused now rather than left in the outbox for good: JSON escapes can make a dispatch
    // much larger than its script and stdin.
    let max_payload = state.nats.server_info().max_payload;
    let encoded = outbox::encode(&queued, task).map_err(|e| ApiError::Internal(e.into()))?;
    if encoded.len() > max_payload {
        return Err(ApiError::invalid_field(
            "stdin",
            format!(
                "the program with this stdin is {} bytes once encoded, more than the {max_payload} a NATS message carries here",
                encoded.len()
            ),
        ));
    }
    // The row with a null `dispatched_at` is the outbox entry: committed before anything is
    // published, so a crash between the two leaves work for the sweeper, never a lost execution.
    let inserted = execution::ActiveModel::from(queued)
        .reset_all()
        .insert(&state.db)
        .await;
    let execution = match inserted {
        Ok(execution) => execution,
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            // A concurrent request with the same key, or a second re-run, won the race.
            if let Some(key) = &new.idempotency_key {
                if let Some(earlier) = find_by_idempotency_key(state, user_id, key).await? {
                    return replay(earlier, &new);
                }
            }
            return Err(ApiError::Conflict(
                "this dead letter has already been re-run",
            ));
        }
        Err(error) => return Err(error.into()),
    };
    if let Err(error) = task::refresh_status(&state.db, execution.task_id).await {
        tracing::warn!(task_id = %execution.task_id, error = %error, "task status not refreshed");
    }
    if let Err(error) = admission::admit_and_dispatch(state, user_id).await {
        // Committed and held: the sweeper admits it once the database answers again.
        tracing::warn!(execution_id = %execution.id, error = %error, "admission deferred to the sweeper");
    }
    let execution = execution::Entity::find_by_id(execution.id)
        .one(&state.db)
        .await
        .ok()
        .flatten()
        .unwrap_or(execution);
    Ok(Enqueued::New(execution))
}

/// The 202 for an enqueued execution, with its location.
pub(crate) fn accepted(enqueued: Enqueued) -> (StatusCode, HeaderMap, Json<ExecutionResponse>) {
    let mut headers = HeaderMap::new();
    let execution = match enqueued {
        Enqueued::New(execution) => execution,
        Enqueued::Replayed(execution) => {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            execution
        }
    };
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/executions/{}", execution.id)) {
        headers.insert(header::LOCATION, location);
    }
    (StatusCode::ACCEPTED, headers, Json(execution.into()))
}

/// Starts an execution of a task. 202: it is queued and will reach a final state.
#[tracing::instrument(skip_all, fields(user_id = %user_id, task_id = %task_id))]
#[utoipa::path(
    operation_id = "execution_create",
    post,
    path = "/tasks/{task_id}/executions",
    tag = "executions",
    params(("task_id" = Uuid, Path, description = "The task to run"), ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes the submission safe to retry: the same key returns the same execution")),
    request_body(content = Option<StartExecution>, description = "Optional: stdin and a callback URL"),
    responses((status = 202, description = "Queued; it will reach a final state", body = ExecutionResponse), Malformed, BodyErrors, Missing, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(task_id): Path<Uuid>,
    request_headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, HeaderMap, Json<ExecutionResponse>), ApiError> {
    let request = start_request(&request_headers, &body?, state.config.max_stdin_bytes)?;
    let idempotency_key = idempotency_key(&request_headers)?;
    let callback_url = crate::webhooks::check_url(&state, request.callback_url.as_deref())?;
    let task = find_owned(&state, user_id, task_id).await?;
    let enqueued = enqueue(
        &state,
        user_id,
        NewExecution {
            id: Uuid::now_v7(),
            callback_url,
            task,
            stdin: request.stdin,
            idempotency_key,
            rerun_of: None,
        },
    )
    .await?;
    Ok(accepted(enqueued))
}

/// The execution with `execution_id` if it belongs to `user_id`.
pub(super) async fn find_owned_execution(
    state: &AppState,
    user_id: Uuid,
    execution_id: Uuid,
) -> Result<execution::Model, ApiError> {
    execution::Entity::find_by_id(execution_id)
        .filter(execution::Column::UserId.eq(user_id))
        .one(&state.db)
        .await?
        .ok_or(ApiError::NotFound("no execution with this id"))
}

#[utoipa::path(
    operation_id = "execution_get",
    get,
    path = "/executions/{execution_id}",
    tag = "executions",
    params(("execution_id" = Uuid, Path, description = "The execution")),
    responses((status = 200, description = "The execution, with its webhook attempts", body = ExecutionResponse), Malformed, Missing, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(execution_id): Path<Uuid>,
) -> Result<Json<ExecutionResponse>, ApiError> {
    let execution = find_owned_execution(&state, user_id, execution_id).await?;
    let with_webhook = execution.callback_url.is_some();
    let mut response = ExecutionResponse::from(execution);
    if with_webhook {
        let attempts = webhook_attempt::Entity::find()
            .filter(webhook_attempt::Column::ExecutionId.eq(execution_id))
            .order_by_asc(webhook_attempt::Column::Attempt)
            .all(&state.db)
            .await?;
        response.webhook_attempts = Some(
            attempts
                .into_iter()
                .map(|attempt| WebhookAttemptResponse {
                    attempt: attempt.attempt,
                    attempted_at: attempt.attempted_at,
                    status_code: attempt.status_code,
                    error: attempt.error,
                    duration_ms: attempt.duration_ms,
                })
                .collect(),
        );
    }
    Ok(Json(response))
}

/// Cancels an execution. A queued one is taken off its lane and ends `cancelled` at once; a
/// running one is killed by its worker, which reports it `cancelled`. 202 either way.
#[tracing::instrument(skip_all, fields(user_id = %user_id, execution_id = %execution_id))]
#[utoipa::path(
    operation_id = "execution_cancel",
    delete,
    path = "/executions/{execution_id}",
    tag = "executions",
    params(("execution_id" = Uuid, Path, description = "The execution")),
    responses((status = 202, description = "Cancelled, or being killed", body = ExecutionResponse), Malformed, Missing, Conflict, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(execution_id): Path<Uuid>,
) -> Result<(StatusCode, Json<ExecutionResponse>), ApiError> {
    let execution = find_owned_execution(&state, user_id, execution_id).await?;
    if execution.status.is_final() {
        return Err(ApiError::Conflict(
            "the execution has already ended and cannot be cancelled",
        ));
    }
    // Recorded first: whichever worker holds the execution, or takes it later, sees it.
    let bucket = state
        .jetstream
        .get_key_value(state.namespace.cancellation_bucket())
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let request = serde_json::json!({ "requested_at": Utc::now(), "user_id": user_id });
    bucket
        .put(execution_id.to_string(), request.to_string().into())
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;

    if execution.status == Status::Queued {
        if let Some(sequence) = execution.stream_sequence {
            let removed = match state
                .jetstream
                .get_stream(state.namespace.tasks_stream())
                .await
            {
                Ok(tasks) => tasks
                    .delete_message(u64::try_from(sequence).unwrap_or_default())
                    .await
                    .unwrap_or(false),
                Err(_) => false,
            };
            tracing::debug!(removed, "queued dispatch taken off its lane");
        }
        execution::Entity::update_many()
            .col_expr(execution::Column::Status, Expr::value(Status::Cancelled))
            .col_expr(
                execution::Column::Error,
                Expr::value("cancelled on request before it started"),
            )
            .col_expr(execution::Column::FinishedAt, Expr::value(Utc::now()))
            .col_expr(execution::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(execution::Column::Id.eq(execution_id))
            .filter(execution::Column::Status.eq(Status::Queued))
            .exec(&state.db)
            .await?;
        task::refresh_status(&state.db, execution.task_id).await?;
        // Its place under the user's limit goes to the next held execution.
        if execution.admitted {
            admission::admit_and_dispatch(&state, user_id).await?;
        }
    }
    let execution = find_owned_execution(&state, user_id, execution_id).await?;
    Ok((StatusCode::ACCEPTED, Json(execution.into())))
}

/// `POST /executions/{id}/cancel`: the same as `DELETE /executions/{id}`.
#[utoipa::path(
    operation_id = "execution_cancel_by_post",
    post,
    path = "/executions/{execution_id}/cancel",
    tag = "executions",
    params(("execution_id" = Uuid, Path, description = "The execution")),
    responses((status = 202, description = "Cancelled, or being killed (same as DELETE)", body = ExecutionResponse), Malformed, Missing, Conflict, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn cancel_by_post(
    state: State<AppState>,
    user: AuthUser,
    path: Path<Uuid>,
) -> Result<(StatusCode, Json<ExecutionResponse>), ApiError> {
    cancel(state, user, path).await
}

/// `GET /tasks/{id}/executions` query parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListExecutions {
    /// 1 to 200, default 50.
    limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only executions in this state.
    status: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExecutionPage {
    items: Vec<ExecutionResponse>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    operation_id = "execution_list_for_task",
    get,
    path = "/tasks/{task_id}/executions",
    tag = "executions",
    params(("task_id" = Uuid, Path, description = "The task"), ListExecutions),
    responses((status = 200, description = "The task's executions, newest first, a page at a time", body = ExecutionPage), Malformed, Missing, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_for_task(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(task_id): Path<Uuid>,
    Query(query): Query<ListExecutions>,
) -> Result<Json<ExecutionPage>, ApiError> {
    let limit = pagination::page_size(query.limit)?;
    let task = find_owned(&state, user_id, task_id).await?;
    let mut select = execution::Entity::find().filter(execution::Column::TaskId.eq(task.id));
    if let Some(status) = &query.status {
        let status = <Status as sea_orm::ActiveEnum>::try_from_value(status).map_err(|_| {
            ApiError::BadRequest {
                code: "invalid_query",
                message: "status must be one of queued, running, completed, failed, timeout, cancelled, error".into(),
            }
        })?;
        select = select.filter(execution::Column::Status.eq(status));
    }
    const SORT: &str = "created_at";
    let after = match &query.cursor {
        Some(cursor) => {
            let cursor = pagination::decode(cursor, SORT, Order::Desc)?;
            let created_at: chrono::DateTime<Utc> =
                serde_json::from_value(cursor.value).map_err(|_| ApiError::BadRequest {
                    code: "invalid_cursor",
                    message: "the cursor is not one this API issued".into(),
                })?;
            Some((created_at.into(), cursor.id))
        }
        None => None,
    };
    let select = pagination::after(
        select,
        execution::Column::CreatedAt,
        execution::Column::Id,
        Order::Desc,
        after,
    );
    let mut executions = select.limit(limit + 1).all(&state.db).await?;
    let next_cursor = pagination::finish_page(&mut executions, limit, |last| {
        pagination::encode(
            SORT,
            Order::Desc,
            serde_json::json!(last.created_at),
            last.id,
        )
    });
    Ok(Json(ExecutionPage {
        items: executions.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// The caller's executions the fleet gave up on, newest first.
#[utoipa::path(
    operation_id = "execution_list_dead_letters",
    get,
    path = "/dead-letters",
    tag = "executions",
    responses((status = 200, description = "Your executions the fleet gave up on, newest first", body = Vec<ExecutionResponse>), Malformed, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
) -> Result<Json<Vec<ExecutionResponse>>, ApiError> {
    let executions = execution::Entity::find()
        .filter(execution::Column::UserId.eq(user_id))
        .filter(execution::Column::DeadLetteredAt.is_not_null())
        .order_by_desc(execution::Column::DeadLetteredAt)
        .limit(100)
        .all(&state.db)
        .await?;
    Ok(Json(executions.into_iter().map(Into::into).collect()))
}

/// Runs a dead-lettered execution again, as a new execution of the same task with the same
/// stdin. Each dead letter is re-run at most once (409 after that).
#[tracing::instrument(skip_all, fields(user_id = %user_id, execution_id = %execution_id))]
#[utoipa::path(
    operation_id = "execution_rerun_dead_letter",
    post,
    path = "/dead-letters/{execution_id}/rerun",
    tag = "executions",
    params(("execution_id" = Uuid, Path, description = "The dead-lettered execution")),
    responses((status = 202, description = "The new execution", body = ExecutionResponse), Malformed, BodyErrors, Missing, Conflict, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn rerun_dead_letter(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(execution_id): Path<Uuid>,
) -> Result<(StatusCode, HeaderMap, Json<ExecutionResponse>), ApiError> {
    let dead = find_owned_execution(&state, user_id, execution_id).await?;
    if dead.dead_lettered_at.is_none() {
        return Err(ApiError::NotFound("no dead letter with this execution id"));
    }
    let already = execution::Entity::find()
        .filter(execution::Column::RerunOf.eq(dead.id))
        .one(&state.db)
        .await?;
    if already.is_some() {
        return Err(ApiError::Conflict(
            "this dead letter has already been re-run",
        ));
    }
    let task = find_owned(&state, user_id, dead.task_id).await?;
    let enqueued = enqueue(
        &state,
        user_id,
        NewExecution {
            id: Uuid::now_v7(),
            callback_url: dead.callback_url.clone(),
            task,
            stdin: dead.stdin,
            idempotency_key: None,
            rerun_of: Some(dead.id),
        },
    )
    .await?;
    Ok(accepted(enqueued))
}
