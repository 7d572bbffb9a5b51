//! The `voidrunner` client commands, driven as a subprocess against a real server (api, NATS,
//! worker and Docker): exact output passthrough, the exit code of each way a run ends, live
//! output, Ctrl-C under a pseudo-terminal, `--json`, a kept session that refreshes itself,
//! and the listing commands.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use voidrunner_testkit::{send, spawn_app, Backend, TestApp};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");

/// The CLI as a user would start it: nothing of the test's environment but PATH, the server's
/// URL and a config directory of its own.
fn cli(app: &TestApp, config: &Path, api_key: Option<&str>) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", config)
        .env("XDG_CONFIG_HOME", config)
        .env("VOIDRUNNER_URL", &app.base_url)
        .current_dir(config);
    if let Some(key) = api_key {
        command.env("VOIDRUNNER_API_KEY", key);
    }
    command
}

/// Runs the command to its end without blocking the runtime the server under test runs on.
async fn run(command: &mut Command) -> Output {
    let command = std::mem::replace(command, Command::new(BIN));
    tokio::process::Command::from(command)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("voidrunner runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A new user's API key.
async fn api_key(app: &TestApp) -> String {
    let token = app.login_new_user().await;
    let (status, created) = send(
        app.http
            .post(app.url("/auth/api-keys"))
            .bearer_auth(&token)
            .json(&json!({ "name": "cli" })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["key"].as_str().expect("key").to_owned()
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    std::fs::write(dir.join(name), contents).expect("write program");
    name.to_owned()
}

#[tokio::test]
async fn a_run_passes_stdout_and_stderr_through_exactly_and_exits_as_the_program_did() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = api_key(&app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let program = write(
        dir.path(),
        "echo.py",
        "import sys\nfrom helper import shout\n\
         sys.stdout.write(shout(sys.stdin.read()) + ' ünïcode')\n\
         sys.stderr.write('a warning\\n  indented, no newline')\nsys.exit(3)\n",
    );
    let helper = write(
        dir.path(),
        "helper.py",
        "def shout(s):\n    return s.upper()\n",
    );
    let stdin = write(dir.path(), "input.txt", "hello\nworld");

    let output =
        run(cli(&app, dir.path(), Some(&key)).args(["run", &program, &helper, "--stdin", &stdin]))
            .await;
    assert_eq!(text(&output.stdout), "HELLO\nWORLD ünïcode");
    assert_eq!(text(&output.stderr), "a warning\n  indented, no newline");
    assert_eq!(output.status.code(), Some(3));

    // --json: the final execution document, and still the program's exit code.
    let output = run(cli(&app, dir.path(), Some(&key))
        .args(["run", &program, &helper, "--stdin", &stdin, "--json"]))
    .await;
    let execution: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(execution["status"], "failed", "{execution}");
    assert_eq!(execution["exit_code"], 3);
    assert_eq!(execution["stdout"], "HELLO\nWORLD ünïcode");
    assert_eq!(output.status.code(), Some(3));

    // --no-wait: the id, at once; the execution is the user's and goes on.
    let output = run(cli(&app, dir.path(), Some(&key)).args(["run", "--no-wait", &program])).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let id = text(&output.stdout).trim().to_owned();
    let shown =
        run(cli(&app, dir.path(), Some(&key)).args(["executions", "show", &id, "-o", "json"]))
            .await;
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("show is JSON");
    assert_eq!(shown["id"], id.as_str());

    // A language the extension does not name, and a refused request, are client errors.
    let unknown = write(dir.path(), "notes.txt", "hi");
    let output = run(cli(&app, dir.path(), Some(&key)).args(["run", &unknown])).await;
    assert_eq!(output.status.code(), Some(125));
    assert!(
        text(&output.stderr).contains("--lang"),
        "{}",
        text(&output.stderr)
    );
    let output =
        run(cli(&app, dir.path(), Some(&key)).args(["run", &program, "--memory", "1"])).await;
    assert_eq!(output.status.code(), Some(125));
    assert!(
        text(&output.stderr).contains("memory_mb"),
        "{}",
        text(&output.stderr)
    );
    let output = run(cli(&app, dir.path(), Some("vrk_not_a_key")).args(["run", &program])).await;
    assert_eq!(output.status.code(), Some(125));
    assert!(
        text(&output.stderr).contains("HTTP 401"),
        "{}",
        text(&output.stderr)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_timeout_an_out_of_memory_kill_and_a_compile_error_each_have_their_exit_code() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = api_key(&app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "spin.sh",
            "while true; do :; done\n",
            vec!["--timeout", "1"],
            124,
            "time limit",
        ),
        (
            "hungry.py",
            "b = bytearray(200 << 20)\nprint(len(b))\n",
            vec!["--memory", "48"],
            137,
            "out of memory",
        ),
        (
            "broken.go",
            "package main\n\nfunc main() {\n\tundefinedFunction()\n}\n",
            vec!["--timeout", "120"],
            65,
            "did not compile",
        ),
    ];
    for (name, program, options, code, why) in cases {
        let file = write(dir.path(), name, program);
        let output = run(cli(&app, dir.path(), Some(&key))
            .arg("run")
            .arg(&file)
            .args(&options))
        .await;
        assert_eq!(
            output.status.code(),
            Some(code),
            "{name}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).contains(why),
            "{name}: {}",
            text(&output.stderr)
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_first_line_arrives_while_the_program_still_runs() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = api_key(&app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let program = write(
        dir.path(),
        "slow.sh",
        "echo first\nwhile true; do sleep 0.2; done\n",
    );
    let mut child = cli(&app, dir.path(), Some(&key))
        .args(["run", &program, "--timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("voidrunner runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    let blocking = tokio::task::spawn_blocking(move || {
        lines.read_line(&mut first).expect("read");
        (first, lines)
    });
    let (first, mut lines) = blocking.await.expect("reader");
    assert_eq!(first, "first\n");
    // The program has not ended: it loops until cancelled.
    let listed =
        run(cli(&app, dir.path(), Some(&key)).args(["executions", "ls", "-o", "json"])).await;
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("ls is JSON");
    let execution = &listed[0];
    assert_eq!(execution["status"], "running", "{execution}");
    let id = execution["id"].as_str().expect("id").to_owned();

    // `logs -f` from another terminal sees what was printed so far, then the end.
    let follower = cli(&app, dir.path(), Some(&key))
        .args(["executions", "logs", "-f", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("logs -f");
    let cancelled =
        run(cli(&app, dir.path(), Some(&key)).args(["executions", "cancel", &id])).await;
    assert_eq!(
        cancelled.status.code(),
        Some(0),
        "{}",
        text(&cancelled.stderr)
    );
    let followed = tokio::task::spawn_blocking(move || follower.wait_with_output())
        .await
        .expect("join")
        .expect("logs -f output");
    assert_eq!(text(&followed.stdout), "first\n");
    let status = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut lines, &mut rest).expect("rest");
        (child.wait().expect("wait"), rest)
    })
    .await
    .expect("join");
    assert_eq!(status.0.code(), Some(130));
    assert_eq!(status.1, "");
    app.stop().await;
}

/// Starts the CLI on a pseudo-terminal, types Ctrl-C once `started` shows, and exits with
/// the CLI's exit code, having printed what the terminal showed.
const PTY_HARNESS: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
seen, typed = b"", False
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
    if not typed and b"started" in seen:
        os.write(fd, b"\x03")
        typed = True
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(seen)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[tokio::test]
async fn ctrl_c_on_a_terminal_cancels_the_execution_and_exits_130() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = api_key(&app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let program = write(
        dir.path(),
        "loop.sh",
        "echo started\nwhile true; do sleep 0.2; done\n",
    );
    let mut command = cli(&app, dir.path(), Some(&key));
    let output = command
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["run", &program, "--timeout", "60"]);
    let program_args: Vec<String> = output
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let envs: Vec<(String, String)> = output
        .get_envs()
        .filter_map(|(k, v)| {
            Some((
                k.to_string_lossy().into_owned(),
                v?.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    let terminal = tokio::process::Command::new("python3")
        .env_clear()
        .envs(envs)
        .current_dir(dir.path())
        .args(["-c", PTY_HARNESS, BIN])
        .args(&program_args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("python3");
    let shown = text(&terminal.stdout);
    assert_eq!(terminal.status.code(), Some(130), "{shown}");
    assert!(shown.contains("cancelling execution"), "{shown}");
    let listed =
        run(cli(&app, dir.path(), Some(&key)).args(["executions", "ls", "-o", "json"])).await;
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("ls is JSON");
    assert_eq!(listed[0]["status"], "cancelled", "{listed}");
    app.stop().await;
}

#[tokio::test]
async fn a_login_is_kept_private_and_refreshed_and_the_listing_commands_read_the_api() {
    let app = spawn_app(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, _) = send(
        app.http
            .post(app.url("/auth/register"))
            .json(&json!({ "email": email, "password": "correct horse battery" })),
    )
    .await;
    assert_eq!(status, 201);

    let mut login = cli(&app, dir.path(), None);
    login.args(["login", "--email", &email, "--password-stdin"]);
    let mut login = tokio::process::Command::from(login)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("login");
    let mut password = login.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut password, b"correct horse battery\n")
        .await
        .expect("password");
    drop(password);
    let login = login.wait_with_output().await.expect("login ends");
    assert_eq!(login.status.code(), Some(0), "{}", text(&login.stderr));
    let file = dir.path().join("voidrunner/credentials.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("credentials")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let refresh_token = |file: &Path| {
        let stored: Value =
            serde_json::from_slice(&std::fs::read(file).expect("read")).expect("json");
        stored["sessions"][&app.base_url]["refresh_token"].clone()
    };
    let first = refresh_token(&file);

    // An access token the api refuses (as an expired one) is refreshed, and the command works.
    let mut stored: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    stored["sessions"][&app.base_url]["access_token"] = json!("expired");
    std::fs::write(&file, serde_json::to_vec(&stored).expect("json")).expect("write");
    let runs = dir.path().join("runs.jsonl");
    std::fs::write(
        &runs,
        "{\"language\": \"bash\", \"code\": \"echo one\"}\n\n{\"language\": \"python\", \"code\": \"print(2)\"}\n",
    )
    .expect("runs");
    let batch =
        run(cli(&app, dir.path(), None).args(["runs", "batch", "runs.jsonl", "-o", "json"])).await;
    assert_eq!(batch.status.code(), Some(0), "{}", text(&batch.stderr));
    let batch: Value = serde_json::from_slice(&batch.stdout).expect("batch is JSON");
    assert_eq!(batch.as_array().map(Vec::len), Some(2), "{batch}");
    let second = refresh_token(&file);
    assert_ne!(second, first, "the refused token was refreshed");

    // One about to expire is refreshed before it is sent.
    let mut stored: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    stored["sessions"][&app.base_url]["expires_at"] = json!("2000-01-01T00:00:00Z");
    std::fs::write(&file, serde_json::to_vec(&stored).expect("json")).expect("write");

    let listed = run(cli(&app, dir.path(), None).args(["executions", "ls"])).await;
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    assert_ne!(
        refresh_token(&file),
        second,
        "the expiring token was refreshed"
    );
    let table = text(&listed.stdout);
    assert!(table.starts_with("ID "), "{table}");
    for execution in batch.as_array().expect("items") {
        assert!(
            table.contains(execution["id"].as_str().expect("id")),
            "{table}"
        );
    }
    assert!(!table.contains('\x1b'), "no colour off a terminal: {table}");

    // With --wait, the batch is shown as it ended; one failing run fails the command.
    std::fs::write(
        dir.path().join("mixed.jsonl"),
        "{\"language\": \"bash\", \"code\": \"echo fine\"}\n{\"language\": \"bash\", \"code\": \"exit 4\"}\n",
    )
    .expect("runs");
    let waited = run(cli(&app, dir.path(), None).args([
        "runs",
        "batch",
        "mixed.jsonl",
        "--wait",
        "-o",
        "json",
    ]))
    .await;
    assert_eq!(waited.status.code(), Some(1), "{}", text(&waited.stderr));
    let waited: Value = serde_json::from_slice(&waited.stdout).expect("batch is JSON");
    assert_eq!(waited[0]["status"], "completed", "{waited}");
    assert_eq!(waited[0]["stdout"], "fine\n", "{waited}");
    assert_eq!(waited[1]["status"], "failed", "{waited}");
    assert_eq!(waited[1]["exit_code"], 4, "{waited}");

    let created =
        run(cli(&app, dir.path(), None).args(["api-keys", "create", "laptop", "-o", "json"])).await;
    let created: Value = serde_json::from_slice(&created.stdout).expect("key is JSON");
    let key = created["key"].as_str().expect("key shown once").to_owned();
    let workers = run(cli(&app, dir.path(), Some(&key)).args(["workers", "-o", "json"])).await;
    let workers: Value = serde_json::from_slice(&workers.stdout).expect("workers is JSON");
    assert_eq!(workers[0]["id"], app.worker_id.as_str(), "{workers}");
    let languages = run(cli(&app, dir.path(), Some(&key)).args(["languages", "-o", "json"])).await;
    let languages: Value = serde_json::from_slice(&languages.stdout).expect("languages is JSON");
    let python = languages
        .as_array()
        .expect("a list")
        .iter()
        .find(|language| language["id"] == "python")
        .unwrap_or_else(|| panic!("no python: {languages}"));
    assert_eq!(python["workers"], 1, "{languages}");
    assert_eq!(python["main_file"], "main.py", "{languages}");
    assert!(python["aliases"]
        .as_array()
        .expect("aliases")
        .contains(&json!("py")));
    assert!(!python["version"].as_str().expect("version").is_empty());
    let revoked = run(cli(&app, dir.path(), None).args([
        "api-keys",
        "revoke",
        created["id"].as_str().expect("id"),
    ]))
    .await;
    assert_eq!(revoked.status.code(), Some(0), "{}", text(&revoked.stderr));
    let refused = run(cli(&app, dir.path(), Some(&key)).args(["workers"])).await;
    assert_eq!(refused.status.code(), Some(125));

    let tasks = run(cli(&app, dir.path(), None).args(["tasks", "ls", "-o", "json"])).await;
    assert_eq!(tasks.status.code(), Some(0), "{}", text(&tasks.stderr));
    let dead = run(cli(&app, dir.path(), None).args(["dead-letters", "ls"])).await;
    assert_eq!(
        text(&dead.stdout).lines().count(),
        1,
        "only the heading: {}",
        text(&dead.stdout)
    );

    let logout = run(cli(&app, dir.path(), None).arg("logout")).await;
    assert_eq!(logout.status.code(), Some(0));
    let after = run(cli(&app, dir.path(), None).args(["executions", "ls"])).await;
    assert_eq!(after.status.code(), Some(125));
    assert!(
        text(&after.stderr).contains("voidrunner login"),
        "{}",
        text(&after.stderr)
    );
    app.stop().await;
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("voidrunner");
        assert_eq!(output.status.code(), Some(0));
        assert!(text(&output.stdout).contains("executions"), "{shell}");
    }
}
