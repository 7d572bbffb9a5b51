//! Counters of the sandbox runtime, reported in heartbeats and on the worker's status endpoint
//! (Prometheus' are recorded beside them, under the names in `voidrunner_shared::metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct SandboxMetrics {
    pub warm_hits: AtomicU64,
    pub cold_starts: AtomicU64,
    pub pool_empty: AtomicU64,
    pub containers_created: AtomicU64,
    pub containers_removed: AtomicU64,
    pub orphans_removed: AtomicU64,
}

/// A point-in-time copy of the counters.
pub type MetricsSnapshot = voidrunner_shared::events::SandboxCounters;

impl SandboxMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MetricsSnapshot {
            warm_hits: read(&self.warm_hits),
            cold_starts: read(&self.cold_starts),
            pool_empty: read(&self.pool_empty),
            containers_created: read(&self.containers_created),
            containers_removed: read(&self.containers_removed),
            orphans_removed: read(&self.orphans_removed),
        }
    }
}

/// Records how long getting a sandbox ready for a run took, from `since`, by whether a warm one
/// was taken.
pub fn record_start(language: voidrunner_shared::Language, warm: bool, since: std::time::Instant) {
    metrics::histogram!(
        voidrunner_shared::metrics::SANDBOX_START_SECONDS,
        "language" => language.as_str(),
        "path" => if warm { "warm" } else { "cold" }
    )
    .record(since.elapsed().as_secs_f64());
}

/// Why a sandbox container was removed: the `reason` of `voidrunner_containers_removed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// It ran its program (every sandbox is used once).
    Used,
    /// It was created but could not be started.
    FailedStart,
    /// It waited in a warm pool that was drained at shutdown.
    PoolDrained,
    /// Housekeeping found it left behind by a dead or restarted worker.
    Orphan,
}

impl Removal {
    pub fn as_str(self) -> &'static str {
        match self {
            Removal::Used => "used",
            Removal::FailedStart => "failed_start",
            Removal::PoolDrained => "pool_drained",
            Removal::Orphan => "orphan",
        }
    }
}
