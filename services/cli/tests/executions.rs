//! Executions through the whole path: REST → outbox → JetStream → worker → Docker → reply
//! subject → recorder → database, on PostgreSQL and on SQLite.

use sea_orm::EntityTrait;
use serde_json::{json, Value};
use voidrunner_api::entity::execution;
use voidrunner_testkit::{execution_containers_gone, spawn_app, spawn_app_with, Backend, TestApp};

struct Case {
    language: &'static str,
    code: &'static str,
    stdout: &'static str,
    stderr: &'static str,
    exit_code: i64,
}

const CASES: &[Case] = &[
    Case {
        language: "python",
        code: "import sys\nprint('hello from python ü')\nprint('line 2')\nprint('to stderr', file=sys.stderr)\nsys.exit(0)\n",
        stdout: "hello from python ü\nline 2\n",
        stderr: "to stderr\n",
        exit_code: 0,
    },
    Case {
        language: "javascript",
        code: "console.log('hello from node', 6 * 7);\nconsole.error('node warning');\nprocess.exitCode = 0;\n",
        stdout: "hello from node 42\n",
        stderr: "node warning\n",
        exit_code: 0,
    },
    Case {
        language: "bash",
        code: "echo \"hello from bash $((6 * 7))\"\necho 'bash error' >&2\nexit 0\n",
        stdout: "hello from bash 42\n",
        stderr: "bash error\n",
        exit_code: 0,
    },
    Case {
        language: "python",
        code: "import sys\nprint('partial')\nsys.stderr.write('boom')\nsys.exit(3)\n",
        stdout: "partial\n",
        stderr: "boom",
        exit_code: 3,
    },
    Case {
        language: "javascript",
        code: "process.stdout.write('no newline');\nprocess.exit(7);\n",
        stdout: "no newline",
        stderr: "",
        exit_code: 7,
    },
    Case {
        language: "bash",
        code: "printf 'a\\tb\\n'\nfalse\n",
        stdout: "a\tb\n",
        stderr: "",
        exit_code: 1,
    },
];

