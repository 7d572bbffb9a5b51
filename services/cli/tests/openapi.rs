//! The OpenAPI document: every operation it lists is served; the responses the API gives in a
//! full workflow validate against it (checked by Python's jsonschema, a client that is not the
//! project's own); and thousands of generated requests (schemathesis) find no 5xx and no
//! response that contradicts it.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use voidrunner_testkit::{spawn_api_only, spawn_app, spawn_app_with, Backend, TestApp};

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

async fn document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/openapi.json", app.base_url))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("json")
}

/// A concrete URL for a documented path template (ids are made up).
fn concrete(template: &str) -> String {
    let mut path = String::new();
    for segment in template.split('/') {
        if segment.starts_with('{') {
            path.push_str(&uuid::Uuid::now_v7().to_string());
        } else {
            path.push_str(segment);
        }
        path.push('/');
    }
    path.pop();
    path
}

#[tokio::test]
async fn every_documented_operation_is_served_and_answers_as_documented() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (template, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            operations += 1;
            let documented: Vec<&String> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .collect();
            assert!(
                operation["operationId"].is_string() && operation["tags"].is_array(),
                "{method} {template}: no operationId or tags"
            );
            // Without credentials or a body: whatever the answer, it is a documented one, and
            // never the router's "no such endpoint" or "method not allowed".
            let url = format!("{}{}", app.base_url, concrete(template));
            let request = app
                .http
                .request(method.to_uppercase().parse().expect("method"), &url);
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(
                status, 405,
                "{method} {template} is documented but not served"
            );
            assert!(
                !(status == 404
                    && body["error"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("no such endpoint")),
                "{method} {template} is documented but not served"
            );
            assert!(
                documented
                    .iter()
                    .any(|code| code.as_str() == status.to_string()),
                "{method} {template} answered {status}, documented {documented:?}: {body}"
            );
        }
    }
    assert!(operations >= 25, "only {operations} operations documented");

    // And the other way round: a path the document does not list is not served.
    let (status, body) = voidrunner_testkit::send(app.http.get(app.url("/secrets"))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = voidrunner_testkit::send(app.http.put(app.url("/tasks"))).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let docs = app
        .http
        .get(format!("{}/docs", app.base_url))
        .send()
        .await
        .expect("docs");
    assert_eq!(docs.status().as_u16(), 200);
    assert!(docs.text().await.expect("html").contains("/openapi.json"));
    app.stop().await;
}

/// Every `http://` or `https://` URL in `text`.
fn absolute_urls(text: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for scheme in ["http://", "https://"] {
        for (at, _) in text.match_indices(scheme) {
            let url: String = text[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"\"'<>;".contains(*c))
                .collect();
            urls.push(url);
        }
    }
    urls
}

#[tokio::test]
async fn the_reference_page_renders_from_this_api_alone() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    // A client that does not decompress: what it gets is what a browser would be sent.
    let raw = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    let page = raw
        .get(format!("{}/docs", app.base_url))
        .send()
        .await
        .expect("docs");
    assert_eq!(page.status().as_u16(), 200);
    let policy = page.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii")
        .to_owned();
    let html = page.text().await.expect("html");
    assert!(absolute_urls(&html).is_empty(), "{html}");
    assert!(absolute_urls(&policy).is_empty(), "{policy}");
    for directive in [
        "script-src 'self'",
        "connect-src 'self'",
        "default-src 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    // The page's one script, from this api.
    let scripts: Vec<&str> = html
        .split("<script src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(scripts.len(), 1, "{html}");
    let script = scripts[0];
    assert!(script.starts_with("/docs/assets/"), "{script}");

    let gzipped = raw
        .get(format!("{}{script}", app.base_url))
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await
        .expect("script");
    assert_eq!(gzipped.status().as_u16(), 200);
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert!(gzipped.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/javascript"));
    assert!(gzipped.headers()["cache-control"]
        .to_str()
        .expect("ascii")
        .contains("immutable"));
    let compressed = gzipped.bytes().await.expect("body");
    let plain = raw
        .get(format!("{}{script}", app.base_url))
        .header("accept-encoding", "identity")
        .send()
        .await
        .expect("script");
    assert!(plain.headers().get("content-encoding").is_none());
    let expanded = plain.bytes().await.expect("body");
    assert!(expanded.len() > 1_000_000, "{} bytes", expanded.len());
    assert!(compressed.len() < expanded.len() / 2);
    // Scalar's standalone bundle, which reads the page's `#api-reference` element.
    let text = String::from_utf8_lossy(&expanded);
    assert!(text.contains("api-reference"), "not Scalar's bundle");

    // And a browser renders the reference from it under that policy (it reports any load the
    // policy refused on its console).
    let browser = Command::new(std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into()))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=30000",
        ])
        .arg("--dump-dom")
        .arg(format!("{}/docs", app.base_url))
        .output()
        .await
        .expect("chromium runs (scripts/test.sh installs it)");
    let dom = String::from_utf8_lossy(&browser.stdout);
    let console = String::from_utf8_lossy(&browser.stderr);
    assert!(browser.status.success(), "{console}");
    assert!(
        dom.contains("references-rendered"),
        "not rendered: {console}"
    );
    // An operation's summary from the document, rendered as text.
    assert!(
        dom.contains("Exchanges a refresh token for new tokens"),
        "{dom}"
    );
    assert!(!console.contains("Refused to"), "{console}");
    app.stop().await;
}

