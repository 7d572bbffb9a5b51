//! Delivery guarantees with the services in-process: idempotent submission, the per-user limit,
//! retries the task asks for, the DLQ and its re-runs, cancellation by DELETE, 503s while NATS
//! is down, and a worker's graceful shutdown.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use voidrunner_api::entity::execution;
use voidrunner_testkit::{send, spawn_api_only, spawn_app, spawn_app_with, Backend, TestApp};

async fn submit(
    app: &TestApp,
    token: &str,
    task: &Value,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let task_id = task["id"].as_str().expect("task id");
    let mut request = app
        .http
        .post(app.url(&format!("/tasks/{task_id}/executions")))
        .bearer_auth(token);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

async fn executions_of_task(app: &TestApp, task: &Value) -> u64 {
    let task_id: uuid::Uuid = task["id"].as_str().expect("id").parse().expect("uuid");
    execution::Entity::find()
        .filter(execution::Column::TaskId.eq(task_id))
        .count(&app.db.connection)
        .await
        .expect("count")
}

fn time(execution: &Value, field: &str) -> DateTime<Utc> {
    execution[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing: {execution}"))
        .parse()
        .expect("timestamp")
}

#[tokio::test]
async fn an_idempotency_key_gives_one_execution_however_often_and_concurrently_it_is_sent() {
    let app = spawn_app(Backend::Postgres).await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "once", "script_type": "bash", "script_content": "echo once" }),
        )
        .await;

    let key = uuid::Uuid::new_v4().to_string();
    let attempts =
        futures::future::join_all((0..8).map(|_| submit(&app, &token, &task, Some(&key), None)))
            .await;
    let mut ids = std::collections::HashSet::new();
    let mut fresh = 0;
    for (status, headers, body) in &attempts {
        assert_eq!(*status, 202, "{body}");
        ids.insert(body["id"].as_str().expect("id").to_owned());
        if headers.get("idempotent-replayed").is_none() {
            fresh += 1;
        }
        assert_eq!(body["idempotency_key"], key.as_str());
    }
    assert_eq!(ids.len(), 1, "one execution for one key: {ids:?}");
    assert!(fresh <= 1, "{fresh} responses claim to have created it");
    assert_eq!(executions_of_task(&app, &task).await, 1);

    // The same key for another request is refused and changes nothing.
    let (status, _, body) = submit(
        &app,
        &token,
        &task,
        Some(&key),
        Some(json!({ "stdin": "other" })),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    let (status, _, body) = submit(&app, &token, &task, Some(&"k".repeat(256)), None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_idempotency_key");
    assert_eq!(executions_of_task(&app, &task).await, 1);

    // Keys belong to their user: another user's identical key is another execution.
    let other = app.login_new_user().await;
    let other_task = app
        .create_task_ok(
            &other,
            &json!({ "name": "once", "script_type": "bash", "script_content": "echo once" }),
        )
        .await;
    let (status, _, body) = submit(&app, &other, &other_task, Some(&key), None).await;
    assert_eq!(status, 202, "{body}");
    assert!(!ids.contains(body["id"].as_str().expect("id")));

    let id = ids.into_iter().next().expect("one id");
    let done = app.wait_final(&token, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "once\n");
    app.stop().await;
}

#[tokio::test]
async fn a_user_never_runs_more_than_the_limit_at_once_and_others_are_not_held_behind() {
    let app = spawn_app_with(
        Backend::Postgres,
        &[
            ("VOIDRUNNER_MAX_ACTIVE_PER_USER", "2"),
            ("VOIDRUNNER_WORKER_SLOTS", "4"),
        ],
    )
    .await;
    let busy = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &busy,
            &json!({ "name": "slow", "script_type": "bash", "script_content": "sleep 1; echo slow" }),
        )
        .await;
    let mut ids = Vec::new();
    let mut admitted_at_once = 0;
    for _ in 0..6 {
        let (status, _, body) = submit(&app, &busy, &task, None, None).await;
        assert_eq!(status, 202, "{body}");
        if body["admitted"] == true {
            admitted_at_once += 1;
        }
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    assert!(
        admitted_at_once <= 2,
        "{admitted_at_once} admitted at submission"
    );

    // Another user's execution is not queued behind the busy user's backlog.
    let other = app.login_new_user().await;
    let quick = app
        .create_task_ok(
            &other,
            &json!({ "name": "quick", "script_type": "bash", "script_content": "echo quick" }),
        )
        .await;
    let quick_id = app.start(&other, &quick).await;

    let mut runs = Vec::new();
    for id in &ids {
        let done = app.wait_final(&busy, id).await;
        assert_eq!(done["status"], "completed", "{done}");
        runs.push((time(&done, "started_at"), time(&done, "finished_at")));
    }
    let quick_done = app.wait_final(&other, &quick_id).await;
    assert_eq!(quick_done["status"], "completed", "{quick_done}");
    let last_finish = runs.iter().map(|(_, end)| *end).max().expect("runs");
    assert!(
        time(&quick_done, "finished_at") < last_finish,
        "the other user's execution waited for the whole backlog"
    );

    // At no instant did more than two of the busy user's executions run.
    let most_at_once = runs
        .iter()
        .map(|(start, _)| runs.iter().filter(|(s, e)| s <= start && start < e).count())
        .max()
        .expect("runs");
    assert!(most_at_once <= 2, "{most_at_once} ran at once: {runs:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_failing_program_is_retried_as_its_task_asks_and_no_more() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;

    let failing = app
        .create_task_ok(
            &token,
            &json!({ "name": "flaky", "script_type": "bash", "script_content": "echo try; exit 3",
                     "max_retries": 2, "retry_backoff_seconds": 1 }),
        )
        .await;
    let id = app.start(&token, &failing).await;
    let done = app.wait_final(&token, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["exit_code"], 3);
    assert_eq!(done["runs"], 3, "{done}");
    assert_eq!(done["stdout"], "try\n");
    // Two waits before the retries: 1 s, then 2 s.
    let elapsed = time(&done, "finished_at") - time(&done, "created_at");
    assert!(
        elapsed >= chrono::TimeDelta::seconds(3),
        "retries did not back off: {elapsed}"
    );

    let slow = app
        .create_task_ok(
            &token,
            &json!({ "name": "slow", "script_type": "bash", "script_content": "sleep 30",
                     "timeout_seconds": 1, "max_retries": 1, "retry_backoff_seconds": 1 }),
        )
        .await;
    let id = app.start(&token, &slow).await;
    let done = app.wait_final(&token, &id).await;
    assert_eq!(done["status"], "timeout", "{done}");
    assert_eq!(done["runs"], 2, "{done}");

    let fine = app
        .create_task_ok(
            &token,
            &json!({ "name": "fine", "script_type": "bash", "script_content": "echo fine",
                     "max_retries": 3 }),
        )
        .await;
    let id = app.start(&token, &fine).await;
    let done = app.wait_final(&token, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["runs"], 1, "a success is not retried: {done}");

    let (status, body) = app
        .create_task(
            &token,
            &json!({ "name": "x", "script_type": "bash", "script_content": "true", "max_retries": 11 }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["field"], "max_retries");
    app.stop().await;
}

#[tokio::test]
async fn an_execution_the_fleet_cannot_run_is_dead_lettered_and_can_be_rerun_once() {
    let app = spawn_api_only(
        Backend::Postgres,
        &[
            ("VOIDRUNNER_NATS_MAX_DELIVER", "2"),
            ("VOIDRUNNER_POOL_SIZES", "bash=0"),
        ],
    )
    .await;
    // This worker's bash image goes away once it has started: the fleet, not the program, fails.
    let image = voidrunner_testkit::VanishingImage::of(
        &"bash"
            .parse::<voidrunner_shared::Language>()
            .expect("in the catalog")
            .default_image(),
    )
    .await;
    let broken = app
        .spawn_worker(&[("VOIDRUNNER_IMAGES", &format!("bash={}", image.tag))])
        .await;
    image.vanish().await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "dlq", "script_type": "bash", "script_content": "echo recovered" }),
        )
        .await;
    let dead_id = app.start(&token, &task).await;
    let dead = app.wait_final(&token, &dead_id).await;
    assert_eq!(dead["status"], "error", "{dead}");
    assert_eq!(dead["attempt"], 2, "{dead}");
    assert!(dead["dead_lettered_at"].is_string(), "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .unwrap_or_default()
            .contains("gave up after 2"),
        "{dead}"
    );
    assert_eq!(
        app.messages_in(&app.namespace().dead_letter_stream()).await,
        1
    );
    broken.stop().await;

    let (status, listed) = send(app.http.get(app.url("/dead-letters")).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], dead_id.as_str());
    let stranger = app.login_new_user().await;
    let (_, none) = send(
        app.http
            .get(app.url("/dead-letters"))
            .bearer_auth(&stranger),
    )
    .await;
    assert_eq!(none, json!([]));
    let rerun_url = app.url(&format!("/dead-letters/{dead_id}/rerun"));
    let (status, body) = send(app.http.post(&rerun_url).bearer_auth(&stranger)).await;
    assert_eq!(status, 404, "{body}");

    // With a healthy worker, the re-run completes; a second re-run is refused.
    let healthy = app.spawn_worker(&[]).await;
    let (status, rerun) = send(app.http.post(&rerun_url).bearer_auth(&token)).await;
    assert_eq!(status, 202, "{rerun}");
    assert_eq!(rerun["rerun_of"], dead_id.as_str());
    let (status, body) = send(app.http.post(&rerun_url).bearer_auth(&token)).await;
    assert_eq!(status, 409, "{body}");
    let done = app
        .wait_final(&token, rerun["id"].as_str().expect("id"))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "recovered\n");
    // Only a dead letter can be re-run.
    let (status, body) = send(
        app.http
            .post(app.url(&format!(
                "/dead-letters/{}/rerun",
                done["id"].as_str().expect("id")
            )))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    healthy.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn delete_cancels_held_and_running_executions_and_a_finished_one_is_a_conflict() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("VOIDRUNNER_MAX_ACTIVE_PER_USER", "1"),
            ("VOIDRUNNER_POOL_SIZES", "bash=0"),
        ],
    )
    .await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "long", "script_type": "bash", "script_content": "echo up; sleep 120",
                     "timeout_seconds": 300 }),
        )
        .await;
    let running = app.start(&token, &task).await;
    let held = app.start(&token, &task).await;
    let held_now = app.execution(&token, &held).await;
    assert_eq!(held_now["admitted"], false, "{held_now}");

    let delete = |id: String| {
        let request = app
            .http
            .delete(app.url(&format!("/executions/{id}")))
            .bearer_auth(&token);
        async move { send(request).await }
    };
    // A held execution never reaches a lane: cancelled on the spot.
    let (status, body) = delete(held.clone()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");

    let execution = app.wait_running(&token, &running).await;
    assert_eq!(execution["status"], "running", "{execution}");
    let asked = std::time::Instant::now();
    let (status, body) = delete(running.clone()).await;
    assert_eq!(status, 202, "{body}");
    let done = app.wait_final(&token, &running).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );

    let (status, body) = delete(running.clone()).await;
    assert_eq!(status, 409, "{body}");
    let held_done = app.execution(&token, &held).await;
    assert_eq!(held_done["started_at"], Value::Null, "{held_done}");
    app.stop().await;
}

