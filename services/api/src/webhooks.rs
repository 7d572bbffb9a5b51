//! Webhooks: when an execution with a `callback_url` ends, the api POSTs it there, signed with
//! its user's secret, and retries with backoff until the receiver answers 2xx or the attempts
//! run out. Every attempt is recorded on the execution.
//!
//! Any api replica may deliver: a replica takes a due delivery by moving its `webhook_next_at`
//! forward (a lease), so two replicas never send the same attempt.

use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;
use voidrunner_shared::backoff::Backoff;
use voidrunner_shared::Status;

use crate::entity::{execution, user, webhook_attempt};
use crate::error::ApiError;
use crate::executions::callback::{
    resolves_internal, secret_of, sign, DELIVERED, FAILED, PENDING, SIGNATURE_HEADER,
};
use crate::executions::view;
use crate::state::AppState;

const POLL_EVERY: Duration = Duration::from_secs(1);
const BATCH: u64 = 20;

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
            // An execution with a callback just finished here: deliver without waiting.
            _ = state.executions.webhook_due() => {}
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
            // Delivered in the execution's trace.
            let span = tracing::info_span!("webhook", execution_id = %execution.id, trace_id = tracing::field::Empty);
            voidrunner_shared::telemetry::continue_trace(&span, execution.trace_parent.as_deref());
            deliver(state, client, execution).instrument(span).await?;
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
        "execution": view::json(execution.clone()),
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
        let delay =
            chrono::TimeDelta::from_std(Backoff::WEBHOOK.after(attempt)).unwrap_or_default();
        (PENDING, Some(Utc::now() + delay))
    };
    execution::Entity::update_many()
        .col_expr(execution::Column::WebhookState, Expr::value(state_now))
        .col_expr(execution::Column::WebhookNextAt, Expr::value(next_at))
        .filter(execution::Column::Id.eq(execution.id))
        .exec(&state.db)
        .await?;
    let outcome = match state_now {
        PENDING => "retrying",
        other => other,
    };
    metrics::counter!(voidrunner_shared::metrics::WEBHOOK_DELIVERIES, "outcome" => outcome)
        .increment(1);
    tracing::info!(execution_id = %execution.id, attempt, status = ?status_code, outcome, "webhook attempt");
    Ok(())
}
