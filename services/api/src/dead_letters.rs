//! Executions whose dispatch ran out of deliveries with no worker left to give up on it (the
//! workers that took it crashed or hung). JetStream announces each with an advisory; one api
//! replica ends the execution in `error`, dead-letters the dispatch and takes it off TASKS, so
//! that every accepted execution reaches a final state.

use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use voidrunner_shared::events::Dispatch;
use voidrunner_shared::report;

use crate::executions::REPORTER;
use crate::state::AppState;

const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The fields of `io.nats.jetstream.advisory.v1.max_deliver` this needs.
#[derive(Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u32,
}

/// Handles max-deliveries advisories until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let subscription = state
            .nats
            .queue_subscribe(
                state.namespace.max_deliveries_advisory(),
                state.namespace.api_queue_group(),
            )
            .await;
        let mut advisories = match subscription {
            Ok(subscription) => subscription,
            Err(error) => {
                tracing::warn!(error = %error, "subscribing to max-deliveries advisories failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_DELAY) => continue,
                }
            }
        };
        loop {
            let advisory = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = advisories.next() => match next {
                    Some(advisory) => advisory,
                    None => break,
                },
            };
            match serde_json::from_slice::<MaxDeliveries>(&advisory.payload) {
                Ok(advisory) => {
                    if let Err(error) = give_up(&state, &advisory).await {
                        tracing::warn!(stream_seq = advisory.stream_seq, error = %error, "dead-lettering failed");
                    }
                }
                Err(error) => tracing::warn!(error = %error, "unreadable max-deliveries advisory"),
            }
        }
    }
}

async fn give_up(state: &AppState, advisory: &MaxDeliveries) -> Result<(), async_nats::Error> {
    let tasks = state
        .jetstream
        .get_stream(state.namespace.tasks_stream())
        .await?;
    // Gone already when a worker gave up on its last delivery itself.
    let Ok(message) = tasks.get_raw_message(advisory.stream_seq).await else {
        return Ok(());
    };
    let Ok(Dispatch::V1(dispatch)) = serde_json::from_slice::<Dispatch>(&message.payload) else {
        tasks.delete_message(advisory.stream_seq).await?;
        return Ok(());
    };
    let execution_id = dispatch.execution_id;
    let reason = format!(
        "gave up after {} deliveries: the workers that took it stopped responding",
        advisory.deliveries
    );
    // The same message ids a worker uses: whichever reports first, it is reported once.
    report::publish_dead_letter(
        &state.jetstream,
        &state.namespace,
        &dispatch,
        reason,
        advisory.deliveries,
        REPORTER,
    )
    .await?;
    tasks.delete_message(advisory.stream_seq).await?;
    tracing::error!(%execution_id, deliveries = advisory.deliveries, "execution dead-lettered: no worker finished it");
    Ok(())
}