/// Records responses of a full workflow for the checker.
struct Recorder {
    records: Vec<Value>,
}

impl Recorder {
    async fn call(
        &mut self,
        app: &TestApp,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let mut request = app.http.request(
            method.parse().expect("method"),
            format!("{}{path}", app.base_url),
        );
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        self.records
            .push(json!({ "method": method, "path": template, "status": status, "body": body }));
        body
    }
}

#[tokio::test]
async fn the_responses_of_a_full_workflow_validate_against_the_document() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    let mut r = Recorder {
        records: Vec::new(),
    };
    let credentials = json!({ "email": format!("{}@example.com", uuid::Uuid::new_v4().simple()), "password": "correct horse battery" });
    r.call(
        &app,
        "POST",
        "/api/v1/auth/register",
        "/api/v1/auth/register",
        None,
        Some(credentials.clone()),
    )
    .await;
    r.call(
        &app,
        "POST",
        "/api/v1/auth/register",
        "/api/v1/auth/register",
        None,
        Some(credentials.clone()),
    )
    .await;
    let tokens = r
        .call(
            &app,
            "POST",
            "/api/v1/auth/login",
            "/api/v1/auth/login",
            None,
            Some(credentials.clone()),
        )
        .await;
    let token = tokens["access_token"].as_str().expect("token").to_owned();
    let t = Some(token.as_str());
    r.call(
        &app,
        "POST",
        "/api/v1/auth/login",
        "/api/v1/auth/login",
        None,
        Some(json!({ "email": "x@example.com", "password": "wrong-password" })),
    )
    .await;
    r.call(
        &app,
        "POST",
        "/api/v1/auth/refresh",
        "/api/v1/auth/refresh",
        None,
        Some(json!({ "refresh_token": "vrr_nope" })),
    )
    .await;
    r.call(&app, "GET", "/api/v1/auth/me", "/api/v1/auth/me", t, None)
        .await;
    let key = r
        .call(
            &app,
            "POST",
            "/api/v1/auth/api-keys",
            "/api/v1/auth/api-keys",
            t,
            Some(json!({ "name": "ci" })),
        )
        .await;
    r.call(
        &app,
        "GET",
        "/api/v1/auth/api-keys",
        "/api/v1/auth/api-keys",
        t,
        None,
    )
    .await;
    let task = r.call(&app, "POST", "/api/v1/tasks", "/api/v1/tasks", t, Some(json!({ "name": "doc", "script_type": "python", "script_content": "print(42)", "metadata": { "k": 1 } }))).await;
    r.call(
        &app,
        "POST",
        "/api/v1/tasks",
        "/api/v1/tasks",
        t,
        Some(json!({ "name": "", "script_type": "python", "script_content": "x" })),
    )
    .await;
    let task_id = task["id"].as_str().expect("task id").to_owned();
    r.call(
        &app,
        "GET",
        "/api/v1/tasks",
        "/api/v1/tasks?limit=1",
        t,
        None,
    )
    .await;
    r.call(
        &app,
        "GET",
        "/api/v1/tasks/{task_id}",
        &format!("/api/v1/tasks/{task_id}"),
        t,
        None,
    )
    .await;
    r.call(
        &app,
        "GET",
        "/api/v1/tasks/{task_id}",
        "/api/v1/tasks/not-a-uuid",
        t,
        None,
    )
    .await;
    r.call(
        &app,
        "PATCH",
        "/api/v1/tasks/{task_id}",
        &format!("/api/v1/tasks/{task_id}"),
        t,
        Some(json!({ "priority": 9 })),
    )
    .await;
    let execution = r
        .call(
            &app,
            "POST",
            "/api/v1/tasks/{task_id}/executions",
            &format!("/api/v1/tasks/{task_id}/executions"),
            t,
            Some(json!({ "stdin": "" })),
        )
        .await;
    let execution_id = execution["id"].as_str().expect("execution id").to_owned();
    app.wait_final(&token, &execution_id).await;
    r.call(
        &app,
        "GET",
        "/api/v1/executions/{execution_id}",
        &format!("/api/v1/executions/{execution_id}"),
        t,
        None,
    )
    .await;
    r.call(
        &app,
        "DELETE",
        "/api/v1/executions/{execution_id}",
        &format!("/api/v1/executions/{execution_id}"),
        t,
        None,
    )
    .await;
    r.call(
        &app,
        "GET",
        "/api/v1/tasks/{task_id}/executions",
        &format!("/api/v1/tasks/{task_id}/executions"),
        t,
        None,
    )
    .await;
    r.call(
        &app,
        "POST",
        "/api/v1/runs",
        "/api/v1/runs?wait=true",
        t,
        Some(json!({ "language": "bash", "code": "echo hi" })),
    )
    .await;
    r.call(
        &app,
        "POST",
        "/api/v1/runs/batch",
        "/api/v1/runs/batch",
        t,
        Some(json!({ "runs": [{ "language": "bash", "code": "true" }] })),
    )
    .await;
    r.call(
        &app,
        "GET",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters",
        t,
        None,
    )
    .await;
    r.call(
        &app,
        "POST",
        "/api/v1/dead-letters/{execution_id}/rerun",
        &format!("/api/v1/dead-letters/{execution_id}/rerun"),
        t,
        None,
    )
    .await;
    r.call(&app, "GET", "/api/v1/workers", "/api/v1/workers", t, None)
        .await;
    r.call(
        &app,
        "GET",
        "/api/v1/workers",
        "/api/v1/workers",
        None,
        None,
    )
    .await;
    r.call(
        &app,
        "DELETE",
        "/api/v1/auth/api-keys/{key_id}",
        &format!("/api/v1/auth/api-keys/{}", key["id"].as_str().expect("id")),
        t,
        None,
    )
    .await;
    r.call(&app, "GET", "/health", "/health", None, None).await;
    r.call(&app, "GET", "/ready", "/ready", None, None).await;
    r.call(
        &app,
        "POST",
        "/api/v1/auth/logout",
        "/api/v1/auth/logout",
        t,
        None,
    )
    .await;

    let dir = tempfile::TempDir::new().expect("temp dir");
    let doc_path = dir.path().join("openapi.json");
    std::fs::write(&doc_path, doc.to_string()).expect("write document");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut checker = Command::new(python())
        .arg(root.join("tests/openapi_check.py"))
        .arg(&doc_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test.sh installs jsonschema)");
    let mut stdin = checker.stdin.take().expect("stdin");
    for record in &r.records {
        stdin
            .write_all(format!("{record}\n").as_bytes())
            .await
            .expect("write record");
    }
    drop(stdin);
    let output = checker.wait_with_output().await.expect("checker ends");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains(&format!("checked {} failures 0", r.records.len())),
        "{report}"
    );
    app.stop().await;
}

