//! Metrics, scraped by a real Prometheus: an api and two worker processes, a known number of
//! executions, and PromQL over Prometheus' HTTP API that must find exactly them. Every
//! `/metrics` passes `promtool check metrics`, the alert rules load and pass their unit tests,
//! and every query of the Grafana dashboard evaluates.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use voidrunner_testkit::processes::{free_port, Processes};
use voidrunner_testkit::{
    empty_database, login_new_user, send, start_execution, start_nats, test_env, unique_prefix,
    wait_final, Backend,
};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");
const EXECUTIONS: usize = 6;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../monitoring")
}

/// `promtool` and `prometheus` are on PATH (scripts/test.sh installs Debian's `prometheus`).
fn tool(name: &str) -> String {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "{name} is not installed: apt-get install prometheus (scripts/test.sh does)"
    );
    name.to_owned()
}

async fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(tool("promtool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("promtool ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn the_alert_rules_are_valid_and_fire_when_they_should() {
    let rules = monitoring().join("alerts.yml");
    let (ok, report) = promtool(&["check", "rules", rules.to_str().expect("path")], None).await;
    assert!(ok, "{report}");
    let tests = monitoring().join("alerts.test.yml");
    let (ok, report) = promtool(&["test", "rules", tests.to_str().expect("path")], None).await;
    assert!(ok, "{report}");
}

/// Prometheus' answer to an instant query: its result vector.
async fn query(http: &reqwest::Client, prometheus: &str, promql: &str) -> Vec<Value> {
    let (status, body) = send(
        http.get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", promql)]),
    )
    .await;
    assert_eq!(status, 200, "{promql}: {body}");
    assert_eq!(body["status"], "success", "{promql}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The value of a query whose result is one series.
async fn scalar(http: &reqwest::Client, prometheus: &str, promql: &str) -> Option<f64> {
    let result = query(http, prometheus, promql).await;
    result
        .first()
        .and_then(|series| series["value"][1].as_str())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn a_real_prometheus_counts_every_execution_of_an_api_and_two_workers() {
    let nats = start_nats().await;
    let (database_url, _dir) = empty_database(Backend::Postgres).await;
    let api_addr = format!("127.0.0.1:{}", free_port());
    let worker_addrs = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let vars = test_env(
        nats.url(),
        &database_url,
        &unique_prefix(),
        &[("VOIDRUNNER_API_ADDR", &api_addr)],
    );
    let mut processes = Processes::new(BIN, vars);
    processes.run_to_completion("migrate").await;
    processes.start("api", "api", &[]);
    for (n, addr) in worker_addrs.iter().enumerate() {
        processes.start(
            &format!("worker-{n}"),
            "worker",
            &[
                ("VOIDRUNNER_WORKER_ID", &format!("metrics-w{n}")),
                ("VOIDRUNNER_METRICS_ADDR", addr),
                ("VOIDRUNNER_WORKER_SLOTS", "2"),
            ],
        );
    }
    let http = reqwest::Client::new();
    let api = format!("http://{api_addr}");
    processes.wait_ready("api", &http, &api).await;
    for (n, addr) in worker_addrs.iter().enumerate() {
        processes
            .wait_ready(&format!("worker-{n}"), &http, &format!("http://{addr}"))
            .await;
    }

    // Prometheus scrapes all three every second and loads the alert rules.
    let dir = tempfile::TempDir::new().expect("prometheus dir");
    let workers: Vec<String> = worker_addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: voidrunner-api\n    static_configs:\n      - targets: [\"{api_addr}\"]\n\
         \x20 - job_name: voidrunner-worker\n    static_configs:\n      - targets: [{workers}]\n",
        rules = monitoring().join("alerts.yml").display(),
        workers = workers.join(", "),
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let prometheus_addr = format!("127.0.0.1:{}", free_port());
    let prometheus_log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let _prometheus = tokio::process::Command::new(tool("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prometheus_addr}"))
        .stdout(Stdio::null())
        .stderr(prometheus_log)
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let prometheus = format!("http://{prometheus_addr}");

    // A known number of executions, all completed.
    let token = login_new_user(&http, &api).await;
    let (status, task) = send(
        http.post(format!("{api}/api/v1/tasks"))
            .bearer_auth(&token)
            .json(&json!({ "name": "counted", "script_type": "python", "script_content": "print('counted')" })),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let task_id = task["id"].as_str().expect("id");
    let mut ids = Vec::new();
    for _ in 0..EXECUTIONS {
        let execution = start_execution(&http, &api, &token, task_id).await;
        ids.push(execution["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let done = wait_final(&http, &api, &token, id).await;
        assert_eq!(done["status"], "completed", "{done}");
    }

    // Every exposition is valid as promtool lints it.
    for target in std::iter::once(&api_addr).chain(worker_addrs.iter()) {
        let text = http
            .get(format!("http://{target}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        let (ok, report) = promtool(&["check", "metrics"], Some(&text)).await;
        assert!(ok, "{target}/metrics: {report}\n{text}");
    }

    // Prometheus sees exactly the executions that ran, once the next scrapes are in.
    let counted = "sum(voidrunner_executions_total{status=\"completed\"})";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let up = scalar(&http, &prometheus, "sum(up)").await;
        let seen = scalar(&http, &prometheus, counted).await;
        let runs = scalar(
            &http,
            &prometheus,
            "sum(voidrunner_sandbox_run_seconds_count)",
        )
        .await;
        if up == Some(3.0) && seen == Some(EXECUTIONS as f64) && runs == Some(EXECUTIONS as f64) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus has up={up:?}, executions={seen:?}, sandbox runs={runs:?}\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let n = EXECUTIONS as f64;
    for (promql, expected) in [
        ("sum(voidrunner_execution_end_to_end_seconds_count{language=\"python\"})", n),
        ("sum(voidrunner_execution_queue_seconds_count)", n),
        ("count(voidrunner_worker_slots{job=\"voidrunner-worker\"})", 2.0),
        ("sum(voidrunner_worker_slots)", 4.0),
        (
            "sum(voidrunner_http_requests_total{route=\"/api/v1/tasks/{task_id}/executions\",method=\"POST\",status=\"202\"})",
            n,
        ),
        ("count(voidrunner_build_info)", 3.0),
        ("count(process_resident_memory_bytes)", 3.0),
    ] {
        assert_eq!(
            scalar(&http, &prometheus, promql).await,
            Some(expected),
            "{promql}"
        );
    }
    // The latency histograms hold the runs: a median is a number, below the slowest bucket.
    let median = scalar(
        &http,
        &prometheus,
        "histogram_quantile(0.5, sum by (le) (voidrunner_execution_end_to_end_seconds_bucket))",
    )
    .await
    .expect("a median end-to-end latency");
    assert!(median > 0.0 && median < 60.0, "median {median}");

    // The dashboard's every query is valid PromQL that Prometheus evaluates.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("grafana/dashboards/voidrunner.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m");
            query(&http, &prometheus, &expr).await;
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} dashboard queries");

    // The alert rules loaded and evaluate.
    let (status, rules) = send(http.get(format!("{prometheus}/api/v1/rules"))).await;
    assert_eq!(status, 200, "{rules}");
    let loaded: Vec<Value> = rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(loaded.len(), 6, "{rules}");
    assert!(loaded.iter().all(|rule| rule["health"] != "err"), "{rules}");
    println!("prometheus: {EXECUTIONS} executions counted, median end-to-end {median:.3} s, {queries} dashboard queries evaluated");
}
