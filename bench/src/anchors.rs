//! What VoidRunner is measured against, in the same run on the same machine:
//!
//! - raw JetStream: a publisher, a worker and a results subscriber written directly on
//!   async-nats, with the same durability as VoidRunner's lanes (file storage, acked publishes,
//!   explicit acks), no database and no REST. The floor of any design on this bus.
//! - Celery 5 with Redis as broker and result backend, no-op tasks: the queue most Python shops
//!   reach for (`anchors/celery_bench.py`, installed by `scripts/lib/services.sh`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Sequential round trips, and throughput with `in_flight` publishes outstanding.
pub struct Anchor {
    pub name: &'static str,
    pub round_trips: Vec<Duration>,
    pub per_second: f64,
}

/// Publisher → TASKS-like work queue → worker (pull, ack, publish the result acked) → results
/// stream → subscriber.
pub async fn jetstream(
    nats_url: &str,
    round_trips: usize,
    throughput: usize,
) -> anyhow::Result<Anchor> {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 16)
        .connect(nats_url)
        .await?;
    let js = jetstream::new(client.clone());
    let prefix = voidrunner_testkit::unique_prefix();
    let tasks = js
        .create_stream(stream::Config {
            name: format!("{prefix}_ANCHOR_TASKS"),
            subjects: vec![format!("{prefix}.anchor.tasks")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    js.create_stream(stream::Config {
        name: format!("{prefix}_ANCHOR_RESULTS"),
        subjects: vec![format!("{prefix}.anchor.results.*")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let consumer: consumer::PullConsumer = tasks
        .create_consumer(consumer::pull::Config {
            durable_name: Some("worker".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let (js, shutdown, prefix) = (js.clone(), shutdown.clone(), prefix.clone());
        async move {
            let mut messages = consumer.messages().await?;
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return Ok::<(), anyhow::Error>(()),
                    message = messages.next() => message,
                };
                let Some(message) = message else {
                    return Ok(());
                };
                let message = message.map_err(|e| anyhow::anyhow!(e))?;
                let id = String::from_utf8_lossy(&message.payload).into_owned();
                // The result is stored before the task is acked, as a VoidRunner worker does.
                let ack = js
                    .publish(
                        format!("{prefix}.anchor.results.{id}"),
                        message.payload.clone(),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                tokio::spawn(async move {
                    let _ = ack.await;
                    let _ = message.ack().await;
                });
            }
        }
    });
    let mut results = client
        .subscribe(format!("{prefix}.anchor.results.*"))
        .await?;
    client.flush().await?;

    let mut latencies = Vec::with_capacity(round_trips);
    for i in 0..round_trips {
        let began = Instant::now();
        js.publish(format!("{prefix}.anchor.tasks"), format!("r{i}").into())
            .await?
            .await?;
        next_result(&mut results).await?;
        latencies.push(began.elapsed());
    }
    latencies.sort();

    // Results are counted as they come, while the tasks are still being published: a
    // subscriber left unread would overflow and drop them.
    let began = Instant::now();
    let counted = tokio::spawn(async move {
        for _ in 0..throughput {
            next_result(&mut results).await?;
        }
        Ok::<_, anyhow::Error>(began.elapsed())
    });
    // Acks awaited as they come: the context allows only so many unawaited at once.
    let mut acks = Vec::with_capacity(throughput);
    for i in 0..throughput {
        let ack = js
            .publish(format!("{prefix}.anchor.tasks"), format!("t{i}").into())
            .await?;
        acks.push(tokio::spawn(async move { ack.await }));
    }
    for ack in acks {
        ack.await??;
    }
    let per_second = throughput as f64 / counted.await??.as_secs_f64();

    shutdown.cancel();
    worker.await??;
    js.delete_stream(format!("{prefix}_ANCHOR_TASKS")).await?;
    js.delete_stream(format!("{prefix}_ANCHOR_RESULTS")).await?;
    Ok(Anchor {
        name: "raw JetStream (async-nats, no database)",
        round_trips: latencies,
        per_second,
    })
}

async fn next_result(results: &mut async_nats::Subscriber) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(30), results.next())
        .await
        .context("no result within 30 s")?
        .context("the results subscription ended")?;
    Ok(())
}

#[derive(Deserialize)]
struct CeleryReport {
    round_trips_ms: Vec<f64>,
    per_second: f64,
    celery: String,
    concurrency: usize,
}

/// Celery's own numbers, from `anchors/celery_bench.py` run by the Python that has Celery
/// (`VOIDRUNNER_CELERY_PYTHON`, set up by `vr_ensure_celery`), with a redis-server of its own.
pub async fn celery(round_trips: usize, throughput: usize) -> anyhow::Result<(Anchor, String)> {
    let python = std::env::var("VOIDRUNNER_CELERY_PYTHON").context(
        "VOIDRUNNER_CELERY_PYTHON is not set: run the benchmark through bench/run.sh, which \
         installs Celery and Redis (scripts/lib/services.sh vr_ensure_celery)",
    )?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/anchors/celery_bench.py");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .args(["--round-trips", &round_trips.to_string()])
        .args(["--tasks", &throughput.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {python} {script}"))?;
    if !output.status.success() {
        bail!(
            "the Celery anchor failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: CeleryReport = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "the Celery anchor printed {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let mut round_trips: Vec<Duration> = report
        .round_trips_ms
        .iter()
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    round_trips.sort();
    let about = format!(
        "Celery {} with Redis, {} prefork worker processes",
        report.celery, report.concurrency
    );
    Ok((
        Anchor {
            name: "Celery + Redis (no-op task)",
            round_trips,
            per_second: report.per_second,
        },
        about,
    ))
}
