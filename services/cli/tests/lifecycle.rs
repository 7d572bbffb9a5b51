//! The lifecycle's single owner: whichever path finishes an execution (the recorder, the
//! `wait=true` waiter, a cancellation), its follow-ups happen, and races end in one outcome.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{json, Value};
use voidrunner_shared::events::{Captured, Dispatch, ResultV1, StartedV1};
use voidrunner_shared::{report, Status};
use voidrunner_testkit::{send, spawn_api_only, spawn_app_with, Backend, TestApp};

#[tokio::test]
async fn a_run_that_waited_for_its_result_leaves_its_task_with_the_final_status() {
    let app = spawn_app_with(Backend::Postgres, &[]).await;
    let token = app.login_new_user().await;
    let (status, done) = app
        .post_run(
            &token,
            "?wait=true",
            json!({ "language": "python", "code": "print(1)" }),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed");
    let task_id = done["task_id"].as_str().expect("task id");
    let (status, task) = send(
        app.http
            .get(app.url(&format!("/tasks/{task_id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["status"], "completed", "{task}");
    app.stop().await;
}

#[tokio::test]
async fn held_runs_are_admitted_as_each_one_ends_not_at_the_next_sweep() {
    // One execution at a time per user, and a sweeper that would not come round for an hour:
    // only the follow-ups of each finished execution can admit the next one.
    let app = spawn_app_with(
        Backend::Postgres,
        &[
            ("VOIDRUNNER_MAX_ACTIVE_PER_USER", "1"),
            ("VOIDRUNNER_OUTBOX_SWEEP_SECONDS", "3600"),
        ],
    )
    .await;
    let token = app.login_new_user().await;
    let (status, first) = app
        .post_run(
            &token,
            "?wait=true",
            json!({ "language": "bash", "code": "echo first" }),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let mut queued = Vec::new();
    for n in 0..3 {
        let (status, execution) = app
            .post_run(
                &token,
                "",
                json!({ "language": "bash", "code": format!("echo {n}") }),
            )
            .await;
        assert_eq!(status, 202, "{execution}");
        queued.push(execution["id"].as_str().expect("id").to_owned());
    }
    let mut previous_finish: Option<chrono::DateTime<Utc>> = None;
    for (n, id) in queued.iter().enumerate() {
        let done = app.wait_final(&token, id).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["stdout"], format!("{n}\n"));
        let started: chrono::DateTime<Utc> =
            serde_json::from_value(done["started_at"].clone()).expect("started_at");
        if let Some(previous) = previous_finish {
            assert!(
                started >= previous,
                "run {n} started before the one ahead of it had finished"
            );
        }
        previous_finish =
            Some(serde_json::from_value(done["finished_at"].clone()).expect("finished_at"));
    }
    app.stop().await;
}

/// A receiver that counts deliveries and keeps their bodies.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Arc<Mutex<Vec<Value>>>>,
                 axum::Json(body): axum::Json<Value>| async move {
                    seen.lock().expect("lock").push(body);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Submits an execution of a fresh task with a callback; returns its id.
async fn submit_with_callback(app: &TestApp, token: &str, url: &str) -> String {
    let task = app
        .create_task_ok(
            token,
            &json!({ "name": "race", "script_type": "bash", "script_content": "echo hi" }),
        )
        .await;
    let task_id = task["id"].as_str().expect("task id");
    let (status, execution) = send(
        app.http
            .post(app.url(&format!("/tasks/{task_id}/executions")))
            .bearer_auth(token)
            .json(&json!({ "callback_url": url })),
    )
    .await;
    assert_eq!(status, 202, "{execution}");
    execution["id"].as_str().expect("id").to_owned()
}

/// The token the execution's dispatch carries to the workers, as a worker would read it.
async fn dispatch_token(app: &TestApp, execution_id: uuid::Uuid) -> Option<String> {
    let namespace = app.namespace();
    let tasks = app
        .jetstream()
        .await
        .get_stream(namespace.tasks_stream())
        .await
        .expect("tasks stream");
    let subject = namespace.task_subject(
        voidrunner_shared::Lane::Normal,
        "bash"
            .parse::<voidrunner_shared::Language>()
            .expect("in the catalog"),
    );
    let message = tasks
        .direct_get_last_for_subject(subject)
        .await
        .expect("the dispatch is on its lane");
    let Ok(Dispatch::V1(dispatch)) = serde_json::from_slice::<Dispatch>(&message.payload) else {
        panic!("not a dispatch");
    };
    assert_eq!(
        dispatch.execution_id, execution_id,
        "the latest dispatch is this one"
    );
    dispatch.dispatch_token
}

fn result_of(
    execution_id: uuid::Uuid,
    attempt: u32,
    status: Status,
    stdout: &str,
    dispatch_token: Option<String>,
) -> ResultV1 {
    ResultV1 {
        dispatch_token,
        status,
        exit_code: Some(if status == Status::Completed { 0 } else { 1 }),
        stdout: Captured::from_bytes(stdout.as_bytes()),
        worker_id: format!("worker-{attempt}"),
        runs: 1,
        error: None,
        started_at: Some(Utc::now()),
        ..ResultV1::fleet_error(execution_id, "", attempt, String::new())
    }
}

/// Waits until the execution's webhook is no longer pending and the recorder has taken every
/// result on the bus; returns the execution then.
async fn settled(app: &TestApp, token: &str, id: &str) -> Value {
    let namespace = app.namespace();
    let jetstream = app.jetstream().await;
    let deadline = tokio::time::Instant::now() + voidrunner_testkit::FINAL_STATE_TIMEOUT;
    loop {
        let execution = app.execution(token, id).await;
        let mut recorder = jetstream
            .get_stream(namespace.results_stream())
            .await
            .expect("results stream")
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                namespace.recorder_consumer(),
            )
            .await
            .expect("recorder consumer");
        let info = recorder.info().await.expect("consumer info");
        if execution["webhook_state"] != "pending"
            && info.num_pending == 0
            && info.num_ack_pending == 0
        {
            return execution;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution {id} did not settle: {execution}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_cancel_racing_a_result_ends_in_one_final_state_with_one_webhook() {
    let app = spawn_api_only(
        Backend::Sqlite,
        &[("VOIDRUNNER_WEBHOOK_ALLOW_PRIVATE", "true")],
    )
    .await;
    let token = app.login_new_user().await;
    let jetstream = app.jetstream().await;
    let namespace = app.namespace();
    let mut outcomes = Vec::new();
    // Side by side, and each one first: the outcome must be one, whichever wins.
    for order in ["together", "cancel first", "result first", "together"] {
        let (url, seen) = receiver().await;
        let id = submit_with_callback(&app, &token, &url).await;
        let execution_id: uuid::Uuid = id.parse().expect("uuid");
        let task_id: uuid::Uuid = app.execution(&token, &id).await["task_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("task id");
        let capability = dispatch_token(&app, execution_id).await;
        let result = result_of(execution_id, 1, Status::Completed, "ran\n", capability);
        let publish = report::publish_result(&jetstream, &namespace, task_id, &result);
        let cancel = send(
            app.http
                .delete(app.url(&format!("/executions/{id}")))
                .bearer_auth(&token),
        );
        let (published, cancelled) = match order {
            "cancel first" => {
                let cancelled = cancel.await;
                (publish.await, cancelled)
            }
            "result first" => {
                let published = publish.await;
                (published, cancel.await)
            }
            _ => tokio::join!(publish, cancel),
        };
        published.expect("result published");
        // The cancellation may find the execution finished already: that is the race.
        assert!(matches!(cancelled.0, 202 | 409), "{cancelled:?}");

        let execution = settled(&app, &token, &id).await;
        let status = execution["status"].as_str().expect("status").to_owned();
        assert!(
            status == "completed" || status == "cancelled",
            "{execution}"
        );
        let deliveries = seen.lock().expect("lock").clone();
        assert_eq!(deliveries.len(), 1, "one webhook: {deliveries:?}");
        assert_eq!(deliveries[0]["execution"]["status"], status.as_str());
        // One result on the bus as well: the api announces a cancellation under the same
        // message id a worker's result has.
        let on_bus = jetstream
            .get_stream(namespace.results_stream())
            .await
            .expect("results stream")
            .direct_get_last_for_subject(namespace.result_subject(execution_id))
            .await
            .expect("a result on the reply subject");
        let on_bus: Value = serde_json::from_slice(&on_bus.payload).expect("json");
        assert_eq!(on_bus["status"], status.as_str(), "{on_bus}");
        outcomes.push(format!("{order}: {status}"));
    }
    println!("cancel vs result outcomes: {outcomes:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_result_racing_a_retry_ends_in_one_final_state_with_one_webhook() {
    let app = spawn_api_only(
        Backend::Postgres,
        &[("VOIDRUNNER_WEBHOOK_ALLOW_PRIVATE", "true")],
    )
    .await;
    let token = app.login_new_user().await;
    let (url, seen) = receiver().await;
    let id = submit_with_callback(&app, &token, &url).await;
    let execution_id: uuid::Uuid = id.parse().expect("uuid");
    let capability = dispatch_token(&app, execution_id).await;
    let started = |attempt: u32| StartedV1 {
        execution_id,
        worker_id: format!("worker-{attempt}"),
        attempt,
        started_at: Utc::now(),
        dispatch_token: capability.clone(),
    };
    app.executions
        .start(&started(1))
        .await
        .expect("first delivery starts");
    // The first delivery's result arrives while the redelivery starts and reports its own.
    let first = result_of(
        execution_id,
        1,
        Status::Failed,
        "first\n",
        capability.clone(),
    );
    let retry = result_of(
        execution_id,
        2,
        Status::Completed,
        "retry\n",
        capability.clone(),
    );
    let redelivered = started(2);
    let (first_applied, retry_started, retry_applied) = tokio::join!(
        app.executions.finish(&first),
        app.executions.start(&redelivered),
        app.executions.finish(&retry),
    );
    let first_applied = first_applied.expect("first result handled");
    let retry_applied = retry_applied.expect("retry result handled");
    retry_started.expect("retry start handled");
    assert_ne!(
        first_applied.is_some(),
        retry_applied.is_some(),
        "exactly one result finishes the execution"
    );
    let winner = if first_applied.is_some() {
        first
    } else {
        retry
    };

    let execution = settled(&app, &token, &id).await;
    assert_eq!(execution["status"], winner.status.as_str(), "{execution}");
    assert_eq!(execution["stdout"], winner.stdout.text, "{execution}");
    assert_eq!(execution["attempt"], winner.attempt, "{execution}");
    let deliveries = seen.lock().expect("lock").clone();
    assert_eq!(deliveries.len(), 1, "one webhook: {deliveries:?}");
    assert_eq!(deliveries[0]["execution"]["status"], winner.status.as_str());
    app.stop().await;
}
