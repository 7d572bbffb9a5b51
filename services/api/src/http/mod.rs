//! The HTTP edge that more than one route uses: who is calling (`principal`), the rate-limit
//! middleware (`throttle`), request metrics (`measure`), the `Idempotency-Key` header and the
//! 202 of a submission.

pub mod measure;
pub mod principal;
pub mod throttle;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Json};
use crate::executions::view::ExecutionResponse;
use crate::executions::{callback, Submitted};
use crate::state::AppState;

pub use principal::{AuthUser, Principal};

/// The header a client sends to make a submission safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// Set on a response that returns the execution an earlier request with the same key created.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The request's idempotency key, if it sent one: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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

/// Reads every request body to its end before the request is routed, so that a request refused
/// before its handler reads the body (a bad path, bad credentials) still leaves its connection
/// reusable: an unread body makes the server close the connection under the client's next
/// request. Bodies are small and bounded by `limit`.
pub async fn read_whole_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge.into_response()
            } else {
                ApiError::BadRequest {
                    code: "bad_request",
                    message: format!("the request body could not be read: {error}"),
                }
                .into_response()
            }
        }
    }
}

/// The callback URL of a submission, checked against the deployment's rule.
pub fn callback_url(state: &AppState, url: Option<&str>) -> Result<Option<String>, ApiError> {
    callback::check_url(url, state.config.webhook_allow_private)
        .map_err(|problem| ApiError::invalid_field("callback_url", problem.0))
}

/// The answer to a submission: `status` (202 unless the caller waited for the end), the
/// execution's location, and whether it was an earlier request's.
pub fn submitted(
    status: StatusCode,
    submitted: Submitted,
) -> (StatusCode, HeaderMap, Json<ExecutionResponse>) {
    let mut headers = HeaderMap::new();
    let execution = match submitted {
        Submitted::New(execution) => execution,
        Submitted::Replayed(execution) => {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            execution
        }
    };
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/executions/{}", execution.id)) {
        headers.insert(header::LOCATION, location);
    }
    (status, headers, Json(execution.into()))
}
