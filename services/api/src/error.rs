//! The one error type of the REST API and its JSON shape.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::executions::ExecutionError;
use crate::tasks::{FieldError, Naming, TaskError};

/// Every error the API returns: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Validation { message: String, details: Value },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("this endpoint does not take this method: see /openapi.json")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(&'static str),
    /// Well-formed, but at odds with what the server already holds (e.g. a reused idempotency
    /// key): 409, with a code of its own.
    #[error("{message}")]
    StateConflict { code: &'static str, message: String },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than this server accepts (see VOIDRUNNER_MAX_SCRIPT_BYTES and VOIDRUNNER_MAX_STDIN_BYTES)")]
    PayloadTooLarge,
    /// A dependency (database, NATS) is down: nothing was changed; try again after a while.
    #[error("{message}")]
    Unavailable {
        message: &'static str,
        retry_after_seconds: u64,
    },
    /// Too many requests from this user or address; try again after the given seconds.
    #[error("too many requests: slow down and retry after {retry_after_seconds} s (see the RateLimit-* headers)")]
    RateLimited { retry_after_seconds: u64 },
    /// The user holds as many live-output streams open as it may.
    #[error("you have {0} live-output streams open, the most this server allows (VOIDRUNNER_MAX_STREAMS_PER_USER): close one first")]
    TooManyStreams(usize),
    /// The request was not answered within `VOIDRUNNER_REQUEST_TIMEOUT_SECONDS`.
    #[error("the request took longer than {0} s to answer; it may still complete, so check before retrying without an Idempotency-Key")]
    Timeout(u64),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A single invalid field, with the rule it broke.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Validation {
            details: json!({ "field": field, "problem": message }),
            message: format!("{field}: {message}"),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::StateConflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable")
            }
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::TooManyStreams(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_streams"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<ExecutionError> for ApiError {
    fn from(error: ExecutionError) -> Self {
        match error {
            ExecutionError::NotFound => ApiError::NotFound("no execution with this id"),
            ExecutionError::NotDeadLetter => {
                ApiError::NotFound("no dead letter with this execution id")
            }
            ExecutionError::TaskGone => ApiError::NotFound("no task with this id"),
            ExecutionError::AlreadyRerun => {
                ApiError::Conflict("this dead letter has already been re-run")
            }
            ExecutionError::AlreadyEnded => {
                ApiError::Conflict("the execution has already ended and cannot be cancelled")
            }
            ExecutionError::KeyReused => ApiError::StateConflict {
                code: "idempotency_key_reused",
                message: error.to_string(),
            },
            ExecutionError::TooLarge { .. } => ApiError::invalid_field("stdin", error.to_string()),
            ExecutionError::BrokerDown => ApiError::Unavailable {
                message:
                    "the message broker (NATS) is unreachable; nothing was changed, try again shortly",
                retry_after_seconds: 2,
            },
            ExecutionError::Database(error) => error.into(),
            error @ (ExecutionError::Unreachable { .. }
            | ExecutionError::Publish(_)
            | ExecutionError::Cancellation(_)
            | ExecutionError::Encode(_)) => ApiError::Internal(error.into()),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::NotFound => ApiError::NotFound("no task with this id"),
            TaskError::Busy => ApiError::Conflict(
                "the task has an execution queued or running: cancel it or wait for it to end",
            ),
            TaskError::Database(error) => error.into(),
        }
    }
}

impl ApiError {
    /// A field a task or run broke a rule with, named as the request names it.
    pub fn field(error: FieldError, naming: Naming) -> Self {
        ApiError::invalid_field(error.field.name(naming), error.problem)
    }
}

/// Whether a database error means the database cannot be reached right now, rather than that
/// the statement is wrong.
pub fn database_unreachable(error: &sea_orm::DbErr) -> bool {
    use sea_orm::{sqlx, DbErr, RuntimeErr};
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            match &**error {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // Class 08: connection exception; 57P0x: the server is shutting down or
                // restarting; 53: out of resources. SQLite's 5 and 517: busy past its timeout.
                sqlx::Error::Database(error) => error.code().is_some_and(|code| {
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || code.starts_with("53")
                        || code == "5"
                        || code == "517"
                }),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether the database refused a value it cannot store as text (PostgreSQL has no NUL
/// character: SQLSTATE 22021 or 22P05).
fn unstorable_text(error: &sea_orm::DbErr) -> bool {
    use sea_orm::{sqlx, DbErr, RuntimeErr};
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            match &**error {
                sqlx::Error::Database(error) => error
                    .code()
                    .is_some_and(|code| code == "22021" || code == "22P05"),
                _ => false,
            }
        }
        _ => false,
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(error: sea_orm::DbErr) -> Self {
        if unstorable_text(&error) {
            return ApiError::Validation {
                message: "a text field contains a NUL character (\\u0000), which cannot be stored; send binary data base64-encoded".into(),
                details: serde_json::Value::Null,
            };
        }
        if database_unreachable(&error) {
            tracing::warn!(error = %error, "database unreachable");
            ApiError::Unavailable {
                message: "the database is unreachable; nothing was changed, try again shortly",
                retry_after_seconds: 5,
            }
        } else {
            ApiError::Internal(error.into())
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(error) => ApiError::Validation {
                message: format!(
                    "the request body does not match the expected shape: {}",
                    error.body_text()
                ),
                details: Value::Null,
            },
            // serde_json stops at 128 levels of nesting, before it allocates for deeper ones.
            JsonRejection::JsonSyntaxError(error)
                if error.body_text().contains("recursion limit exceeded") =>
            {
                ApiError::BadRequest {
                    code: "json_too_deep",
                    message: format!(
                        "the request body nests arrays and objects deeper than 128 levels: {}",
                        error.body_text()
                    ),
                }
            }
            JsonRejection::JsonSyntaxError(error) => ApiError::BadRequest {
                code: "malformed_json",
                message: format!("the request body is not valid JSON: {}", error.body_text()),
            },
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            JsonRejection::BytesRejection(rejection) => rejection.into(),
            other => ApiError::BadRequest {
                code: "bad_request",
                message: other.body_text(),
            },
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest {
                code: "bad_request",
                message: rejection.body_text(),
            }
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest {
            code: "invalid_path",
            message: format!("{}: ids are UUIDs", rejection.body_text()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let details = match &self {
            ApiError::Validation { details, .. } => details.clone(),
            _ => Value::Null,
        };
        if let ApiError::Internal(cause) = &self {
            // Logged here, inside the request span, and never sent to the client.
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let body =
            json!({ "error": { "code": code, "message": self.to_string(), "details": details } });
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::Unavailable {
            retry_after_seconds,
            ..
        }
        | ApiError::RateLimited {
            retry_after_seconds,
        } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_seconds),
            );
        }
        response
    }
}

/// A JSON body extractor whose rejections use the API's error shape.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A path extractor whose rejections use the API's error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_with_retry_after_and_a_broken_statement_a_500() {
        let unreachable: ApiError =
            sea_orm::DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout).into();
        let response = unreachable.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "5");

        let broken: ApiError = sea_orm::DbErr::Custom("a bug".into()).into();
        assert_eq!(
            broken.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest {
            code: "invalid_query",
            message: format!(
                "{}: see the API reference for this endpoint's query parameters",
                rejection.body_text()
            ),
        }
    }
}

/// A query-string extractor whose rejections use the API's error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);
