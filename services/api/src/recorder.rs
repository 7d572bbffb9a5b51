//! Feeds what the fleet reports to the lifecycle: results from RESULTS and `started` events
//! from EVENTS, through durable consumers that every api replica shares.
//!
//! Each is one guarded transition of `executions`, so a redelivered, duplicate or late message
//! changes nothing, and the message is acked only after the change committed.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use voidrunner_shared::events::{ExecutionEvent, ExecutionResult, ResultV1};

use crate::executions::{ExecutionError, Lifecycle};
use crate::state::AppState;

const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Messages pulled at a time, how many of them are recorded at once on PostgreSQL (each holds a
/// connection while it does; SQLite has one writer, so there one at a time), and how long a
/// pull waits for them to arrive.
const RECORD_BATCH: usize = 64;
const RECORD_CONCURRENCY: usize = 16;
const BATCH_WAIT: Duration = Duration::from_millis(500);

/// What to do with a message once its handling ended.
#[derive(Debug, PartialEq, Eq)]
enum Disposition {
    Ack,
    /// The database is unavailable: try again soon.
    Retry,
    /// The payload can never be applied.
    Reject,
}

/// What a database failure means for the message: try again soon, whatever else failed.
fn disposition_of(execution_id: uuid::Uuid, what: &str, error: ExecutionError) -> Disposition {
    tracing::warn!(%execution_id, error = %error, "recording {what} failed");
    Disposition::Retry
}

/// The result a payload carries, if it is one the lifecycle can apply.
fn readable_result(payload: &[u8]) -> Option<ResultV1> {
    match serde_json::from_slice::<ExecutionResult>(payload) {
        Ok(ExecutionResult::V1(result)) if result.status.is_final() => Some(result),
        Ok(ExecutionResult::V1(result)) => {
            tracing::error!(execution_id = %result.execution_id, status = result.status.as_str(), "a result must carry a final status; dropping it");
            None
        }
        Err(error) => {
            tracing::error!(error = %error, "result payload does not match voidrunner.result.v1");
            None
        }
    }
}

/// Records a result; the lifecycle does the rest (task status, admission, webhook).
async fn record_result(executions: &Lifecycle, payload: &[u8]) -> Disposition {
    let Some(result) = readable_result(payload) else {
        return Disposition::Reject;
    };
    match executions.finish(&result).await {
        Ok(changed) => {
            tracing::info!(execution_id = %result.execution_id, status = result.status.as_str(), changed = changed.is_some(), "result recorded");
            Disposition::Ack
        }
        Err(error) => disposition_of(result.execution_id, "result", error),
    }
}

async fn record_started(executions: &Lifecycle, payload: &[u8]) -> Disposition {
    match serde_json::from_slice::<ExecutionEvent>(payload) {
        Ok(ExecutionEvent::StartedV1(started)) => match executions.start(&started).await {
            Ok(_) => Disposition::Ack,
            Err(error) => disposition_of(started.execution_id, "start", error),
        },
        Ok(_) => Disposition::Ack,
        Err(error) => {
            tracing::error!(error = %error, "started payload does not match voidrunner.started.v1");
            Disposition::Reject
        }
    }
}

/// Which consumer a recorder loop drains.
#[derive(Debug, Clone, Copy)]
pub enum Feed {
    Results,
    Started,
}

impl Feed {
    fn as_str(self) -> &'static str {
        match self {
            Feed::Results => "results",
            Feed::Started => "started",
        }
    }
}

/// Drains one feed into the database until `shutdown`, re-binding after connection trouble.
pub async fn run(state: AppState, feed: Feed, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        if let Err(error) = drain(&state, feed, &shutdown).await {
            tracing::warn!(?feed, error = %error, "recorder interrupted; re-binding");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
        }
    }
}

