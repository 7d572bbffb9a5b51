//! The outbox sweeper: republishes executions whose dispatch a crash left unpublished, and
//! admits held executions whose room an unhandled event freed (see `executions`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::executions::Lifecycle;

/// Sweeps every `every` until `shutdown`.
pub async fn run_sweeper(executions: Lifecycle, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match executions.sweep_undispatched().await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "republished undispatched executions"),
            Err(error) => {
                tracing::warn!(error = %error, "outbox sweep failed; retrying on the next tick")
            }
        }
        match executions.admit_held().await {
            Ok(0) => {}
            Ok(admitted) => tracing::info!(admitted, "admitted held executions"),
            Err(error) => tracing::warn!(error = %error, "admitting held executions failed"),
        }
    }
}
