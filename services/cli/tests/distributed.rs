//! Distributed mode as separate OS processes: one api and two workers against one nats-server
//! and PostgreSQL.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use tokio::process::{Child, Command};
use voidrunner_api::entity::execution::{self, Status};
use voidrunner_shared::Namespace;
use voidrunner_testkit::{
    empty_database, login_new_user, send, start_execution, start_nats, test_env, unique_prefix,
    wait_final, Backend,
};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");
const BURST: usize = 10;

fn spawn(command: &str, vars: &[(String, String)], extra: &[(&str, &str)], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(BIN)
        .arg(command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn voidrunner")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

async fn wait_ready(http: &reqwest::Client, base_url: &str, api: &mut Child) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http.get(format!("{base_url}/ready")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(
            api.try_wait().expect("api status").is_none(),
            "api exited during start-up"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "api not ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn logs(dir: &Path) -> String {
    ["api-1.log", "api-2.log", "worker-1.log", "worker-2.log"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            format!(
                "--- {name}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn two_worker_processes_share_a_burst_and_survive_the_api_dying_mid_burst() {
    let nats = start_nats().await;
    let (database_url, _dir) = empty_database(Backend::Postgres).await;
    let prefix = unique_prefix();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let vars = test_env(
        nats.url(),
        &database_url,
        &prefix,
        &[("VOIDRUNNER_API_ADDR", &addr), ("RUST_LOG", "info")],
    );
    let logs_dir = tempfile::TempDir::new().expect("log dir");
    let log = |name: &str| logs_dir.path().join(name);

    let migrate = Command::new(BIN)
        .arg("migrate")
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .expect("run migrate");
    assert!(
        migrate.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let mut api = spawn("api", &vars, &[], &log("api-1.log"));
    let mut workers = [
        spawn(
            "worker",
            &vars,
            &[
                ("VOIDRUNNER_WORKER_ID", "dist-w1"),
                ("VOIDRUNNER_WORKER_SLOTS", "2"),
            ],
            &log("worker-1.log"),
        ),
        spawn(
            "worker",
            &vars,
            &[
                ("VOIDRUNNER_WORKER_ID", "dist-w2"),
                ("VOIDRUNNER_WORKER_SLOTS", "2"),
            ],
            &log("worker-2.log"),
        ),
    ];
    let http = reqwest::Client::new();
    let base_url = format!("http://{addr}");
    wait_ready(&http, &base_url, &mut api).await;

    let token = login_new_user(&http, &base_url).await;
    let task = json!({
        "name": "burst",
        "script_type": "python",
        "script_content": "import time\ntime.sleep(0.5)\nprint('done')\n",
    });
    let (status, task) = send(
        http.post(format!("{base_url}/api/v1/tasks"))
            .bearer_auth(&token)
            .json(&task),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let task_id = task["id"].as_str().expect("task id").to_owned();

    let mut accepted = Vec::new();
    for _ in 0..BURST {
        let execution = start_execution(&http, &base_url, &token, &task_id).await;
        accepted.push(execution["id"].as_str().expect("id").to_owned());
    }
    // The api dies while the workers are in the middle of the burst.
    api.kill().await.expect("kill api");
    let refused = http
        .post(format!("{base_url}/api/v1/tasks/{task_id}/executions"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(refused.is_err(), "the killed api still answered");

    // Without any api, the workers finish the burst: every result lands on its reply subject.
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let namespace = Namespace::new(&prefix).expect("prefix");
    let mut results = js
        .get_stream(namespace.results_stream())
        .await
        .expect("results stream");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while results.info().await.expect("stream info").state.messages < BURST as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers did not finish the burst\n{}",
            logs(logs_dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in &mut workers {
        assert!(
            worker.try_wait().expect("worker status").is_none(),
            "a worker stopped when the api died\n{}",
            logs(logs_dir.path())
        );
    }

    // A new api records everything the fleet did while it was away.
    let mut api = spawn("api", &vars, &[], &log("api-2.log"));
    wait_ready(&http, &base_url, &mut api).await;
    let mut ran_on = HashSet::new();
    for id in &accepted {
        let execution = wait_final(&http, &base_url, &token, id).await;
        assert_eq!(
            execution["status"],
            "completed",
            "{execution}\n{}",
            logs(logs_dir.path())
        );
        assert_eq!(execution["stdout"], "done\n");
        ran_on.insert(
            execution["worker_id"]
                .as_str()
                .expect("worker id")
                .to_owned(),
        );
    }
    assert_eq!(
        ran_on,
        HashSet::from(["dist-w1".to_owned(), "dist-w2".to_owned()]),
        "the burst was not shared between both workers"
    );

    // Nothing is left unfinished in the database either.
    let db = voidrunner_api::db::connect(&database_url)
        .await
        .expect("connect db");
    let unfinished = execution::Entity::find()
        .filter(execution::Column::Status.is_in(Status::UNFINISHED))
        .all(&db)
        .await
        .expect("query");
    assert!(
        unfinished.is_empty(),
        "unfinished executions: {unfinished:?}"
    );

    api.kill().await.expect("stop api");
    for worker in &mut workers {
        worker.kill().await.expect("stop worker");
    }
}
