//! The REST API: `/api/v1/...`, plus `/health` and `/ready`.

mod auth;
mod events;
mod executions;
mod health;
mod languages;
mod runs;
mod tasks;
mod workers;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// The header that carries a request's id, given by the client or made up here.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers a browser client may send and read across origins.
const CORS_REQUEST_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("last-event-id"),
    HeaderName::from_static("x-api-key"),
];
const CORS_RESPONSE_HEADERS: [HeaderName; 8] = [
    header::LOCATION,
    header::RETRY_AFTER,
    REQUEST_ID,
    HeaderName::from_static("idempotent-replayed"),
    HeaderName::from_static("ratelimit-limit"),
    HeaderName::from_static("ratelimit-remaining"),
    HeaderName::from_static("ratelimit-reset"),
    HeaderName::from_static("ratelimit-policy"),
];

/// Answers 503 `timeout` when a handler takes longer than the configured request timeout.
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config.request_timeout_seconds;
    match tokio::time::timeout(Duration::from_secs(limit), next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// CORS for the configured origins; none configured, no CORS headers.
fn cors(origins: &[&str]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(CORS_REQUEST_HEADERS)
            .expose_headers(CORS_RESPONSE_HEADERS)
            .max_age(Duration::from_secs(3600)),
    )
}

/// Room for JSON syntax and escapes around the largest script or stdin a request may carry.
const BODY_LIMIT_SLACK: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    // Escaping can double a string's size in JSON; anything larger is refused unread.
    let body_limit = state
        .config
        .max_script_bytes
        .max(state.config.max_stdin_bytes)
        * 2
        + BODY_LIMIT_SLACK;
    let (api, api_doc) = OpenApiRouter::<AppState>::new()
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::create_api_key, auth::list_api_keys))
        .routes(routes!(auth::revoke_api_key))
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::get, tasks::update, tasks::delete))
        .routes(routes!(executions::create, executions::list_for_task))
        .routes(routes!(executions::list))
        .routes(routes!(executions::get, executions::cancel))
        .routes(routes!(executions::cancel_by_post))
        .routes(routes!(events::stream))
        .routes(routes!(executions::list_dead_letters))
        .routes(routes!(executions::rerun_dead_letter))
        .routes(routes!(runs::create))
        .routes(routes!(runs::batch))
        .routes(routes!(workers::list))
        .routes(routes!(languages::list))
        .split_for_parts();
    let (service, service_doc) = OpenApiRouter::<AppState>::new()
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .split_for_parts();
    let mut doc = crate::openapi::ApiDoc::openapi().nest("/api/v1", api_doc);
    doc.merge(service_doc);
    let doc = std::sync::Arc::new(crate::openapi::served(&doc, &state));
    let api = api.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::http::throttle::enforce,
    ));
    let cors = cors(&state.config.cors_origin_list());
    let security_headers = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ];
    let mut router = Router::new()
        .nest("/api/v1", api)
        .merge(service)
        .route(
            "/openapi.json",
            get(move || {
                let doc = std::sync::Arc::clone(&doc);
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .merge(crate::docs::routes())
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            body_limit,
            crate::http::read_whole_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            time_limit,
        ))
        .layer(axum::middleware::from_fn(crate::http::measure::measure));
    for (name, value) in security_headers {
        // Pages that need another policy (the API docs) set their own.
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let path = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or(request.uri().path(), |p| p.as_str());
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|id| id.to_str().ok())
                    .unwrap_or_default();
                let span =
                    tracing::info_span!("http", method = %request.method(), path, request_id, trace_id = tracing::field::Empty);
                // A client's trace goes on through the execution; otherwise this starts one.
                let traceparent = request
                    .headers()
                    .get(voidrunner_shared::headers::TRACEPARENT)
                    .and_then(|value| value.to_str().ok());
                voidrunner_shared::telemetry::continue_trace(&span, traceparent);
                span
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}
