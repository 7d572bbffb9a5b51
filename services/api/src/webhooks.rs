//! Webhooks: when an execution with a `callback_url` ends, the api POSTs it there, signed with
//! its user's secret, and retries with backoff until the receiver answers 2xx or the attempts
//! run out. Every attempt is recorded on the execution.
//!
//! Any api replica may deliver: a replica takes a due delivery by moving its `webhook_next_at`
//! forward (a lease), so two replicas never send the same attempt.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use hmac::{Hmac, Mac};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{new_secret, WEBHOOK_SECRET_PREFIX};
use crate::entity::execution::{self, Status};
use crate::entity::{user, webhook_attempt};
use crate::error::ApiError;
use crate::state::AppState;

pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "voidrunner-signature";
const MAX_URL_CHARS: usize = 2048;
const POLL_EVERY: Duration = Duration::from_secs(1);
const BATCH: u64 = 20;

/// Checks a callback URL: http(s), a host, and (unless allowed) no loopback or private address.
pub fn check_url(state: &AppState, url: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(url) = url.map(str::trim).filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    let invalid = |problem: &str| ApiError::invalid_field("callback_url", problem.to_owned());
    if url.chars().count() > MAX_URL_CHARS {
        return Err(invalid("must be at most 2048 characters"));
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|_| invalid("must be an absolute http(s) URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("must use http or https"));
    }
    let Some(host) = parsed.host_str() else {
        return Err(invalid("must name a host"));
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if !state.config.webhook_allow_private && is_internal_host(host) {
        return Err(invalid(
            "points at a loopback or private address, which this deployment does not call (VOIDRUNNER_WEBHOOK_ALLOW_PRIVATE)",
        ));
    }
    Ok(Some(parsed.to_string()))
}

fn is_internal_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(is_internal_ip)
}

fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal_ip(IpAddr::V4(v4)))
        }
    }
}

/// The signature of `body` at `timestamp` under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The user's webhook secret, made on first use for users from before webhooks.
pub async fn secret_of(db: &DatabaseConnection, user: &user::Model) -> Result<String, ApiError> {
    if let Some(secret) = &user.webhook_secret {
        return Ok(secret.clone());
    }
    let secret = new_secret(WEBHOOK_SECRET_PREFIX);
    user::Entity::update_many()
        .col_expr(user::Column::WebhookSecret, Expr::value(secret.clone()))
        .filter(user::Column::Id.eq(user.id))
        .filter(user::Column::WebhookSecret.is_null())
        .exec(db)
        .await?;
    let stored = user::Entity::find_by_id(user.id)
        .one(db)
        .await?
        .and_then(|user| user.webhook_secret)
        .unwrap_or(secret);
    Ok(stored)
}

/// Delay before attempt `next` (2 for the first retry): 1 s, 2 s, 4 s, ... at most 5 minutes.
pub fn backoff(next: u32) -> Duration {
    Duration::from_secs((1u64 << next.saturating_sub(2).min(16)).min(300))
}

/// Delivers due webhooks until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(state.config.webhook_timeout_seconds))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("VoidRunner-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = %error, "webhook client could not be built; webhooks are off");
            return;
        }
    };
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(error) = deliver_due(&state, &client).await {
            tracing::warn!(error = %error, "webhook round failed; retrying on the next tick");
        }
    }
}

async fn deliver_due(state: &AppState, client: &reqwest::Client) -> Result<(), ApiError> {
    let now = Utc::now();
    let due = execution::Entity::find()
        .filter(execution::Column::WebhookState.eq(PENDING))
        .filter(execution::Column::Status.is_not_in(Status::UNFINISHED))
        .filter(
            Condition::any()
                .add(execution::Column::WebhookNextAt.is_null())
                .add(execution::Column::WebhookNextAt.lte(now)),
        )
        .order_by_asc(execution::Column::FinishedAt)
        .limit(BATCH)
        .all(&state.db)
        .await?;
    for execution in due {
        // The lease: only the replica whose update moved `webhook_next_at` delivers.
        let lease_until = now + chrono::TimeDelta::seconds(60);
        let mut claim = execution::Entity::update_many()
            .col_expr(execution::Column::WebhookNextAt, Expr::value(lease_until))
            .filter(execution::Column::Id.eq(execution.id))
            .filter(execution::Column::WebhookState.eq(PENDING));
        claim = match execution.webhook_next_at {
            Some(at) => claim.filter(execution::Column::WebhookNextAt.eq(at)),
            None => claim.filter(execution::Column::WebhookNextAt.is_null()),
        };
        if claim.exec(&state.db).await?.rows_affected == 1 {
            deliver(state, client, execution).await?;
        }
    }
    Ok(())
}

