//! The VoidRunner worker: binds the lane consumers, pulls only as many dispatches as it has free
//! slots (high lane first), runs each in a fresh sandbox, publishes the result on the
//! execution's reply subject, then acknowledges.

pub mod ack;
mod cancellations;
pub mod config;
mod fleet;
mod observability;
pub mod runner;
pub mod sandbox;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use voidrunner_shared::config::{ConfigError, NatsConfig, SandboxPolicy};
use voidrunner_shared::connect::ConnectError;
use voidrunner_shared::metrics as names;
use voidrunner_shared::nats_auth::Role;
use voidrunner_shared::provision::{provision, wait_for_topology, ProvisionError};
use voidrunner_shared::{Lane, Language};

use crate::config::WorkerConfig;
use crate::runner::Runner;
use crate::sandbox::{
    ContainerLimits, DockerSandbox, InstantSandbox, NativeSandbox, NativeSettings, Sandbox,
    SandboxBackend, SandboxError, SandboxSettings,
};
use voidrunner_shared::events::SandboxBackendKind;

/// Idle workers look at the lanes at least this often, for redeliveries (which raise no wake-up).
const IDLE_POLL: Duration = Duration::from_secs(1);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often sandboxes that no live execution owns are looked for.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Nats(#[from] ConnectError),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("binding VOIDRUNNER_METRICS_ADDR {addr}")]
    MetricsAddr {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("binding consumer {consumer}")]
    Consumer {
        consumer: String,
        #[source]
        source: async_nats::Error,
    },
}

/// A built worker, ready to run.
pub struct Worker {
    runner: Runner,
    /// Per lane, the consumers of the languages this worker serves.
    lanes: Vec<(Lane, Vec<PullConsumer>)>,
    slots: usize,
    /// Where `/metrics`, `/health` and `/ready` are served, if anywhere.
    metrics: Option<tokio::net::TcpListener>,
}

