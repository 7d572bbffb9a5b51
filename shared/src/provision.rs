//! Idempotent provisioning of streams, consumers and key-value buckets.
//!
//! Every service runs it at start-up: the first creates, the rest find everything in place, and a
//! changed setting (say, more replicas) is applied as an update.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

use crate::config::NatsConfig;
use crate::{Lane, Language, Namespace};

/// How long JetStream remembers a `Nats-Msg-Id`; the outbox sweeper republishes well inside it.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(10 * 60);
const RESULTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const EVENTS_MAX_AGE: Duration = Duration::from_secs(3600);
const EVENTS_MAX_BYTES: i64 = 1 << 30;
const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
const TASKS_MAX_MESSAGES: i64 = 1_000_000;
/// A worker that has not beaten for this long drops out of the fleet view.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(15);
const CANCELLATION_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
#[error("provisioning {what} failed")]
pub struct ProvisionError {
    pub what: String,
    #[source]
    pub source: async_nats::Error,
}

fn failed(what: impl Into<String>) -> impl FnOnce(async_nats::Error) -> ProvisionError {
    let what = what.into();
    move |source| ProvisionError { what, source }
}

/// The stream definitions of one installation, also exported to `nats/streams/` for the NATS CLI.
pub fn stream_configs(ns: &Namespace, nats: &NatsConfig) -> Vec<stream::Config> {
    let base = stream::Config {
        num_replicas: nats.nats_replicas,
        storage: stream::StorageType::File,
        allow_direct: true,
        duplicate_window: DEDUP_WINDOW,
        ..Default::default()
    };
    vec![
        stream::Config {
            name: ns.tasks_stream(),
            description: Some("executions waiting for a worker, one lane per priority band".into()),
            subjects: vec![ns.tasks_stream_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            max_messages: TASKS_MAX_MESSAGES,
            republish: Some(stream::Republish {
                source: ns.tasks_stream_subjects(),
                destination: ns.wakeup_filter(),
                headers_only: true,
            }),
            ..base.clone()
        },
        stream::Config {
            name: ns.results_stream(),
            description: Some("final results, one per execution, on its reply subject".into()),
            subjects: vec![ns.results_stream_subjects()],
            retention: stream::RetentionPolicy::Limits,
            max_messages_per_subject: 1,
            max_age: RESULTS_MAX_AGE,
            ..base.clone()
        },
        stream::Config {
            name: ns.events_stream(),
            description: Some("started and output events, replayable for late subscribers".into()),
            subjects: vec![ns.events_stream_subjects()],
            retention: stream::RetentionPolicy::Limits,
            max_age: EVENTS_MAX_AGE,
            max_bytes: EVENTS_MAX_BYTES,
            discard: stream::DiscardPolicy::Old,
            ..base.clone()
        },
        stream::Config {
            name: ns.dead_letter_stream(),
            description: Some("executions the fleet gave up on, with the reason".into()),
            subjects: vec![ns.dead_letter_stream_subjects()],
            retention: stream::RetentionPolicy::Limits,
            max_age: DEAD_LETTER_MAX_AGE,
            ..base
        },
    ]
}

/// The durable consumer of one language's executions in one lane on TASKS.
pub fn lane_consumer_config(
    ns: &Namespace,
    nats: &NatsConfig,
    lane: Lane,
    language: Language,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(ns.lane_consumer(lane, language)),
        description: Some(format!(
            "workers that run {} pull its {lane}-priority executions",
            language.display_name()
        )),
        filter_subject: ns.task_subject(lane, language),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: nats.ack_wait(),
        max_deliver: i64::from(nats.nats_max_deliver),
        max_ack_pending: i64::from(nats.nats_max_ack_pending),
        max_waiting: 4096,
        ..Default::default()
    }
}

fn recorder_config(name: &str, filter: String, description: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some(description.to_owned()),
        filter_subject: filter,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        deliver_policy: consumer::DeliverPolicy::All,
        max_ack_pending: 1000,
        ..Default::default()
    }
}