async fn deliver(
    state: &AppState,
    client: &reqwest::Client,
    execution: execution::Model,
) -> Result<(), ApiError> {
    let Some(url) = execution.callback_url.clone() else {
        return Ok(());
    };
    let attempt = webhook_attempt::Entity::find()
        .filter(webhook_attempt::Column::ExecutionId.eq(execution.id))
        .count(&state.db)
        .await?
        + 1;
    let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
    let Some(owner) = user::Entity::find_by_id(execution.user_id)
        .one(&state.db)
        .await?
    else {
        return Ok(());
    };
    let secret = secret_of(&state.db, &owner).await?;
    let delivery_id = Uuid::now_v7();
    let body = serde_json::to_vec(&serde_json::json!({
        "event": "execution.finished",
        "delivery_id": delivery_id,
        "attempt": attempt,
        "execution": crate::routes::execution_json(execution.clone()),
    }))
    .map_err(|e| ApiError::Internal(e.into()))?;
    let timestamp = Utc::now().timestamp();
    let started = Instant::now();
    let sent = if state.config.webhook_allow_private || !resolves_internal(&url).await {
        client
            .post(&url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(&secret, timestamp, &body))
            .header("voidrunner-event", "execution.finished")
            .header("voidrunner-delivery", delivery_id.to_string())
            .body(body)
            .send()
            .await
            .map_err(|error| error.without_url().to_string())
    } else {
        Err("the callback host resolves to a loopback or private address".to_owned())
    };
    let (status_code, error) = match &sent {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => (
            Some(response.status().as_u16()),
            Some(format!("the receiver answered {}", response.status())),
        ),
        Err(error) => (None, Some(error.clone())),
    };
    webhook_attempt::ActiveModel {
        id: Set(Uuid::now_v7()),
        execution_id: Set(execution.id),
        attempt: Set(i32::try_from(attempt).unwrap_or(i32::MAX)),
        attempted_at: Set(Utc::now()),
        status_code: Set(status_code.map(i32::from)),
        error: Set(error.clone()),
        duration_ms: Set(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)),
    }
    .insert(&state.db)
    .await?;
    let (state_now, next_at) = if error.is_none() {
        (DELIVERED, None)
    } else if attempt >= state.config.webhook_max_attempts {
        tracing::warn!(execution_id = %execution.id, attempt, "webhook given up");
        (FAILED, None)
    } else {
        let delay = chrono::TimeDelta::from_std(backoff(attempt + 1)).unwrap_or_default();
        (PENDING, Some(Utc::now() + delay))
    };
    execution::Entity::update_many()
        .col_expr(execution::Column::WebhookState, Expr::value(state_now))
        .col_expr(execution::Column::WebhookNextAt, Expr::value(next_at))
        .filter(execution::Column::Id.eq(execution.id))
        .exec(&state.db)
        .await?;
    tracing::info!(execution_id = %execution.id, attempt, status = ?status_code, outcome = state_now, "webhook attempt");
    Ok(())
}

/// Whether the URL's host resolves to an internal address (checked at delivery time too, since
/// a name can point anywhere).
async fn resolves_internal(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return true;
    };
    let Some(host) = parsed.host_str() else {
        return true;
    };
    if is_internal_host(host) {
        return true;
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = host.to_owned();
    let resolved = tokio::net::lookup_host((host.as_str(), port)).await;
    match resolved {
        Ok(addresses) => addresses
            .collect::<Vec<_>>()
            .into_iter()
            .any(|address| is_internal_ip(address.ip())),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_the_timestamp_and_the_body() {
        let signature = sign("vrw_secret", 1_700_000_000, b"{\"a\":1}");
        assert!(signature.starts_with("t=1700000000,v1="));
        assert_eq!(signature, sign("vrw_secret", 1_700_000_000, b"{\"a\":1}"));
        assert_ne!(signature, sign("vrw_secret", 1_700_000_001, b"{\"a\":1}"));
        assert_ne!(signature, sign("vrw_secret", 1_700_000_000, b"{\"a\":2}"));
        assert_ne!(signature, sign("vrw_other", 1_700_000_000, b"{\"a\":1}"));
    }

    #[test]
    fn internal_hosts_are_recognised() {
        for host in [
            "localhost",
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "[::1]",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(is_internal_host(host), "{host}");
        }
        for host in ["example.com", "8.8.8.8", "[2001:db8::1]"] {
            assert!(!is_internal_host(host), "{host}");
        }
    }

    #[test]
    fn retries_back_off_and_level_off() {
        let delays: Vec<u64> = (2..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
