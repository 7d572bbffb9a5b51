//! The REST API's own surface: the fleet view, readiness, request ids, security headers, CORS.

use serde_json::Value;
use voidrunner_testkit::{send, spawn_api_only, spawn_app_with, Backend};

#[tokio::test]
async fn the_fleet_view_lists_live_workers_and_readiness_needs_one() {
    let app = spawn_app_with(Backend::Sqlite, &[("VOIDRUNNER_WORKER_SLOTS", "3")]).await;
    let token = app.login_new_user().await;
    let (status, workers) = send(app.http.get(app.url("/workers")).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{workers}");
    let workers = workers.as_array().expect("a list");
    assert_eq!(workers.len(), 1, "{workers:?}");
    let worker = &workers[0];
    assert_eq!(worker["id"], app.worker_id.as_str());
    assert_eq!(worker["slots"], 3);
    assert_eq!(worker["busy"], 0);
    assert_eq!(worker["draining"], false);
    assert_eq!(worker["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        worker["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{worker}"
    );
    assert!(worker["last_heartbeat"].is_string(), "{worker}");
    let languages: Vec<&str> = worker["languages"]
        .as_array()
        .expect("languages")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for language in ["python", "javascript", "bash", "go"] {
        assert!(languages.contains(&language), "{languages:?}");
    }
    let (status, body) = send(app.http.get(app.url("/workers"))).await;
    assert_eq!(status, 401, "{body}");

    let (status, ready) = send(app.http.get(format!("{}/ready", app.base_url))).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["workers"], 1);
    app.stop().await;

    let lonely = spawn_api_only(Backend::Sqlite, &[]).await;
    let (status, ready) = send(lonely.http.get(format!("{}/ready", lonely.base_url))).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["workers"], 0);
    assert_eq!(ready["database"], true);
    assert_eq!(ready["nats"], true);
    lonely.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_security_headers() {
    let app = spawn_api_only(
        Backend::Sqlite,
        &[("VOIDRUNNER_CORS_ORIGINS", "https://app.example.com")],
    )
    .await;
    let response = app
        .http
        .get(app.url("/tasks"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    let headers = response.headers();
    let id = headers["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.contains_key("content-security-policy"));

    // A client's own request id is kept.
    let response = app
        .http
        .get(format!("{}/health", app.base_url))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");

    // CORS: the configured origin may call, with the headers the API uses; others may not.
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/tasks"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,idempotency-key",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    let foreign = app
        .http
        .get(format!("{}/health", app.base_url))
        .header("origin", "https://evil.example.net")
        .send()
        .await
        .expect("request");
    assert!(!foreign
        .headers()
        .contains_key("access-control-allow-origin"));
    app.stop().await;
}

#[tokio::test]
async fn rate_limits_apply_per_user_and_per_address_with_their_headers() {
    let app = spawn_api_only(
        Backend::Sqlite,
        &[
            ("VOIDRUNNER_RATE_LIMIT_PER_USER", "5"),
            ("VOIDRUNNER_RATE_LIMIT_PER_IP", "1000"),
        ],
    )
    .await;
    let busy = app.login_new_user().await;
    let other = app.login_new_user().await;
    for n in 0..5u32 {
        let response = app
            .http
            .get(app.url("/tasks"))
            .bearer_auth(&busy)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 200, "request {n}");
        let headers = response.headers();
        assert_eq!(headers["ratelimit-limit"], "5");
        assert_eq!(headers["ratelimit-remaining"], (4 - n).to_string().as_str());
        assert_eq!(headers["ratelimit-policy"], "5;w=60");
    }
    let refused = app
        .http
        .get(app.url("/tasks"))
        .bearer_auth(&busy)
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    let (status, _) = send(app.http.get(app.url("/tasks")).bearer_auth(&other)).await;
    assert_eq!(status, 200, "another user has a bucket of their own");
    app.stop().await;

    let app = spawn_api_only(Backend::Sqlite, &[("VOIDRUNNER_RATE_LIMIT_PER_IP", "3")]).await;
    let guess = serde_json::json!({ "email": "nobody@example.com", "password": "guess-guess" });
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _) = send(app.http.post(app.url("/auth/login")).json(&guess)).await;
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 429],
        "password guessing is slowed per address"
    );
    let (status, _) = send(app.http.get(format!("{}/health", app.base_url))).await;
    assert_eq!(status, 200, "health checks are not limited");
    app.stop().await;
}
