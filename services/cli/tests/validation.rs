//! Bad input gets a 4xx with a JSON error that says what is wrong, and writes nothing.

use serde_json::{json, Value};
use voidrunner_testkit::{assert_error, row_counts, send, spawn_app, Backend};

fn valid_task() -> Value {
    json!({ "name": "ok", "script_type": "python", "script_content": "print(1)" })
}

#[tokio::test]
async fn invalid_tasks_are_refused_with_a_reason_and_nothing_is_written() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let before = row_counts(&app).await;

    let with = |field: &str, value: Value| {
        let mut body = valid_task();
        body[field] = value;
        body
    };
    let cases = [
        (with("script_type", json!("cobol")), "script_type"),
        (with("script_content", json!("")), "script_content"),
        (with("priority", json!(11)), "priority"),
        (with("priority", json!(-1)), "priority"),
        (with("timeout_seconds", json!(0)), "timeout_seconds"),
        (with("timeout_seconds", json!(100_000)), "timeout_seconds"),
        (with("name", json!("")), "name"),
    ];
    for (body, field) in cases {
        let (status, response) = app.create_task(&token, &body).await;
        assert_error(status, &response, 422, "validation_failed", field);
        assert_eq!(response["error"]["details"]["field"], field, "{response}");
    }

    let (status, response) = app
        .create_task(&token, &json!({ "name": "x", "script_type": "python" }))
        .await;
    assert_error(
        status,
        &response,
        422,
        "validation_failed",
        "script_content",
    );

    let (status, response) = app
        .create_task(&token, &with("priority", json!("high")))
        .await;
    assert_error(status, &response, 422, "validation_failed", "priority");

    let malformed = app
        .http
        .post(app.url("/tasks"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"name\": \"x\", ");
    let (status, response) = send(malformed).await;
    assert_error(status, &response, 400, "malformed_json", "not valid JSON");

    let not_json = app
        .http
        .post(app.url("/tasks"))
        .bearer_auth(&token)
        .body("name=x");
    let (status, response) = send(not_json).await;
    assert_error(
        status,
        &response,
        415,
        "unsupported_media_type",
        "application/json",
    );

    assert_eq!(
        row_counts(&app).await,
        before,
        "a refused request wrote to the database"
    );
    app.stop().await;
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let before = row_counts(&app).await;

    let (status, body) = send(app.http.post(app.url("/tasks")).json(&valid_task())).await;
    assert_error(status, &body, 401, "unauthorized", "Authorization");

    let (status, body) = send(
        app.http
            .post(app.url("/tasks"))
            .bearer_auth("not-a-jwt")
            .json(&valid_task()),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized", "invalid or expired");

    let tampered = format!("{}x", token);
    let (status, body) = send(
        app.http
            .post(app.url("/tasks"))
            .bearer_auth(tampered)
            .json(&valid_task()),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized", "invalid or expired");

    let (status, body) = send(
        app.http
            .post(app.url(&format!("/tasks/{}/executions", uuid::Uuid::new_v4()))),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized", "Authorization");

    let (status, body) = send(
        app.http
            .get(app.url(&format!("/executions/{}", uuid::Uuid::new_v4()))),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized", "Authorization");

    assert_eq!(row_counts(&app).await, before);
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_and_other_users_resources_are_not_found() {
    let app = spawn_app(Backend::Sqlite).await;
    let owner = app.login_new_user().await;
    let stranger = app.login_new_user().await;
    let (status, task) = app.create_task(&owner, &valid_task()).await;
    assert_eq!(status, 201, "{task}");
    let task_id = task["id"].as_str().expect("task id");

    let start = |token: &str, id: &str| {
        app.http
            .post(app.url(&format!("/tasks/{id}/executions")))
            .bearer_auth(token.to_owned())
    };
    // What the owner made, the stranger cannot see.
    let execution =
        voidrunner_testkit::start_execution(&app.http, &app.base_url, &owner, task_id).await;
    let execution_id = execution["id"].as_str().expect("execution id");
    for path in [
        format!("/tasks/{task_id}"),
        format!("/tasks/{task_id}/executions"),
        format!("/executions/{execution_id}"),
    ] {
        let (status, body) = send(app.http.get(app.url(&path)).bearer_auth(&stranger)).await;
        assert_error(status, &body, 404, "not_found", "no ");
        let (status, _) = send(app.http.get(app.url(&path)).bearer_auth(&owner)).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = send(app.http.get(app.url("/tasks")).bearer_auth(&stranger)).await;
    assert_eq!(
        (status, body),
        (200, json!({ "items": [], "next_cursor": null }))
    );
    let before = row_counts(&app).await;

    let (status, body) = send(start(&owner, &uuid::Uuid::new_v4().to_string())).await;
    assert_error(status, &body, 404, "not_found", "task");
    let (status, body) = send(start(&stranger, task_id)).await;
    assert_error(status, &body, 404, "not_found", "task");
    let (status, body) = send(start(&owner, "not-a-uuid")).await;
    assert_error(status, &body, 400, "invalid_path", "UUID");

    let (status, body) = send(
        app.http
            .get(app.url(&format!("/executions/{}", uuid::Uuid::new_v4())))
            .bearer_auth(&owner),
    )
    .await;
    assert_error(status, &body, 404, "not_found", "execution");

    assert_eq!(row_counts(&app).await, before);
    app.stop().await;
}

#[tokio::test]
async fn registration_and_login_refuse_bad_credentials() {
    let app = spawn_app(Backend::Sqlite).await;
    let register = |body: Value| app.http.post(app.url("/auth/register")).json(&body);
    let (status, body) = send(register(
        json!({ "email": "not-an-email", "password": "long enough" }),
    ))
    .await;
    assert_error(status, &body, 422, "validation_failed", "email");
    let (status, body) = send(register(
        json!({ "email": "a@example.com", "password": "short" }),
    ))
    .await;
    assert_error(status, &body, 422, "validation_failed", "password");
    let (status, _) = send(register(
        json!({ "email": "A@example.com", "password": "long enough" }),
    ))
    .await;
    assert_eq!(status, 201);
    let (status, body) = send(register(
        json!({ "email": "a@example.com", "password": "long enough" }),
    ))
    .await;
    assert_error(status, &body, 409, "conflict", "already exists");

    let login = |body: Value| app.http.post(app.url("/auth/login")).json(&body);
    let (status, body) = send(login(
        json!({ "email": "a@example.com", "password": "wrong password" }),
    ))
    .await;
    assert_error(
        status,
        &body,
        401,
        "unauthorized",
        "wrong email or password",
    );
    // An unknown email gets the same answer (and the same Argon2 work, against a decoy hash).
    let (unknown_status, unknown) = send(login(
        json!({ "email": "nobody@example.com", "password": "wrong password" }),
    ))
    .await;
    assert_eq!((unknown_status, &unknown), (status, &body));
    let (status, body) = send(login(
        json!({ "email": "a@example.com", "password": "long enough" }),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}
