//! The rate-limit middleware: the per-IP limit for every request, the per-user (or per-key)
//! limit for authenticated ones (see `ratelimit` for the buckets).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{digest, API_KEY_PREFIX};
use crate::error::ApiError;
use crate::ratelimit::{Decision, WINDOW};
use crate::state::AppState;

fn client_ip(request: &Request, trust_proxy: bool) -> Option<IpAddr> {
    if trust_proxy {
        let forwarded = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .and_then(|ip| ip.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Whom a request's credentials name, without a database lookup: the user of a valid access
/// token, or the API key itself.
fn caller(headers: &HeaderMap, state: &AppState) -> Option<String> {
    let credential = headers
        .get("x-api-key")
        .or_else(|| headers.get(axum::http::header::AUTHORIZATION))
        .and_then(|value| value.to_str().ok())
        .map(|value| value.strip_prefix("Bearer ").unwrap_or(value).trim())?;
    if credential.starts_with(API_KEY_PREFIX) {
        return Some(format!("key:{}", &digest(credential)[..32]));
    }
    state
        .tokens
        .user_of(credential)
        .map(|user_id| format!("user:{user_id}"))
}

fn set_headers(headers: &mut HeaderMap, decision: Decision) {
    let pairs = [
        ("ratelimit-limit", decision.limit.to_string()),
        ("ratelimit-remaining", decision.remaining.to_string()),
        ("ratelimit-reset", decision.reset_seconds.to_string()),
        (
            "ratelimit-policy",
            format!("{};w={}", decision.limit, WINDOW.as_secs()),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// The middleware: the per-IP limit for every request, the per-user limit for authenticated ones.
pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let config = &state.config;
    let now = Instant::now();
    let mut shown: Option<Decision> = None;
    if config.rate_limit_per_ip > 0 {
        if let Some(ip) = client_ip(&request, config.trust_proxy) {
            let decision = state
                .limiter
                .check(&format!("ip:{ip}"), config.rate_limit_per_ip, now);
            shown = Some(decision);
        }
    }
    if config.rate_limit_per_user > 0 && shown.is_none_or(|d| d.allowed) {
        if let Some(caller) = caller(request.headers(), &state) {
            shown = Some(
                state
                    .limiter
                    .check(&caller, config.rate_limit_per_user, now),
            );
        }
    }
    let mut response = match shown {
        Some(decision) if !decision.allowed => ApiError::RateLimited {
            retry_after_seconds: decision.reset_seconds,
        }
        .into_response(),
        _ => next.run(request).await,
    };
    if let Some(decision) = shown {
        set_headers(response.headers_mut(), decision);
    }
    response
}
