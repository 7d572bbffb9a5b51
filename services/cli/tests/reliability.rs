//! The guarantees of the lifecycle: the outbox, idempotent recording, dead-lettering, and the
//! refusal to serve on an unmigrated database.

use async_nats::jetstream;
use chrono::Utc;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde_json::json;
use voidrunner_api::config::ApiConfig;
use voidrunner_api::entity::execution;
use voidrunner_shared::config::{NatsConfig, SandboxPolicy};
use voidrunner_shared::events::{Captured, ResultV1, StartedV1};
use voidrunner_shared::Status;
use voidrunner_testkit::{
    empty_database, send, spawn_app, spawn_app_with, start_nats, test_env, unique_prefix,
    wait_final, Backend,
};

#[tokio::test]
async fn an_execution_committed_but_never_published_is_dispatched_by_the_sweeper() {
    let app = spawn_app(Backend::Postgres).await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "t", "script_type": "bash", "script_content": "echo swept" }),
        )
        .await;
    let task_id: uuid::Uuid = task["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("task id");
    let user_id = voidrunner_api::entity::task::Entity::find_by_id(task_id)
        .one(&app.db.connection)
        .await
        .expect("query")
        .expect("task row")
        .user_id;

    // What a crash between commit and publish leaves behind: a queued row, never dispatched.
    let now = Utc::now();
    let id = uuid::Uuid::now_v7();
    execution::ActiveModel {
        id: Set(id),
        task_id: Set(task_id),
        user_id: Set(user_id),
        status: Set(Status::Queued),
        lane: Set("normal".into()),
        exit_code: Set(None),
        stdout: Set(String::new()),
        stdout_encoding: Set("utf-8".into()),
        stderr: Set(String::new()),
        stderr_encoding: Set("utf-8".into()),
        output_truncated: Set(false),
        stdout_truncated: Set(false),
        stderr_truncated: Set(false),
        dispatch_token: Set(None),
        trace_parent: Set(None),
        oom_killed: Set(false),
        compile_error: Set(false),
        peak_memory_bytes: Set(None),
        stdin: Set(String::new()),
        error: Set(None),
        worker_id: Set(None),
        attempt: Set(0),
        dispatched_at: Set(None),
        stream_sequence: Set(None),
        created_at: Set(now - chrono::TimeDelta::seconds(10)),
        started_at: Set(None),
        finished_at: Set(None),
        updated_at: Set(now),
        idempotency_key: Set(None),
        admitted: Set(true),
        dead_lettered_at: Set(None),
        rerun_of: Set(None),
        runs: Set(0),
        callback_url: Set(None),
        webhook_state: Set(None),
        webhook_next_at: Set(None),
    }
    .insert(&app.db.connection)
    .await
    .expect("insert orphaned execution");

    let result = wait_final(&app.http, &app.base_url, &token, &id.to_string()).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["stdout"], "swept\n");
    assert!(result["dispatched_at"].is_string(), "{result}");
    app.stop().await;
}

fn result_for(execution_id: uuid::Uuid, status: Status, stdout: &str) -> ResultV1 {
    ResultV1 {
        execution_id,
        status,
        exit_code: Some(0),
        stdout: Captured::from_bytes(stdout.as_bytes()),
        stderr: Captured::default(),
        output_truncated: false,
        stdout_truncated: false,
        stderr_truncated: false,
        oom_killed: false,
        compile_error: false,
        peak_memory_bytes: None,
        error: None,
        worker_id: "w".into(),
        attempt: 1,
        runs: 1,
        dead_lettered: false,
        started_at: Some(Utc::now()),
        finished_at: Utc::now(),
        dispatch_token: None,
    }
}