impl Worker {
    /// Connects to NATS and Docker, provisions the streams and binds the lane consumers.
    pub async fn build(
        config: WorkerConfig,
        policy: SandboxPolicy,
        nats: &NatsConfig,
    ) -> Result<Worker, StartError> {
        let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
        let metrics = match config.metrics_addr()? {
            Some(addr) => {
                // Installed before anything is counted: counts made earlier would go nowhere.
                // Without an endpoint the worker records nothing (unless, as under `serve`,
                // the process's api installed the recorder and shows them).
                voidrunner_shared::metrics::recorder();
                Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|source| StartError::MetricsAddr { addr, source })?,
                )
            }
            None => None,
        };
        let namespace = nats.namespace();
        let (client, jetstream) = voidrunner_shared::connect::connect(
            nats,
            &format!("voidrunner-worker-{worker_id}"),
            &Role::Worker.inbox_prefix(),
        )
        .await?;
        if nats.nats_provision {
            provision(&jetstream, &namespace, nats).await?;
        }

        let settings = sandbox_settings(&config, &policy, &worker_id, &namespace)?;
        let sandbox: Sandbox = match config.sandbox_backend {
            SandboxBackendKind::Docker => Arc::new(DockerSandbox::connect(settings).await?),
            SandboxBackendKind::Native => Arc::new(NativeSandbox::connect(settings).await?),
            SandboxBackendKind::Instant => {
                tracing::warn!("VOIDRUNNER_SANDBOX_BACKEND=instant: executions are answered without running any code (load tests only)");
                Arc::new(InstantSandbox::default())
            }
        };
        let languages = served_languages(&config, sandbox.as_ref()).await?;
        if !nats.nats_provision {
            wait_for_topology(&jetstream, &namespace, &languages).await?;
        }
        let (lanes, results) = bind(&jetstream, &namespace, &languages).await?;
        let cancellations = cancellations::Cancellations::new(&jetstream, &namespace).await;
        let slots = config.worker_slots;
        let worker = Worker {
            runner: Runner {
                jetstream,
                nats: client,
                namespace,
                sandbox,
                config,
                policy,
                worker_id,
                host: host_name(),
                languages,
                results,
                max_deliver: nats.nats_max_deliver,
                ack_wait: nats.ack_wait(),
                cancellations,
            },
            lanes,
            slots,
            metrics,
        };
        // Seen in the fleet before it creates any sandbox, so no other worker takes them for orphans.
        fleet::beat(&worker.runner, slots, 0, false).await;
        remove_orphans(&worker.runner, true).await;
        Ok(worker)
    }

    pub fn worker_id(&self) -> &str {
        &self.runner.worker_id
    }

    /// The address `/metrics`, `/health` and `/ready` are served on, if they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Pulls and runs executions until `shutdown`. Then it stops pulling, lets running
    /// executions finish for the configured grace period, and stops the rest, handing their
    /// dispatches back to the fleet.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), async_nats::Error> {
        // Cancelled once the running executions are done (or stopped): heartbeats and
        // cancellation requests must go on while they drain.
        let drained = CancellationToken::new();
        // Cancelled when the grace period is over: running sandboxes are stopped.
        let halt = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(self.slots));
        let mut wakeups = self
            .runner
            .nats
            .subscribe(self.runner.namespace.wakeup_filter())
            .await?;
        // Executions being handled now, for the fleet view and the metrics.
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        metrics::gauge!(names::WORKER_SLOTS).set(self.slots as f64);
        metrics::gauge!(names::WORKER_SLOTS_BUSY).set(0.0);
        // Served until the running executions are done: a draining worker can be watched.
        let endpoint = self.metrics.take().map(|listener| {
            tokio::spawn(observability::serve(
                listener,
                self.runner.nats.clone(),
                shutdown.clone(),
                drained.clone(),
            ))
        });
        let fleet = tokio::spawn(fleet::register(
            self.runner.clone(),
            Arc::clone(&busy),
            self.slots,
            shutdown.clone(),
            drained.clone(),
        ));
        let cancellation_watch =
            tokio::spawn(std::sync::Arc::clone(&self.runner.cancellations).watch(drained.clone()));
        let pools = tokio::spawn({
            let sandbox = self.runner.sandbox.clone();
            let shutdown = shutdown.clone();
            async move { sandbox.keep_warm(shutdown).await }
        });
        let housekeeping = tokio::spawn(housekeep(self.runner.clone(), shutdown.clone()));
        tracing::info!(worker_id = %self.runner.worker_id, slots = self.slots, "worker pulling");

        let mut running = tokio::task::JoinSet::new();
        let mut round = 0u64;
        'pull: loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break 'pull,
                permit = Arc::clone(&slots).acquire_owned() => permit?,
            };
            let free = 1 + slots.available_permits();
            let messages = self.fetch(free, round).await;
            round = round.wrapping_add(1);
            if messages.is_empty() {
                drop(first);
                tokio::select! {
                    _ = shutdown.cancelled() => break 'pull,
                    _ = wakeups.next() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                }
                continue;
            }
            let mut first = Some(first);
            for message in messages {
                let permit = match first.take() {
                    Some(permit) => permit,
                    None => Arc::clone(&slots).acquire_owned().await?,
                };
                let runner = self.runner.clone();
                let stop = halt.child_token();
                let busy = Arc::clone(&busy);
                let now = busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                metrics::gauge!(names::WORKER_SLOTS_BUSY).set(now as f64);
                running.spawn(async move {
                    runner.handle(message, stop).await;
                    let now = busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) - 1;
                    metrics::gauge!(names::WORKER_SLOTS_BUSY).set(now as f64);
                    drop(permit);
                });
            }
            // Reap finished executions so the set does not grow without bound.
            while running.try_join_next().is_some() {}
        }

        self.finish_running(running, &halt).await;
        drained.cancel();
        let _ = pools.await;
        let _ = housekeeping.await;
        let _ = cancellation_watch.await;
        self.runner.sandbox.wait_for_removals().await;
        let _ = fleet.await;
        if let Some(endpoint) = endpoint {
            let _ = endpoint.await;
        }
        Ok(())
    }

    /// Lets running executions finish for the grace period, then stops the rest, whose
    /// dispatches go back to the fleet.
    async fn finish_running(
        &self,
        mut running: tokio::task::JoinSet<()>,
        halt: &CancellationToken,
    ) {
        let grace = Duration::from_secs(self.runner.config.shutdown_grace_seconds);
        tracing::info!(
            in_flight = running.len(),
            grace_seconds = grace.as_secs(),
            "worker stopping: no more pulls, letting running executions finish"
        );
        let finished = tokio::time::timeout(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                stopped = running.len(),
                "grace period over: stopping the remaining executions and handing them back"
            );
            halt.cancel();
            while running.join_next().await.is_some() {}
        }
    }

    /// Takes up to `free` dispatches without waiting, in the lane order of fetch `round`; within
    /// a lane, the languages take turns at going first, so that none is starved.
    async fn fetch(&self, free: usize, round: u64) -> Vec<async_nats::jetstream::Message> {
        let mut taken = Vec::new();
        for lane in lane_order(round) {
            let Some((_, consumers)) = self.lanes.iter().find(|(l, _)| *l == lane) else {
                continue;
            };
            let start = usize::try_from(round).unwrap_or(0) % consumers.len().max(1);
            for consumer in consumers.iter().cycle().skip(start).take(consumers.len()) {
                let wanted = free - taken.len();
                if wanted == 0 {
                    return taken;
                }
                let batch = tokio::time::timeout(FETCH_TIMEOUT, async {
                    let mut messages = consumer.fetch().max_messages(wanted).messages().await?;
                    let mut got = Vec::new();
                    while let Some(message) = messages.next().await {
                        got.push(message?);
                    }
                    Ok::<_, async_nats::Error>(got)
                })
                .await;
                match batch {
                    Ok(Ok(got)) => taken.extend(got),
                    Ok(Err(error)) => {
                        tracing::warn!(%lane, error = %error, "fetching from lane failed")
                    }
                    Err(_) => tracing::warn!(%lane, "fetching from lane timed out"),
                }
            }
        }
        taken
    }
}

