//! The events on the wire validate against the JSON Schemas in `nats/schemas/`, as seen by a
//! client that is not the project's own (nats-py, with Python's jsonschema).

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use voidrunner_testkit::{spawn_app, Backend};

#[tokio::test]
async fn events_on_the_wire_match_the_published_json_schemas() {
    let app = spawn_app(Backend::Sqlite).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut checker = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(root.join("tests/wire_check.py"))
        .arg(app.nats.url())
        .arg(&app.prefix)
        .arg(root.join("../../nats/schemas"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (scripts/test.sh installs nats-py and jsonschema)");
    let mut lines = BufReader::new(checker.stdout.take().expect("stdout")).lines();
    let ready = lines.next_line().await.expect("read checker");
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "the checker could not subscribe (is nats-py installed?)"
    );

    let token = app.login_new_user().await;
    let programs = [
        (
            "python",
            "import sys\nprint('out')\nprint('err', file=sys.stderr)\n",
        ),
        ("javascript", "console.log('out'); process.exit(2)"),
        ("bash", "printf '\\xff\\xfe'"),
    ];
    for (language, code) in programs {
        let result = app
            .run_to_end(
                &token,
                json!({ "name": "wire", "script_type": language, "script_content": code }),
            )
            .await;
        assert!(
            result["status"] == "completed" || result["status"] == "failed",
            "{result}"
        );
    }

    drop(checker.stdin.take());
    let summary = lines
        .next_line()
        .await
        .expect("read summary")
        .expect("a summary line");
    let summary: Value = serde_json::from_str(&summary).expect("summary is JSON");
    assert_eq!(summary["errors"], json!([]), "{summary}");
    let count = |schema: &str| summary["counts"][schema].as_u64().unwrap_or(0);
    assert_eq!(count("voidrunner.dispatch.v1"), 3, "{summary}");
    assert_eq!(count("voidrunner.started.v1"), 3, "{summary}");
    assert_eq!(count("voidrunner.result.v1"), 3, "{summary}");
    assert!(count("voidrunner.output.v1") >= 3, "{summary}");
    assert!(checker.wait().await.expect("checker exits").success());
    app.stop().await;
}