#[tokio::test]
async fn while_nats_is_down_submissions_get_a_503_and_nothing_is_written() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "t", "script_type": "bash", "script_content": "echo back" }),
        )
        .await;

    app.nats.kill().await;
    // The api notices the lost connection within moments; until then a submission still
    // commits and is swept out later, which is also correct.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let before = loop {
        let before = executions_of_task(&app, &task).await;
        let (status, headers, body) = submit(&app, &token, &task, None, None).await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
            assert!(headers.get("retry-after").is_some(), "no Retry-After");
            break before;
        }
        assert_eq!(status, 202, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "never answered 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        executions_of_task(&app, &task).await,
        before,
        "a refused submission left a row"
    );

    app.nats.start_again().await;
    // The services reconnect on their own; submissions are accepted and run again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let id = loop {
        let (status, _, body) = submit(&app, &token, &task, None, None).await;
        if status == 202 {
            break body["id"].as_str().expect("id").to_owned();
        }
        assert_eq!(status, 503, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "no reconnection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let done = app.wait_final(&token, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "back\n");
    app.stop().await;
}

#[tokio::test]
async fn a_stopping_worker_finishes_within_its_grace_and_hands_back_what_is_left() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    let token = app.login_new_user().await;

    let patient = app
        .spawn_worker(&[("VOIDRUNNER_SHUTDOWN_GRACE_SECONDS", "30")])
        .await;
    let short = app
        .create_task_ok(
            &token,
            &json!({ "name": "short", "script_type": "bash", "script_content": "sleep 2; echo finished" }),
        )
        .await;
    let id = app.start(&token, &short).await;
    app.wait_running(&token, &id).await;
    patient.request_stop();
    let done = app.wait_final(&token, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "finished\n");
    assert_eq!(done["worker_id"], patient.id.as_str());
    assert_eq!(done["attempt"], 1);
    patient.wait().await;

    let hasty = app
        .spawn_worker(&[("VOIDRUNNER_SHUTDOWN_GRACE_SECONDS", "1")])
        .await;
    let long = app
        .create_task_ok(
            &token,
            &json!({ "name": "long", "script_type": "bash", "script_content": "sleep 5; echo handed over" }),
        )
        .await;
    let id = app.start(&token, &long).await;
    app.wait_running(&token, &id).await;
    let stopping = std::time::Instant::now();
    hasty.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "stopping took {:?}",
        stopping.elapsed()
    );
    let handed_back = app.execution(&token, &id).await;
    assert!(
        matches!(handed_back["status"].as_str(), Some("queued" | "running")),
        "{handed_back}"
    );
    let successor = app.spawn_worker(&[]).await;
    let done = app.wait_final(&token, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "handed over\n");
    assert_eq!(done["worker_id"], successor.id.as_str());
    assert_eq!(done["attempt"], 2, "{done}");
    successor.stop().await;
    app.stop().await;
}