#[tokio::test]
async fn a_duplicate_or_late_message_changes_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let done = app
        .run_to_end(
            &token,
            json!({ "name": "t", "script_type": "bash", "script_content": "echo first" }),
        )
        .await;
    assert_eq!(done["status"], "completed");
    let id: uuid::Uuid = done["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let db = &app.db.connection;
    // Duplicates from the fleet itself, with the dispatch's token: only the state refuses them.
    let token = execution::Entity::find_by_id(id)
        .one(db)
        .await
        .expect("query")
        .expect("row")
        .dispatch_token;

    let duplicate = ResultV1 {
        dispatch_token: token.clone(),
        ..result_for(id, Status::Failed, "second")
    };
    assert!(
        app.executions
            .finish(&duplicate)
            .await
            .expect("apply")
            .is_none(),
        "a second result was applied"
    );
    let late_start = StartedV1 {
        execution_id: id,
        worker_id: "late".into(),
        attempt: 9,
        started_at: Utc::now(),
        dispatch_token: token,
    };
    assert!(
        app.executions
            .start(&late_start)
            .await
            .expect("apply")
            .is_none(),
        "a late start was applied"
    );

    let row = execution::Entity::find_by_id(id)
        .one(db)
        .await
        .expect("query")
        .expect("row");
    assert_eq!(row.status, Status::Completed);
    assert_eq!(row.stdout, "first\n");
    assert_eq!(row.worker_id.as_deref(), Some(app.worker_id.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn an_execution_the_fleet_cannot_run_ends_in_error_and_in_the_dead_letter_queue() {
    // The worker's bash image goes away after the worker started (it serves bash: it had it).
    let image = voidrunner_testkit::VanishingImage::of(
        &"bash"
            .parse::<voidrunner_shared::Language>()
            .expect("in the catalog")
            .default_image(),
    )
    .await;
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("VOIDRUNNER_IMAGES", &format!("bash={}", image.tag)),
            ("VOIDRUNNER_POOL_SIZES", "bash=0"),
            ("VOIDRUNNER_NATS_MAX_DELIVER", "2"),
        ],
    )
    .await;
    image.vanish().await;
    let token = app.login_new_user().await;
    let result = app
        .run_to_end(
            &token,
            json!({ "name": "t", "script_type": "bash", "script_content": "echo hi" }),
        )
        .await;
    assert_eq!(result["status"], "error", "{result}");
    assert_eq!(result["attempt"], 2, "{result}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("gave up after 2 attempt(s)") && error.contains(&image.tag),
        "{error}"
    );

    let namespace = app.namespace();
    assert_eq!(app.messages_in(&namespace.dead_letter_stream()).await, 1);
    let letter = app
        .jetstream()
        .await
        .get_stream(namespace.dead_letter_stream())
        .await
        .expect("dlq stream")
        .direct_get_last_for_subject(
            namespace.dead_letter_subject(
                voidrunner_shared::Lane::Normal,
                "bash"
                    .parse::<voidrunner_shared::Language>()
                    .expect("in the catalog"),
            ),
        )
        .await
        .expect("dead letter");
    let letter: serde_json::Value = serde_json::from_slice(&letter.payload).expect("json");
    assert_eq!(letter["schema"], "voidrunner.dead_letter.v1");
    assert_eq!(letter["dispatch"]["execution_id"], result["id"]);
    app.stop().await;
}

#[tokio::test]
async fn the_api_refuses_an_unmigrated_database_and_says_how_to_fix_it() {
    let nats = start_nats().await;
    let (url, _dir) = empty_database(Backend::Sqlite).await;
    let vars = test_env(nats.url(), &url, &unique_prefix(), &[]);
    let db = voidrunner_api::db::connect(&url).await.expect("connect");
    let result = voidrunner_api::Api::build_with_db(
        ApiConfig::from_env(vars.clone()).expect("config"),
        SandboxPolicy::from_env(vars.clone()).expect("config"),
        &NatsConfig::from_env(vars.clone()).expect("config"),
        db.clone(),
    )
    .await;
    let error = result
        .err()
        .expect("an unmigrated database is refused")
        .to_string();
    assert!(error.contains("voidrunner migrate"), "{error}");

    // Told to, it migrates itself and serves.
    let vars = test_env(
        nats.url(),
        &url,
        &unique_prefix(),
        &[("VOIDRUNNER_AUTO_MIGRATE", "true")],
    );
    let api = voidrunner_api::Api::build_with_db(
        ApiConfig::from_env(vars.clone()).expect("config"),
        SandboxPolicy::from_env(vars.clone()).expect("config"),
        &NatsConfig::from_env(vars).expect("config"),
        db,
    )
    .await
    .expect("auto-migrated");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(api.run(listener, shutdown.clone()));
    // Database and NATS are fine; readiness waits only for a worker (there is none here).
    let (status, body) = send(reqwest::Client::new().get(format!("{base}/ready"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        json!({ "database": true, "nats": true, "workers": 0, "backends": {} })
    );
    shutdown.cancel();
    serving.await.expect("join").expect("api stopped cleanly");
}

#[tokio::test]
async fn a_restarted_worker_removes_the_sandboxes_its_previous_run_left_behind() {
    let worker_id = format!(
        "restarted-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let prefix = unique_prefix();
    let docker = bollard::Docker::connect_with_defaults()
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("docker reachable");
    // What a crash leaves behind: a sandbox labelled with the worker's id that nobody runs.
    let leftover = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some("voidrunner/bash:5.2".to_owned()),
                cmd: Some(vec!["true".to_owned()]),
                labels: Some(std::collections::HashMap::from([
                    (
                        voidrunner_worker::sandbox::WORKER_LABEL.to_owned(),
                        worker_id.clone(),
                    ),
                    (
                        voidrunner_worker::sandbox::INSTALLATION_LABEL.to_owned(),
                        prefix.clone(),
                    ),
                ])),
                ..Default::default()
            },
        )
        .await
        .expect("create leftover container");
    assert_eq!(
        voidrunner_testkit::containers_of_worker(&worker_id).await,
        1
    );

    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("VOIDRUNNER_WORKER_ID", &worker_id),
            ("VOIDRUNNER_NATS_PREFIX", &prefix),
            ("VOIDRUNNER_POOL_SIZES", "python=0,javascript=0,bash=0"),
        ],
    )
    .await;
    let inspected = docker.inspect_container(&leftover.id, None).await;
    assert!(
        inspected.is_err(),
        "the leftover sandbox survived the worker's start-up"
    );
    assert_eq!(
        voidrunner_testkit::containers_of_worker(&worker_id).await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn an_execution_whose_worker_dies_on_its_last_delivery_ends_in_error() {
    let app = voidrunner_testkit::spawn_api_only(
        Backend::Sqlite,
        &[
            ("VOIDRUNNER_NATS_MAX_DELIVER", "1"),
            ("VOIDRUNNER_NATS_ACK_WAIT_SECONDS", "5"),
        ],
    )
    .await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "t", "script_type": "bash", "script_content": "echo hi" }),
        )
        .await;
    let id = &app.start(&token, &task).await;

    // A worker takes the dispatch and dies without a word.
    let namespace = app.namespace();
    let tasks = app
        .jetstream()
        .await
        .get_stream(namespace.tasks_stream())
        .await
        .expect("tasks stream");
    let lane: jetstream::consumer::PullConsumer = tasks
        .get_consumer(&namespace.lane_consumer(
            voidrunner_shared::Lane::Normal,
            "bash".parse().expect("in the catalog"),
        ))
        .await
        .expect("lane consumer");
    let mut batch = lane
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .expect("fetch");
    let taken = futures::StreamExt::next(&mut batch)
        .await
        .expect("a dispatch")
        .expect("message");
    assert!(String::from_utf8_lossy(&taken.payload).contains(id));
    drop(taken);

    let result = wait_final(&app.http, &app.base_url, &token, id).await;
    assert_eq!(result["status"], "error", "{result}");
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|e| e.contains("stopped responding")),
        "{result}"
    );
    assert_eq!(app.messages_in(&namespace.dead_letter_stream()).await, 1);
    assert_eq!(
        app.messages_in(&namespace.tasks_stream()).await,
        0,
        "the dead dispatch stayed queued"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_worker_refuses_network_its_deployment_does_not_allow_and_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "t", "script_type": "bash", "script_content": "echo hi" }),
        )
        .await;
    let task_id: uuid::Uuid = task["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("task id");

    // A dispatch that asks for network, as an api with another policy would send it.
    let js = app.jetstream().await;
    let namespace = app.namespace();
    let execution_id = uuid::Uuid::now_v7();
    let dispatch = voidrunner_shared::events::Dispatch::V1(voidrunner_shared::events::DispatchV1 {
        execution_id,
        task_id,
        language: "bash"
            .parse::<voidrunner_shared::Language>()
            .expect("in the catalog"),
        lane: voidrunner_shared::Lane::Normal,
        code: "echo hi".into(),
        files: Vec::new(),
        stdin: String::new(),
        timeout_seconds: 10,
        limits: Default::default(),
        network: true,
        retry: Default::default(),
        submitted_at: Utc::now(),
        dispatch_token: None,
    });
    let mut results = async_nats::connect(app.nats.url())
        .await
        .expect("connect")
        .subscribe(namespace.result_subject(execution_id))
        .await
        .expect("subscribe");
    js.publish(
        namespace.task_subject(
            voidrunner_shared::Lane::Normal,
            "bash"
                .parse::<voidrunner_shared::Language>()
                .expect("in the catalog"),
        ),
        serde_json::to_vec(&dispatch).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures::StreamExt::next(&mut results),
    )
    .await
    .expect("a result in time")
    .expect("a result");
    let result: serde_json::Value = serde_json::from_slice(&result.payload).expect("json");
    assert_eq!(result["status"], "error", "{result}");
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|e| e.contains("network")),
        "{result}"
    );

    let after = app
        .run_to_end(
            &token,
            json!({ "name": "after", "script_type": "bash", "script_content": "echo still here" }),
        )
        .await;
    assert_eq!(after["stdout"], "still here\n", "{after}");
    app.stop().await;
}
