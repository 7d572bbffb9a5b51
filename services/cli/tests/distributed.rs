//! Distributed mode as separate OS processes: one api and two workers against one nats-server
//! and PostgreSQL.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use voidrunner_api::entity::execution::{self, Status};
use voidrunner_shared::Namespace;
use voidrunner_testkit::processes::{free_port, Processes};
use voidrunner_testkit::{
    empty_database, login_new_user, send, start_execution, start_nats, test_env, unique_prefix,
    wait_final, Backend,
};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");
const BURST: usize = 10;

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
    let mut processes = Processes::new(BIN, vars);
    processes.run_to_completion("migrate").await;
    processes.start("api-1", "api", &[]);
    for id in ["dist-w1", "dist-w2"] {
        processes.start(
            id,
            "worker",
            &[
                ("VOIDRUNNER_WORKER_ID", id),
                ("VOIDRUNNER_WORKER_SLOTS", "2"),
            ],
        );
    }
    let http = reqwest::Client::new();
    let base_url = format!("http://{addr}");
    processes.wait_ready("api-1", &http, &base_url).await;

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
    processes.kill("api-1").await;
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
            processes.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Neither worker stopped when the api died.
    processes.assert_running("dist-w1");
    processes.assert_running("dist-w2");

    // A new api records everything the fleet did while it was away.
    processes.start("api-2", "api", &[]);
    processes.wait_ready("api-2", &http, &base_url).await;
    let mut ran_on = HashSet::new();
    for id in &accepted {
        let execution = wait_final(&http, &base_url, &token, id).await;
        assert_eq!(
            execution["status"],
            "completed",
            "{execution}\n{}",
            processes.logs()
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
}
