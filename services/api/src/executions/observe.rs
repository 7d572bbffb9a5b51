//! What the lifecycle tells the outside world about itself: a log line and metrics at every
//! change of an execution (the one place all changes pass, so no path can skip them), and the
//! gauges of the queue read at each scrape.

use futures::StreamExt;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter};
use voidrunner_shared::metrics as names;
use voidrunner_shared::{Language, Status};

use super::Lifecycle;
use crate::entity::execution;

/// Seconds from `from` to `to`, never negative (clocks of api and workers may disagree a bit).
fn seconds(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> f64 {
    (to - from).as_seconds_f64().max(0.0)
}

/// Logs and counts a committed change of `execution` (as it now is): its creation (`submit`)
/// or a transition's name. `language` is the task's, known for changes to a final state.
pub(super) fn observe(execution: &execution::Model, change: &str, language: Option<Language>) {
    tracing::info!(
        execution_id = %execution.id,
        task_id = %execution.task_id,
        transition = change,
        status = execution.status.as_str(),
        attempt = execution.attempt,
        worker_id = execution.worker_id.as_deref().unwrap_or(""),
        trace_id = execution
            .trace_parent
            .as_deref()
            .and_then(voidrunner_shared::telemetry::trace_id)
            .unwrap_or(""),
        "execution moved on"
    );
    if execution.status.is_final() {
        // Observed once, when the execution ends: its `started` event may be recorded after
        // its result (they travel on different streams), or never.
        if let Some(started_at) = execution.started_at {
            metrics::histogram!(names::QUEUE_SECONDS, "lane" => execution.lane.clone())
                .record(seconds(execution.created_at, started_at));
        }
        let language = language.map_or("unknown", Language::as_str);
        metrics::counter!(names::EXECUTIONS, "language" => language, "status" => execution.status.as_str())
            .increment(1);
        let finished_at = execution.finished_at.unwrap_or(execution.updated_at);
        metrics::histogram!(names::END_TO_END_SECONDS, "language" => language)
            .record(seconds(execution.created_at, finished_at));
        if execution.dead_lettered_at.is_some() {
            metrics::counter!(names::DEAD_LETTERS).increment(1);
        }
    }
}

impl Lifecycle {
    /// Sets the gauges of the queue: the outbox, the held executions, and the fleet's
    /// JetStream consumers as the server sees them. Called at each scrape.
    pub async fn measure_queue(&self) -> Result<(), DbErr> {
        let queued =
            || execution::Entity::find().filter(execution::Column::Status.eq(Status::Queued));
        let outbox = queued()
            .filter(execution::Column::Admitted.eq(true))
            .filter(execution::Column::DispatchedAt.is_null())
            .count(&self.db)
            .await?;
        let held = queued()
            .filter(execution::Column::Admitted.eq(false))
            .count(&self.db)
            .await?;
        metrics::gauge!(names::OUTBOX_PENDING).set(outbox as f64);
        metrics::gauge!(names::EXECUTIONS_HELD).set(held as f64);
        self.measure_consumers().await;
        Ok(())
    }

    /// Pending and unacknowledged messages per consumer of the fleet's streams, and the
    /// redeliveries summed over them. A stream that cannot be read is left out of this scrape.
    async fn measure_consumers(&self) {
        let streams = [
            self.namespace.tasks_stream(),
            self.namespace.results_stream(),
            self.namespace.dead_letter_stream(),
        ];
        let mut redelivered = 0;
        for name in streams {
            let Ok(stream) = self.jetstream.get_stream(&name).await else {
                continue;
            };
            let mut consumers = stream.consumers();
            while let Some(Ok(info)) = consumers.next().await {
                metrics::gauge!(names::CONSUMER_PENDING, "consumer" => info.name.clone())
                    .set(info.num_pending as f64);
                metrics::gauge!(names::CONSUMER_ACK_PENDING, "consumer" => info.name.clone())
                    .set(info.num_ack_pending as f64);
                redelivered += info.num_redelivered as u64;
            }
        }
        metrics::counter!(names::REDELIVERED).absolute(redelivered);
    }
}
