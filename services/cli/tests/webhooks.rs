//! Webhooks: the result is POSTed to the execution's callback URL, signed with the user's
//! secret, and retried with backoff until the receiver takes it; every attempt is visible.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use voidrunner_testkit::{send, spawn_api_only, spawn_app_with, Backend, TestApp};

/// A local receiver that fails the first `failures` deliveries, then accepts.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    failures: usize,
}

async fn start_receiver(failures: usize) -> (String, Receiver) {
    let receiver = Receiver {
        failures,
        ..Default::default()
    };
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(receiver): axum::extract::State<Receiver>,
                 headers: HeaderMap,
                 body: String| async move {
                    let mut seen = receiver.seen.lock().expect("lock");
                    seen.push((headers, body));
                    if seen.len() <= receiver.failures {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

/// The execution once its webhook is no longer pending (delivered or given up).
async fn settled(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let execution = app.execution(token, id).await;
        if execution["webhook_state"] != "pending" {
            return execution;
        }
        assert!(tokio::time::Instant::now() < deadline, "{execution}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn verify(secret: &str, signature: &str, body: &str) -> bool {
    let Some((t, v1)) = signature
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes()) == v1
}

#[tokio::test]
async fn the_result_is_delivered_signed_and_retried_until_the_receiver_takes_it() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("VOIDRUNNER_WEBHOOK_ALLOW_PRIVATE", "true")],
    )
    .await;
    let token = app.login_new_user().await;
    let (_, me) = send(app.http.get(app.url("/auth/me")).bearer_auth(&token)).await;
    let secret = me["webhook_secret"]
        .as_str()
        .expect("webhook secret")
        .to_owned();
    let (url, receiver) = start_receiver(2).await;

    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "hooked", "script_type": "bash", "script_content": "echo hooked" }),
        )
        .await;
    let task_id = task["id"].as_str().expect("id");
    let (status, execution) = send(
        app.http
            .post(app.url(&format!("/tasks/{task_id}/executions")))
            .bearer_auth(&token)
            .json(&json!({ "callback_url": url })),
    )
    .await;
    assert_eq!(status, 202, "{execution}");
    assert_eq!(execution["webhook_state"], "pending");
    let id = execution["id"].as_str().expect("id");
    app.wait_final(&token, id).await;

    let delivered = settled(&app, &token, id).await;
    assert_eq!(delivered["webhook_state"], "delivered", "{delivered}");
    let attempts = delivered["webhook_attempts"].as_array().expect("attempts");
    let codes: Vec<Value> = attempts.iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, [json!(503), json!(503), json!(204)]);
    assert!(attempts[0]["error"].is_string() && attempts[2]["error"].is_null());

    let seen = receiver.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3);
    for (headers, body) in &seen {
        let signature = headers["voidrunner-signature"].to_str().expect("ascii");
        assert!(
            verify(&secret, signature, body),
            "bad signature {signature}"
        );
        assert!(!verify("vrw_wrong", signature, body));
        let payload: Value = serde_json::from_str(body).expect("json body");
        assert_eq!(payload["event"], "execution.finished");
        assert_eq!(payload["execution"]["id"], id);
        assert_eq!(payload["execution"]["stdout"], "hooked\n");
        assert_eq!(payload["execution"]["status"], "completed");
    }
    // Backoff: the retries did not come back to back.
    let at = |n: usize| {
        chrono::DateTime::parse_from_rfc3339(attempts[n]["attempted_at"].as_str().expect("time"))
            .expect("timestamp")
    };
    assert!(
        at(2) - at(1) >= chrono::TimeDelta::milliseconds(1500),
        "{attempts:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn callback_urls_must_be_http_and_may_not_aim_at_internal_addresses() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "t", "script_type": "bash", "script_content": "true" }),
        )
        .await;
    let task_id = task["id"].as_str().expect("id");
    for url in [
        "ftp://example.com/hook",
        "not a url",
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://10.0.0.8/hook",
        "https://user:pass@example.com/hook",
    ] {
        let (status, body) = send(
            app.http
                .post(app.url(&format!("/tasks/{task_id}/executions")))
                .bearer_auth(&token)
                .json(&json!({ "callback_url": url })),
        )
        .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["details"]["field"], "callback_url", "{body}");
    }
    let (status, body) = send(app.http.post(app.url("/runs")).bearer_auth(&token).json(
        &json!({ "language": "bash", "code": "true", "callback_url": "http://localhost:1/" }),
    ))
    .await;
    assert_eq!(status, 422, "{body}");
    app.stop().await;
}

/// A receiver that answers with a redirect or with a body that never ends, and counts what it
/// was made to do.
#[derive(Clone, Default)]
struct Hostile {
    landed: Arc<std::sync::atomic::AtomicUsize>,
    streamed_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

async fn start_hostile_receiver() -> (String, Hostile) {
    use std::sync::atomic::Ordering;
    let hostile = Hostile::default();
    let endless = {
        let hostile = hostile.clone();
        move || async move {
            let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
            let counted = hostile.streamed_bytes.clone();
            let body = futures::stream::repeat(chunk).map(move |chunk| {
                counted.fetch_add(chunk.len(), Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(chunk)
            });
            axum::body::Body::from_stream(body)
        }
    };
    let landing = {
        let hostile = hostile.clone();
        move || async move {
            hostile.landed.fetch_add(1, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
    };
    let app = axum::Router::new()
        .route(
            "/redirect",
            axum::routing::post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, "/landing")],
                )
            }),
        )
        .route("/landing", axum::routing::post(landing))
        .route("/endless", axum::routing::post(endless));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hostile)
}

#[tokio::test]
async fn a_receiver_cannot_redirect_a_delivery_or_hold_it_with_an_endless_answer() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("VOIDRUNNER_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("VOIDRUNNER_WEBHOOK_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let token = app.login_new_user().await;
    let (base, hostile) = start_hostile_receiver().await;
    let mut ids = Vec::new();
    for hook in ["redirect", "endless"] {
        let (status, run) = app
            .post_run(
                &token,
                "",
                json!({ "language": "bash", "code": "true", "callback_url": format!("{base}/{hook}") }),
            )
            .await;
        assert_eq!(status, 202, "{run}");
        ids.push(run["id"].as_str().expect("id").to_owned());
    }
    let mut outcomes = Vec::new();
    for id in &ids {
        app.wait_final(&token, id).await;
        outcomes.push(settled(&app, &token, id).await);
    }
    let redirected = &outcomes[0];
    assert_eq!(redirected["webhook_state"], "failed", "{redirected}");
    assert_eq!(redirected["webhook_attempts"][0]["status_code"], 307);
    assert_eq!(
        hostile.landed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the redirect was not followed"
    );
    let endless = &outcomes[1];
    assert_eq!(endless["webhook_state"], "delivered", "{endless}");
    assert_eq!(endless["webhook_attempts"][0]["status_code"], 200);
    // The answer's body is never read: what the receiver got out is what socket buffers hold.
    let streamed = hostile
        .streamed_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        streamed < 64 << 20,
        "{streamed} bytes were taken from the receiver"
    );
    app.stop().await;
}
