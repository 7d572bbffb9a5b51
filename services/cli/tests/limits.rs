//! Every bound on what a client sends or holds: an exceeded one answers a clear 4xx, changes
//! nothing, and is refused before anything unbounded is read or allocated.

use std::time::Duration;

use serde_json::{json, Value};
use voidrunner_testkit::{assert_error, row_counts, send, spawn_api_only, Backend, TestApp};

fn task_with(field: &str, value: Value) -> Value {
    let mut task =
        json!({ "name": "bounded", "script_type": "python", "script_content": "print(1)" });
    task[field] = value;
    task
}

async fn post_raw(app: &TestApp, token: &str, path: &str, body: String) -> (u16, Value) {
    send(
        app.http
            .post(app.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

#[tokio::test]
async fn bodies_past_their_bounds_are_refused_and_write_nothing() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    let token = app.login_new_user().await;
    let before = row_counts(&app).await;

    // Size: refused from the Content-Length, before the body is read.
    let huge = format!(
        r#"{{"name":"x","script_type":"python","script_content":"{}"}}"#,
        "a".repeat(8 << 20)
    );
    let (status, body) = post_raw(&app, &token, "/tasks", huge).await;
    assert_error(
        status,
        &body,
        413,
        "payload_too_large",
        "VOIDRUNNER_MAX_SCRIPT_BYTES",
    );

    // Depth: serde stops at 128 levels, whatever the nesting is inside.
    let deep = format!(
        r#"{{"name":"x","script_type":"python","script_content":"print(1)","metadata":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (status, body) = post_raw(&app, &token, "/tasks", deep).await;
    assert_error(status, &body, 400, "json_too_deep", "128 levels");

    // Files: at most 32.
    let files: Vec<Value> = (0..33)
        .map(|n| json!({ "path": format!("f{n}.py"), "content": "" }))
        .collect();
    let (status, body) = app
        .create_task(&token, &task_with("files", json!(files)))
        .await;
    assert_error(status, &body, 422, "validation_failed", "at most 32 files");

    // Metadata: 16 KiB as JSON.
    let metadata = json!({ "blob": "m".repeat(17 * 1024) });
    let (status, body) = app
        .create_task(&token, &task_with("metadata", metadata))
        .await;
    assert_error(
        status,
        &body,
        422,
        "validation_failed",
        "the limit is 16384",
    );

    // A batch: 1 to 100 runs.
    let runs: Vec<Value> = (0..101)
        .map(|_| json!({ "language": "python", "code": "print(1)" }))
        .collect();
    let (status, body) = send(
        app.http
            .post(app.url("/runs/batch"))
            .bearer_auth(&token)
            .json(&json!({ "runs": runs })),
    )
    .await;
    assert_error(status, &body, 422, "validation_failed", "between 1 and 100");

    assert_eq!(row_counts(&app).await, before, "nothing was written");
    app.stop().await;
}

#[tokio::test]
async fn oversized_request_headers_are_refused_before_routing() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    let token = app.login_new_user().await;
    // One enormous header (a token pasted a thousand times, say).
    let response = app
        .http
        .get(app.url("/auth/me"))
        .bearer_auth(&token)
        .header("x-padding", "p".repeat(1 << 20))
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(response.status().as_u16(), 431);
    // Too many headers.
    let mut request = app.http.get(app.url("/auth/me")).bearer_auth(&token);
    for n in 0..200 {
        request = request.header(format!("x-h{n}"), "v");
    }
    let response = request.send().await.expect("an answer, not a hang");
    assert_eq!(response.status().as_u16(), 431);
    // The server is none the worse for it.
    let (status, _) = send(app.http.get(app.url("/auth/me")).bearer_auth(&token)).await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// Opens the execution's live-output stream and returns the response (headers read, body open).
async fn open_stream(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/executions/{id}/events")))
        .bearer_auth(token)
        .send()
        .await
        .expect("stream request")
}

#[tokio::test]
async fn a_user_holds_only_so_many_live_output_streams_and_a_closed_one_frees_its_slot() {
    let app = spawn_api_only(Backend::Sqlite, &[("VOIDRUNNER_MAX_STREAMS_PER_USER", "2")]).await;
    let token = app.login_new_user().await;
    // No worker: the execution stays queued and its stream open.
    let (status, run) = app
        .post_run(
            &token,
            "",
            json!({ "language": "python", "code": "print(1)" }),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_str().expect("id").to_owned();

    let first = open_stream(&app, &token, &id).await;
    let second = open_stream(&app, &token, &id).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open_stream(&app, &token, &id).await;
    let status = third.status().as_u16();
    let body: Value = third.json().await.expect("JSON error");
    assert_error(
        status,
        &body,
        429,
        "too_many_streams",
        "VOIDRUNNER_MAX_STREAMS_PER_USER",
    );

    // Another user is not held back by this one's streams.
    let other = app.login_new_user().await;
    let (_, theirs) = app
        .post_run(
            &other,
            "",
            json!({ "language": "python", "code": "print(2)" }),
        )
        .await;
    let theirs = open_stream(&app, &other, theirs["id"].as_str().expect("id")).await;
    assert_eq!(theirs.status().as_u16(), 200);

    // Closing one gives its slot back as soon as the server sees the connection go.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = open_stream(&app, &token, &id).await;
        if again.status().as_u16() == 200 {
            break;
        }
        assert_eq!(again.status().as_u16(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    app.stop().await;
}
