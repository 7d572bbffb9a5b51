//! Every language of the catalog, through the real sandbox: its hello-world, a program that
//! reads stdin, a non-zero exit, and for compiled languages a compile error. Adding a language to
//! `languages/catalog.toml` adds it here. On the Docker backend and on the native one.

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use voidrunner_shared::Language;
use voidrunner_testkit::{send, spawn_app_with, Backend, TestApp};

/// One check of one language: what to send and what must come back.
struct Case {
    language: Language,
    check: &'static str,
    code: &'static str,
    stdin: &'static str,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for &language in Language::all() {
        let checks = &language.definition().checks;
        let mut add = |check, code: &'static String, stdin| {
            cases.push(Case {
                language,
                check,
                code: code.as_str(),
                stdin,
            })
        };
        add("hello", &checks.hello, "");
        add("greet", &checks.greet, "voidrunner\n");
        add("exit", &checks.exit, "");
        if let Some(broken) = &checks.compile_error {
            add("compile_error", broken, "");
        }
    }
    cases
}

async fn run(app: &TestApp, token: &str, case: &Case) -> Value {
    let body = json!({
        "language": case.language.as_str(),
        "code": case.code,
        "stdin": case.stdin,
    });
    let (status, result) = app
        .post_run(token, "?wait=true&wait_seconds=59", body)
        .await;
    match status {
        200 => result,
        // Still running after the wait: follow it to its end.
        202 => {
            let id = result["id"].as_str().expect("an execution id");
            app.wait_final(token, id).await
        }
        _ => panic!("{} {}: refused: {result}", case.language, case.check),
    }
}

/// What is wrong with the result of `case`, if anything.
fn problem(case: &Case, result: &Value) -> Option<String> {
    let (status, exit_code, stdout, compile_error) = match case.check {
        "hello" => ("completed", json!(0), Some("hello, world\n"), false),
        "greet" => ("completed", json!(0), Some("hello, voidrunner\n"), false),
        "exit" => ("failed", json!(3), None, false),
        _ => ("failed", Value::Null, Some(""), true),
    };
    let matches = result["status"] == status
        && result["exit_code"] == exit_code
        && stdout.is_none_or(|stdout| result["stdout"] == stdout)
        && result["compile_error"] == compile_error
        && (!compile_error || result["stderr"].as_str().is_some_and(|s| !s.is_empty()));
    (!matches).then(|| {
        format!(
            "{} {}: wanted {status}, exit code {exit_code}, stdout {stdout:?}, compile error {compile_error}; got {result}",
            case.language, case.check
        )
    })
}

#[tokio::test]
async fn every_catalog_language_says_hello_reads_stdin_exits_and_reports_compile_errors() {
    every_language_passes_its_checks(&[]).await;
}

#[tokio::test]
async fn every_catalog_language_passes_its_checks_in_native_sandboxes_too() {
    let state = tempfile::TempDir::new().expect("state dir");
    let state_dir = state.path().display().to_string();
    every_language_passes_its_checks(&[
        ("VOIDRUNNER_SANDBOX_BACKEND", "native"),
        ("VOIDRUNNER_SANDBOX_STATE_DIR", &state_dir),
    ])
    .await;
}

