//! A result or `started` event forged by anyone who reaches NATS never becomes an execution's
//! outcome: only messages with the dispatch's token move an execution on, and a forged result
//! cannot take the real one's place in the dedup window either.

use async_nats::jetstream;
use serde_json::{json, Value};
use voidrunner_shared::headers;
use voidrunner_shared::Namespace;
use voidrunner_testkit::processes::{free_port, Processes};
use voidrunner_testkit::{
    empty_database, login_new_user, send, spawn_app, start_nats, test_env, unique_prefix,
    wait_final, Backend, FINAL_STATE_TIMEOUT,
};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");
/// Long enough for the forgeries to land while the real run is under way.
const PROGRAM: &str = "import time\nprint('started', flush=True)\ntime.sleep(3)\nprint('real')\n";

/// What an attacker on the bus publishes: a `started` event and a completed result claiming
/// `FORGED` output, without the dispatch's token, under the message ids a worker would use.
async fn forge(jetstream: &jetstream::Context, namespace: &Namespace, execution_id: uuid::Uuid) {
    let now = chrono::Utc::now();
    let started = json!({
        "schema": "voidrunner.started.v1",
        "execution_id": execution_id,
        "worker_id": "attacker",
        "attempt": 1,
        "started_at": now,
    });
    let result = json!({
        "schema": "voidrunner.result.v1",
        "execution_id": execution_id,
        "status": "completed",
        "exit_code": 0,
        "stdout": { "text": "FORGED\n", "encoding": "utf-8" },
        "stderr": { "text": "", "encoding": "utf-8" },
        "output_truncated": false,
        "oom_killed": false,
        "error": null,
        "worker_id": "attacker",
        "attempt": 1,
        "started_at": now,
        "finished_at": now,
    });
    let forgeries = [
        (
            namespace.event_subject(
                execution_id,
                voidrunner_shared::subjects::EventKind::Started,
            ),
            format!("started-{execution_id}-1"),
            started,
        ),
        (
            namespace.result_subject(execution_id),
            format!("result-{execution_id}"),
            result,
        ),
    ];
    for (subject, message_id, payload) in forgeries {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(headers::MESSAGE_ID, message_id.as_str());
        jetstream
            .publish_with_headers(subject, headers, payload.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

/// Submits the program, waits until it runs, forges its outcome, and returns how it ended.
async fn forged_while_running(
    http: &reqwest::Client,
    base_url: &str,
    jetstream: &jetstream::Context,
    namespace: &Namespace,
) -> Value {
    let token = login_new_user(http, base_url).await;
    let (status, queued) = send(
        http.post(format!("{base_url}/api/v1/runs"))
            .bearer_auth(&token)
            .json(&json!({ "language": "python", "code": PROGRAM })),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["id"].as_str().expect("id").to_owned();
    let execution_id: uuid::Uuid = id.parse().expect("uuid");
    // Running: the real worker announced it.
    let deadline = tokio::time::Instant::now() + FINAL_STATE_TIMEOUT;
    loop {
        let (_, execution) = send(
            http.get(format!("{base_url}/api/v1/executions/{id}"))
                .bearer_auth(&token),
        )
        .await;
        if execution["status"] == "running" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline && execution["status"] == "queued",
            "{execution}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    forge(jetstream, namespace, execution_id).await;
    wait_final(http, base_url, &token, &id).await
}

fn assert_real(done: &Value, worker_id: &str) {
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "started\nreal\n", "{done}");
    assert_eq!(done["worker_id"], worker_id, "{done}");
}

#[tokio::test]
async fn a_forged_result_does_not_become_the_outcome_in_embedded_mode() {
    let app = spawn_app(Backend::Sqlite).await;
    let done = forged_while_running(
        &app.http,
        &app.base_url,
        &app.jetstream().await,
        &app.namespace(),
    )
    .await;
    assert_real(&done, &app.worker_id);
    app.stop().await;
}

#[tokio::test]
async fn a_forged_result_does_not_become_the_outcome_in_distributed_mode() {
    let nats = start_nats().await;
    let (database_url, _dir) = empty_database(Backend::Postgres).await;
    let prefix = unique_prefix();
    let addr = format!("127.0.0.1:{}", free_port());
    let vars = test_env(
        nats.url(),
        &database_url,
        &prefix,
        &[("VOIDRUNNER_API_ADDR", &addr)],
    );
    let mut processes = Processes::new(BIN, vars);
    processes.run_to_completion("migrate").await;
    processes.start("api", "api", &[]);
    processes.start("worker", "worker", &[("VOIDRUNNER_WORKER_ID", "honest")]);
    let http = reqwest::Client::new();
    let base_url = format!("http://{addr}");
    processes.wait_ready("api", &http, &base_url).await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let namespace = Namespace::new(&prefix).expect("prefix");
    let done = forged_while_running(&http, &base_url, &jetstream::new(client), &namespace).await;
    assert_real(&done, "honest");
}
