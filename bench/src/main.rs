//! `cargo run --release -p voidrunner-bench [-- --samples N]`
//!
//! Measures, in one run on one machine: the latency of a trivial Python execution through a
//! worker with its warm pool ready, through a worker without a pool, and of a plain hardened
//! `docker run --rm` of the same program; then executions per second through a worker at
//! several parallelisms. Latency through the worker runs from publishing the dispatch to
//! receiving the result on the execution's reply subject. The warm-pool path is measured twice:
//! first with no instrumentation installed, then with metrics recorded and traces exported
//! over OTLP (as every later row is). Prints a Markdown table.
//!
//! Then the control plane alone (`dispatch.rs`): dispatch throughput and orchestration overhead
//! through the api, the database, NATS and the recorder, with workers that run nothing.
//!
//!   --samples N          latency samples per sandbox path (default 60)
//!   --executions N       executions per dispatch-throughput measurement (default 5000)
//!   --only sandbox|control-plane
//!   --database postgres|sqlite   the control plane on one database only
//!   --quick              a few of everything, so CI keeps the benchmark working
//!
//! Needs what the tests need: Docker with the language images, nats-server, and PostgreSQL
//! (VOIDRUNNER_TEST_DATABASE_URL) for the control plane.

mod anchors;
mod dispatch;
mod distributed;
mod plot;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use voidrunner_shared::config::{NatsConfig, SandboxPolicy};
use voidrunner_shared::events::{Dispatch, DispatchV1, ExecutionResult, RequestedLimits};
use voidrunner_shared::{headers, Lane, Language, Namespace, Status};
use voidrunner_worker::config::WorkerConfig;

const PROGRAM: &str = "print('hello')";
/// The language of the trivial program every sandbox row runs.
fn python() -> Language {
    "python".parse().expect("python is in the catalog")
}
const PARALLELISMS: [usize; 4] = [1, 2, 4, 8];
const THROUGHPUT_EXECUTIONS: usize = 48;