/// Creates or updates every stream, consumer and bucket of the installation.
#[tracing::instrument(skip_all, fields(prefix = ns.prefix()))]
pub async fn provision(
    js: &jetstream::Context,
    ns: &Namespace,
    nats: &NatsConfig,
) -> Result<(), ProvisionError> {
    // When several services create the same replicated stream at once, the cluster does the
    // work but may answer none of them: a short wait, then the retry finds it in place.
    let mut js = js.clone();
    js.set_timeout(PROVISION_REQUEST_TIMEOUT);
    let js = &js;
    for config in stream_configs(ns, nats) {
        let name = config.name.clone();
        retried(
            format!("stream {name}"),
            |error: &jetstream::context::CreateStreamError| {
                matches!(
                    error.kind(),
                    jetstream::context::CreateStreamErrorKind::TimedOut
                        | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable
                )
            },
            || js.create_or_update_stream(config.clone()),
        )
        .await?;
    }

    let consumer_timed_out = |error: &jetstream::stream::ConsumerError| {
        matches!(error.kind(), jetstream::stream::ConsumerErrorKind::TimedOut)
    };
    let tasks = get_stream(js, &ns.tasks_stream()).await?;
    for lane in Lane::BY_PRECEDENCE {
        // Deleting a consumer leaves its messages in the stream for the consumers that follow.
        let retired = ns.retired_lane_consumer(lane);
        if tasks.delete_consumer(&retired).await.is_ok() {
            tracing::info!(consumer = %retired, "removed the lane consumer of before per-language consumers");
        }
        for &language in Language::all() {
            let config = lane_consumer_config(ns, nats, lane, language);
            retried(
                format!("consumer {}", ns.lane_consumer(lane, language)),
                consumer_timed_out,
                || tasks.create_consumer(config.clone()),
            )
            .await?;
        }
    }

    let results = get_stream(js, &ns.results_stream()).await?;
    let recorder = recorder_config(
        ns.recorder_consumer(),
        String::new(),
        "api replicas record results into the database",
    );
    retried("consumer recorder".into(), consumer_timed_out, || {
        results.create_consumer(recorder.clone())
    })
    .await?;

    let events = get_stream(js, &ns.events_stream()).await?;
    let started_recorder = recorder_config(
        ns.started_recorder_consumer(),
        ns.started_events_filter(),
        "api replicas mark executions running",
    );
    retried(
        "consumer recorder-started".into(),
        consumer_timed_out,
        || events.create_consumer(started_recorder.clone()),
    )
    .await?;

    for (bucket, description, ttl) in [
        (ns.heartbeat_bucket(), "worker heartbeats", HEARTBEAT_TTL),
        (
            ns.cancellation_bucket(),
            "cancellation requests",
            CANCELLATION_TTL,
        ),
    ] {
        let config = kv::Config {
            bucket: bucket.clone(),
            description: description.into(),
            history: 1,
            max_age: ttl,
            num_replicas: nats.nats_replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        retried(
            format!("bucket {bucket}"),
            |error: &jetstream::context::CreateKeyValueError| {
                // A timeout of the stream request underneath comes wrapped.
                matches!(
                    error.kind(),
                    jetstream::context::CreateKeyValueErrorKind::TimedOut
                        | jetstream::context::CreateKeyValueErrorKind::JetStream
                        | jetstream::context::CreateKeyValueErrorKind::BucketCreate
                ) && error.to_string().contains("timed out")
            },
            || js.create_or_update_key_value(config.clone()),
        )
        .await?;
    }
    tracing::debug!("streams, consumers and buckets are in place");
    Ok(())
}

/// Tries of one provisioning request that went unanswered: during a cluster's elections, or
/// when several services start at once and create the same replicated stream.
const ATTEMPTS: u32 = 8;
const PROVISION_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

async fn retried<T, E, F, Fut>(
    what: String,
    retryable: impl Fn(&E) -> bool,
    mut request: F,
) -> Result<T, ProvisionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Ok(value) => return Ok(value),
            Err(error) if attempt < ATTEMPTS && retryable(&error) => {
                tracing::info!(what = %what, attempt, error = %error, "provisioning request unanswered; trying again");
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(error) => return Err(failed(what)(error.into())),
        }
    }
}

/// How long a service that does not provision waits for one that does.
const TOPOLOGY_WAIT: Duration = Duration::from_secs(60);

/// Waits until the lane consumers of `languages` exist (an api creates them after the streams),
/// for services whose credentials may not create them.
pub async fn wait_for_topology(
    js: &jetstream::Context,
    ns: &Namespace,
    languages: &[Language],
) -> Result<(), ProvisionError> {
    let deadline = tokio::time::Instant::now() + TOPOLOGY_WAIT;
    let mut announced = false;
    loop {
        let missing = missing_consumer(js, ns, languages).await;
        let Some(error) = missing else {
            return Ok(());
        };
        if tokio::time::Instant::now() > deadline {
            return Err(error);
        }
        if !announced {
            tracing::info!(error = %error, "waiting for an api to provision the streams and consumers");
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn missing_consumer(
    js: &jetstream::Context,
    ns: &Namespace,
    languages: &[Language],
) -> Option<ProvisionError> {
    let tasks = match get_stream(js, &ns.tasks_stream()).await {
        Ok(tasks) => tasks,
        Err(error) => return Some(error),
    };
    for lane in Lane::BY_PRECEDENCE {
        for &language in languages {
            let name = ns.lane_consumer(lane, language);
            if let Err(error) = tasks.get_consumer::<consumer::pull::Config>(&name).await {
                return Some(failed(format!("consumer {name}"))(error));
            }
        }
    }
    None
}

async fn get_stream(js: &jetstream::Context, name: &str) -> Result<stream::Stream, ProvisionError> {
    js.get_stream(name)
        .await
        .map_err(|e| failed(format!("stream {name}"))(e.into()))
}