/// Runs schemathesis against the api with `args`; returns its report.
async fn schemathesis(app: &TestApp, token: &str, args: &[&str]) -> (bool, String) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let output =
        Command::new(std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into()))
            .args(["--config-file", config, "run"])
            .arg(format!("{}/openapi.json", app.base_url))
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--generation-with-security-parameters", "false"])
            .args(["--request-timeout", "30", "--generation-deterministic"])
            // A generator's own health check (too many candidates filtered out), not a finding.
            .args(["--suppress-health-check", "filter_too_much"])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .await
            .expect("schemathesis runs (scripts/test.sh installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

/// The number of requests schemathesis reports (`N generated, ...`).
fn generated(report: &str) -> u64 {
    report
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let n = words.next()?.parse().ok()?;
            words.next()?.starts_with("generated").then_some(n)
        })
        .next_back()
        .unwrap_or(0)
}

/// Every check but the two about a response's body, for the operations with header
/// parameters in negative mode: headers the HTTP parser refuses (control bytes, bad names) are
/// answered with its own bare 400 before the api sees them.
const BUT_BODY_CHECKS: &str = "content_type_conformance,response_schema_conformance";
/// Operations whose documented header parameters make schemathesis send arbitrary headers.
const WITH_HEADER_PARAMETERS: &str = "(/runs|/tasks/\\{task_id\\}/executions)$";
/// Live-output streams (open until their execution ends), readiness (503 here, with no worker,
/// by design) and logout (it would end the session the run uses) have tests of their own.
const OWN_TESTS: &str = "(events|ready|logout)$";
/// Both of the above.
const OWN_TESTS_AND_HEADER_PARAMETERS: &str =
    "(events|ready|logout|/runs|/tasks/\\{task_id\\}/executions)$";