/// A worker running in this process against the benchmark's nats-server.
struct BenchWorker {
    /// What it runs: the language, the program and what the program prints.
    language: Language,
    code: String,
    stdout: String,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    namespace: Namespace,
    worker_id: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl BenchWorker {
    async fn start(
        nats_url: &str,
        backend: &str,
        slots: usize,
        pool: usize,
    ) -> anyhow::Result<BenchWorker> {
        Self::start_with(nats_url, backend, slots, pool, "127.0.0.1:0").await
    }

    /// A worker of the trivial Python program on sandbox `backend`; `metrics_addr` `off`: it
    /// records no metrics.
    async fn start_with(
        nats_url: &str,
        backend: &str,
        slots: usize,
        pool: usize,
        metrics_addr: &str,
    ) -> anyhow::Result<BenchWorker> {
        let program = (PROGRAM.to_owned(), "hello\n".to_owned());
        let prefix = voidrunner_testkit::unique_prefix();
        Self::start_for(
            nats_url,
            &prefix,
            backend,
            python(),
            program,
            slots,
            pool,
            metrics_addr,
        )
        .await
    }

    /// A worker that serves `language` only and runs `program` (code, expected stdout), in
    /// the installation `prefix`.
    #[allow(clippy::too_many_arguments)]
    async fn start_for(
        nats_url: &str,
        prefix: &str,
        backend: &str,
        language: Language,
        (code, stdout): (String, String),
        slots: usize,
        pool: usize,
        metrics_addr: &str,
    ) -> anyhow::Result<BenchWorker> {
        let vars: Vec<(String, String)> = [
            ("VOIDRUNNER_SANDBOX_BACKEND", backend.to_owned()),
            ("VOIDRUNNER_METRICS_ADDR", metrics_addr.to_owned()),
            ("VOIDRUNNER_NATS_URL", nats_url.to_owned()),
            ("VOIDRUNNER_NATS_PREFIX", prefix.to_owned()),
            ("VOIDRUNNER_WORKER_SLOTS", slots.to_string()),
            ("VOIDRUNNER_WORKER_LANGUAGES", language.as_str().to_owned()),
            ("VOIDRUNNER_POOL_SIZES", format!("{language}={pool}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let nats = NatsConfig::from_env(vars.clone())?;
        let worker = voidrunner_worker::Worker::build(
            WorkerConfig::from_env(vars.clone())?,
            SandboxPolicy::from_env(vars)?,
            &nats,
        )
        .await?;
        let worker_id = worker.worker_id().to_owned();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                if let Err(error) = worker.run(shutdown).await {
                    eprintln!("worker failed: {error}");
                }
            }
        });
        let client = async_nats::connect(nats_url).await?;
        Ok(BenchWorker {
            language,
            code,
            stdout,
            jetstream: jetstream::new(client.clone()),
            client,
            namespace: Namespace::new(prefix)?,
            worker_id,
            shutdown,
            task,
        })
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Warm sandboxes of its language ready now, from the worker's status endpoint.
    async fn warm_ready(&self) -> anyhow::Result<u64> {
        let subject = self.namespace.worker_status_subject(&self.worker_id);
        // Until the worker has registered its status endpoint, nothing answers.
        let Ok(reply) = self.client.request(subject, "".into()).await else {
            return Ok(0);
        };
        let status: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        Ok(status["warm_pool"][self.language.as_str()]
            .as_u64()
            .unwrap_or(0))
    }

    async fn wait_for_pool(&self, size: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.warm_ready().await? < size {
            if Instant::now() > deadline {
                bail!("the warm pool did not fill within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Publishes `count` dispatches and waits for all their results; returns each latency.
    async fn run(&self, count: usize) -> anyhow::Result<Vec<Duration>> {
        let ids: Vec<uuid::Uuid> = (0..count).map(|_| uuid::Uuid::now_v7()).collect();
        let mut results = self
            .client
            .subscribe(format!("{}.results.*", self.namespace.prefix()))
            .await?;
        self.client.flush().await?;
        let mut sent = std::collections::HashMap::new();
        for id in &ids {
            let dispatch = Dispatch::V1(DispatchV1 {
                execution_id: *id,
                task_id: *id,
                language: self.language,
                lane: Lane::Normal,
                code: self.code.clone(),
                files: Vec::new(),
                stdin: String::new(),
                timeout_seconds: 120,
                limits: RequestedLimits::default(),
                network: false,
                retry: Default::default(),
                submitted_at: chrono::Utc::now(),
                dispatch_token: None,
            });
            let subject = self.namespace.task_subject(Lane::Normal, self.language);
            let headers = headers::for_execution(&id.to_string(), *id, *id, 0);
            sent.insert(*id, Instant::now());
            self.jetstream
                .publish_with_headers(subject, headers, serde_json::to_vec(&dispatch)?.into())
                .await?
                .await?;
        }
        let mut latencies = Vec::with_capacity(count);
        while latencies.len() < count {
            let message = tokio::time::timeout(Duration::from_secs(120), results.next())
                .await
                .context("no result within 120 s")?
                .context("result subscription ended")?;
            let ExecutionResult::V1(result) = serde_json::from_slice(&message.payload)?;
            if let Some(started) = sent.remove(&result.execution_id) {
                if result.status != Status::Completed || result.stdout.text != self.stdout {
                    bail!("unexpected result: {result:?}");
                }
                latencies.push(started.elapsed());
            }
        }
        Ok(latencies)
    }
}

/// An OTLP/HTTP endpoint that takes every export and discards it; returns its URL.
async fn start_collector() -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 1 << 16];
                // One request per connection is enough for the exporter: read, answer, close.
                let mut seen = Vec::new();
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    if let Some(end) = find(&seen, b"\r\n\r\n") {
                        let length = content_length(&seen[..end]);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            });
        }
    });
    Ok(url)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// The same program through a plain hardened `docker run --rm`.
async fn docker_run_once() -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = tokio::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,exec,nosuid,nodev,size=64m",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--memory",
            "256m",
            "--memory-swap",
            "256m",
            "--pids-limit",
            "128",
            "--cpus",
            "1",
            "--user",
            "65534:65534",
            "--init",
            &python().default_image(),
            "python3",
            "-c",
            PROGRAM,
        ])
        .output()
        .await?;
    let elapsed = started.elapsed();
    if !output.status.success() || output.stdout != b"hello\n" {
        bail!(
            "docker run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(elapsed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

struct Latency {
    name: String,
    samples: Vec<Duration>,
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|arg| arg != name).nth(1)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let samples: usize = arg("--samples")
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(if quick { 3 } else { 60 });
    let executions: usize = arg("--executions")
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(if quick { 200 } else { 5000 });
    let only = arg("--only");
    if !matches!(
        only.as_deref(),
        None | Some("sandbox" | "control-plane" | "languages")
    ) {
        bail!("--only takes sandbox, control-plane or languages");
    }
    if matches!(only.as_deref(), None | Some("sandbox")) {
        sandbox_paths(samples, quick).await?;
    }
    if matches!(only.as_deref(), None | Some("languages")) {
        languages(if quick { 1 } else { 10 }).await?;
    }
    if matches!(only.as_deref(), None | Some("control-plane")) {
        control_plane(executions, quick).await?;
    }
    Ok(())
}

async fn control_plane(executions: usize, quick: bool) -> anyhow::Result<()> {
    // Logs of the services in this process, to follow one execution through them.
    let _telemetry = std::env::var_os("RUST_LOG")
        .map(|_| voidrunner_shared::telemetry::init(false, "voidrunner-bench"));
    let overhead_samples = if quick { 10 } else { 500 };
    let sweep: &[usize] = if quick {
        &[1, 4]
    } else {
        &[1, 2, 4, 8, 16, 32, 64]
    };
    let per_sweep = if quick { 20 } else { 1000 };
    let database = arg("--database");

    eprintln!("anchor: raw JetStream");
    let nats = voidrunner_testkit::start_nats().await;
    let jetstream = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        anchors::jetstream(nats.url(), overhead_samples, executions),
    )
    .await
    .context("the JetStream anchor did not finish within 5 minutes")??;
    drop(nats);
    eprintln!("anchor: Celery + Redis");
    let (celery, celery_about) = anchors::celery(overhead_samples, executions).await?;

    let mut rows = Vec::new();
    for setup in &dispatch::SETUPS {
        if database.as_deref().is_some_and(|name| name != setup.key) {
            continue;
        }
        // The sweep over clients once, on the first setup (PostgreSQL without admission).
        let sweep = if rows.is_empty() { sweep } else { &[] };
        rows.push(dispatch::measure(setup, executions, overhead_samples, sweep, per_sweep).await?);
    }
    eprintln!("distributed: api and two workers as processes, {executions} runs");
    let processes = distributed::measure(executions).await?;
    let settings = postgres_settings().await?;

    println!(
        "\nControl plane: api, database, NATS, recorder and two workers with the instant backend \
         (256 slots each), in this process. Dispatch: {executions} runs submitted by {} \
         concurrent clients, from the first submission to the last final state in the \
         database. Round trip: `POST /runs?wait=true`, {overhead_samples} sequential, request \
         to answer. PostgreSQL runs with {settings}.\n",
        dispatch::CLIENTS
    );
    println!("| setup | runs/s, one per request | runs/s, batches of 100 | round trip p50 ms | round trip p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {} | {} |",
            row.setup,
            row.single_per_second,
            row.batched_per_second,
            ms(percentile(&row.overhead, 50.0)),
            ms(percentile(&row.overhead, 99.0)),
        );
    }
    println!(
        "| PostgreSQL, api and 2 workers as processes | {:.0} | | | |",
        processes.per_second
    );
    println!(
        "\nAnchors, same run: round trips sequential ({overhead_samples}), throughput with {executions} \
         tasks in flight at once. {celery_about}, acks late (after the task ran, as VoidRunner acks).\n"
    );
    println!("| anchor | round trip p50 ms | round trip p99 ms | tasks/s |");
    println!("|---|---:|---:|---:|");
    for anchor in [&jetstream, &celery] {
        println!(
            "| {} | {} | {} | {:.0} |",
            anchor.name,
            ms(percentile(&anchor.round_trips, 50.0)),
            ms(percentile(&anchor.round_trips, 99.0)),
            anchor.per_second
        );
    }
    if let Some(best) = rows
        .iter()
        .filter(|row| row.setup.starts_with("PostgreSQL"))
        .map(|row| row.single_per_second.max(row.batched_per_second))
        .reduce(f64::max)
    {
        println!(
            "\nPostgreSQL dispatch at its best: {best:.0} runs/s, {:.1}x Celery's {:.0} tasks/s.",
            best / celery.per_second,
            celery.per_second
        );
    }
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1024.0 * 1024.0));
    println!("\nResident memory (MiB), processes as deployed: idle once ready, peak while {executions} runs went through, and after:\n");
    println!("| process | idle | peak under load | after the load |");
    println!("|---|---:|---:|---:|");
    for (name, memory) in [("api", processes.api), ("worker", processes.worker)] {
        println!(
            "| {name} | {} | {} | {} |",
            mib(memory.idle),
            mib(memory.peak),
            mib(memory.after)
        );
    }
    if let Some(first) = rows.first() {
        println!(
            "\n{}: runs/s by concurrent clients ({per_sweep} runs, one per request):\n",
            first.setup
        );
        println!("| clients | runs/s |");
        println!("|---:|---:|");
        for (clients, rate) in &first.by_clients {
            println!("| {clients} | {rate:.0} |");
        }
    }

    // Committed beside the results; a quick run draws them where it does no harm.
    let dir = if quick {
        std::env::temp_dir()
    } else {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    };
    let mut latencies: Vec<(String, Vec<std::time::Duration>)> = rows
        .iter()
        .map(|row| (format!("VoidRunner, {}", row.setup), row.overhead.clone()))
        .collect();
    latencies.push((jetstream.name.to_owned(), jetstream.round_trips.clone()));
    latencies.push((celery.name.to_owned(), celery.round_trips.clone()));
    plot::latency_cdf(&dir.join("latency.svg"), &latencies)?;
    let sweeps: Vec<(String, Vec<(usize, f64)>)> = rows
        .iter()
        .filter(|row| !row.by_clients.is_empty())
        .map(|row| (format!("VoidRunner, {}", row.setup), row.by_clients.clone()))
        .collect();
    plot::throughput(
        &dir.join("throughput.svg"),
        &sweeps,
        &[
            (
                format!("{} (all in flight)", jetstream.name),
                jetstream.per_second,
            ),
            (
                format!("{} (all in flight)", celery.name),
                celery.per_second,
            ),
        ],
    )?;
    eprintln!(
        "plots: {} and {}",
        dir.join("latency.svg").display(),
        dir.join("throughput.svg").display()
    );
    Ok(())
}

