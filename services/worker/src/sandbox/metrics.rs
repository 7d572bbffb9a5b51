//! Counters of the sandbox runtime, reported in heartbeats and on the worker's status endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

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
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MetricsSnapshot {
    /// Executions that ran in a warm container.
    pub warm_hits: u64,
    /// Executions that ran in a container created for them.
    pub cold_starts: u64,
    /// Of the cold starts, those whose language has a pool that was empty at the time.
    pub pool_empty: u64,
    pub containers_created: u64,
    pub containers_removed: u64,
    pub orphans_removed: u64,
}

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
