//! Cancelling executions: a queued one never runs, a running one is killed within moments.

use std::time::{Duration, Instant};

use serde_json::json;
use voidrunner_testkit::{
    execution_containers_gone, send, spawn_api_only, spawn_app_with, wait_final, Backend, TestApp,
};

async fn cancel(app: &TestApp, token: &str, execution_id: &str) -> (u16, serde_json::Value) {
    send(
        app.http
            .delete(app.url(&format!("/executions/{execution_id}")))
            .bearer_auth(token),
    )
    .await
}

#[tokio::test]
async fn a_running_execution_is_killed_and_ends_cancelled() {
    // No warm pool, so that the sandbox carries the execution's label.
    let app = spawn_app_with(Backend::Sqlite, &[("VOIDRUNNER_POOL_SIZES", "bash=0")]).await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "long", "script_type": "bash", "script_content": "echo started\nsleep 120\n", "timeout_seconds": 300 }),
        )
        .await;
    // Cancelled once it has printed, as its live output events show.
    let client = async_nats::connect(app.nats.url()).await.expect("connect");
    let mut outputs = client
        .subscribe(format!("{}.events.*.output", app.prefix))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let id = &app.start(&token, &task).await;
    let first_output = tokio::time::timeout(
        Duration::from_secs(60),
        futures::StreamExt::next(&mut outputs),
    )
    .await
    .expect("output within a minute")
    .expect("an output event");
    assert!(first_output.subject.as_str().contains(id));

    let requested = Instant::now();
    let requested_at = chrono::Utc::now();
    let (status, body) = cancel(&app, &token, id).await;
    assert_eq!(status, 202, "{body}");
    let result = wait_final(&app.http, &app.base_url, &token, id).await;
    assert_eq!(result["status"], "cancelled", "{result}");
    // The worker stopped the run (its `finished_at`) within a second of the request.
    let finished_at: chrono::DateTime<chrono::Utc> = result["finished_at"]
        .as_str()
        .expect("finished_at")
        .parse()
        .expect("timestamp");
    let kill_latency = finished_at - requested_at;
    println!(
        "cancel: run stopped {} ms after DELETE",
        kill_latency.num_milliseconds()
    );
    assert!(
        kill_latency < chrono::TimeDelta::seconds(1),
        "the run was stopped {kill_latency} after the request"
    );
    assert!(
        requested.elapsed() < Duration::from_secs(10),
        "took {:?}",
        requested.elapsed()
    );
    assert_eq!(result["stdout"], "started\n", "{result}");
    assert!(
        execution_containers_gone(id).await,
        "the cancelled sandbox is still there"
    );

    let (status, body) = cancel(&app, &token, id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    app.stop().await;
}

#[tokio::test]
async fn a_queued_execution_is_taken_off_its_lane_and_never_runs() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    let token = app.login_new_user().await;
    let stranger = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "t", "script_type": "python", "script_content": "print(1)" }),
        )
        .await;
    let id = &app.start(&token, &task).await;

    let (status, body) = cancel(&app, &stranger, id).await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = cancel(&app, &token, id).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(
        app.messages_in(&app.namespace().tasks_stream()).await,
        0,
        "the dispatch is still queued"
    );
    app.stop().await;
}