/// Every check of every language, three at a time, through a worker with `settings`.
async fn every_language_passes_its_checks(settings: &[(&str, &str)]) {
    let mut settings = settings.to_vec();
    settings.push(("VOIDRUNNER_WORKER_SLOTS", "3"));
    let app = spawn_app_with(Backend::Sqlite, &settings).await;
    let token = app.login_new_user().await;

    // Every language is served by the worker (its images are built) and listed with it.
    let (status, languages) = send(app.http.get(app.url("/languages")).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{languages}");
    let listed = languages.as_array().expect("a list");
    assert_eq!(listed.len(), Language::all().len(), "{languages}");
    for entry in listed {
        assert_eq!(
            entry["workers"], 1,
            "no worker serves {entry}: is its image built?"
        );
    }

    let cases = cases();
    let results: Vec<(usize, Value)> = stream::iter(cases.iter().enumerate())
        .map(|(index, case)| {
            let app = &app;
            let token = &token;
            async move { (index, run(app, token, case).await) }
        })
        .buffer_unordered(3)
        .collect()
        .await;
    let problems: Vec<String> = results
        .iter()
        .filter_map(|(index, result)| problem(&cases[*index], result))
        .collect();
    assert!(
        problems.is_empty(),
        "{} of {} checks failed:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
    app.stop().await;
}

#[tokio::test]
async fn workers_pull_only_the_languages_they_serve_and_an_unserved_one_waits_for_its_worker() {
    let app = voidrunner_testkit::spawn_api_only(Backend::Sqlite, &[]).await;
    let token = app.login_new_user().await;
    let pythonist = app
        .spawn_worker(&[("VOIDRUNNER_WORKER_LANGUAGES", "python")])
        .await;
    let basher = app
        .spawn_worker(&[("VOIDRUNNER_WORKER_LANGUAGES", "sh")])
        .await;

    let serving = |languages: &Value, id: &str| {
        languages
            .as_array()
            .and_then(|all| all.iter().find(|entry| entry["id"] == id))
            .map(|entry| entry["workers"].clone())
    };
    let (_, languages) = send(app.http.get(app.url("/languages")).bearer_auth(&token)).await;
    assert_eq!(serving(&languages, "python"), Some(json!(1)), "{languages}");
    assert_eq!(serving(&languages, "bash"), Some(json!(1)), "{languages}");
    assert_eq!(serving(&languages, "ruby"), Some(json!(0)), "{languages}");

    // Nobody serves Ruby yet: its execution waits in its lane.
    let (status, ruby) = app
        .post_run(
            &token,
            "",
            json!({ "language": "ruby", "code": "puts 6 * 7" }),
        )
        .await;
    assert_eq!(status, 202, "{ruby}");
    let ruby_id = ruby["id"].as_str().expect("an id").to_owned();

    let mut runs = Vec::new();
    for i in 0..6 {
        let (language, code) = if i % 2 == 0 {
            ("python", format!("print({i})"))
        } else {
            ("bash", format!("echo {i}"))
        };
        let (status, run) = app
            .post_run(&token, "", json!({ "language": language, "code": code }))
            .await;
        assert_eq!(status, 202, "{run}");
        runs.push((language, run["id"].as_str().expect("an id").to_owned()));
    }
    for (language, id) in &runs {
        let done = app.wait_final(&token, id).await;
        assert_eq!(done["status"], "completed", "{done}");
        let expected = if *language == "python" {
            &pythonist.id
        } else {
            &basher.id
        };
        assert_eq!(done["worker_id"], expected.as_str(), "{language}: {done}");
    }
    // Both workers were free all along, and neither took the Ruby execution.
    let (_, waiting) = send(
        app.http
            .get(app.url(&format!("/executions/{ruby_id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(waiting["status"], "queued", "{waiting}");

    // A worker that serves Ruby comes, and takes it.
    let rubyist = app
        .spawn_worker(&[("VOIDRUNNER_WORKER_LANGUAGES", "ruby")])
        .await;
    let done = app.wait_final(&token, &ruby_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "42\n", "{done}");
    assert_eq!(done["worker_id"], rubyist.id.as_str(), "{done}");

    rubyist.stop().await;
    basher.stop().await;
    pythonist.stop().await;
    app.stop().await;
}

/// A program of a prestarted language: what it sees of itself, and how its uncaught error is
/// reported, are what its `run` command would give it. Its output's second line says whether
/// its runtime was prestarted.
struct Prestarted {
    language: &'static str,
    files: Value,
    /// The first line of its output.
    stdout: &'static str,
    /// The uncaught error's report: its first line and its last.
    stderr: (&'static str, &'static str),
}

fn prestarted() -> [Prestarted; 2] {
    [
        Prestarted {
            language: "python",
            files: json!([
                { "path": "main.py", "content": "import os, sys\nimport helper\nprint(__name__, __file__, sys.argv, sys.path[0], os.getcwd(), helper.NAME, input())\nprint(str(any('prestart' in a for a in sys.orig_argv)).lower())\ndef fail():\n    raise ValueError('boom')\nfail()\n" },
                { "path": "helper.py", "content": "NAME = 'helper'\n" },
            ]),
            stdout: "__main__ /tmp/work/main.py ['main.py'] /tmp/work /tmp/work helper voidrunner\n",
            stderr: (
                "Traceback (most recent call last):\n  File \"/tmp/work/main.py\", line 7, in <module>\n",
                "ValueError: boom\n",
            ),
        },
        Prestarted {
            language: "javascript",
            files: json!([
                { "path": "main.js", "content": "const helper = require('./helper');\nconst input = require('fs').readFileSync(0, 'utf8').trim();\nconsole.log(require.main === module, __filename, process.argv[1], process.cwd(), helper.name, input);\nconsole.log(process.execArgv.length === 0 && require.cache[require.resolve('/usr/local/lib/voidrunner/prestart.js')] !== undefined);\nnull.x;\n" },
                { "path": "helper.js", "content": "module.exports = { name: 'helper' };\n" },
            ]),
            stdout: "true /tmp/work/main.js /tmp/work/main.js /tmp/work helper voidrunner\n",
            stderr: ("/tmp/work/main.js:5\n", "\nNode.js v20"),
        },
    ]
}

#[tokio::test]
async fn a_prestarted_runtime_runs_the_program_as_its_run_command_would_on_both_backends() {
    let state = tempfile::TempDir::new().expect("state dir");
    let state_dir = state.path().display().to_string();
    // From the warm pool, the runtime was started before the program came; in a sandbox made
    // for the program (no pool), it is started by the run command. The program sees no
    // difference but the flag.
    for (backend, pooled) in [
        ("docker", true),
        ("docker", false),
        ("native", true),
        ("native", false),
    ] {
        let pools = if pooled {
            "python=1,javascript=1"
        } else {
            "python=0,javascript=0"
        };
        let app = spawn_app_with(
            Backend::Sqlite,
            &[
                ("VOIDRUNNER_SANDBOX_BACKEND", backend),
                ("VOIDRUNNER_SANDBOX_STATE_DIR", &state_dir),
                ("VOIDRUNNER_POOL_SIZES", pools),
            ],
        )
        .await;
        let token = app.login_new_user().await;
        for case in prestarted() {
            let language: Language = case.language.parse().expect("in the catalog");
            assert!(
                language.definition().prestart.is_some(),
                "{}: no prestart in the catalog",
                case.language
            );
            if pooled {
                app.until_warm(case.language).await;
            }
            let (status, result) = app
                .post_run(
                    &token,
                    "?wait=true",
                    json!({ "language": case.language, "files": case.files, "stdin": "voidrunner\n" }),
                )
                .await;
            let what = format!("{backend}, pooled {pooled}, {}", case.language);
            assert_eq!(status, 200, "{what}: {result}");
            assert_eq!(result["status"], "failed", "{what}: {result}");
            assert_eq!(result["exit_code"], 1, "{what}: {result}");
            assert_eq!(
                result["stdout"],
                format!("{}{pooled}\n", case.stdout),
                "{what}: {result}"
            );
            let stderr = result["stderr"].as_str().expect("stderr");
            let (first, last) = case.stderr;
            assert!(
                stderr.starts_with(first) && stderr.trim_end().contains(last.trim_end()),
                "{what}: the error is reported as the runtime reports it:\n{stderr}"
            );
            assert!(
                !stderr.contains("prestart"),
                "{what}: the prestart shows in the report:\n{stderr}"
            );
        }
        app.stop().await;
    }
}
