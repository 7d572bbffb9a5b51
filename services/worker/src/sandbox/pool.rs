//! The warm pools: per language, started single-use sandboxes blocked in their bootstrap,
//! waiting for a program, each counted once it has reported itself ready (with a prestart, its
//! runtime started too). Taking one skips creating and starting a sandbox on the critical path;
//! each is used once and removed like any other, and the pool refills in the background. Every
//! backend that prepares sandboxes ahead keeps them here, whatever a sandbox is to it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use futures::Stream;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use voidrunner_shared::events::StreamName;
use voidrunner_shared::metrics as names;
use voidrunner_shared::Language;

use super::metrics::SandboxMetrics;
use super::program::READY_MARKER;
use super::{ContainerLimits, SandboxError};

const REFILL_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a new pooled sandbox may take to report itself ready (its runtime started).
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a sandbox writes, stream by stream, as it arrives.
pub(super) type OutputStream =
    Pin<Box<dyn Stream<Item = Result<(StreamName, bytes::Bytes), String>> + Send>>;

/// A started sandbox blocked in its bootstrap: what its backend knows it by (`handle`), its
/// output and its input.
pub(super) struct Started<H> {
    pub(super) handle: H,
    pub(super) output: OutputStream,
    pub(super) input: Pin<Box<dyn AsyncWrite + Send>>,
}

struct Pool<T> {
    language: Language,
    target: usize,
    ready: Mutex<VecDeque<T>>,
    refill: Notify,
}

impl<T> Pool<T> {
    fn take(&self) -> Option<T> {
        let mut ready = self.lock();
        let taken = ready.pop_front();
        self.measure(ready.len());
        drop(ready);
        self.refill.notify_one();
        taken
    }

    fn put(&self, sandbox: T) {
        let mut ready = self.lock();
        ready.push_back(sandbox);
        self.measure(ready.len());
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn drain(&self) -> Vec<T> {
        let drained = self.lock().drain(..).collect();
        self.measure(0);
        drained
    }

    fn measure(&self, len: usize) {
        metrics::gauge!(names::WARM_POOL_SIZE, "language" => self.language.as_str())
            .set(len as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        // A panic while holding the lock cannot leave the queue inconsistent: keep using it.
        self.ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A backend's warm pools, one per language with a size above zero.
pub(super) struct Pools<T> {
    pools: HashMap<Language, Pool<T>>,
    /// The limits of each language's pooled sandboxes: only a run with exactly these may take
    /// one.
    limits: HashMap<Language, ContainerLimits>,
}

impl<T: Send + 'static> Pools<T> {
    pub fn new(
        sizes: &HashMap<Language, usize>,
        limits: &HashMap<Language, ContainerLimits>,
    ) -> Self {
        let pools = sizes
            .iter()
            .filter(|(_, size)| **size > 0)
            .map(|(&language, &target)| {
                let pool = Pool {
                    language,
                    target,
                    ready: Mutex::new(VecDeque::new()),
                    refill: Notify::new(),
                };
                (language, pool)
            })
            .collect();
        Pools {
            pools,
            limits: limits.clone(),
        }
    }

    /// Sandboxes ready right now, per language.
    pub fn levels(&self) -> HashMap<Language, usize> {
        self.pools
            .iter()
            .map(|(language, pool)| (*language, pool.len()))
            .collect()
    }

    /// A warm sandbox for a run of `language` with `limits`, if one is ready; counts the hit
    /// or the cold start either way.
    pub fn take(
        &self,
        language: Language,
        limits: ContainerLimits,
        metrics: &SandboxMetrics,
    ) -> Option<T> {
        let pool = self.pools.get(&language);
        let pooled = self.limits.get(&language) == Some(&limits);
        let warm = pool.filter(|_| pooled).and_then(Pool::take);
        if warm.is_some() {
            SandboxMetrics::add(&metrics.warm_hits, 1);
            return warm;
        }
        SandboxMetrics::add(&metrics.cold_starts, 1);
        if pool.is_some() && pooled {
            SandboxMetrics::add(&metrics.pool_empty, 1);
            metrics::counter!(names::WARM_POOL_MISSES, "language" => language.as_str())
                .increment(1);
            tracing::debug!(%language, "warm pool empty; starting a fresh sandbox");
        }
        None
    }
}

impl<H: Send + 'static> Pools<Started<H>> {
    /// Keeps every pool full with what `start` makes until `shutdown`, then hands what waits
    /// in them to `discard`. A sandbox joins its pool once it reports itself ready; one that
    /// does not is discarded.
    pub async fn keep_full<S, F>(
        &self,
        shutdown: CancellationToken,
        start: S,
        discard: impl Fn(Started<H>),
    ) where
        S: Fn(Language, ContainerLimits) -> F,
        F: Future<Output = Result<Started<H>, SandboxError>>,
    {
        let refills = self.pools.iter().filter_map(|(&language, pool)| {
            let limits = *self.limits.get(&language)?;
            let start = &start;
            let discard = &discard;
            let shutdown = &shutdown;
            Some(async move {
                loop {
                    while pool.len() < pool.target && !shutdown.is_cancelled() {
                        let ready = async {
                            let mut sandbox = start(language, limits).await?;
                            if let Err(error) = until_ready(&mut sandbox).await {
                                discard(sandbox);
                                return Err(error);
                            }
                            Ok(sandbox)
                        };
                        match ready.await {
                            Ok(sandbox) => pool.put(sandbox),
                            Err(error) => {
                                tracing::warn!(%language, error = %error, "cannot fill the warm pool; retrying");
                                tokio::select! {
                                    _ = shutdown.cancelled() => {}
                                    _ = tokio::time::sleep(REFILL_RETRY) => {}
                                }
                                break;
                            }
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = pool.refill.notified() => {}
                    }
                }
            })
        });
        futures::future::join_all(refills).await;
        for pool in self.pools.values() {
            for sandbox in pool.drain() {
                discard(sandbox);
            }
        }
    }
}

/// Waits until a sandbox started for the pool reports itself ready on stdout (its bootstrap
/// waits for a program and, with a prestart, its runtime has started), and takes the report
/// off its output. Anything it wrote to stderr before is not a program's, and is logged.
async fn until_ready<H>(started: &mut Started<H>) -> Result<(), SandboxError> {
    use futures::StreamExt;
    let marker = READY_MARKER.as_bytes();
    let mut stdout = Vec::new();
    let report = async {
        while let Some(item) = started.output.next().await {
            match item {
                Ok((StreamName::Stdout, bytes)) => {
                    stdout.extend_from_slice(&bytes);
                    if stdout == marker {
                        return Ok(());
                    }
                    if !marker.starts_with(&stdout) {
                        return Err(format!(
                            "it wrote {:?} where its ready report belongs",
                            String::from_utf8_lossy(&stdout)
                        ));
                    }
                }
                Ok((StreamName::Stderr, bytes)) => {
                    tracing::debug!(stderr = %String::from_utf8_lossy(&bytes), "a warm sandbox wrote to stderr before it was ready");
                }
                Err(error) => return Err(error),
            }
        }
        Err("its output ended before it was ready".to_owned())
    };
    match tokio::time::timeout(READY_TIMEOUT, report).await {
        Ok(result) => result.map_err(SandboxError::NotReady),
        Err(_) => Err(SandboxError::NotReady(format!(
            "not ready within {} s",
            READY_TIMEOUT.as_secs()
        ))),
    }
}
