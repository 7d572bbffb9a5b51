//! Traces over OTLP, received by a collector in the test that decodes the real protocol: an
//! execution is one trace from the HTTP request through the worker's run to the recording of
//! its result, spans from `voidrunner-api` and `voidrunner-worker` share its trace id, a
//! client's `traceparent` is continued, and a collector that never answers slows nothing down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde_json::{json, Value};
use voidrunner_testkit::processes::{free_port, Processes};
use voidrunner_testkit::{
    empty_database, login_new_user, send, start_nats, test_env, unique_prefix, Backend, Nats,
};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
}

/// An OTLP/HTTP receiver for traces, protobuf or JSON; returns its base URL.
async fn start_collector() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
    let collected = Arc::clone(&spans);
    let receive = move |headers: HeaderMap, body: Bytes| {
        let collected = Arc::clone(&collected);
        async move {
            let json = headers
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with("application/json"));
            let request = if json {
                serde_json::from_slice::<ExportTraceServiceRequest>(&body)
                    .expect("an OTLP/JSON trace export")
            } else {
                ExportTraceServiceRequest::decode(body).expect("an OTLP/protobuf trace export")
            };
            let mut collected = collected.lock().expect("lock");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|resource| resource.attributes.iter())
                    .find(|attribute| attribute.key == "service.name")
                    .and_then(|attribute| attribute.value.as_ref())
                    .and_then(|value| match &value.value {
                        Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                name,
                            ),
                        ) => Some(name.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        collected.push(Received {
                            service: service.clone(),
                            name: span.name,
                            trace_id: hex::encode(span.trace_id),
                        });
                    }
                }
            }
            ExportTraceServiceResponse::default().encode_to_vec()
        }
    };
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

/// An api and a worker as processes exporting traces to `endpoint` with `protocol`.
async fn start_fleet(
    nats: &Nats,
    endpoint: &str,
    protocol: &str,
) -> (Processes, String, tempfile::TempDir) {
    let (database_url, dir) = empty_database(Backend::Sqlite).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let vars = test_env(
        nats.url(),
        &database_url,
        &unique_prefix(),
        &[
            ("VOIDRUNNER_API_ADDR", &addr),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            // Export within a fifth of a second, so the test need not wait long.
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    let mut processes = Processes::new(BIN, vars);
    processes.run_to_completion("migrate").await;
    processes.start("api", "api", &[]);
    processes.start("worker", "worker", &[("VOIDRUNNER_WORKER_ID", "traced-w1")]);
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    processes.wait_ready("api", &http, &base).await;
    (processes, base, dir.expect("a SQLite file"))
}

async fn run(http: &reqwest::Client, base: &str, token: &str, traceparent: Option<&str>) -> Value {
    let mut request = http
        .post(format!("{base}/api/v1/runs?wait=true"))
        .bearer_auth(token)
        .json(&json!({ "language": "python", "code": "print('traced')" }));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let (status, body) = send(request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    body
}

async fn one_trace_from_request_to_record(protocol: &str) {
    let nats = start_nats().await;
    let (collector, spans) = start_collector().await;
    let (processes, base, _db) = start_fleet(&nats, &collector, protocol).await;
    let http = reqwest::Client::new();
    let token = login_new_user(&http, &base).await;

    // The client's trace goes on: the execution is in it.
    let client_trace = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{client_trace}-00f067aa0ba902b7-01");
    let continued = run(&http, &base, &token, Some(&traceparent)).await;
    assert_eq!(continued["trace_id"], client_trace.as_str(), "{continued}");
    // Without one, the execution starts a trace of its own.
    let fresh = run(&http, &base, &token, None).await;
    let fresh_trace = fresh["trace_id"].as_str().expect("a trace id").to_owned();
    assert_eq!(fresh_trace.len(), 32);
    assert_ne!(fresh_trace, client_trace);

    // Both services' spans of each execution arrive in its trace.
    let wanted = [
        ("voidrunner-api", "http"),
        ("voidrunner-api", "dispatch"),
        ("voidrunner-worker", "execution"),
        ("voidrunner-worker", "sandbox"),
        ("voidrunner-api", "record"),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let received = spans.lock().expect("lock").clone();
        let missing: Vec<String> = [&client_trace, &fresh_trace]
            .iter()
            .flat_map(|trace| {
                let received = &received;
                wanted.iter().filter_map(move |(service, name)| {
                    let found = received.iter().any(|span| {
                        &span.trace_id == *trace && span.service == *service && span.name == *name
                    });
                    (!found).then(|| format!("{service}/{name} in {trace}"))
                })
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans missing: {missing:?}\nreceived: {received:?}\n{}",
            processes.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The log lines about the execution name its trace, in both services.
    for name in ["api", "worker"] {
        let log = processes.log_of(name);
        assert!(
            log.contains(&format!("trace_id={client_trace}")),
            "the {name}'s log does not name trace {client_trace}:\n{log}"
        );
    }
}

#[tokio::test]
async fn an_execution_is_one_trace_across_api_and_worker_over_otlp_protobuf() {
    one_trace_from_request_to_record("http/protobuf").await;
}

#[tokio::test]
async fn an_execution_is_one_trace_across_api_and_worker_over_otlp_json() {
    one_trace_from_request_to_record("http/json").await;
}

#[tokio::test]
async fn a_collector_that_never_answers_slows_no_execution() {
    // It takes connections and never says a word: each export waits out its timeout.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", blackhole.local_addr().expect("addr"));
    let held = Arc::new(Mutex::new(Vec::new()));
    let holding = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((socket, _)) = blackhole.accept().await {
            holding.lock().expect("lock").push(socket);
        }
    });
    let nats = start_nats().await;
    let (_processes, base, _db) = start_fleet(&nats, &endpoint, "http/protobuf").await;
    let http = reqwest::Client::new();
    let token = login_new_user(&http, &base).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let done = run(&http, &base, &token, None).await;
        assert_eq!(done["stdout"], "traced\n");
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        !held.lock().expect("lock").is_empty(),
        "the services did try to export to the silent collector"
    );
    println!("collector silent: 10 executions, the slowest took {slowest:?}");
}