async fn every_language_returns_exact_output(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.login_new_user().await;
    let runs = CASES.iter().map(|case| {
        let task = json!({
            "name": format!("{} exits {}", case.language, case.exit_code),
            "script_type": case.language,
            "script_content": case.code,
            "timeout_seconds": 30,
        });
        app.run_to_end(&token, task)
    });
    let results: Vec<Value> = futures::future::join_all(runs).await;

    for (case, result) in CASES.iter().zip(&results) {
        let expected_status = if case.exit_code == 0 {
            "completed"
        } else {
            "failed"
        };
        assert_eq!(
            result["status"], expected_status,
            "{}: {result}",
            case.language
        );
        assert_eq!(
            result["exit_code"], case.exit_code,
            "{}: {result}",
            case.language
        );
        assert_eq!(result["stdout"], case.stdout, "{}: {result}", case.language);
        assert_eq!(result["stderr"], case.stderr, "{}: {result}", case.language);
        assert_eq!(result["worker_id"], app.worker_id.as_str());
        assert!(result["duration_ms"].as_i64().is_some(), "{result}");
        assert!(
            result["queue_ms"].as_i64().is_some_and(|ms| ms >= 0),
            "{result}"
        );

        // What the API shows is what the database holds.
        let id: uuid::Uuid = result["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("uuid");
        let row = execution::Entity::find_by_id(id)
            .one(&app.db.connection)
            .await
            .expect("query")
            .expect("row exists");
        assert_eq!(row.stdout, case.stdout);
        assert_eq!(row.stderr, case.stderr);
        assert_eq!(row.exit_code, Some(case.exit_code));
        assert!(row.dispatched_at.is_some() && row.finished_at.is_some());
    }
    app.stop().await;
}

#[tokio::test]
async fn python_javascript_and_bash_return_exact_output_on_postgres() {
    every_language_returns_exact_output(Backend::Postgres).await;
}

#[tokio::test]
async fn python_javascript_and_bash_return_exact_output_on_sqlite() {
    every_language_returns_exact_output(Backend::Sqlite).await;
}

async fn run(app: &TestApp, token: &str, language: &str, code: &str, timeout: u32) -> Value {
    app.run_to_end(
        token,
        json!({ "name": "case", "script_type": language, "script_content": code, "timeout_seconds": timeout }),
    )
    .await
}

#[tokio::test]
async fn a_program_that_outlives_its_timeout_ends_timeout_and_its_container_is_gone() {
    // Without a warm pool, so that the sandbox carries the execution's label.
    let app = spawn_app_with(Backend::Sqlite, &[("VOIDRUNNER_POOL_SIZES", "bash=0")]).await;
    let token = app.login_new_user().await;
    let result = run(
        &app,
        &token,
        "bash",
        "echo before\nsleep 60\necho after\n",
        2,
    )
    .await;
    assert_eq!(result["status"], "timeout", "{result}");
    assert_eq!(result["stdout"], "before\n", "{result}");
    assert_eq!(result["exit_code"], Value::Null);
    let ran_for = result["duration_ms"].as_i64().expect("duration");
    assert!(
        (2000..10_000).contains(&ran_for),
        "ran for {ran_for} ms: {result}"
    );
    let id = result["id"].as_str().expect("id");
    assert!(
        execution_containers_gone(id).await,
        "the sandbox outlived its execution"
    );
    app.stop().await;
}

#[tokio::test]
async fn sandboxes_have_no_network_no_writable_root_and_no_privileges() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let probe = r#"
id -u
touch /should-not-exist 2>/dev/null && echo root-writable || echo root-readonly
echo ok > /tmp/scratch && cat /tmp/scratch
(exec 3<>/dev/tcp/1.1.1.1/53) 2>/dev/null && echo network || echo no-network
grep -q '^CapEff:\s*0000000000000000' /proc/self/status && echo no-caps || echo caps
"#;
    let result = run(&app, &token, "bash", probe, 10).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(
        result["stdout"], "65534\nroot-readonly\nok\nno-network\nno-caps\n",
        "{result}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_program_past_its_memory_limit_is_reported_out_of_memory() {
    let app = spawn_app_with(Backend::Sqlite, &[("VOIDRUNNER_SANDBOX_MEMORY_MB", "64")]).await;
    let token = app.login_new_user().await;
    let result = run(
        &app,
        &token,
        "python",
        "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n",
        30,
    )
    .await;
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["oom_killed"], true, "{result}");
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|e| e.contains("out of memory")),
        "{result}"
    );
    app.stop().await;
}

#[tokio::test]
async fn output_past_the_cap_is_truncated_and_the_flood_is_stopped() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("VOIDRUNNER_SANDBOX_OUTPUT_LIMIT_BYTES", "4096")],
    )
    .await;
    let token = app.login_new_user().await;
    let result = run(&app, &token, "bash", "yes voidrunner", 30).await;
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["output_truncated"], true, "{result}");
    assert_eq!(result["stdout_truncated"], true, "{result}");
    assert_eq!(result["stderr_truncated"], false, "{result}");
    assert_eq!(
        result["stdout"].as_str().map(str::len),
        Some(4096),
        "{result}"
    );
    assert!(result["stdout"]
        .as_str()
        .is_some_and(|s| s.starts_with("voidrunner\nvoidrunner\n")));
    app.stop().await;
}

#[tokio::test]
async fn binary_output_comes_back_as_base64() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let result = run(
        &app,
        &token,
        "python",
        "import sys\nsys.stdout.buffer.write(bytes([0xff, 0x00, 0x41]))\n",
        10,
    )
    .await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["stdout_encoding"], "base64", "{result}");
    assert_eq!(result["stdout"], "/wBB", "{result}");
    app.stop().await;
}
