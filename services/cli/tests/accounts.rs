//! Accounts: rotating refresh tokens (a reused one revokes its session), logout, `me`, API keys.

use serde_json::{json, Value};
use voidrunner_testkit::{send, spawn_api_only, Backend, TestApp};

async fn register_and_login(app: &TestApp) -> (String, Value) {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let credentials = json!({ "email": email, "password": "correct horse battery" });
    let (status, body) = send(app.http.post(app.url("/auth/register")).json(&credentials)).await;
    assert_eq!(status, 201, "{body}");
    let (status, tokens) = send(app.http.post(app.url("/auth/login")).json(&credentials)).await;
    assert_eq!(status, 200, "{tokens}");
    (email, tokens)
}

async fn me(app: &TestApp, token: &str) -> u16 {
    send(app.http.get(app.url("/auth/me")).bearer_auth(token))
        .await
        .0
}

async fn refresh(app: &TestApp, refresh_token: &Value) -> (u16, Value) {
    send(
        app.http
            .post(app.url("/auth/refresh"))
            .json(&json!({ "refresh_token": refresh_token })),
    )
    .await
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_whole_session() {
    let app = spawn_api_only(Backend::Postgres, &[]).await;
    let (email, first) = register_and_login(&app).await;
    assert_eq!(first["token_type"], "Bearer");
    assert!(first["refresh_token"]
        .as_str()
        .is_some_and(|t| t.starts_with("vrr_")));
    let token = first["access_token"].as_str().expect("access token");
    let (status, user) = send(app.http.get(app.url("/auth/me")).bearer_auth(token)).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["email"], email.as_str());

    let (status, second) = refresh(&app, &first["refresh_token"]).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let second_access = second["access_token"].as_str().expect("access token");
    assert_eq!(me(&app, second_access).await, 200);

    // The first refresh token again: someone copied it. The session ends for everyone.
    let (status, body) = refresh(&app, &first["refresh_token"]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("revoked"));
    assert_eq!(me(&app, second_access).await, 401);
    let (status, _) = refresh(&app, &second["refresh_token"]).await;
    assert_eq!(status, 401, "the rotated token died with its session");
    assert_eq!(me(&app, token).await, 401);

    let (status, body) = refresh(&app, &json!("vrr_not-a-token")).await;
    assert_eq!(status, 401, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_and_no_other() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    let (email, session) = register_and_login(&app).await;
    let credentials = json!({ "email": email, "password": "correct horse battery" });
    let (_, other) = send(app.http.post(app.url("/auth/login")).json(&credentials)).await;
    let token = session["access_token"].as_str().expect("token");

    let response = app
        .http
        .post(app.url("/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(me(&app, token).await, 401);
    let (status, _) = refresh(&app, &session["refresh_token"]).await;
    assert_eq!(status, 401);
    // The same user's other login is untouched.
    assert_eq!(
        me(&app, other["access_token"].as_str().expect("token")).await,
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn api_keys_work_instead_of_a_token_until_revoked_and_are_shown_once() {
    let app = spawn_api_only(Backend::Postgres, &[]).await;
    let (_, tokens) = register_and_login(&app).await;
    let token = tokens["access_token"].as_str().expect("token");

    let (status, created) = send(
        app.http
            .post(app.url("/auth/api-keys"))
            .bearer_auth(token)
            .json(&json!({ "name": "ci" })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"]
        .as_str()
        .expect("key shown on creation")
        .to_owned();
    assert!(key.starts_with("vrk_"));
    assert!(key.starts_with(created["prefix"].as_str().expect("prefix")));

    // Either header works, and the key acts as its user.
    let (status, via_header) =
        send(app.http.get(app.url("/auth/me")).header("x-api-key", &key)).await;
    assert_eq!(status, 200, "{via_header}");
    assert_eq!(me(&app, &key).await, 200);
    let (status, task) = send(
        app.http
            .post(app.url("/tasks"))
            .header("x-api-key", &key)
            .json(&json!({ "name": "k", "script_type": "bash", "script_content": "true" })),
    )
    .await;
    assert_eq!(status, 201, "{task}");

    let (status, listed) = send(app.http.get(app.url("/auth/api-keys")).bearer_auth(token)).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(
        listed[0].get("key").is_none(),
        "a listing never shows the key: {listed}"
    );
    assert!(listed[0]["last_used_at"].is_string(), "{listed}");

    let (status, body) = send(
        app.http
            .post(app.url("/auth/api-keys"))
            .bearer_auth(token)
            .json(&json!({ "name": "" })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let response = app
        .http
        .post(app.url("/auth/logout"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status().as_u16(), 400);

    // Someone else cannot revoke it; its owner can, and then it stops working at once.
    let (_, stranger) = register_and_login(&app).await;
    let id = created["id"].as_str().expect("id");
    let response = app
        .http
        .delete(app.url(&format!("/auth/api-keys/{id}")))
        .bearer_auth(stranger["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(me(&app, &key).await, 200);
    let response = app
        .http
        .delete(app.url(&format!("/auth/api-keys/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(me(&app, &key).await, 401);
    assert_eq!(me(&app, "vrk_0000").await, 401);
    app.stop().await;
}
