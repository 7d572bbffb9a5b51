//! The compose stack's `distributed` profile, brought up for real: a 3-node NATS cluster with
//! per-role users, PostgreSQL, the one-shot migration, two api replicas behind the proxy and
//! workers. Executions go through both replicas; workers scale 1 → 3; a worker container is
//! killed mid-run and a NATS container stopped under load with nothing lost; `down -v` leaves
//! nothing behind. With the `native` profile, a worker with no Docker socket runs sandboxes of
//! its own. Images are the stand-ins `compose/standins.sh` builds (no registry here).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use voidrunner_testkit::processes::free_port;
use voidrunner_testkit::send;

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One compose project of this test; `down -v` when dropped.
struct Stack {
    project: String,
    profiles: &'static [&'static str],
    env: Vec<(String, String)>,
}

impl Stack {
    fn command(&self, args: &[&str]) -> std::process::Output {
        let output = std::process::Command::new("docker-compose")
            .current_dir(repo().join("compose"))
            .args(["-p", &self.project])
            .args(
                self.profiles
                    .iter()
                    .flat_map(|profile| ["--profile", profile]),
            )
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("docker-compose (apt-get install docker-compose)");
        output
    }

    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args);
        assert!(
            output.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn container(&self, service: &str, index: usize) -> String {
        format!("{}_{service}_{index}", self.project)
    }

    fn logs(&self) -> String {
        let output = self.command(&["logs", "--no-color", "--tail", "30"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.command(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

fn docker(args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds the images and returns the variables naming them: once for both tests, which run
/// in parallel in this process (standins.sh also serialises builds across processes).
fn standins() -> Vec<(String, String)> {
    static STANDINS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    STANDINS.get_or_init(build_standins).clone()
}

fn build_standins() -> Vec<(String, String)> {
    let output = std::process::Command::new("bash")
        .arg(repo().join("compose/standins.sh"))
        .arg(BIN)
        .current_dir(repo())
        .output()
        .expect("bash");
    assert!(
        output.status.success(),
        "compose/standins.sh failed (needs scripts/build-images.sh compose-base): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// A run of `script` (bash); the execution and which api replica took it.
    async fn run(&self, script: &str, wait: bool) -> (u16, Value, String) {
        let query = if wait { "?wait=true" } else { "" };
        let response = self
            .http
            .post(self.url(&format!("/runs{query}")))
            .bearer_auth(&self.token)
            .json(&json!({ "language": "bash", "code": script }))
            .send()
            .await
            .expect("the proxy answers");
        let status = response.status().as_u16();
        let upstream = upstream(&response);
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            upstream,
        )
    }

    async fn execution(&self, id: &str) -> Option<Value> {
        let (status, body) = send(
            self.http
                .get(self.url(&format!("/executions/{id}")))
                .bearer_auth(&self.token),
        )
        .await;
        (status == 200).then_some(body)
    }

    /// Waits until every execution is final; returns them by id.
    async fn all_final(&self, ids: &[String], within: Duration) -> HashMap<String, Value> {
        voidrunner_testkit::wait_all_final(&self.http, &self.base, &self.token, ids, within).await
    }

    async fn live_workers(&self) -> Vec<Value> {
        let (status, workers) =
            send(self.http.get(self.url("/workers")).bearer_auth(&self.token)).await;
        if status != 200 {
            return Vec::new();
        }
        workers.as_array().cloned().unwrap_or_default()
    }
}

/// The api replica (or replicas, "a, b") the proxy sent a request to.
fn upstream(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-upstream")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Waits until `replicas` api replicas answer `/ready` through the proxy. With more than one,
/// each must have answered on its own: the proxy takes a replica that refused it (not ready
/// yet) out of rotation for a while, so one ready replica is not a ready stack.
async fn wait_ready(stack: &Stack, http: &reqwest::Client, base: &str, replicas: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ready = HashSet::new();
    loop {
        let response = http.get(format!("{base}/ready")).send().await;
        if let Ok(response) = response {
            let upstream = upstream(&response);
            // "a, b" means the proxy tried a first and went on to b.
            if response.status() == 200 && !upstream.contains(',') {
                ready.insert(upstream);
            }
        }
        if ready.len() >= replicas {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {replicas} api replicas were ready in 120 s ({ready:?})\n{}",
            ready.len(),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn completed(finals: &HashMap<String, Value>, stdout: &str) -> usize {
    finals
        .values()
        .filter(|e| e["status"] == "completed" && e["stdout"] == stdout)
        .count()
}

#[tokio::test]
async fn the_distributed_profile_scales_survives_a_lost_worker_and_a_lost_nats_node_and_goes_away()
{
    let mut timings = Vec::new();
    let began = Instant::now();
    let mut env = standins();
    timings.push(format!("images {:.1}s", began.elapsed().as_secs_f64()));
    let port = free_port();
    env.extend([
        (
            "VOIDRUNNER_JWT_SECRET".to_owned(),
            uuid::Uuid::new_v4().simple().to_string().repeat(2),
        ),
        ("VOIDRUNNER_HTTP_PORT".to_owned(), port.to_string()),
        ("VOIDRUNNER_NATS_PORT".to_owned(), free_port().to_string()),
        (
            "VOIDRUNNER_NATS_ACK_WAIT_SECONDS".to_owned(),
            "5".to_owned(),
        ),
        ("VOIDRUNNER_WORKER_SLOTS".to_owned(), "2".to_owned()),
    ]);
    let stack = Stack {
        project: format!("vrci{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        profiles: &["distributed"],
        env,
    };

    let up = Instant::now();
    stack.run(&["up", "-d", "--no-build", "--scale", "worker=1"]);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&stack, &http, &base, 2).await;
    timings.push(format!("up to ready {:.1}s", up.elapsed().as_secs_f64()));

    let token = voidrunner_testkit::login_new_user(&http, &base).await;
    let client = Client { http, base, token };

    // Through the proxy, both replicas take runs.
    let mut upstreams = HashSet::new();
    for i in 0..10 {
        let (status, run, upstream) = client.run(&format!("echo run-{i}"), true).await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["stdout"], format!("run-{i}\n"), "{run}");
        upstreams.insert(upstream);
    }
    assert_eq!(
        upstreams.len(),
        2,
        "one api replica took every run: {upstreams:?}"
    );

    // Workers scale 1 -> 3; the fleet view shows them.
    let scaled = Instant::now();
    stack.run(&[
        "up",
        "-d",
        "--no-build",
        "--no-recreate",
        "--scale",
        "worker=3",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.live_workers().await.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "3 workers never showed\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    timings.push(format!(
        "scale 1 -> 3 {:.1}s",
        scaled.elapsed().as_secs_f64()
    ));

    // A worker container killed mid-run: its executions are redelivered and finish elsewhere.
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (status, run, _) = client.run("sleep 3; echo survived", false).await;
        assert_eq!(status, 202, "{run}");
        ids.push(run["id"].as_str().expect("id").to_owned());
    }
    let hostnames: Vec<(String, String)> = (1..=3)
        .map(|i| {
            let name = stack.container("worker", i);
            let host = docker(&["inspect", "--format", "{{.Config.Hostname}}", &name]);
            (name, host.trim().to_owned())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let mut running = None;
        for id in &ids {
            if let Some(execution) = client.execution(id).await {
                if execution["status"] == "running" {
                    running = execution["worker_id"].as_str().map(str::to_owned);
                    break;
                }
            }
        }
        if let Some(worker_id) = running {
            break hostnames
                .iter()
                .find(|(_, host)| worker_id.starts_with(host.as_str()))
                .map(|(name, _)| name.clone())
                .expect("the running worker's container");
        }
        assert!(Instant::now() < deadline, "nothing started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let killed = Instant::now();
    docker(&["kill", &victim]);
    let finals = client.all_final(&ids, Duration::from_secs(120)).await;
    assert_eq!(
        completed(&finals, "survived\n"),
        ids.len(),
        "a killed worker's execution was lost: {finals:?}"
    );
    let redelivered = finals
        .values()
        .filter(|e| e["attempt"].as_i64() > Some(1))
        .count();
    assert!(
        redelivered >= 1,
        "nothing ran on the killed worker: {finals:?}"
    );
    timings.push(format!(
        "worker killed mid-run: {} of {} completed ({redelivered} redelivered) {:.1}s after the kill",
        ids.len(),
        ids.len(),
        killed.elapsed().as_secs_f64()
    ));

    // A NATS node stopped under load.
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut stopped_at = None;
    for i in 0..40 {
        if i == 10 {
            stopped_at = Some(Instant::now());
            docker(&["stop", "-t", "0", &stack.container("nats-2", 1)]);
        }
        let (status, run, _) = client.run(&format!("echo load-{i}"), false).await;
        match status {
            202 => accepted.push(run["id"].as_str().expect("id").to_owned()),
            503 => refused += 1,
            other => panic!("a submission answered {other}: {run}"),
        }
    }
    let finals = client.all_final(&accepted, Duration::from_secs(120)).await;
    let done = finals
        .values()
        .filter(|e| e["status"] == "completed")
        .count();
    assert_eq!(
        done,
        accepted.len(),
        "lost under a NATS node's stop: {finals:?}"
    );
    assert!(accepted.len() >= 30, "{refused} of 40 refused");
    timings.push(format!(
        "nats-2 stopped under load: 40 submitted, {} accepted, {refused} refused, {done} completed, all final {:.1}s after the stop",
        accepted.len(),
        stopped_at.expect("stopped").elapsed().as_secs_f64()
    ));
    let log = stack.command(&["logs", "--no-color", "nats-1", "nats-2", "nats-3"]);
    let nats_log = String::from_utf8_lossy(&log.stdout);
    assert!(
        !nats_log.contains("Violation"),
        "a service lacked a permission: {}",
        nats_log
            .lines()
            .filter(|line| line.contains("Violation"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // down -v leaves no container and no volume of the project.
    let down = Instant::now();
    stack.run(&["down", "-v", "-t", "10"]);
    let label = format!("label=com.docker.compose.project={}", stack.project);
    let containers = docker(&["ps", "-a", "-q", "--filter", &label]);
    assert!(containers.trim().is_empty(), "left behind: {containers}");
    let volumes = docker(&["volume", "ls", "-q", "--filter", &label]);
    assert!(volumes.trim().is_empty(), "volumes left behind: {volumes}");
    timings.push(format!("down -v {:.1}s", down.elapsed().as_secs_f64()));
    println!("compose distributed profile: {}", timings.join("; "));
}

#[tokio::test]
async fn the_embedded_profile_runs_a_program_with_a_secret_it_made_itself() {
    let port = free_port();
    let mut env = standins();
    // No JWT secret given: serve makes one into its data volume.
    env.push(("VOIDRUNNER_HTTP_PORT".to_owned(), port.to_string()));
    let stack = Stack {
        project: format!("vrci{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        profiles: &["embedded"],
        env,
    };
    let up = Instant::now();
    stack.run(&["up", "-d", "--no-build"]);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&stack, &http, &base, 1).await;
    let ready_after = up.elapsed();
    let token = voidrunner_testkit::login_new_user(&http, &base).await;
    let client = Client { http, base, token };
    let (status, run, _) = client.run("echo embedded", true).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["stdout"], "embedded\n", "{run}");
    stack.run(&["down", "-v", "-t", "10"]);
    let label = format!("label=com.docker.compose.project={}", stack.project);
    assert!(docker(&["ps", "-a", "-q", "--filter", &label])
        .trim()
        .is_empty());
    println!(
        "compose embedded profile: ready {:.1}s after up",
        ready_after.as_secs_f64()
    );
}

#[tokio::test]
async fn the_native_profile_runs_sandboxes_in_a_worker_without_the_docker_socket() {
    let mut env = standins();
    let port = free_port();
    env.extend([
        (
            "VOIDRUNNER_JWT_SECRET".to_owned(),
            uuid::Uuid::new_v4().simple().to_string().repeat(2),
        ),
        ("VOIDRUNNER_HTTP_PORT".to_owned(), port.to_string()),
        ("VOIDRUNNER_NATS_PORT".to_owned(), free_port().to_string()),
    ]);
    if let Ok(dir) = std::env::var("VOIDRUNNER_SANDBOX_ROOTFS_DIR") {
        env.push(("VOIDRUNNER_SANDBOX_ROOTFS_DIR".to_owned(), dir));
    }
    let stack = Stack {
        project: format!("vrci{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        profiles: &["distributed", "native"],
        env,
    };
    let up = Instant::now();
    stack.run(&["up", "-d", "--no-build", "--scale", "worker=0"]);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&stack, &http, &base, 2).await;
    let token = voidrunner_testkit::login_new_user(&http, &base).await;
    let client = Client { http, base, token };

    // The fleet is the one native worker.
    let deadline = Instant::now() + Duration::from_secs(60);
    let workers = loop {
        let workers = client.live_workers().await;
        if !workers.is_empty() {
            break workers;
        }
        assert!(
            Instant::now() < deadline,
            "no worker joined\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["backend"], "native", "{workers:?}");
    let worker_id = workers[0]["id"].as_str().unwrap_or_default().to_owned();

    let (status, run, _) = client
        .run("echo native; id -u; cat /proc/self/uid_map", true)
        .await;
    assert_eq!(status, 200, "{run}\n{}", stack.logs());
    assert_eq!(run["status"], "completed", "{run}\n{}", stack.logs());
    let stdout = run["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.starts_with("native\n65534\n") && stdout.contains("100000"),
        "{run}"
    );

    // A program past its timeout is killed by the worker.
    let (status, slow) = send(
        client
            .http
            .post(client.url("/runs?wait=true"))
            .bearer_auth(&client.token)
            .json(&json!({ "language": "bash", "code": "echo sleeping; sleep 60", "timeout_seconds": 2 })),
    )
    .await;
    assert_eq!(status, 200, "{slow}");
    assert_eq!(slow["status"], "timeout", "{slow}");
    assert_eq!(slow["stdout"], "sleeping\n", "{slow}");

    // The worker's container has no Docker socket, and no more capabilities than named.
    let worker = stack.container("worker-native", 1);
    let mounts = docker(&["inspect", "--format", "{{json .Mounts}}", &worker]);
    assert!(!mounts.contains("docker.sock"), "{mounts}");
    let socket = std::process::Command::new("docker")
        .args(["exec", &worker, "test", "-e", "/var/run/docker.sock"])
        .status()
        .expect("docker exec");
    assert!(
        !socket.success(),
        "the worker's container has a Docker socket"
    );
    let privileged = docker(&["inspect", "--format", "{{.HostConfig.Privileged}}", &worker]);
    assert_eq!(privileged.trim(), "false");

    stack.run(&["down", "-v", "-t", "10"]);
    let left = voidrunner_testkit::native_leftovers(Path::new("/nonexistent"), &worker_id);
    assert!(
        left.is_empty(),
        "the native worker left sandboxes behind: {left:#?}"
    );
    println!(
        "compose native profile: a run through a native worker {:.1}s after up",
        up.elapsed().as_secs_f64()
    );
}
