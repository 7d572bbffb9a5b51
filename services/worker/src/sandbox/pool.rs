//! The warm pool: per language, started single-use containers blocked in their bootstrap,
//! waiting for a program. Taking one skips container creation and start on the critical path;
//! each is used once and removed like any other, and the pool refills in the background.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Mutex;

use bollard::container::LogOutput;
use futures::Stream;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

/// A started container blocked in its bootstrap, with its attached streams.
pub(super) struct Started {
    pub(super) id: String,
    pub(super) output:
        Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    pub(super) input: Pin<Box<dyn AsyncWrite + Send>>,
}

pub(super) struct Pool {
    language: voidrunner_shared::Language,
    pub target: usize,
    ready: Mutex<VecDeque<Started>>,
    pub refill: Notify,
}

impl Pool {
    pub fn new(language: voidrunner_shared::Language, target: usize) -> Self {
        Pool {
            language,
            target,
            ready: Mutex::new(VecDeque::new()),
            refill: Notify::new(),
        }
    }

    /// A warm container, if one is ready; wakes the refiller either way.
    pub fn take(&self) -> Option<Started> {
        let mut ready = self.lock();
        let taken = ready.pop_front();
        self.measure(ready.len());
        drop(ready);
        self.refill.notify_one();
        taken
    }

    pub fn put(&self, started: Started) {
        let mut ready = self.lock();
        ready.push_back(started);
        self.measure(ready.len());
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Everything waiting, for removal at shutdown.
    pub fn drain(&self) -> Vec<Started> {
        let drained = self.lock().drain(..).collect();
        self.measure(0);
        drained
    }

    fn measure(&self, len: usize) {
        metrics::gauge!(voidrunner_shared::metrics::WARM_POOL_SIZE, "language" => self.language.as_str())
            .set(len as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Started>> {
        // A panic while holding the lock cannot leave the queue inconsistent: keep using it.
        self.ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
