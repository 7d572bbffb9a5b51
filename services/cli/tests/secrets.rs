//! Secrets stay secret: a whole session of `voidrunner serve` at its default log level (register,
//! log in, refresh, API keys, a failed login, a run with stdin, log out) leaves no password,
//! token, key, JWT secret, program text, stdin or output in its log; the JWT secret it generates
//! is readable by its owner only.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use voidrunner_testkit::processes::{free_port, Processes};
use voidrunner_testkit::{send, start_nats, test_env, unique_prefix};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");

#[tokio::test]
async fn a_full_session_leaves_no_secret_and_no_program_in_the_log() {
    let nats = start_nats().await;
    let data_dir = tempfile::TempDir::new().expect("data dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut vars = test_env(
        nats.url(),
        "unused",
        &unique_prefix(),
        &[
            ("VOIDRUNNER_API_ADDR", &addr),
            (
                "VOIDRUNNER_DATA_DIR",
                &data_dir.path().display().to_string(),
            ),
        ],
    );
    // Its own SQLite database and a JWT secret it generates; the default log level.
    vars.retain(|(name, _)| {
        !matches!(
            name.as_str(),
            "VOIDRUNNER_DATABASE_URL" | "VOIDRUNNER_JWT_SECRET" | "RUST_LOG"
        )
    });
    let mut processes = Processes::new(BIN, vars);
    processes.start("serve", "serve", &[]);
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    processes.wait_ready("serve", &http, &base).await;
    let url = |path: &str| format!("{base}/api/v1{path}");

    let marker = uuid::Uuid::new_v4().simple().to_string();
    let password = format!("password-{marker}");
    let wrong_password = format!("wrong-{marker}");
    let email = format!("{marker}@example.com");
    let program_text = format!("program-{marker}");
    let stdin = format!("stdin-{marker}");
    let output = format!("output-{marker}");

    let credentials = json!({ "email": email, "password": password });
    let (status, _) = send(http.post(url("/auth/register")).json(&credentials)).await;
    assert_eq!(status, 201);
    let (status, tokens) = send(http.post(url("/auth/login")).json(&credentials)).await;
    assert_eq!(status, 200, "{tokens}");
    let (status, _) = send(
        http.post(url("/auth/login"))
            .json(&json!({ "email": email, "password": wrong_password })),
    )
    .await;
    assert_eq!(status, 401);
    let (status, tokens) = send(
        http.post(url("/auth/refresh"))
            .json(&json!({ "refresh_token": tokens["refresh_token"] })),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().expect("token").to_owned();
    let (_, me) = send(http.get(url("/auth/me")).bearer_auth(&access)).await;
    let webhook_secret = me["webhook_secret"].as_str().expect("secret").to_owned();
    let (status, key) = send(
        http.post(url("/auth/api-keys"))
            .bearer_auth(&access)
            .json(&json!({ "name": "ci" })),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let api_key = key["key"].as_str().expect("key").to_owned();

    // A run through the API key: its program, stdin and output are the user's business.
    let code = format!(
        "import sys\nsecret = '{program_text}'\nprint(sys.stdin.read().replace('stdin', 'output'))"
    );
    let (status, run) = send(
        http.post(url("/runs?wait=true"))
            .header("X-API-Key", &api_key)
            .json(&json!({ "language": "python", "code": code, "stdin": stdin })),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["stdout"], format!("{output}\n"), "{run}");
    // Wrong credentials that look like real ones are refused without being echoed.
    let (status, _) = send(http.get(url("/auth/me")).bearer_auth(format!("{access}x"))).await;
    assert_eq!(status, 401);
    let (status, _) = send(
        http.get(url("/auth/me"))
            .header("X-API-Key", format!("{api_key}x")),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = send(http.post(url("/auth/logout")).bearer_auth(&access)).await;
    assert_eq!(status, 204);

    let secret_file = data_dir.path().join("jwt-secret");
    let mode = std::fs::metadata(&secret_file)
        .expect("serve wrote its JWT secret")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the JWT secret is its owner's alone");
    let jwt_secret = std::fs::read_to_string(&secret_file).expect("read secret");

    let log = processes.log_of("serve");
    assert!(
        log.contains("voidrunner is up"),
        "the log is there to be read:\n{log}"
    );
    let refresh = tokens["refresh_token"].as_str().expect("refresh token");
    for (what, secret) in [
        ("password", password.as_str()),
        ("wrong password", &wrong_password),
        ("access token", &access),
        ("refresh token", refresh),
        ("API key", &api_key),
        ("webhook secret", &webhook_secret),
        ("JWT secret", jwt_secret.trim()),
        ("program text", &program_text),
        ("stdin", &stdin),
        ("output", &output),
        // Tokens are long: a part of one is a leak too.
        ("part of the access token", &access[access.len() - 24..]),
        ("part of the API key", &api_key[api_key.len() - 24..]),
    ] {
        assert!(!log.contains(secret), "the log shows the {what}:\n{log}");
    }
}
