//! `voidrunner config check` as a subprocess: it refuses what the service refuses, naming each
//! bad variable, and prints the effective configuration with its secrets redacted. And the
//! README's configuration table names exactly the variables the commands read.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");

/// The binary with only the variables given (and PATH).
fn voidrunner(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .expect("voidrunner runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SECRET: &str = "3f9c2a7be1d04c58a6f1e2d3c4b5a69788f7e6d5c4b3a2918f7e6d5c4b3a2910";

#[test]
fn a_bad_value_is_refused_by_name_as_the_service_would_refuse_it() {
    let bad = [
        ("VOIDRUNNER_NATS_URL", "nats://127.0.0.1:1"),
        ("VOIDRUNNER_WORKER_SLOTS", "lots"),
        ("VOIDRUNNER_SANDBOX_BACKEND", "podman"),
        ("VOIDRUNNER_SANDBOX_MEMORY_MB", "4"),
    ];
    let check = voidrunner(&["config", "check", "worker"], &bad);
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(78), "{stderr}");
    for (variable, value) in &bad[1..] {
        let line = stderr
            .lines()
            .find(|line| line.contains(variable))
            .unwrap_or_else(|| panic!("no line names {variable}: {stderr}"));
        if *variable != "VOIDRUNNER_SANDBOX_MEMORY_MB" {
            assert!(line.contains(value), "{line}");
        }
    }
    assert!(stderr.contains("3 configuration error(s)"), "{stderr}");
    assert!(check.stdout.is_empty(), "{}", text(&check.stdout));

    // The worker itself refuses to start on the same environment, naming the first of them,
    // before it tries to reach NATS (nothing listens on port 1).
    let worker = voidrunner(&["worker"], &bad);
    let stderr = text(&worker.stderr);
    assert_eq!(worker.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("VOIDRUNNER_WORKER_SLOTS"), "{stderr}");
    assert!(!stderr.contains("connect"), "{stderr}");
}

#[test]
fn the_api_needs_what_the_distributed_api_needs_and_serve_does_not() {
    let check = voidrunner(&["config", "check", "api"], &[]);
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(78), "{stderr}");
    for variable in [
        "VOIDRUNNER_NATS_URL",
        "VOIDRUNNER_DATABASE_URL",
        "VOIDRUNNER_JWT_SECRET",
    ] {
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
    // Embedded mode starts its own nats-server and keeps its state in the data directory.
    let serve = voidrunner(&["config", "check"], &[]);
    assert_eq!(serve.status.code(), Some(0), "{}", text(&serve.stderr));
    let short_secret = voidrunner(&["config", "check"], &[("VOIDRUNNER_JWT_SECRET", "short")]);
    assert_eq!(short_secret.status.code(), Some(78));
    assert!(text(&short_secret.stderr).contains("VOIDRUNNER_JWT_SECRET: must be at least 32"));
}

#[test]
fn the_effective_configuration_is_printed_with_its_secrets_redacted() {
    let vars = [
        (
            "VOIDRUNNER_NATS_URL",
            "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
        ),
        ("VOIDRUNNER_NATS_USER", "api"),
        ("VOIDRUNNER_NATS_PASSWORD", "nats-password-0123"),
        (
            "VOIDRUNNER_DATABASE_URL",
            "postgres://voidrunner:db-password-4567@db:5432/voidrunner",
        ),
        ("VOIDRUNNER_JWT_SECRET", SECRET),
        ("VOIDRUNNER_MAX_ACTIVE_PER_USER", "unlimited"),
    ];
    let check = voidrunner(&["config", "check", "api", "-o", "json"], &vars);
    let stdout = text(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    for secret in [SECRET, "nats-password-0123", "db-password-4567"] {
        assert!(!stdout.contains(secret), "{secret} shown: {stdout}");
    }
    let document: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(document["valid"], true);
    let setting = |name: &str| {
        document["settings"]
            .as_array()
            .expect("settings")
            .iter()
            .find(|setting| setting["variable"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {stdout}"))
            .clone()
    };
    assert_eq!(setting("VOIDRUNNER_JWT_SECRET")["value"], "<redacted>");
    assert_eq!(setting("VOIDRUNNER_NATS_PASSWORD")["value"], "<redacted>");
    assert_eq!(
        setting("VOIDRUNNER_DATABASE_URL")["value"],
        "postgres://voidrunner:***@db:5432/voidrunner"
    );
    assert_eq!(
        setting("VOIDRUNNER_MAX_ACTIVE_PER_USER")["value"],
        "unlimited"
    );
    assert_eq!(setting("VOIDRUNNER_MAX_ACTIVE_PER_USER")["set"], true);
    assert_eq!(setting("VOIDRUNNER_API_ADDR")["value"], "127.0.0.1:8080");
    assert_eq!(setting("VOIDRUNNER_API_ADDR")["set"], false);
    // The api reads no worker settings.
    assert!(!stdout.contains("VOIDRUNNER_WORKER_SLOTS"), "{stdout}");

    let table = voidrunner(&["config", "check", "api"], &vars);
    let stdout = text(&table.stdout);
    assert!(stdout.starts_with("VARIABLE"), "{stdout}");
    let line = stdout
        .lines()
        .find(|line| line.starts_with("VOIDRUNNER_JWT_SECRET "))
        .expect("a line for the secret");
    assert!(
        line.contains("<redacted>") && line.ends_with("environment"),
        "{line}"
    );
}

/// The variables of the README's configuration table.
fn documented() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let table = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let mut variables: Vec<String> = table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned))
        .filter(|name| name.starts_with("VOIDRUNNER_"))
        .collect();
    variables.sort();
    variables.dedup();
    variables
}

#[test]
fn the_readme_documents_every_variable_the_commands_read_and_no_other() {
    let read = voidrunner::settings::every_variable().expect("every command's settings load");
    let documented = documented();
    let undocumented: Vec<_> = read.iter().filter(|v| !documented.contains(v)).collect();
    let unread: Vec<_> = documented.iter().filter(|v| !read.contains(v)).collect();
    assert!(
        undocumented.is_empty(),
        "read but not in the README's configuration table: {undocumented:?}"
    );
    assert!(
        unread.is_empty(),
        "in the README's configuration table but read by no command: {unread:?}"
    );
    assert!(read.len() > 50, "{read:?}");
}

#[test]
fn no_code_reads_a_variable_of_its_own_beside_the_settings() {
    // Every `VOIDRUNNER_*` read goes through a settings struct; a direct `env::var` read of
    // one would escape `config check` and the README's table. Unit tests are not the product:
    // they read the test suite's own variables (`VOIDRUNNER_TEST_DATABASE_URL`).
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut direct = Vec::new();
    for dir in [
        "shared/src",
        "services/api/src",
        "services/worker/src",
        "services/cli/src",
    ] {
        let mut stack = vec![std::path::PathBuf::from(root).join(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(
                    std::fs::read_dir(&path)
                        .expect("readable")
                        .map(|entry| entry.expect("entry").path()),
                );
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let source = std::fs::read_to_string(&path).expect("source");
                // A file's unit tests (which may find their services as the tests do) aside.
                let source = source
                    .split_once("#[cfg(test)]\nmod tests")
                    .map_or(source.as_str(), |(code, _)| code);
                for pattern in [
                    "var(\"VOIDRUNNER_",
                    "var_os(\"VOIDRUNNER_",
                    "k == \"VOIDRUNNER_",
                ] {
                    if source.contains(pattern) {
                        direct.push(format!("{}: {pattern}", path.display()));
                    }
                }
            }
        }
    }
    assert!(direct.is_empty(), "{direct:?}");
}
