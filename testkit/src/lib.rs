//! Test support: a real nats-server per test, a fresh PostgreSQL or SQLite database per test,
//! and the api and a worker running in-process on them, exactly as embedded mode runs them.
//!
//! Nothing here is mocked. A service a test needs and cannot reach fails the test with a message
//! that says how to provide it; nothing is skipped.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use voidrunner_api::config::ApiConfig;
use voidrunner_shared::config::{NatsConfig, SandboxPolicy};
use voidrunner_shared::nats_server::NatsServer;
use voidrunner_worker::config::WorkerConfig;

pub mod processes;

/// How long a test waits for an execution to reach a final state.
pub const FINAL_STATE_TIMEOUT: Duration = Duration::from_secs(90);

/// A nats-server with JetStream (file storage) in a temporary directory, stopped on drop.
pub struct Nats {
    server: Option<NatsServer>,
    url: String,
    dir: TempDir,
}

impl Nats {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `kill -9` of the server; its JetStream store stays on disk.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    /// Starts the server again on the same port and store, as after a crash.
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "nats-server is still running");
        let port = self
            .url
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .expect("the nats URL ends with a port");
        let server = NatsServer::start(&nats_server_bin(), self.dir.path(), port)
            .await
            .expect("nats-server starts again");
        self.server = Some(server);
    }
}

/// The nats-server binary tests use: `VOIDRUNNER_NATS_SERVER_BIN`, or `nats-server` on PATH.
pub fn nats_server_bin() -> String {
    std::env::var("VOIDRUNNER_NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into())
}

pub async fn start_nats() -> Nats {
    let dir = TempDir::new().expect("temp dir for nats");
    let server = NatsServer::start(&nats_server_bin(), dir.path(), 0)
        .await
        .unwrap_or_else(|e| {
            panic!("tests need nats-server >= 2.11 (scripts/test.sh installs it): {e}")
        });
    Nats {
        url: server.url().to_owned(),
        server: Some(server),
        dir,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database of its own for one test, migrated.
pub struct TestDb {
    pub url: String,
    pub connection: DatabaseConnection,
    _dir: Option<TempDir>,
}

/// The admin URL of the test PostgreSQL cluster; a test that needs it and lacks it fails.
pub fn postgres_admin_url() -> String {
    std::env::var("VOIDRUNNER_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "VOIDRUNNER_TEST_DATABASE_URL is not set: tests need a PostgreSQL server \
             (scripts/test.sh starts one and sets it)"
        )
    })
}

/// A fresh, empty database (not migrated).
pub async fn empty_database(backend: Backend) -> (String, Option<TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = TempDir::new().expect("temp dir for sqlite");
            let url = voidrunner_api::db::sqlite_url(&dir.path().join("voidrunner.db"));
            (url, Some(dir))
        }
        Backend::Postgres => {
            let admin_url = postgres_admin_url();
            let admin = sea_orm::Database::connect(&admin_url)
                .await
                .unwrap_or_else(|e| {
                    panic!("cannot reach PostgreSQL at VOIDRUNNER_TEST_DATABASE_URL: {e}")
                });
            let name = format!("vr_test_{}", uuid::Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create test database");
            let _ = admin.close().await;
            let base = admin_url
                .rsplit_once('/')
                .map(|(base, _)| base.to_owned())
                .expect("database URL has a path");
            (format!("{base}/{name}"), None)
        }
    }
}

/// A fresh database with every migration applied.
pub async fn fresh_database(backend: Backend) -> TestDb {
    let (url, dir) = empty_database(backend).await;
    let connection = voidrunner_api::db::connect(&url)
        .await
        .expect("connect test database");
    voidrunner_api::db::migrate(&connection)
        .await
        .expect("migrate test database");
    TestDb {
        url,
        connection,
        _dir: dir,
    }
}