#[tokio::test]
async fn thousands_of_generated_requests_find_no_5xx_and_nothing_that_contradicts_the_document() {
    // Workers that answer at once (no code runs), so that a run that waits ends at once; and
    // callback URLs to any host, so that every rule left is one the document states. Valid
    // requests go to an embedded (SQLite) api; invalid ones to one on PostgreSQL, whose
    // refusals (a NUL in text) are theirs to find.
    let settings = [
        ("VOIDRUNNER_SANDBOX_BACKEND", "instant"),
        ("VOIDRUNNER_WEBHOOK_ALLOW_PRIVATE", "true"),
    ];
    let embedded = spawn_app_with(Backend::Sqlite, &settings).await;
    let distributed = spawn_app_with(Backend::Postgres, &settings).await;
    let tokens = [
        embedded.login_new_user().await,
        distributed.login_new_user().await,
    ];
    let mut total = 0;
    let runs: [(&str, Vec<&str>); 3] = [
        (
            "valid requests, every check (SQLite)",
            vec![
                "--mode",
                "positive",
                "--phases",
                "examples,coverage,fuzzing",
                "-n",
                "100",
                "-c",
                "all",
                "--exclude-path-regex",
                OWN_TESTS,
            ],
        ),
        (
            "invalid and boundary requests, every check",
            vec![
                "--mode",
                "negative",
                "--phases",
                "coverage,fuzzing",
                "-n",
                "60",
                "-c",
                "all",
                "--exclude-path-regex",
                OWN_TESTS_AND_HEADER_PARAMETERS,
            ],
        ),
        (
            "invalid and boundary requests to the operations with header parameters",
            vec![
                "--mode",
                "negative",
                "--phases",
                "coverage,fuzzing",
                "-n",
                "60",
                "-c",
                "all",
                "--exclude-checks",
                BUT_BODY_CHECKS,
                "--include-path-regex",
                WITH_HEADER_PARAMETERS,
            ],
        ),
    ];
    for (index, (what, args)) in runs.into_iter().enumerate() {
        let (app, token) = match index {
            0 => (&embedded, &tokens[0]),
            _ => (&distributed, &tokens[1]),
        };
        let (ok, report) = schemathesis(app, token, &args).await;
        let requests = generated(&report);
        total += requests;
        println!("schemathesis, {what}: {requests} requests");
        assert!(ok, "{what}:\n{report}");
        assert!(requests > 0, "{what}: nothing generated\n{report}");
    }
    println!("schemathesis: {total} requests in all");
    assert!(total >= 3000, "only {total} requests generated");
    embedded.stop().await;
    distributed.stop().await;
}

