//! The control plane without Docker in the way: the api, its database, NATS, the recorder and
//! workers whose sandbox backend is `instant` (they answer each execution at once and run
//! nothing). What is measured is what VoidRunner itself costs an execution.
//!
//! - dispatch throughput: N executions submitted over REST by concurrent clients, one run per
//!   request and in batches of 100, from the first submission to the last final state in the
//!   database; on PostgreSQL (the distributed setup's database, services in this process) and
//!   on SQLite (embedded mode's);
//! - orchestration overhead: `POST /runs?wait=true`, sequential, request to answer (the instant
//!   sandbox takes no time, so all of it is overhead).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use voidrunner_api::entity::execution;
use voidrunner_testkit::{spawn_api_only, Backend};

/// Concurrent REST clients submitting.
pub const CLIENTS: usize = 32;
const BATCH: usize = 100;

pub struct Setup {
    pub key: &'static str,
    pub name: &'static str,
    pub backend: Backend,
    /// `VOIDRUNNER_MAX_ACTIVE_PER_USER`: `unlimited` measures the system without per-user
    /// admission; a limit never reached measures what counting each execution costs.
    pub limit: &'static str,
}

pub const SETUPS: [Setup; 3] = [
    Setup {
        key: "postgres",
        name: "PostgreSQL",
        backend: Backend::Postgres,
        limit: "unlimited",
    },
    Setup {
        key: "postgres",
        name: "PostgreSQL, per-user admission counted",
        backend: Backend::Postgres,
        limit: "1000000",
    },
    Setup {
        key: "sqlite",
        name: "SQLite (embedded)",
        backend: Backend::Sqlite,
        limit: "unlimited",
    },
];

pub struct Measured {
    pub setup: &'static str,
    pub single_per_second: f64,
    pub batched_per_second: f64,
    pub overhead: Vec<Duration>,
    /// Runs per second, one per request, by number of concurrent clients.
    pub by_clients: Vec<(usize, f64)>,
}

async fn finals(db: &DatabaseConnection) -> anyhow::Result<u64> {
    Ok(execution::Entity::find()
        .filter(execution::Column::Status.is_in([
            execution::Status::Completed,
            execution::Status::Failed,
            execution::Status::Timeout,
            execution::Status::Cancelled,
            execution::Status::Error,
        ]))
        .count(db)
        .await?)
}

/// Waits until `target` executions are final; how long since `since`.
pub async fn all_final(
    db: &DatabaseConnection,
    target: u64,
    since: Instant,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if finals(db).await? >= target {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            bail!("executions did not all end within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run_body(i: usize) -> Value {
    json!({ "language": "python", "code": format!("print({i})") })
}

/// `count` submissions by `clients` concurrent clients, each `per_request` runs.
pub async fn submit(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    count: usize,
    per_request: usize,
    clients: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let requests = count / per_request;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, token, next) = (
            http.clone(),
            base.to_owned(),
            token.to_owned(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok::<(), anyhow::Error>(());
                }
                let request = if per_request == 1 {
                    http.post(format!("{base}/api/v1/runs")).json(&run_body(i))
                } else {
                    let runs: Vec<Value> = (0..per_request)
                        .map(|j| run_body(i * per_request + j))
                        .collect();
                    http.post(format!("{base}/api/v1/runs/batch"))
                        .json(&json!({ "runs": runs }))
                };
                let response = request.bearer_auth(&token).send().await?;
                if response.status().as_u16() != 202 {
                    bail!(
                        "a submission answered {}: {}",
                        response.status(),
                        response.text().await?
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await.context("client task")??;
    }
    Ok(())
}

pub async fn measure(
    setup: &Setup,
    executions: usize,
    overhead_samples: usize,
    sweep: &[usize],
    per_sweep: usize,
) -> anyhow::Result<Measured> {
    let app = spawn_api_only(
        setup.backend,
        &[("VOIDRUNNER_MAX_ACTIVE_PER_USER", setup.limit)],
    )
    .await;
    let workers = [
        app.spawn_worker(&[
            ("VOIDRUNNER_SANDBOX_BACKEND", "instant"),
            ("VOIDRUNNER_WORKER_SLOTS", "256"),
        ])
        .await,
        app.spawn_worker(&[
            ("VOIDRUNNER_SANDBOX_BACKEND", "instant"),
            ("VOIDRUNNER_WORKER_SLOTS", "256"),
        ])
        .await,
    ];
    let token = app.login_new_user().await;

    eprintln!(
        "{}: orchestration overhead, {overhead_samples} sequential runs with wait=true",
        setup.name
    );
    let mut overhead = Vec::new();
    for i in 0..overhead_samples {
        let began = Instant::now();
        let (status, run) = app.post_run(&token, "?wait=true", run_body(i)).await;
        if status != 200 || run["status"] != "completed" {
            bail!("a waited run answered {status}: {run}");
        }
        overhead.push(began.elapsed());
    }
    overhead.sort();
    let db = &app.db.connection;
    let before = finals(db).await?;

    eprintln!(
        "{}: {executions} runs, one per request, {CLIENTS} clients",
        setup.name
    );
    let began = Instant::now();
    submit(&app.http, &app.base_url, &token, executions, 1, CLIENTS).await?;
    let single = all_final(db, before + executions as u64, began).await?;

    eprintln!(
        "{}: {executions} runs in batches of {BATCH}, {CLIENTS} clients",
        setup.name
    );
    let began = Instant::now();
    submit(&app.http, &app.base_url, &token, executions, BATCH, CLIENTS).await?;
    let batched = all_final(db, before + 2 * executions as u64, began).await?;

    let mut by_clients = Vec::new();
    let mut done = before + 2 * executions as u64;
    for &clients in sweep {
        eprintln!(
            "{}: {per_sweep} runs, one per request, {clients} clients",
            setup.name
        );
        let began = Instant::now();
        submit(&app.http, &app.base_url, &token, per_sweep, 1, clients).await?;
        done += per_sweep as u64;
        let took = all_final(db, done, began).await?;
        by_clients.push((clients, per_sweep as f64 / took.as_secs_f64()));
    }

    for worker in workers {
        worker.stop().await;
    }
    app.stop().await;
    Ok(Measured {
        setup: setup.name,
        single_per_second: executions as f64 / single.as_secs_f64(),
        batched_per_second: executions as f64 / batched.as_secs_f64(),
        overhead,
        by_clients,
    })
}
