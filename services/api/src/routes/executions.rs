//! Executions of tasks: start one, look at it, cancel it, list a task's, and the dead letters.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use voidrunner_shared::status::UnknownStatus;
use voidrunner_shared::Status;

use crate::entity::{execution, webhook_attempt};
use crate::error::{ApiError, Json, Path, Query};
use crate::executions::view::ExecutionResponse;
use crate::executions::NewExecution;
use crate::http::{self, idempotency_key, AuthUser};
use crate::openapi::{BodyErrors, Common, Conflict, Malformed, Missing};
use crate::pagination::{self, Order};
use crate::state::AppState;
use crate::tasks;

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
    // No body, or a JSON null, is the defaults.
    if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
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

/// Starts an execution of a task. 202: it is queued and will reach a final state.
#[tracing::instrument(skip_all, fields(user_id = %user_id, task_id = %task_id))]
#[utoipa::path(
    operation_id = "execution_create",
    post,
    path = "/tasks/{task_id}/executions",
    tag = "executions",
    params(("task_id" = Uuid, Path, description = "The task to run"), ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes the submission safe to retry: the same key returns the same execution")),
    request_body(content = Option<StartExecution>, description = "Optional: stdin and a callback URL"),
    responses((status = 202, description = "Queued; it will reach a final state", body = ExecutionResponse), Malformed, BodyErrors, Missing, Conflict, Common),
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
    let callback_url = http::callback_url(&state, request.callback_url.as_deref())?;
    let task = tasks::find_owned(&state.db, user_id, task_id).await?;
    let submitted = state
        .executions
        .submit(
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
    Ok(http::submitted(StatusCode::ACCEPTED, submitted))
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
    let execution = state.executions.find_owned(user_id, execution_id).await?;
    let with_webhook = execution.callback_url.is_some();
    let mut response = ExecutionResponse::from(execution);
    if with_webhook {
        let attempts = webhook_attempt::Entity::find()
            .filter(webhook_attempt::Column::ExecutionId.eq(execution_id))
            .order_by_asc(webhook_attempt::Column::Attempt)
            .all(&state.db)
            .await?;
        response.webhook_attempts = Some(attempts.into_iter().map(Into::into).collect());
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
    let execution = state.executions.cancel(user_id, execution_id).await?;
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

/// `GET /executions` and `GET /tasks/{id}/executions` query parameters.
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
    let task = tasks::find_owned(&state.db, user_id, task_id).await?;
    let select = execution::Entity::find().filter(execution::Column::TaskId.eq(task.id));
    page(&state, select, &query).await.map(Json)
}

/// Every execution of the caller (one-shot runs and tasks' alike), newest first.
#[utoipa::path(
    operation_id = "execution_list",
    get,
    path = "/executions",
    tag = "executions",
    params(ListExecutions),
    responses((status = 200, description = "Your executions, newest first, a page at a time", body = ExecutionPage), Malformed, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Query(query): Query<ListExecutions>,
) -> Result<Json<ExecutionPage>, ApiError> {
    let select = execution::Entity::find().filter(execution::Column::UserId.eq(user_id));
    page(&state, select, &query).await.map(Json)
}

/// One page of `select`'s executions, newest first, as `query` asks.
async fn page(
    state: &AppState,
    mut select: sea_orm::Select<execution::Entity>,
    query: &ListExecutions,
) -> Result<ExecutionPage, ApiError> {
    let limit = pagination::page_size(query.limit)?;
    if let Some(status) = &query.status {
        let status: Status =
            status
                .parse()
                .map_err(|error: UnknownStatus| ApiError::BadRequest {
                    code: "invalid_query",
                    message: format!("status: {error}"),
                })?;
        select = select.filter(execution::Column::Status.eq(status));
    }
    const SORT: &str = "created_at";
    // An empty cursor is the first page, as no cursor is.
    let after = match query.cursor.as_deref().filter(|cursor| !cursor.is_empty()) {
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
    Ok(ExecutionPage {
        items: executions.into_iter().map(Into::into).collect(),
        next_cursor,
    })
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
    let submitted = state.executions.rerun(user_id, execution_id).await?;
    Ok(http::submitted(StatusCode::ACCEPTED, submitted))
}