/// The durability settings of the PostgreSQL the benchmark ran on, for its results.
async fn postgres_settings() -> anyhow::Result<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(voidrunner_testkit::postgres_admin_url()).await?;
    let mut settings = Vec::new();
    for name in ["fsync", "synchronous_commit"] {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SHOW {name}"),
            ))
            .await?
            .context("SHOW answers a row")?;
        let value: String = row.try_get_by_index(0)?;
        settings.push(format!("`{name}={value}`"));
    }
    Ok(settings.join(", "))
}

async fn sandbox_paths(samples: usize, quick: bool) -> anyhow::Result<()> {
    let nats = voidrunner_testkit::start_nats().await;

    // First without any instrumentation (nothing installed yet: no metrics recorder, no
    // tracing subscriber), then with both from here on: metrics recorded and served, spans
    // exported over OTLP to a collector that takes them.
    eprintln!("docker, warm pool, uninstrumented: {samples} sequential executions");
    let bare = BenchWorker::start_with(nats.url(), "docker", 1, 1, "off").await?;
    let mut bare_samples = Vec::new();
    for _ in 0..samples {
        bare.wait_for_pool(1).await?;
        bare_samples.extend(bare.run(1).await?);
    }
    bare.stop().await;
    let collector = start_collector().await?;
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &collector);
    let _telemetry = voidrunner_shared::telemetry::init(false, "voidrunner-bench");

    let mut latencies = vec![Latency {
        name: "docker: worker, warm pool, no metrics or traces".into(),
        samples: bare_samples,
    }];
    // Executions per throughput measurement: enough for each backend to run a few seconds.
    let throughput_executions = |backend: &str| match (quick, backend) {
        (true, _) => 4,
        (false, "native") => THROUGHPUT_EXECUTIONS * 5,
        (false, _) => THROUGHPUT_EXECUTIONS,
    };
    let mut throughput: Vec<(&str, Vec<f64>)> = Vec::new();
    for backend in ["docker", "native"] {
        eprintln!(
            "{backend}, warm pool: {samples} sequential executions, each with the pool ready"
        );
        let warm = BenchWorker::start(nats.url(), backend, 1, 1).await?;
        let mut warm_samples = Vec::new();
        for _ in 0..samples {
            warm.wait_for_pool(1).await?;
            warm_samples.extend(warm.run(1).await?);
        }
        warm.stop().await;

        eprintln!(
            "{backend}, no pool: {samples} sequential executions, each in a sandbox created for it"
        );
        let cold = BenchWorker::start(nats.url(), backend, 1, 0).await?;
        let mut cold_samples = Vec::new();
        for _ in 0..samples {
            cold_samples.extend(cold.run(1).await?);
        }
        cold.stop().await;
        latencies.push(Latency {
            name: format!("{backend}: worker, warm pool"),
            samples: warm_samples,
        });
        latencies.push(Latency {
            name: format!("{backend}: worker, no pool"),
            samples: cold_samples,
        });

        let program = (PROGRAM.to_owned(), "hello\n".to_owned());
        let executions = throughput_executions(backend);
        let rates = sweep(nats.url(), backend, python(), program, executions).await?;
        throughput.push((backend, rates));
    }
    // The same sweep with a trivial Bash program: what each backend carries when the language
    // itself costs next to nothing (Python's start-up alone takes ~11 ms of CPU here).
    let mut bash_throughput: Vec<Vec<f64>> = Vec::new();
    let bash: Language = "bash".parse().expect("bash is in the catalog");
    for backend in ["docker", "native"] {
        let program = ("echo hello".to_owned(), "hello\n".to_owned());
        let executions = throughput_executions(backend);
        let rates = sweep(nats.url(), backend, bash, program, executions).await?;
        bash_throughput.push(rates);
    }

    eprintln!("docker run --rm: {samples} sequential runs");
    let mut docker_samples = Vec::new();
    for _ in 0..samples {
        docker_samples.push(docker_run_once().await?);
    }
    latencies.push(Latency {
        name: "plain `docker run --rm`".into(),
        samples: docker_samples,
    });
    for latency in &mut latencies {
        latency.samples.sort();
    }
    let docker_run_p50 = percentile(&latencies[latencies.len() - 1].samples, 50.0);

    println!("Trivial Python execution (`{PROGRAM}`), {samples} samples each, sequential:\n");
    println!("| path | p50 ms | p99 ms | mean ms | p50 vs docker run |");
    println!("|---|---:|---:|---:|---:|");
    for latency in &latencies {
        let sum: Duration = latency.samples.iter().sum();
        let p50 = percentile(&latency.samples, 50.0);
        println!(
            "| {} | {} | {} | {} | {:.2}x |",
            latency.name,
            ms(p50),
            ms(percentile(&latency.samples, 99.0)),
            ms(sum / latency.samples.len() as u32),
            p50.as_secs_f64() / docker_run_p50.as_secs_f64(),
        );
    }
    println!(
        "\nThroughput through one worker (executions published at once: {} on docker, {} on native; slots = pool size = parallelism):\n",
        throughput_executions("docker"),
        throughput_executions("native")
    );
    println!("| parallelism | python: docker executions/s | native executions/s | native / docker | bash (`echo hello`): docker | native | native / docker |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (i, parallelism) in PARALLELISMS.iter().enumerate() {
        let docker = throughput[0].1[i];
        let native = throughput[1].1[i];
        let (bash_docker, bash_native) = (bash_throughput[0][i], bash_throughput[1][i]);
        println!(
            "| {parallelism} | {docker:.1} | {native:.1} | {:.1}x | {bash_docker:.1} | {bash_native:.1} | {:.1}x |",
            native / docker,
            bash_native / bash_docker
        );
    }
    Ok(())
}