/// A value at or just past one end of a documented bound of `property`, or None.
fn boundary(property: &Value, keyword: &str, inside: bool) -> Option<Value> {
    let property = property["anyOf"].get(0).unwrap_or(property);
    let bound = &property[keyword];
    let step = |n: f64| {
        if inside {
            n
        } else if keyword.starts_with("max") {
            n + 1.0
        } else {
            n - 1.0
        }
    };
    match keyword {
        "minimum" | "maximum" if property["type"] == "integer" => {
            Some(json!(step(bound.as_f64()?) as i64))
        }
        "minimum" | "maximum" => {
            let n = bound.as_f64()?;
            Some(json!(if inside {
                n
            } else if keyword == "maximum" {
                n + 0.5
            } else {
                n - 0.005
            }))
        }
        "maxLength" => {
            let n = step(bound.as_f64()?) as usize;
            // The rules' patterns accept a run of letters, as a name or a program.
            Some(json!("a".repeat(n)))
        }
        _ => None,
    }
}

#[tokio::test]
async fn every_bound_the_document_states_is_the_bound_the_api_enforces() {
    let app = spawn_api_only(Backend::Sqlite, &[]).await;
    let token = app.login_new_user().await;
    let doc = document(&app).await;
    let draft = &doc["components"]["schemas"]["TaskDraft"]["properties"];
    let valid = json!({ "name": "bounds", "script_type": "python", "script_content": "print(1)" });
    let mut compared = 0;
    for (field, property) in draft.as_object().expect("properties") {
        for keyword in ["minimum", "maximum", "maxLength"] {
            let (Some(inside), Some(outside)) = (
                boundary(property, keyword, true),
                boundary(property, keyword, false),
            ) else {
                continue;
            };
            for (value, accepted) in [(inside, true), (outside, false)] {
                let mut body = valid.clone();
                body[field] = value.clone();
                let (status, answer) = voidrunner_testkit::send(
                    app.http
                        .post(app.url("/tasks"))
                        .bearer_auth(&token)
                        .json(&body),
                )
                .await;
                let shown = value.to_string().chars().take(40).collect::<String>();
                if accepted {
                    assert_eq!(
                        status, 201,
                        "{field} = {shown} is within the document's {keyword}: {answer}"
                    );
                } else {
                    assert_eq!(
                        status, 422,
                        "{field} = {shown} breaks the document's {keyword}: {answer}"
                    );
                    assert_eq!(
                        answer["error"]["details"]["field"],
                        field.as_str(),
                        "{answer}"
                    );
                }
            }
            compared += 1;
        }
    }
    // Names, descriptions, programs, and every numeric limit of a task.
    assert!(compared >= 14, "only {compared} bounds compared");
    app.stop().await;
}

#[tokio::test]
async fn a_client_generated_from_the_document_registers_runs_and_reads_the_output() {
    let app = spawn_app(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = dir.path().join("openapi.json");
    std::fs::write(&doc, document(&app).await.to_string()).expect("written");
    let package = dir.path().join("voidrunner_client");
    let generate = Command::new(
        std::env::var("OPENAPI_PYTHON_CLIENT").unwrap_or_else(|_| "openapi-python-client".into()),
    )
    .arg("generate")
    .arg("--path")
    .arg(&doc)
    .arg("--output-path")
    .arg(&package)
    .args(["--meta", "none"])
    .output()
    .await
    .expect("openapi-python-client runs (scripts/test.sh installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&generate.stdout),
        String::from_utf8_lossy(&generate.stderr)
    );
    assert!(generate.status.success(), "{report}");
    // Every schema and operation made it into the client: the generator skips what it cannot
    // read, with a warning.
    assert!(!report.to_lowercase().contains("warning"), "{report}");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/generated_client.py");
    let used = Command::new(python())
        .arg(script)
        .arg(&app.base_url)
        .env("PYTHONPATH", dir.path())
        .output()
        .await
        .expect("python3 runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&used.stdout),
        String::from_utf8_lossy(&used.stderr)
    );
    assert!(used.status.success(), "{output}");
    assert!(
        output.contains("refused with validation_failed"),
        "{output}"
    );
    app.stop().await;
}
