//! The `instant` sandbox backend: a worker with `VOIDRUNNER_SANDBOX_BACKEND=instant` answers
//! every execution at once without running it, says so in the result, and announces itself as
//! such in `/workers` and `/ready`, so that a load-test fleet cannot pass for a real one.

use serde_json::json;
use voidrunner_testkit::{send, spawn_api_only, Backend};

#[tokio::test]
async fn an_instant_worker_runs_nothing_says_so_and_is_told_apart_from_a_docker_one() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    let instant = app
        .spawn_worker(&[
            ("VOIDRUNNER_SANDBOX_BACKEND", "instant"),
            ("VOIDRUNNER_WORKER_ID", "instant-1"),
        ])
        .await;
    let token = app.login_new_user().await;

    // A program that would print and fail: nothing runs, the result says so.
    let (status, run) = app
        .post_run(
            &token,
            "?wait=true",
            json!({ "language": "python", "code": "print('ran')\nraise SystemExit(3)" }),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["exit_code"], 0, "{run}");
    assert_eq!(run["stdout"], "", "{run}");
    assert_eq!(run["worker_id"], "instant-1", "{run}");
    let error = run["error"].as_str().expect("an error text");
    assert!(error.contains("no code ran"), "{error}");

    let (status, workers) = send(app.http.get(app.url("/workers")).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{workers}");
    assert_eq!(workers[0]["backend"], "instant", "{workers}");
    let (_, ready) = send(app.http.get(format!("{}/ready", app.base_url))).await;
    assert_eq!(ready["backends"], json!({ "instant": 1 }), "{ready}");

    // Beside a real worker, /ready counts each kind.
    let docker = app
        .spawn_worker(&[("VOIDRUNNER_WORKER_ID", "docker-1")])
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, ready) = send(app.http.get(format!("{}/ready", app.base_url))).await;
        if ready["backends"] == json!({ "docker": 1, "instant": 1 }) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, workers) = send(app.http.get(app.url("/workers")).bearer_auth(&token)).await;
    let kinds: Vec<(&str, &str)> = workers
        .as_array()
        .expect("list")
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap_or(""),
                w["backend"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(kinds, [("docker-1", "docker"), ("instant-1", "instant")]);
    instant.stop().await;
    docker.stop().await;
    app.stop().await;
}
