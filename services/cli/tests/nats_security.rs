//! The bus under least privilege: a nats-server with one user per role (the block
//! `nats_auth` renders), the api and a worker as separate processes under their own roles.
//! Everything a user does works without one permission violation, and each role's
//! credentials can do exactly what it needs and no more. TLS with a CA the test makes.

use std::path::Path;
use std::time::Duration;

use async_nats::{ConnectOptions, Event};
use serde_json::json;
use tokio::sync::mpsc;
use voidrunner_shared::nats_auth::{authorization_block, Role};
use voidrunner_shared::nats_server::NatsServer;
use voidrunner_shared::{Lane, Language, Namespace};
use voidrunner_testkit::processes::{free_port, Processes};
use voidrunner_testkit::{
    empty_database, login_new_user, nats_server_bin, send, test_env, unique_prefix, wait_final,
    Backend,
};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");
/// How long a refusal may take to come back from the server.
const REFUSAL: Duration = Duration::from_secs(5);

fn password(role: Role) -> String {
    format!("{}-{}", role.as_str(), uuid::Uuid::new_v4().simple())
}

/// A client of the bus as `role` (or anonymous), with the server's complaints collected.
struct Client {
    nats: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Client {
    async fn connect(url: &str, user: Option<(&str, &str)>, inbox: &str) -> Result<Client, String> {
        let (sender, errors) = mpsc::unbounded_channel();
        let options = match user {
            Some((user, password)) => {
                ConnectOptions::with_user_and_password(user.into(), password.into())
            }
            None => ConnectOptions::new(),
        };
        let nats = options
            .custom_inbox_prefix(inbox)
            .event_callback(move |event| {
                let sender = sender.clone();
                async move {
                    if let Event::ServerError(error) = event {
                        let _ = sender.send(error.to_string());
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|error| error.to_string())?;
        Ok(Client { nats, errors })
    }

    /// The next permission violation the server reports (fails the test when none comes).
    async fn refused(&mut self, what: &str) -> String {
        let error = tokio::time::timeout(REFUSAL, self.errors.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: the server did not refuse it"))
            .expect("error channel");
        assert!(
            error.to_lowercase().contains("permissions violation"),
            "{what}: {error}"
        );
        error
    }

    async fn refuses_publish(&mut self, subject: String) {
        self.nats
            .publish(subject.clone(), "forged".into())
            .await
            .expect("publish is sent");
        self.nats.flush().await.expect("flush");
        let error = self.refused(&format!("publish to {subject}")).await;
        assert!(error.contains(&subject), "{error}");
    }

    async fn refuses_subscribe(&mut self, subject: String) {
        let _subscription = self
            .nats
            .subscribe(subject.clone())
            .await
            .expect("subscribe is sent");
        self.nats.flush().await.expect("flush");
        let error = self.refused(&format!("subscribe to {subject}")).await;
        assert!(error.contains(&subject), "{error}");
    }

    /// Nothing refused so far.
    fn clean(&mut self, what: &str) {
        if let Ok(error) = self.errors.try_recv() {
            panic!("{what}: {error}");
        }
    }
}

async fn messages_in(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .expect("stream")
        .info()
        .await
        .expect("stream info")
        .state
        .messages
}

#[tokio::test]
async fn every_role_can_do_what_it_needs_and_nothing_more() {
    let prefix = unique_prefix();
    let ns = Namespace::new(&prefix).expect("prefix");
    let passwords: Vec<(Role, String)> = Role::ALL.iter().map(|r| (*r, password(*r))).collect();
    let secret = |role: Role| {
        passwords
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p.clone())
            .expect("password")
    };
    let dir = tempfile::TempDir::new().expect("nats dir");
    let server = NatsServer::start_with(
        &nats_server_bin(),
        dir.path(),
        0,
        &authorization_block(&ns, &passwords),
    )
    .await
    .expect("nats-server with roles");
    let url = server.url().to_owned();
    let server_log = dir.path().join("nats-server.log");

    // The system, each part under its role.
    let (database_url, _db) = empty_database(Backend::Postgres).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let vars = test_env(
        &url,
        &database_url,
        &prefix,
        &[("VOIDRUNNER_API_ADDR", &addr), ("RUST_LOG", "info")],
    );
    let mut processes = Processes::new(BIN, vars);
    processes.run_to_completion("migrate").await;
    let api_password = secret(Role::Api);
    let worker_password = secret(Role::Worker);
    // The worker first: it waits for the api to provision what its role may not create.
    processes.start(
        "worker",
        "worker",
        &[
            ("VOIDRUNNER_NATS_USER", "worker"),
            ("VOIDRUNNER_NATS_PASSWORD", &worker_password),
            ("VOIDRUNNER_NATS_PROVISION", "false"),
            ("VOIDRUNNER_WORKER_ID", "roles-w1"),
        ],
    );
    processes.start(
        "api",
        "api",
        &[
            ("VOIDRUNNER_NATS_USER", "api"),
            ("VOIDRUNNER_NATS_PASSWORD", &api_password),
        ],
    );
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    processes.wait_ready("api", &http, &base).await;
    let api = |path: &str| format!("{base}/api/v1{path}");
    let token = login_new_user(&http, &base).await;

    // A run waited for, with stdin; live output; a cancellation while it runs; the fleet view.
    let (status, run) =
        send(http.post(api("/runs?wait=true")).bearer_auth(&token).json(
            &json!({ "language": "python", "code": "print(input()[::-1])", "stdin": "olleh" }),
        ))
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["stdout"], "hello\n", "{run}");
    let (status, long) = send(http.post(api("/runs")).bearer_auth(&token).json(&json!({
        "language": "python",
        "code": "import time\nprint('tick', flush=True)\ntime.sleep(30)",
    })))
    .await;
    assert_eq!(status, 202, "{long}");
    let long_id = long["id"].as_str().expect("id").to_owned();
    let events = http
        .get(api(&format!("/executions/{long_id}/events")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("events");
    let mut events = events;
    let mut seen = String::new();
    while !seen.contains("tick") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), events.chunk())
            .await
            .expect("live output in time")
            .expect("stream")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (status, _) = send(
        http.delete(api(&format!("/executions/{long_id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 202);
    let cancelled = wait_final(&http, &base, &token, &long_id).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let (status, workers) = send(http.get(api("/workers")).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{workers}");
    assert_eq!(workers[0]["id"], "roles-w1", "{workers}");
    let log = std::fs::read_to_string(&server_log).expect("server log");
    assert!(
        !log.contains("Violation"),
        "the services needed a permission their role lacks:\n{}",
        log.lines()
            .filter(|line| line.contains("Violation"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // No credentials, or wrong ones: no connection.
    let anonymous = Client::connect(&url, None, "_INBOX").await;
    assert!(anonymous.is_err(), "an anonymous client connected");
    let wrong = Client::connect(&url, Some(("worker", "not-the-password")), "_INBOX").await;
    assert!(wrong.is_err(), "a wrong password connected");

    // The observer inspects and reads, and publishes nothing.
    let observer_password = secret(Role::Observer);
    let mut observer = Client::connect(
        &url,
        Some(("observer", &observer_password)),
        &Role::Observer.inbox_prefix(),
    )
    .await
    .expect("observer connects");
    let js = async_nats::jetstream::new(observer.nats.clone());
    let tasks_before = messages_in(&js, &ns.tasks_stream()).await;
    let results = js.get_stream(ns.results_stream()).await.expect("results");
    let stored = results
        .direct_get_last_for_subject(ns.result_subject(long_id.parse().expect("uuid")))
        .await
        .expect("the observer reads a result");
    assert!(String::from_utf8_lossy(&stored.payload).contains("cancelled"));
    let lane = js
        .get_stream(ns.tasks_stream())
        .await
        .expect("tasks")
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
            &ns.lane_consumer(Lane::Normal, "python".parse().expect("in the catalog")),
        )
        .await
        .expect("the observer reads a lane's consumer");
    assert_eq!(lane.cached_info().config.max_deliver, 5);
    let discovered = observer
        .nats
        .request("$SRV.PING", "".into())
        .await
        .expect("the observer discovers a worker");
    assert!(String::from_utf8_lossy(&discovered.payload).contains(&ns.worker_service_name()));
    let fleet = js
        .get_key_value(ns.heartbeat_bucket())
        .await
        .expect("the fleet's bucket");
    let beat = fleet
        .get("roles-w1")
        .await
        .expect("kv get as the observer")
        .expect("the worker's heartbeat");
    assert!(String::from_utf8_lossy(&beat).contains("slots"));
    let load = observer
        .nats
        .request(ns.worker_status_subject("roles-w1"), "".into())
        .await
        .expect("the observer asks a worker for its load");
    assert!(String::from_utf8_lossy(&load.payload).contains("busy"));
    let _results_feed = observer
        .nats
        .subscribe(format!("{prefix}.results.*"))
        .await
        .expect("subscribe");
    observer.clean("the observer's inspection");
    let some_id = uuid::Uuid::now_v7();
    observer
        .refuses_publish(ns.task_subject(
            Lane::Normal,
            "python".parse::<Language>().expect("in the catalog"),
        ))
        .await;
    observer.refuses_publish(ns.result_subject(some_id)).await;
    observer
        .refuses_publish(format!("{prefix}.events.{some_id}.output"))
        .await;
    observer
        .refuses_publish(format!("$KV.{}.{some_id}", ns.cancellation_bucket()))
        .await;
    observer
        .refuses_publish(format!("$JS.API.STREAM.DELETE.{}", ns.tasks_stream()))
        .await;
    observer
        .refuses_subscribe(format!("{prefix}.tasks.>"))
        .await;
    observer
        .refuses_subscribe(format!("{}.>", Role::Worker.inbox_prefix()))
        .await;

    // A worker reports, and cannot dispatch, cancel, create or read what the api reads.
    let mut worker = Client::connect(
        &url,
        Some(("worker", &worker_password)),
        &Role::Worker.inbox_prefix(),
    )
    .await
    .expect("worker connects");
    worker
        .refuses_publish(ns.task_subject(
            Lane::High,
            "python".parse::<Language>().expect("in the catalog"),
        ))
        .await;
    worker
        .refuses_publish(format!("$KV.{}.{some_id}", ns.cancellation_bucket()))
        .await;
    worker
        .refuses_publish(format!("$JS.API.STREAM.CREATE.{prefix}_ROGUE"))
        .await;
    worker
        .refuses_publish(format!("$JS.API.STREAM.MSG.DELETE.{}", ns.tasks_stream()))
        .await;
    worker.refuses_subscribe(format!("{prefix}.tasks.>")).await;
    worker
        .refuses_subscribe(format!("{}.>", Role::Api.inbox_prefix()))
        .await;
    assert_eq!(
        messages_in(&js, &ns.tasks_stream()).await,
        tasks_before,
        "a refused dispatch was stored"
    );

    // The api may not answer for workers' discovery or read their inboxes either.
    let mut api_client = Client::connect(
        &url,
        Some(("api", &api_password)),
        &Role::Api.inbox_prefix(),
    )
    .await
    .expect("api connects");
    api_client
        .refuses_subscribe(format!("{}.>", Role::Worker.inbox_prefix()))
        .await;
    api_client.refuses_subscribe("$SRV.>".to_owned()).await;

    processes.assert_running("api");
    processes.assert_running("worker");
    server.stop().await;
}

/// A CA, and a certificate it signed for 127.0.0.1, made with openssl.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
}

#[tokio::test]
async fn services_connect_over_tls_with_the_configured_ca_and_not_without_it() {
    let certs = tempfile::TempDir::new().expect("certs");
    make_certificates(certs.path());
    let dir = tempfile::TempDir::new().expect("nats dir");
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
        certs.path().join("server.pem"),
        certs.path().join("server.key")
    );
    let server = NatsServer::start_with(&nats_server_bin(), dir.path(), 0, &tls)
        .await
        .expect("nats-server with TLS");
    let port = server.url().rsplit(':').next().expect("port").to_owned();
    let url = format!("tls://127.0.0.1:{port}");

    let (database_url, _db) = empty_database(Backend::Sqlite).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let ca = certs.path().join("ca.pem").display().to_string();
    let vars = test_env(
        &url,
        &database_url,
        &unique_prefix(),
        &[
            ("VOIDRUNNER_API_ADDR", &addr),
            ("VOIDRUNNER_AUTO_MIGRATE", "true"),
            ("VOIDRUNNER_NATS_TLS_CA", &ca),
        ],
    );
    let mut processes = Processes::new(BIN, vars.clone());
    processes.start("api", "api", &[]);
    processes.start("worker", "worker", &[("VOIDRUNNER_WORKER_ID", "tls-w1")]);
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    processes.wait_ready("api", &http, &base).await;
    // Ready means the api's connection is up and the worker's heartbeat came through it.
    let (status, ready) = send(http.get(format!("{base}/ready"))).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["workers"], 1, "{ready}");

    // Without the CA, the server's certificate is not trusted: the api does not start.
    let without_ca: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name != "VOIDRUNNER_NATS_TLS_CA")
        .collect();
    let output = tokio::process::Command::new(BIN)
        .arg("api")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(without_ca)
        .env("VOIDRUNNER_API_ADDR", format!("127.0.0.1:{}", free_port()))
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the api without the CA gives up")
        .expect("run api");
    assert!(!output.status.success(), "the api connected without the CA");
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        stderr.contains("certificate") || stderr.contains("tls"),
        "{stderr}"
    );
    server.stop().await;
}

#[tokio::test]
async fn serve_gives_each_part_its_role_and_the_observer_a_password_of_its_own() {
    let data_dir = tempfile::TempDir::new().expect("data dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let nats_port = free_port().to_string();
    let mut vars = test_env(
        "unused",
        "unused",
        &unique_prefix(),
        &[
            ("VOIDRUNNER_API_ADDR", &addr),
            (
                "VOIDRUNNER_DATA_DIR",
                &data_dir.path().display().to_string(),
            ),
            ("VOIDRUNNER_EMBEDDED_NATS_PORT", &nats_port),
            ("VOIDRUNNER_NATS_SERVER_BIN", &nats_server_bin()),
        ],
    );
    // Its own nats-server, SQLite database and JWT secret.
    vars.retain(|(name, _)| {
        !matches!(
            name.as_str(),
            "VOIDRUNNER_NATS_URL" | "VOIDRUNNER_DATABASE_URL" | "VOIDRUNNER_JWT_SECRET"
        )
    });
    let mut processes = Processes::new(BIN, vars);
    processes.start("serve", "serve", &[]);
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    processes.wait_ready("serve", &http, &base).await;
    let token = login_new_user(&http, &base).await;
    let (status, run) = send(
        http.post(format!("{base}/api/v1/runs?wait=true"))
            .bearer_auth(&token)
            .json(&json!({ "language": "python", "code": "print(6*7)" })),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["stdout"], "42\n", "{run}");

    let nats_dir = data_dir.path().join("nats");
    let log = std::fs::read_to_string(nats_dir.join("nats-server.log")).expect("server log");
    assert!(!log.contains("Violation"), "{log}");
    let url = format!("nats://127.0.0.1:{nats_port}");
    assert!(
        Client::connect(&url, None, "_INBOX").await.is_err(),
        "an anonymous client connected to serve's nats-server"
    );
    use std::os::unix::fs::PermissionsExt;
    let observer_file = nats_dir.join("credentials").join("observer");
    let mode = std::fs::metadata(&observer_file)
        .expect("observer credentials")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{observer_file:?}");
    let observer_password = std::fs::read_to_string(&observer_file).expect("read");
    let mut observer = Client::connect(
        &url,
        Some(("observer", observer_password.trim())),
        &Role::Observer.inbox_prefix(),
    )
    .await
    .expect("the observer connects with the password serve wrote");
    let names: Vec<String> = {
        use futures::TryStreamExt;
        async_nats::jetstream::new(observer.nats.clone())
            .stream_names()
            .try_collect()
            .await
            .expect("stream ls as the observer")
    };
    assert!(names.len() >= 4, "{names:?}");
    observer.clean("stream ls");
    assert!(
        processes
            .log_of("serve")
            .contains("--inbox-prefix _INBOX_observer"),
        "serve does not say how to inspect the bus"
    );
}
