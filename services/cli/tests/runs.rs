//! One-shot runs: no task needed, `wait=true` answers with the result, batches of up to 100.

use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{json, Value};
use voidrunner_api::entity::execution;
use voidrunner_testkit::{send, spawn_app, Backend, TestApp};

async fn executions(app: &TestApp) -> u64 {
    execution::Entity::find()
        .count(&app.db.connection)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_run_needs_no_task_and_with_wait_answers_with_its_result() {
    let app = spawn_app(Backend::Postgres).await;
    let token = app.login_new_user().await;

    let (status, done) = app.post_run(&token,
        "?wait=true",
        json!({ "language": "python", "code": "import sys\nprint(sys.stdin.read().upper())", "stdin": "shout" }),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["stdout"], "SHOUT\n");

    // Without wait: 202 and the location to follow.
    let response = app
        .http
        .post(app.url("/runs"))
        .bearer_auth(&token)
        .json(&json!({ "language": "js", "code": "console.log(6 * 7)" }))
        .send()
        .await
        .expect("run");
    assert_eq!(response.status().as_u16(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let queued: Value = response.json().await.expect("json");
    assert!(location.ends_with(queued["id"].as_str().expect("id")));
    let done = app
        .wait_final(&token, queued["id"].as_str().expect("id"))
        .await;
    assert_eq!(done["stdout"], "42\n");

    // A wait that ends first: 202, and the run goes on to finish.
    let (status, pending) = app
        .post_run(
            &token,
            "?wait=true&wait_seconds=1",
            json!({ "language": "bash", "code": "sleep 3; echo late" }),
        )
        .await;
    assert_eq!(status, 202, "{pending}");
    assert!(matches!(
        pending["status"].as_str(),
        Some("queued" | "running")
    ));
    let done = app
        .wait_final(&token, pending["id"].as_str().expect("id"))
        .await;
    assert_eq!(done["stdout"], "late\n");

    // Runs are not tasks a user manages.
    let (_, tasks) = send(app.http.get(app.url("/tasks")).bearer_auth(&token)).await;
    assert_eq!(tasks["items"], json!([]));

    // The same Idempotency-Key gives the same run; another program under it is refused.
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({ "language": "bash", "code": "echo once" });
    let first = app
        .http
        .post(app.url("/runs"))
        .bearer_auth(&token)
        .header("idempotency-key", &key)
        .json(&body)
        .send()
        .await
        .expect("run");
    let first: Value = first.json().await.expect("json");
    let again = app
        .http
        .post(app.url("/runs"))
        .bearer_auth(&token)
        .header("idempotency-key", &key)
        .json(&body)
        .send()
        .await
        .expect("run");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["id"], again["id"]);
    let other = app
        .http
        .post(app.url("/runs"))
        .bearer_auth(&token)
        .header("idempotency-key", &key)
        .json(&json!({ "language": "bash", "code": "echo twice" }))
        .send()
        .await
        .expect("run");
    assert_eq!(other.status().as_u16(), 409);
    app.stop().await;
}

#[tokio::test]
async fn bad_runs_are_refused_with_the_runs_own_field_names_and_write_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let before = executions(&app).await;
    for (query, body, status, field) in [
        (
            "",
            json!({ "language": "cobol", "code": "x" }),
            422,
            "language",
        ),
        ("", json!({ "language": "python", "code": "" }), 422, "code"),
        (
            "",
            json!({ "language": "python", "code": "x", "timeout_seconds": 0 }),
            422,
            "timeout_seconds",
        ),
        (
            "",
            json!({ "language": "python", "code": "x", "colour": 1 }),
            422,
            "",
        ),
        (
            "?wait=true&wait_seconds=0",
            json!({ "language": "python", "code": "x" }),
            400,
            "",
        ),
        (
            "?wait=maybe",
            json!({ "language": "python", "code": "x" }),
            400,
            "",
        ),
    ] {
        let (got, body) = app.post_run(&token, query, body).await;
        assert_eq!(got, status, "{query} {body}");
        if !field.is_empty() {
            assert_eq!(body["error"]["details"]["field"], field, "{body}");
        }
    }
    let (status, body) = send(
        app.http
            .post(app.url("/runs/batch"))
            .bearer_auth(&token)
            .json(&json!({ "runs": [
                { "language": "python", "code": "print(1)" },
                { "language": "bash", "code": "echo 2" },
                { "language": "cobol", "code": "x" },
            ] })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["index"], 2, "{body}");
    assert_eq!(body["error"]["details"]["field"], "language", "{body}");
    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({ "language": "bash", "code": "true" }))
        .collect();
    let (status, body) = send(
        app.http
            .post(app.url("/runs/batch"))
            .bearer_auth(&token)
            .json(&json!({ "runs": too_many })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        executions(&app).await,
        before,
        "refused runs left executions"
    );
    let (status, _) = app
        .post_run(
            "not-a-token",
            "",
            json!({ "language": "bash", "code": "true" }),
        )
        .await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_queues_every_run_in_order() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let runs: Vec<Value> = (0..12)
        .map(|n| match n % 3 {
            0 => json!({ "language": "python", "code": format!("print({n})") }),
            1 => json!({ "language": "javascript", "code": format!("console.log({n})") }),
            _ => json!({ "language": "bash", "code": format!("echo {n}") }),
        })
        .collect();
    let (status, batch) = send(
        app.http
            .post(app.url("/runs/batch"))
            .bearer_auth(&token)
            .json(&json!({ "runs": runs })),
    )
    .await;
    assert_eq!(status, 202, "{batch}");
    let items = batch["items"].as_array().expect("items");
    assert_eq!(items.len(), 12);
    for (n, item) in items.iter().enumerate() {
        let done = app
            .wait_final(&token, item["id"].as_str().expect("id"))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["stdout"], format!("{n}\n"));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_run_may_bring_its_main_file_among_its_files() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let (status, done) = app
        .post_run(
            &token,
            "?wait=true",
            json!({ "language": "python", "files": [
            { "path": "main.py", "content": "from helper import greet\nprint(greet())" },
            { "path": "helper.py", "content": "def greet():\n    return 'from files'" },
        ] }),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["stdout"], "from files\n", "{done}");
    let (status, body) = app
        .post_run(
            &token,
            "",
            json!({ "language": "python", "files": [{ "path": "helper.py", "content": "x = 1" }] }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["field"], "code", "{body}");
    app.stop().await;
}