/// The order in which fetch `round` takes from the lanes: high first in eight rounds of ten,
/// normal first in one and low first in one, so that a busy high lane never starves the others
/// (each gets at least a tenth of the fleet's free slots while it has work).
pub fn lane_order(round: u64) -> [Lane; 3] {
    match round % 10 {
        4 => [Lane::Normal, Lane::High, Lane::Low],
        9 => [Lane::Low, Lane::High, Lane::Normal],
        _ => [Lane::High, Lane::Normal, Lane::Low],
    }
}

/// Removes the sandboxes no live execution owns (see `SandboxBackend::remove_orphans`).
async fn remove_orphans(runner: &Runner, start_up: bool) {
    let live_workers = fleet::live_workers(runner).await;
    match runner
        .sandbox
        .remove_orphans(live_workers.as_ref(), start_up)
        .await
    {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed sandboxes no live execution owns"),
        Err(error) => tracing::warn!(error = %error, "looking for orphaned sandboxes failed"),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "worker".into())
}

fn default_worker_id() -> String {
    let host: String = host_name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Looks for sandboxes no live execution owns, every `HOUSEKEEPING_EVERY`, until `shutdown`.
async fn housekeep(runner: Runner, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + HOUSEKEEPING_EVERY,
        HOUSEKEEPING_EVERY,
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => remove_orphans(&runner, false).await,
        }
    }
}

/// For `voidrunner doctor`: whether this host can run native sandboxes as `config` and `policy`
/// say (the same checks a worker makes when it starts), and, language by language, whether its
/// unpacked image is there.
pub async fn check_native_sandbox(
    config: &WorkerConfig,
    policy: &SandboxPolicy,
) -> Result<Vec<(Language, bool)>, SandboxError> {
    let namespace = voidrunner_shared::Namespace::new("doctor")
        .map_err(|e| SandboxError::Setup(e.to_string()))?;
    let settings = sandbox_settings(config, policy, "doctor", &namespace)
        .map_err(|e| SandboxError::Setup(e.to_string()))?;
    let sandbox = NativeSandbox::connect(settings).await?;
    let mut languages = Vec::new();
    for &language in Language::all() {
        languages.push((language, sandbox.has_language(language).await));
    }
    Ok(languages)
}