/// A unique subject prefix, so that cases could share one server without seeing each other.
pub fn unique_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Environment for the services of one test: defaults plus `overrides`.
pub fn test_env(
    nats_url: &str,
    database_url: &str,
    prefix: &str,
    overrides: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = [
        ("VOIDRUNNER_NATS_URL", nats_url),
        ("VOIDRUNNER_NATS_PREFIX", prefix),
        ("VOIDRUNNER_DATABASE_URL", database_url),
        (
            "VOIDRUNNER_JWT_SECRET",
            "test-secret-test-secret-test-secret-0123",
        ),
        ("VOIDRUNNER_OUTBOX_SWEEP_SECONDS", "1"),
        ("VOIDRUNNER_WORKER_SLOTS", "4"),
        // Many workers on one machine: each its own port.
        ("VOIDRUNNER_METRICS_ADDR", "127.0.0.1:0"),
        // Tests poll far faster than a client should; the rate-limit test sets its own limits.
        ("VOIDRUNNER_RATE_LIMIT_PER_USER", "0"),
        ("VOIDRUNNER_RATE_LIMIT_PER_IP", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (key, value) in overrides {
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_string(), value.to_string()));
    }
    vars
}

/// The api and one worker running in-process against a real nats-server and database.
pub struct TestApp {
    pub base_url: String,
    pub db: TestDb,
    pub nats: Nats,
    pub prefix: String,
    pub http: reqwest::Client,
    pub worker_id: String,
    /// The api's owner of executions, for driving transitions as the fleet would.
    pub executions: voidrunner_api::executions::Lifecycle,
    /// The environment the services were started with.
    pub vars: Vec<(String, String)>,
    shutdown: CancellationToken,
    services: Vec<tokio::task::JoinHandle<()>>,
}

/// A further worker in the test process, stopped on request (as SIGTERM would stop it).
pub struct WorkerHandle {
    pub id: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Asks the worker to stop and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Asks the worker to stop without waiting; `stopped` then waits.
    pub fn request_stop(&self) {
        self.shutdown.cancel();
    }

    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Starts the services with extra `VOIDRUNNER_*` settings.
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    spawn(backend, overrides, true).await
}

/// Starts the api alone: the test plays the fleet.
pub async fn spawn_api_only(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    spawn(backend, overrides, false).await
}

async fn spawn(backend: Backend, overrides: &[(&str, &str)], with_worker: bool) -> TestApp {
    // Service logs, when a failing test needs them: VOIDRUNNER_TEST_LOG=1 cargo test ...
    if std::env::var_os("VOIDRUNNER_TEST_LOG").is_some() {
        let _ = voidrunner_shared::telemetry::init(false, "voidrunner-test");
    }
    let nats = start_nats().await;
    let db = fresh_database(backend).await;
    let vars = test_env(nats.url(), &db.url, &unique_prefix(), overrides);
    let prefix = vars
        .iter()
        .find(|(key, _)| key == "VOIDRUNNER_NATS_PREFIX")
        .map(|(_, prefix)| prefix.clone())
        .unwrap_or_default();

    let nats_config = NatsConfig::from_env(vars.clone()).expect("nats config");
    let api_config = ApiConfig::from_env(vars.clone()).expect("api config");
    let worker_config = WorkerConfig::from_env(vars.clone()).expect("worker config");
    let policy = SandboxPolicy::from_env(vars.clone()).expect("sandbox policy");

    let api = voidrunner_api::Api::build_with_db(
        api_config,
        policy.clone(),
        &nats_config,
        db.connection.clone(),
    )
    .await
    .expect("api starts");
    let executions = api.state().executions.clone();
    let worker = if with_worker {
        Some(
            voidrunner_worker::Worker::build(worker_config, policy, &nats_config)
                .await
                .unwrap_or_else(|e| panic!("worker starts (tests need a Docker engine and the language images; scripts/test.sh provides both): {e}")),
        )
    } else {
        None
    };
    let worker_id = worker
        .as_ref()
        .map(|worker| worker.worker_id().to_owned())
        .unwrap_or_default();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind api");
    let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    let mut services = vec![tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            api.run(listener, shutdown).await.expect("api runs");
        }
    })];
    if let Some(worker) = worker {
        services.push(tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                worker.run(shutdown).await.expect("worker runs");
            }
        }));
    }
    TestApp {
        base_url,
        db,
        nats,
        prefix,
        http: reqwest::Client::new(),
        worker_id,
        executions,
        vars,
        shutdown,
        services,
    }
}

