//! The control plane as it is deployed: `voidrunner api` and two `voidrunner worker` processes
//! (instant backend) on PostgreSQL and nats-server, each its own OS process. Measures their
//! resident memory idle (ready, nothing submitted yet) and under load (the peak while `count`
//! runs go through, and what is left after), and the dispatch throughput of that setup.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use voidrunner_testkit::processes::{free_port, Processes};
use voidrunner_testkit::{empty_database, login_new_user, start_nats, test_env, Backend};

use crate::dispatch;

/// Resident memory of one process, in bytes.
#[derive(Clone, Copy, Default)]
pub struct Memory {
    pub idle: u64,
    pub peak: u64,
    pub after: u64,
}

pub struct Measured {
    pub api: Memory,
    pub worker: Memory,
    pub per_second: f64,
}

/// The `voidrunner` binary built beside this benchmark (`bench/run.sh` builds both).
fn voidrunner_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the benchmark's directory")?
        .join("voidrunner");
    if !bin.exists() {
        bail!(
            "{} is missing: run the benchmark through bench/run.sh, which builds it",
            bin.display()
        );
    }
    Ok(bin)
}

/// `VmRSS` and `VmHWM` (its peak) of a process, in bytes.
fn resident(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("a number of kB")?
            .parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Waits until the api's `/ready` counts `workers` live workers.
async fn wait_for_workers(http: &reqwest::Client, base: &str, workers: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{base}/ready")).send().await {
            let ready: Value = response.json().await.unwrap_or_default();
            if ready["backends"]["instant"].as_u64() == Some(workers) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{workers} workers did not register within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn measure(count: usize) -> anyhow::Result<Measured> {
    let bin = voidrunner_bin()?;
    let nats = start_nats().await;
    let (database_url, _db) = empty_database(Backend::Postgres).await;
    let prefix = voidrunner_testkit::unique_prefix();
    let addr = format!("127.0.0.1:{}", free_port());
    let vars = test_env(
        nats.url(),
        &database_url,
        &prefix,
        &[
            ("VOIDRUNNER_API_ADDR", &addr),
            ("VOIDRUNNER_MAX_ACTIVE_PER_USER", "unlimited"),
            ("VOIDRUNNER_SANDBOX_BACKEND", "instant"),
            ("VOIDRUNNER_WORKER_SLOTS", "256"),
            ("RUST_LOG", "warn"),
        ],
    );
    let mut processes = Processes::new(&bin.to_string_lossy(), vars);
    processes.run_to_completion("migrate").await;
    processes.start("api", "api", &[]);
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    // As deployed: the api provisions, the workers wait for it (and `/ready` for them).
    for id in ["bench-w1", "bench-w2"] {
        processes.start(
            id,
            "worker",
            &[
                ("VOIDRUNNER_WORKER_ID", id),
                ("VOIDRUNNER_NATS_PROVISION", "false"),
            ],
        );
    }
    processes.wait_ready("api", &http, &base).await;
    wait_for_workers(&http, &base, 2).await?;
    let pid = |name: &str| processes.pid(name).with_context(|| format!("{name} runs"));
    let (api_pid, worker_pid) = (pid("api")?, pid("bench-w1")?);
    let (api_idle, _) = resident(api_pid)?;
    let (worker_idle, _) = resident(worker_pid)?;

    let token = login_new_user(&http, &base).await;
    let db = sea_orm::Database::connect(&database_url).await?;
    let began = Instant::now();
    dispatch::submit(&http, &base, &token, count, 1, dispatch::CLIENTS).await?;
    let took = dispatch::all_final(&db, count as u64, began).await?;
    let (api_after, api_peak) = resident(api_pid)?;
    let (worker_after, worker_peak) = resident(worker_pid)?;
    for name in ["bench-w1", "bench-w2", "api"] {
        processes.assert_running(name);
        processes.terminate(name, Duration::from_secs(30)).await;
    }
    Ok(Measured {
        api: Memory {
            idle: api_idle,
            peak: api_peak,
            after: api_after,
        },
        worker: Memory {
            idle: worker_idle,
            peak: worker_peak,
            after: worker_after,
        },
        per_second: count as f64 / took.as_secs_f64(),
    })
}