/// Executions per second through one worker on `backend` at each parallelism (slots = pool size),
/// `executions` of `program` published at once; one installation for the sweep, its workers one
/// after the other.
async fn sweep(
    nats_url: &str,
    backend: &str,
    language: Language,
    program: (String, String),
    executions: usize,
) -> anyhow::Result<Vec<f64>> {
    let prefix = voidrunner_testkit::unique_prefix();
    let mut rates = Vec::new();
    for parallelism in PARALLELISMS {
        eprintln!("{backend}, {language} throughput: {executions} executions at parallelism {parallelism}");
        let worker = BenchWorker::start_for(
            nats_url,
            &prefix,
            backend,
            language,
            program.clone(),
            parallelism,
            parallelism,
            "127.0.0.1:0",
        )
        .await?;
        worker.wait_for_pool(parallelism as u64).await?;
        let started = Instant::now();
        worker.run(executions).await?;
        let elapsed = started.elapsed();
        worker.stop().await;
        rates.push(executions as f64 / elapsed.as_secs_f64());
    }
    Ok(rates)
}

/// Every language of the catalog: its hello-world through a worker that serves it alone, warm
/// (a pooled sandbox ready) and cold (a container created for it), `samples` of each.
async fn languages(samples: usize) -> anyhow::Result<()> {
    let nats = voidrunner_testkit::start_nats().await;
    // One installation for all: each worker serves one language, one after the other.
    let prefix = voidrunner_testkit::unique_prefix();
    let mut rows = Vec::new();
    for &language in Language::all() {
        let program = (
            language.definition().checks.hello.clone(),
            "hello, world\n".to_owned(),
        );
        let mut row = Vec::new();
        for backend in ["docker", "native"] {
            eprintln!("{language} on {backend}: {samples} warm and {samples} cold hello-worlds");
            for pool in [1, 0] {
                let worker = BenchWorker::start_for(
                    nats.url(),
                    &prefix,
                    backend,
                    language,
                    program.clone(),
                    1,
                    pool,
                    "off",
                )
                .await?;
                let mut latencies = Vec::new();
                for _ in 0..samples {
                    if pool > 0 {
                        worker.wait_for_pool(1).await?;
                    }
                    latencies.extend(worker.run(1).await?);
                }
                worker.stop().await;
                latencies.sort();
                row.push(percentile(&latencies, 50.0));
            }
        }
        rows.push((language, row));
    }
    println!("\nHello-world of every language through a worker, {samples} sequential samples each, p50 ms (warm: a pooled sandbox was ready; cold: a sandbox created for it):\n");
    println!("| language | version | image | image MiB | docker warm | docker cold | native warm | native cold |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for (language, row) in rows {
        let image = language.default_image();
        let cells: Vec<String> = row.into_iter().map(ms).collect();
        println!(
            "| {} | {} | `{image}` | {} | {} |",
            language.as_str(),
            language.version(),
            image_mib(&image).await?,
            cells.join(" | "),
        );
    }
    Ok(())
}

/// The size of a local image, in MiB.
async fn image_mib(image: &str) -> anyhow::Result<u64> {
    let output = tokio::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Size}}", image])
        .output()
        .await?;
    let bytes: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .with_context(|| format!("the size of {image}"))?;
    Ok(bytes >> 20)
}