async fn drain(
    state: &AppState,
    feed: Feed,
    shutdown: &CancellationToken,
) -> Result<(), async_nats::Error> {
    let (stream, consumer_name) = match feed {
        Feed::Results => (
            state.namespace.results_stream(),
            state.namespace.recorder_consumer(),
        ),
        Feed::Started => (
            state.namespace.events_stream(),
            state.namespace.started_recorder_consumer(),
        ),
    };
    let consumer: PullConsumer = state
        .jetstream
        .get_stream(&stream)
        .await?
        .get_consumer(consumer_name)
        .await?;
    let concurrency = match sea_orm::ConnectionTrait::get_database_backend(&state.db) {
        sea_orm::DbBackend::Sqlite => 1,
        _ => RECORD_CONCURRENCY,
    };
    // Pulled in small batches, each handled to the end before shutdown is looked at: a stopping
    // replica leaves no message taken but unacknowledged, waiting out ack_wait. The messages of
    // a batch are recorded concurrently: each is a transition of its own execution, guarded,
    // so their order does not matter, and each is acked once its own change committed.
    while !shutdown.is_cancelled() {
        consumer
            .batch()
            .max_messages(RECORD_BATCH)
            .expires(BATCH_WAIT)
            .messages()
            .await?
            .try_for_each_concurrent(concurrency, |message| async move {
                record(state, feed, &message).await;
                Ok(())
            })
            .await?;
    }
    Ok(())
}

/// Records one message in the trace of the worker that sent it, then acknowledges it.
async fn record(state: &AppState, feed: Feed, message: &jetstream::Message) {
    let span = tracing::info_span!(
        "record",
        feed = feed.as_str(),
        trace_id = tracing::field::Empty
    );
    voidrunner_shared::telemetry::continue_trace(
        &span,
        voidrunner_shared::headers::traceparent(message.headers.as_ref()),
    );
    let disposition = match feed {
        Feed::Results => {
            record_result(&state.executions, &message.payload)
                .instrument(span)
                .await
        }
        Feed::Started => {
            record_started(&state.executions, &message.payload)
                .instrument(span)
                .await
        }
    };
    acknowledge(message, disposition).await;
}

/// The recorder's ack policy: what each disposition tells JetStream.
fn ack_kind(disposition: Disposition) -> AckKind {
    match disposition {
        Disposition::Ack => AckKind::Ack,
        Disposition::Retry => AckKind::Nak(Some(RETRY_DELAY)),
        Disposition::Reject => AckKind::Term,
    }
}

async fn acknowledge(message: &jetstream::Message, disposition: Disposition) {
    if let Err(error) = message.ack_with(ack_kind(disposition)).await {
        // Redelivery will bring it back; applying it again is harmless.
        tracing::warn!(error = %error, "acknowledging recorder message failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_outage_is_retried_and_an_unreadable_payload_dropped() {
        assert!(matches!(ack_kind(Disposition::Ack), AckKind::Ack));
        assert!(matches!(
            ack_kind(Disposition::Retry),
            AckKind::Nak(Some(delay)) if delay == RETRY_DELAY
        ));
        assert!(matches!(ack_kind(Disposition::Reject), AckKind::Term));
    }

    #[test]
    fn a_payload_that_is_not_a_result_is_rejected_without_reaching_the_lifecycle() {
        let mut running = ResultV1::fleet_error(uuid::Uuid::nil(), "w", 1, String::new());
        running.status = voidrunner_shared::Status::Running;
        let unfinished =
            serde_json::to_string(&ExecutionResult::V1(running.clone())).expect("serialises");
        running.status = voidrunner_shared::Status::Failed;
        let finished = serde_json::to_vec(&ExecutionResult::V1(running)).expect("serialises");
        assert!(readable_result(&finished).is_some());
        for payload in [
            b"{\"schema\":\"voidrunner.result.v9\"}".to_vec(),
            b"not json".to_vec(),
            unfinished.into_bytes(),
        ] {
            assert!(readable_result(&payload).is_none());
        }
    }
}
