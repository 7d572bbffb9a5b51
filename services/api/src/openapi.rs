//! The OpenAPI 3.1 document, generated from the handlers' annotations: `/openapi.json`, and a
//! reference page at `/docs`.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `validation_failed`, `not_found`, `rate_limited`, ...
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
    /// For validation errors, `{"field", "problem"}` (and `index` in a batch); otherwise null.
    pub details: Option<serde_json::Value>,
}

/// Answers any authenticated endpoint may give.
#[derive(IntoResponses)]
pub enum Common {
    /// Missing, invalid or expired credentials.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Too many requests (`rate_limited`; `Retry-After` says when to try again), or too many
    /// live-output streams open (`too_many_streams`).
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The database or NATS is unreachable, or the request took too long; nothing was changed.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// A bug; the body reveals nothing, the log has the cause.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// Answers any endpoint without credentials may give.
#[derive(IntoResponses)]
pub enum Public {
    /// Too many requests from this address.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The database is unreachable; nothing was changed.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// A bug; the body reveals nothing, the log has the cause.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// A malformed request: bad JSON, a path id that is not a UUID, a bad query parameter.
#[derive(IntoResponses)]
pub enum Malformed {
    /// Bad JSON, a path id that is not a UUID, or a bad query parameter.
    #[response(status = 400)]
    BadRequest(ErrorBody),
}

/// Answers about a JSON body.
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// The body is larger than the configured limits allow.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not sent as `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// A field breaks a rule; `details.field` names it.
    #[response(status = 422)]
    Invalid(ErrorBody),
}

/// The resource does not exist, or belongs to someone else.
#[derive(IntoResponses)]
pub enum Missing {
    /// The resource does not exist, or belongs to someone else.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// The resource's state forbids the change.
#[derive(IntoResponses)]
pub enum Conflict {
    /// The resource's state forbids the change.
    #[response(status = 409)]
    Conflict(ErrorBody),
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT access token, or an API key (vrk_...)")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "VoidRunner",
        description = "Runs untrusted code in hardened, single-use sandboxes. Every error has the shape `{\"error\": {\"code\", \"message\", \"details\"}}`.",
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Accounts, sessions and API keys"),
        (name = "tasks", description = "Stored programs"),
        (name = "executions", description = "Runs of tasks, their output and cancellation"),
        (name = "runs", description = "One-shot runs, no task needed"),
        (name = "fleet", description = "Workers and service health"),
    )
)]
pub struct ApiDoc;

/// The reference page: the document rendered by Scalar (loaded from its CDN by the browser).
pub async fn docs() -> Response {
    let page = r#"<!doctype html>
<html>
  <head>
    <title>VoidRunner API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
  </head>
  <body>
    <noscript>The interactive reference needs JavaScript; the document itself is at <a href="/openapi.json">/openapi.json</a>.</noscript>
    <script id="api-reference" data-url="/openapi.json"></script>
    <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
  </body>
</html>"#;
    let mut response = Html(page).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; font-src https://cdn.jsdelivr.net https://fonts.gstatic.com data:; img-src 'self' data: https:; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    response
}