/// What every sandbox of this worker shares, from its configuration.
fn sandbox_settings(
    config: &WorkerConfig,
    policy: &SandboxPolicy,
    worker_id: &str,
    namespace: &voidrunner_shared::Namespace,
) -> Result<SandboxSettings, ConfigError> {
    let seccomp_profile = match &config.sandbox_seccomp_profile {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(
                "SANDBOX_SECCOMP_PROFILE",
                format_args!("{}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    let chosen = config.chosen_languages()?;
    Ok(SandboxSettings {
        worker_id: worker_id.to_owned(),
        installation: namespace.prefix().to_owned(),
        images: Language::all()
            .iter()
            .map(|language| (*language, config.image(*language)))
            .collect(),
        // No warm sandboxes of a language this worker is told not to serve.
        pool_sizes: Language::all()
            .iter()
            .filter(|language| {
                chosen
                    .as_ref()
                    .is_none_or(|chosen| chosen.contains(language))
            })
            .map(|language| (*language, config.pool_size(*language)))
            .collect(),
        pids: config.sandbox_pids,
        tmpfs_bytes: config.sandbox_tmpfs_mb << 20,
        seccomp_profile,
        network: policy
            .network_allowed()
            .then(|| policy.sandbox_network.clone()),
        pool_limits: Language::all()
            .iter()
            .map(|&language| {
                let defaults = policy.resolve_for(language, &Default::default());
                (language, ContainerLimits::of(&defaults, false))
            })
            .collect(),
        native: NativeSettings {
            runtime: config.sandbox_runtime.clone(),
            rootfs_dir: config.sandbox_rootfs_dir.clone(),
            state_dir: config.sandbox_state_dir.clone(),
            ..NativeSettings::default()
        },
    })
}

/// The languages this worker serves: those `VOIDRUNNER_WORKER_LANGUAGES` names (every one of the
/// catalog when it names none) whose image its sandbox has (for Docker: its engine).
async fn served_languages(
    config: &WorkerConfig,
    sandbox: &dyn SandboxBackend,
) -> Result<Vec<Language>, StartError> {
    let chosen = config
        .chosen_languages()?
        .unwrap_or_else(|| Language::all().to_vec());
    let mut languages = Vec::new();
    for language in chosen {
        if sandbox.has_language(language).await {
            languages.push(language);
        } else {
            tracing::warn!(%language, "image missing: this worker does not serve the language until it is built (scripts/build-images.sh) and the worker restarted");
        }
    }
    if languages.is_empty() {
        tracing::warn!(
            "this worker has no image of any language it may serve: it will pull nothing"
        );
    }
    Ok(languages)
}

/// The lane consumers of `languages`, lanes in the order the worker serves them, and the
/// results stream.
async fn bind(
    jetstream: &async_nats::jetstream::Context,
    namespace: &voidrunner_shared::Namespace,
    languages: &[Language],
) -> Result<
    (
        Vec<(Lane, Vec<PullConsumer>)>,
        async_nats::jetstream::stream::Stream,
    ),
    StartError,
> {
    let unbound = |consumer: String| {
        move |source: async_nats::Error| StartError::Consumer { consumer, source }
    };
    let tasks = jetstream
        .get_stream(namespace.tasks_stream())
        .await
        .map_err(|e| unbound(namespace.tasks_stream())(e.into()))?;
    let mut lanes = Vec::new();
    for lane in Lane::BY_PRECEDENCE {
        let mut consumers = Vec::new();
        for &language in languages {
            let name = namespace.lane_consumer(lane, language);
            let consumer: PullConsumer = tasks
                .get_consumer(&name)
                .await
                .map_err(unbound(name.clone()))?;
            consumers.push(consumer);
        }
        lanes.push((lane, consumers));
    }
    let results = jetstream
        .get_stream(namespace.results_stream())
        .await
        .map_err(|e| unbound(namespace.results_stream())(e.into()))?;
    Ok((lanes, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_lane_goes_first_most_of_the_time_and_no_lane_is_starved() {
        let mut first = std::collections::HashMap::new();
        for round in 0..1000 {
            let order = lane_order(round);
            let mut sorted = order.to_vec();
            sorted.sort_by_key(|lane| lane.as_str());
            assert_eq!(sorted.len(), 3, "every lane is visited in round {round}");
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "no lane twice in round {round}");
            *first.entry(order[0]).or_insert(0) += 1;
        }
        assert_eq!(first[&Lane::High], 800);
        assert_eq!(first[&Lane::Normal], 100);
        assert_eq!(first[&Lane::Low], 100);
    }
}