impl TestApp {
    /// Stops the services and waits for them (sandboxes are removed on the way out).
    pub async fn stop(self) {
        self.shutdown.cancel();
        for service in self.services {
            let _ = service.await;
        }
    }

    /// Starts another worker on the same installation, with `overrides` on top of its settings.
    pub async fn spawn_worker(&self, overrides: &[(&str, &str)]) -> WorkerHandle {
        let mut vars = self.vars.clone();
        for (key, value) in overrides {
            vars.retain(|(k, _)| k != key);
            vars.push((key.to_string(), value.to_string()));
        }
        let nats_config = NatsConfig::from_env(vars.clone()).expect("nats config");
        let worker_config = WorkerConfig::from_env(vars.clone()).expect("worker config");
        let policy = SandboxPolicy::from_env(vars).expect("sandbox policy");
        let worker = voidrunner_worker::Worker::build(worker_config, policy, &nats_config)
            .await
            .unwrap_or_else(|e| panic!("worker starts: {e}"));
        let id = worker.worker_id().to_owned();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                worker.run(shutdown).await.expect("worker runs");
            }
        });
        WorkerHandle { id, shutdown, task }
    }

    /// The names of this app's installation.
    pub fn namespace(&self) -> voidrunner_shared::Namespace {
        voidrunner_shared::Namespace::new(&self.prefix).expect("the test prefix is valid")
    }

    /// A JetStream client of the test's own, to look at what the services did.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("connect to the test nats-server");
        async_nats::jetstream::new(client)
    }

    /// Waits until the app's worker has a warm sandbox of `language` waiting in its pool, as its
    /// status endpoint says.
    pub async fn until_warm(&self, language: &str) {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("connect to the test nats-server");
        let subject = self.namespace().worker_status_subject(&self.worker_id);
        let deadline = tokio::time::Instant::now() + FINAL_STATE_TIMEOUT;
        loop {
            // Nothing answers until the worker has registered its status endpoint.
            let status = match client.request(subject.clone(), "".into()).await {
                Ok(reply) => serde_json::from_slice::<Value>(&reply.payload).ok(),
                Err(_) => None,
            };
            let warm = status
                .as_ref()
                .and_then(|status| status["warm_pool"][language].as_u64());
            if warm.is_some_and(|warm| warm > 0) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no warm {language} sandbox in the pool of worker {}: {status:?}",
                self.worker_id
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Messages stored now in one of the installation's streams.
    pub async fn messages_in(&self, stream: &str) -> u64 {
        self.jetstream()
            .await
            .get_stream(stream)
            .await
            .expect("stream exists")
            .info()
            .await
            .expect("stream info")
            .state
            .messages
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base_url)
    }

    /// Registers a new user and returns a bearer token for it.
    pub async fn login_new_user(&self) -> String {
        login_new_user(&self.http, &self.base_url).await
    }

    /// POSTs a task and returns the response status and body.
    pub async fn create_task(&self, token: &str, body: &Value) -> (u16, Value) {
        send(
            self.http
                .post(self.url("/tasks"))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// `POST /runs<query>` with `body`; returns the response status and body.
    pub async fn post_run(&self, token: &str, query: &str, body: Value) -> (u16, Value) {
        send(
            self.http
                .post(self.url(&format!("/runs{query}")))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    /// Creates a task, starts an execution and waits for its final state.
    pub async fn run_to_end(&self, token: &str, task: Value) -> Value {
        run_to_end(&self.http, &self.base_url, token, task).await
    }

    /// Creates a task and returns it, failing the test unless the api accepted it.
    pub async fn create_task_ok(&self, token: &str, task: &Value) -> Value {
        let (status, created) = self.create_task(token, task).await;
        assert_eq!(status, 201, "create task: {created}");
        created
    }

    /// Starts an execution of a created `task`; returns the execution's id.
    pub async fn start(&self, token: &str, task: &Value) -> String {
        let task_id = task["id"].as_str().expect("task id");
        let execution = start_execution(&self.http, &self.base_url, token, task_id).await;
        execution["id"].as_str().expect("execution id").to_owned()
    }

    /// The execution as the api shows it now.
    pub async fn execution(&self, token: &str, execution_id: &str) -> Value {
        let (status, body) = send(
            self.http
                .get(self.url(&format!("/executions/{execution_id}")))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(status, 200, "get execution: {body}");
        body
    }

    /// Waits until the execution is running (or already final), and returns it.
    pub async fn wait_running(&self, token: &str, execution_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + FINAL_STATE_TIMEOUT;
        loop {
            let execution = self.execution(token, execution_id).await;
            if execution["status"] != "queued" {
                return execution;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "execution {execution_id} still queued after {FINAL_STATE_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the execution's final state.
    pub async fn wait_final(&self, token: &str, execution_id: &str) -> Value {
        wait_final(&self.http, &self.base_url, token, execution_id).await
    }

    /// Like `run_to_end`, with `stdin` for the program.
    pub async fn run_with_stdin(&self, token: &str, task: Value, stdin: &str) -> Value {
        let created = self.create_task_ok(token, &task).await;
        let task_id = created["id"].as_str().expect("task id");
        let (status, execution) = send(
            self.http
                .post(self.url(&format!("/tasks/{task_id}/executions")))
                .bearer_auth(token)
                .json(&json!({ "stdin": stdin })),
        )
        .await;
        assert_eq!(status, 202, "start execution: {execution}");
        let id = execution["id"].as_str().expect("execution id");
        wait_final(&self.http, &self.base_url, token, id).await
    }
}

/// How many users, tasks and executions the database holds: what a refused request must leave
/// as it was.
pub async fn row_counts(app: &TestApp) -> (u64, u64, u64) {
    use sea_orm::{EntityTrait, PaginatorTrait};
    use voidrunner_api::entity::{execution, task, user};
    let db = &app.db.connection;
    (
        user::Entity::find().count(db).await.expect("count users"),
        task::Entity::find().count(db).await.expect("count tasks"),
        execution::Entity::find()
            .count(db)
            .await
            .expect("count executions"),
    )
}

/// The answer is the API's error shape with this status and code, and its message mentions
/// `mentions` (what to fix).
pub fn assert_error(
    status: u16,
    body: &Value,
    expected_status: u16,
    expected_code: &str,
    mentions: &str,
) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], expected_code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "message {message:?} should mention {mentions:?}"
    );
}

/// Sends a request and returns status and JSON body (Null when the body is not JSON).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

pub async fn login_new_user(http: &reqwest::Client, base_url: &str) -> String {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let credentials = json!({ "email": email, "password": "correct horse battery" });
    let (status, body) = send(
        http.post(format!("{base_url}/api/v1/auth/register"))
            .json(&credentials),
    )
    .await;
    assert_eq!(status, 201, "register: {body}");
    let (status, body) = send(
        http.post(format!("{base_url}/api/v1/auth/login"))
            .json(&credentials),
    )
    .await;
    assert_eq!(status, 200, "login: {body}");
    body["access_token"].as_str().expect("token").to_owned()
}

/// Starts an execution of `task_id`; returns the 202 body.
pub async fn start_execution(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    task_id: &str,
) -> Value {
    let (status, body) = send(
        http.post(format!("{base_url}/api/v1/tasks/{task_id}/executions"))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(status, 202, "start execution: {body}");
    body
}

/// Polls an execution until it is final; panics after `FINAL_STATE_TIMEOUT`.
pub async fn wait_final(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    execution_id: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + FINAL_STATE_TIMEOUT;
    loop {
        let (status, body) = send(
            http.get(format!("{base_url}/api/v1/executions/{execution_id}"))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(status, 200, "get execution: {body}");
        if !matches!(body["status"].as_str(), Some("queued" | "running")) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution {execution_id} not final after {FINAL_STATE_TIMEOUT:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls executions until every one is final, within `within`; returns them by id. A missing
/// execution (or any answer but 200) fails the test.
pub async fn wait_all_final(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    ids: &[String],
    within: Duration,
) -> std::collections::HashMap<String, Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut finals = std::collections::HashMap::new();
    while finals.len() < ids.len() {
        for id in ids {
            if finals.contains_key(id) {
                continue;
            }
            let (status, execution) = send(
                http.get(format!("{base_url}/api/v1/executions/{id}"))
                    .bearer_auth(token),
            )
            .await;
            assert_eq!(status, 200, "get execution {id}: {execution}");
            if !matches!(execution["status"].as_str(), Some("queued" | "running")) {
                finals.insert(id.clone(), execution);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} executions not final after {within:?}",
            ids.len() - finals.len(),
            ids.len()
        );
        if finals.len() < ids.len() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    finals
}

pub async fn run_to_end(http: &reqwest::Client, base_url: &str, token: &str, task: Value) -> Value {
    let (status, created) = send(
        http.post(format!("{base_url}/api/v1/tasks"))
            .bearer_auth(token)
            .json(&task),
    )
    .await;
    assert_eq!(status, 201, "create task: {created}");
    let task_id = created["id"].as_str().expect("task id");
    let execution = start_execution(http, base_url, token, task_id).await;
    wait_final(
        http,
        base_url,
        token,
        execution["id"].as_str().expect("execution id"),
    )
    .await
}

async fn docker() -> bollard::Docker {
    bollard::Docker::connect_with_defaults()
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("docker reachable")
}

/// A second tag of `image` that a test can take away from under a running worker (which
/// looked for its images at start-up): an image that vanishes is a failure of the fleet.
pub struct VanishingImage {
    pub tag: String,
}

impl VanishingImage {
    /// Tags `image` anew as `voidrunner/vanishing-<random>:1`.
    pub async fn of(image: &str) -> VanishingImage {
        let repo = format!("voidrunner/vanishing-{}", uuid::Uuid::new_v4().simple());
        docker()
            .await
            .tag_image(
                image,
                Some(bollard::query_parameters::TagImageOptions {
                    repo: Some(repo.clone()),
                    tag: Some("1".to_owned()),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("tag {image}: {e}"));
        VanishingImage {
            tag: format!("{repo}:1"),
        }
    }

    /// Removes the tag (the image itself stays, under its other tags).
    pub async fn vanish(&self) {
        docker()
            .await
            .remove_image(
                &self.tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("untag {}: {e}", self.tag));
    }
}

/// Containers on the Docker engine with `label` (`key` or `key=value`), running or not.
pub async fn containers_labelled(label: &str) -> usize {
    docker()
        .await
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(std::collections::HashMap::from([(
                "label".to_owned(),
                vec![label.to_owned()],
            )])),
            ..Default::default()
        }))
        .await
        .expect("list containers")
        .len()
}

/// What a worker's native sandboxes left behind under `state_dir` and on the host: bundles,
/// runtime state, cgroups, processes and mounts. Empty when it cleaned up after itself.
pub fn native_leftovers(state_dir: &std::path::Path, worker_id: &str) -> Vec<String> {
    let mine = format!(".{worker_id}.");
    let mut found = Vec::new();
    let entries = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for kind in ["bundles", "crun"] {
        for name in entries(&state_dir.join(kind)) {
            if name.contains(&mine) {
                found.push(format!("{kind}: {name}"));
            }
        }
    }
    let hierarchies = entries(std::path::Path::new("/sys/fs/cgroup"));
    for hierarchy in hierarchies.iter().map(String::as_str).chain([""]) {
        let parent = std::path::Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join("voidrunner");
        for name in entries(&parent) {
            if name.contains(&mine) {
                found.push(format!("cgroup: {}", parent.join(name).display()));
            }
        }
    }
    for pid in entries(std::path::Path::new("/proc")) {
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroup.contains(&mine) {
            found.push(format!(
                "process {pid} in {}",
                cgroup.lines().next().unwrap_or("")
            ));
        }
    }
    let state = state_dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines().filter(|line| line.contains(&state)) {
        found.push(format!("mount: {line}"));
    }
    found
}

/// Waits until no container carries an execution's label; false if one is still there after
/// a few seconds (removal runs beside the result, so it may trail it briefly).
pub async fn execution_containers_gone(execution_id: &str) -> bool {
    let label = format!(
        "{}={execution_id}",
        voidrunner_worker::sandbox::EXECUTION_LABEL
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while containers_labelled(&label).await > 0 {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Containers a worker owns (its warm pool included), running or not.
pub async fn containers_of_worker(worker_id: &str) -> usize {
    containers_labelled(&format!(
        "{}={worker_id}",
        voidrunner_worker::sandbox::WORKER_LABEL
    ))
    .await
}
