//! What a program can be: Go with its compile step, several files, stdin, and limits of its own.

use serde_json::{json, Value};
use voidrunner_testkit::{send, spawn_app, spawn_app_with, start_execution, wait_final, Backend};

#[tokio::test]
async fn go_programs_compile_and_run_and_compile_errors_are_reported_as_such() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let hello = json!({
        "name": "go", "script_type": "go", "timeout_seconds": 120,
        "script_content": "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello from go\", greeting())\n}\n",
        "files": [{ "path": "greeting.go", "content": "package main\n\nfunc greeting() string { return \"and a second file\" }\n" }],
    });
    let result = app.run_to_end(&token, hello).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(
        result["stdout"], "hello from go and a second file\n",
        "{result}"
    );
    assert_eq!(result["compile_error"], false);

    let broken = json!({
        "name": "go", "script_type": "go", "timeout_seconds": 120,
        "script_content": "package main\n\nfunc main() {\n\tundefinedFunction()\n}\n",
    });
    let result = app.run_to_end(&token, broken).await;
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["compile_error"], true, "{result}");
    assert_eq!(result["exit_code"], Value::Null);
    assert!(
        result["stderr"]
            .as_str()
            .is_some_and(|s| s.contains("undefined: undefinedFunction")),
        "{result}"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_language_reads_its_stdin() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let programs = [
        ("python", "import sys\ndata = sys.stdin.read()\nprint(len(data), data.upper(), end='')\n"),
        ("javascript", "let d = '';\nprocess.stdin.on('data', c => d += c);\nprocess.stdin.on('end', () => process.stdout.write(d.length + ' ' + d.toUpperCase()));\n"),
        ("bash", "data=$(cat; echo x)\ndata=${data%x}\nprintf '%s %s' \"${#data}\" \"${data^^}\"\n"),
        ("go", "package main\n\nimport (\n\t\"fmt\"\n\t\"io\"\n\t\"os\"\n\t\"strings\"\n)\n\nfunc main() {\n\tb, _ := io.ReadAll(os.Stdin)\n\tfmt.Print(len(b), \" \", strings.ToUpper(string(b)))\n}\n"),
    ];
    let stdin = "two\nlines\n";
    for (language, code) in programs {
        let task = json!({ "name": language, "script_type": language, "script_content": code, "timeout_seconds": 120 });
        let result = app.run_with_stdin(&token, task, stdin).await;
        assert_eq!(result["status"], "completed", "{language}: {result}");
        assert_eq!(result["stdout"], "10 TWO\nLINES\n", "{language}: {result}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_program_may_consist_of_several_files() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let task = json!({
        "name": "modules", "script_type": "python",
        "script_content": "from lib.greet import greet\nimport json\nprint(greet(json.load(open('data/input.json'))['name']))\n",
        "files": [
            { "path": "lib/__init__.py", "content": "" },
            { "path": "lib/greet.py", "content": "def greet(name):\n    return f'hello {name}'\n" },
            { "path": "data/input.json", "content": "{\"name\": \"files\"}" },
        ],
    });
    let result = app.run_to_end(&token, task).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["stdout"], "hello files\n", "{result}");

    for (path, problem) in [
        ("../escape.py", "must be relative"),
        ("/etc/passwd", "must be relative"),
        ("main.py", "is the main file's"),
    ] {
        let task = json!({
            "name": "bad", "script_type": "python", "script_content": "print(1)",
            "files": [{ "path": path, "content": "x" }],
        });
        let (status, body) = app.create_task(&token, &task).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(problem)),
            "{path}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn tasks_may_ask_for_their_own_limits_within_the_operators_maxima() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("VOIDRUNNER_SANDBOX_MAX_MEMORY_MB", "512")],
    )
    .await;
    let token = app.login_new_user().await;

    // 100 MiB fits the default 256 MiB but not the 48 MiB this task asks for.
    let hungry = "b = bytearray(100 << 20)\nprint('allocated')\n";
    let result = app
        .run_to_end(&token, json!({ "name": "small", "script_type": "python", "script_content": hungry, "memory_mb": 48 }))
        .await;
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["oom_killed"], true, "{result}");
    let result = app
        .run_to_end(
            &token,
            json!({ "name": "default", "script_type": "python", "script_content": hungry }),
        )
        .await;
    assert_eq!(result["status"], "completed", "{result}");
    let peak = result["peak_memory_bytes"]
        .as_i64()
        .expect("peak memory measured");
    assert!(
        peak > 100 << 20,
        "peak {peak} should cover the 100 MiB allocation: {result}"
    );

    let result = app
        .run_to_end(&token, json!({ "name": "quiet", "script_type": "bash", "script_content": "head -c 5000 /dev/zero | tr '\\0' x", "output_limit_bytes": 2048 }))
        .await;
    assert_eq!(result["output_truncated"], true, "{result}");
    assert_eq!(
        result["stdout"].as_str().map(str::len),
        Some(2048),
        "{result}"
    );

    for (field, value, mentions) in [
        ("memory_mb", json!(4096), "memory_mb"),
        ("cpus", json!(64), "cpus"),
        (
            "output_limit_bytes",
            json!(100_000_000),
            "output_limit_bytes",
        ),
        ("network", json!(true), "network access is disabled"),
    ] {
        let mut task =
            json!({ "name": "greedy", "script_type": "python", "script_content": "print(1)" });
        task[field] = value;
        let (status, body) = app.create_task(&token, &task).await;
        assert_eq!(status, 422, "{field}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(mentions)),
            "{field}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn stdin_over_the_limit_is_refused_and_a_large_one_arrives_whole() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("VOIDRUNNER_MAX_STDIN_BYTES", "2000000")],
    )
    .await;
    let token = app.login_new_user().await;
    let big = "x".repeat(1_500_000);
    let task = json!({ "name": "count", "script_type": "python", "script_content": "import sys\nprint(len(sys.stdin.buffer.read()))\n" });
    let result = app.run_with_stdin(&token, task.clone(), &big).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["stdout"], "1500000\n");

    let (status, created) = app.create_task(&token, &task).await;
    assert_eq!(status, 201);
    let too_big = "x".repeat(2_000_001);
    let (status, body) = send(
        app.http
            .post(app.url(&format!(
                "/tasks/{}/executions",
                created["id"].as_str().expect("id")
            )))
            .bearer_auth(&token)
            .json(&json!({ "stdin": too_big })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["field"], "stdin", "{body}");
    // Without a body, an execution starts with empty stdin.
    let execution = start_execution(
        &app.http,
        &app.base_url,
        &token,
        created["id"].as_str().expect("id"),
    )
    .await;
    let result = wait_final(
        &app.http,
        &app.base_url,
        &token,
        execution["id"].as_str().expect("id"),
    )
    .await;
    assert_eq!(result["stdout"], "0\n", "{result}");
    app.stop().await;
}
