//! Fault injection with real processes: `kill -9` of a worker with executions in flight and of
//! the api in the middle of a burst, nats-server killed and restarted under load, PostgreSQL
//! stopped under load. Every test counts what was submitted, accepted, finished, lost and
//! duplicated, and prints a `FAULT REPORT` line (`cargo test --test faults -- --nocapture`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{json, Value};
use voidrunner_shared::Namespace;
use voidrunner_testkit::processes::{free_port, OwnPostgres, Processes};
use voidrunner_testkit::{
    empty_database, login_new_user, native_leftovers, send, start_nats, test_env, unique_prefix,
    Backend, Nats,
};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");
const ACK_WAIT_SECONDS: u64 = 5;

/// One installation as separate processes: an api and workers.
struct Cluster {
    processes: Processes,
    client: Client,
}

/// What a user and an operator see of an installation: its REST API and its streams.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base_url: String,
    namespace: Namespace,
    nats_url: String,
}

impl Cluster {
    async fn new(nats: &Nats, database_url: &str, extra: &[(&str, &str)]) -> Cluster {
        let prefix = unique_prefix();
        let addr = format!("127.0.0.1:{}", free_port());
        let ack_wait = ACK_WAIT_SECONDS.to_string();
        let mut overrides = vec![
            ("VOIDRUNNER_API_ADDR", addr.as_str()),
            ("VOIDRUNNER_NATS_ACK_WAIT_SECONDS", ack_wait.as_str()),
            ("RUST_LOG", "info"),
        ];
        overrides.extend_from_slice(extra);
        let vars = test_env(nats.url(), database_url, &prefix, &overrides);
        let processes = Processes::new(BIN, vars);
        processes.run_to_completion("migrate").await;
        Cluster {
            processes,
            client: Client {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("http client"),
                base_url: format!("http://{addr}"),
                namespace: Namespace::new(&prefix).expect("prefix"),
                nats_url: nats.url().to_owned(),
            },
        }
    }

    async fn start_api(&mut self, name: &str) {
        self.processes.start(name, "api", &[]);
        self.processes
            .wait_ready(name, &self.client.http, &self.client.base_url)
            .await;
    }

    fn start_worker(&mut self, id: &str, slots: &str) {
        self.processes.start(
            id,
            "worker",
            &[
                ("VOIDRUNNER_WORKER_ID", id),
                ("VOIDRUNNER_WORKER_SLOTS", slots),
            ],
        );
    }
}

impl Client {
    async fn task(&self, token: &str, script: &str) -> String {
        let (status, task) = send(
            self.http
                .post(format!("{}/api/v1/tasks", self.base_url))
                .bearer_auth(token)
                .json(&json!({ "name": "fault", "script_type": "bash", "script_content": script })),
        )
        .await;
        assert_eq!(status, 201, "{task}");
        task["id"].as_str().expect("task id").to_owned()
    }

    /// One submission; `None` when the api could not be reached at all.
    async fn submit(&self, token: &str, task_id: &str) -> Option<(u16, Value)> {
        self.submit_with_key(token, task_id, None).await
    }

    async fn submit_with_key(
        &self,
        token: &str,
        task_id: &str,
        key: Option<&str>,
    ) -> Option<(u16, Value)> {
        let mut request = self
            .http
            .post(format!(
                "{}/api/v1/tasks/{task_id}/executions",
                self.base_url
            ))
            .bearer_auth(token);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, token: &str, id: &str) -> Value {
        let (status, body) = send(
            self.http
                .get(format!("{}/api/v1/executions/{id}", self.base_url))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Messages per execution id on `filter` (e.g. every result, every `started` event).
    async fn per_execution(&self, stream: &str, filter: String) -> HashMap<String, usize> {
        let js = jetstream::new(async_nats::connect(&self.nats_url).await.expect("connect"));
        let stream = js.get_stream(stream).await.expect("stream");
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: filter.clone(),
                ..Default::default()
            })
            .await
            .expect("ordered consumer");
        let pending = consumer.cached_info().num_pending;
        let mut counts = HashMap::new();
        if pending == 0 {
            return counts;
        }
        let mut messages = consumer.messages().await.expect("messages");
        let mut seen = 0;
        while seen < pending {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("stream keeps delivering")
                .expect("message")
                .expect("message ok");
            seen += 1;
            // <p>.results.<id> or <p>.events.<id>.<kind>
            let id = message
                .subject
                .split('.')
                .nth(2)
                .expect("execution id in subject")
                .to_owned();
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    async fn results_per_execution(&self) -> HashMap<String, usize> {
        self.per_execution(
            &self.namespace.results_stream(),
            format!("{}.results.*", self.namespace.prefix()),
        )
        .await
    }

    async fn starts_per_execution(&self) -> HashMap<String, usize> {
        self.per_execution(
            &self.namespace.events_stream(),
            format!("{}.events.*.started", self.namespace.prefix()),
        )
        .await
    }
}

/// What a fault test saw, printed for the record.
struct Report {
    name: &'static str,
    submitted: usize,
    accepted: usize,
    finished: usize,
    lost: usize,
    duplicated: usize,
    extra: String,
}

impl Report {
    fn print(&self) {
        println!(
            "FAULT REPORT {}: submitted={} accepted={} finished={} lost={} duplicated={} {}",
            self.name,
            self.submitted,
            self.accepted,
            self.finished,
            self.lost,
            self.duplicated,
            self.extra
        );
    }
}

/// Waits up to `within` for every accepted execution's final state; returns the final ones and
/// how many never got there (lost).
async fn settle(
    client: &Client,
    token: &str,
    accepted: &[String],
    within: Duration,
) -> (Vec<Value>, usize) {
    let deadline = Instant::now() + within;
    let mut finished = Vec::new();
    let mut lost = 0;
    for id in accepted {
        loop {
            let execution = client.get(token, id).await;
            if !matches!(execution["status"].as_str(), Some("queued" | "running")) {
                finished.push(execution);
                break;
            }
            if Instant::now() > deadline {
                lost += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (finished, lost)
}

/// Executions with more than one final result on their reply subject.
fn duplicates(results: &HashMap<String, usize>, accepted: &[String]) -> usize {
    accepted
        .iter()
        .filter(|id| results.get(*id).copied().unwrap_or(0) > 1)
        .count()
}

/// Submits `count` executions of `task_id`, `parallel` at a time, recording every answer.
#[derive(Default)]
struct Tally {
    accepted: Mutex<Vec<String>>,
    /// Answers by status code; 0 for "could not connect".
    statuses: Mutex<HashMap<u16, usize>>,
    answered: AtomicUsize,
}

impl Tally {
    fn record(&self, answer: Option<(u16, Value)>) {
        let status = answer.as_ref().map_or(0, |(status, _)| *status);
        if let Some((202, body)) = &answer {
            self.accepted
                .lock()
                .expect("lock")
                .push(body["id"].as_str().expect("id").to_owned());
        }
        *self
            .statuses
            .lock()
            .expect("lock")
            .entry(status)
            .or_insert(0) += 1;
        self.answered.fetch_add(1, Ordering::SeqCst);
    }

    /// How long after `since` the next submission was accepted (the recovery time after a
    /// fault ends); fails the test after a minute.
    async fn first_accept_after(&self, since: Instant, cluster: &Cluster) -> Duration {
        let accepted_before = self.count(202);
        loop {
            if self.count(202) > accepted_before {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "nothing accepted after the fault ended: {}\n{}",
                self.statuses(),
                cluster.processes.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.lock().expect("lock").clone()
    }

    fn count(&self, status: u16) -> usize {
        self.statuses
            .lock()
            .expect("lock")
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    fn server_errors_other_than_503(&self) -> usize {
        self.statuses
            .lock()
            .expect("lock")
            .iter()
            .filter(|(status, _)| **status >= 500 && **status != 503)
            .map(|(_, n)| n)
            .sum()
    }

    fn statuses(&self) -> String {
        let mut statuses: Vec<_> = self
            .statuses
            .lock()
            .expect("lock")
            .iter()
            .map(|(s, n)| (*s, *n))
            .collect();
        statuses.sort();
        statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[tokio::test]
async fn a_worker_killed_with_executions_in_flight_loses_none_of_them() {
    let nats = start_nats().await;
    let (database_url, _dir) = empty_database(Backend::Postgres).await;
    let mut cluster =
        Cluster::new(&nats, &database_url, &[("VOIDRUNNER_POOL_SIZES", "bash=0")]).await;
    cluster.start_worker("doomed", "4");
    cluster.start_api("api").await;
    let client = cluster.client.clone();
    let token = login_new_user(&client.http, &client.base_url).await;
    let task = client.task(&token, "sleep 3; echo survived").await;

    let mut accepted = Vec::new();
    for _ in 0..4 {
        let (status, body) = client.submit(&token, &task).await.expect("api answers");
        assert_eq!(status, 202, "{body}");
        accepted.push(body["id"].as_str().expect("id").to_owned());
    }
    // All four are running on the doomed worker when it dies.
    for id in &accepted {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let execution = client.get(&token, id).await;
            if execution["status"] == "running" {
                assert_eq!(execution["worker_id"], "doomed");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{execution}\n{}",
                cluster.processes.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cluster.processes.kill("doomed").await;
    let killed = Instant::now();
    cluster.start_worker("heir", "4");

    let (finished, lost) = settle(&client, &token, &accepted, Duration::from_secs(90)).await;
    let recovery = killed.elapsed();
    let results = client.results_per_execution().await;
    let duplicated = duplicates(&results, &accepted);
    Report {
        name: "worker kill -9",
        submitted: accepted.len(),
        accepted: accepted.len(),
        finished: finished.len(),
        lost,
        duplicated,
        extra: format!(
            "ack_wait={ACK_WAIT_SECONDS}s all_final_after_kill={:.1}s",
            recovery.as_secs_f64()
        ),
    }
    .print();
    assert_eq!(lost, 0, "{}", cluster.processes.logs());
    assert_eq!(duplicated, 0, "{results:?}");
    for execution in &finished {
        assert_eq!(
            execution["status"],
            "completed",
            "{execution}\n{}",
            cluster.processes.logs()
        );
        assert_eq!(execution["stdout"], "survived\n");
        assert_eq!(execution["worker_id"], "heir", "{execution}");
        assert_eq!(execution["attempt"], 2, "{execution}");
    }
    // Redelivered once ack_wait passes without progress acks, then 3 s of running.
    assert!(
        recovery < Duration::from_secs(ACK_WAIT_SECONDS + 3 + 15),
        "recovery took {recovery:?}"
    );
}

#[tokio::test]
async fn the_api_killed_during_a_burst_of_200_loses_no_accepted_execution() {
    const BURST: usize = 200;
    let nats = start_nats().await;
    let (database_url, _dir) = empty_database(Backend::Postgres).await;
    let mut cluster = Cluster::new(&nats, &database_url, &[]).await;
    cluster.start_worker("w1", "4");
    cluster.start_api("api-1").await;
    let client = cluster.client.clone();
    let token = login_new_user(&client.http, &client.base_url).await;
    let task = client.task(&token, "echo burst").await;

    // Each submission is a client that retries with its Idempotency-Key until it gets an answer,
    // as a client whose request died with the api should.
    let tally = std::sync::Arc::new(Tally::default());
    let tries = std::sync::Arc::new(AtomicUsize::new(0));
    let burst = tokio::spawn({
        let (client, tally, tries, token, task) = (
            client.clone(),
            tally.clone(),
            tries.clone(),
            token.clone(),
            task.clone(),
        );
        async move {
            futures::stream::iter(0..BURST)
                .for_each_concurrent(8, |_| {
                    let (client, tally, tries, token, task) = (
                        client.clone(),
                        tally.clone(),
                        tries.clone(),
                        token.clone(),
                        task.clone(),
                    );
                    async move {
                        let key = uuid::Uuid::new_v4().to_string();
                        let deadline = Instant::now() + Duration::from_secs(60);
                        loop {
                            tries.fetch_add(1, Ordering::SeqCst);
                            let answer = client.submit_with_key(&token, &task, Some(&key)).await;
                            let retry = matches!(answer, None | Some((503, _)));
                            if !retry || Instant::now() > deadline {
                                tally.record(answer);
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
                .await;
        }
    });
    // kill -9 once about half the burst has been answered.
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally.answered.load(Ordering::SeqCst) < BURST / 2 {
        assert!(Instant::now() < deadline, "the burst stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.processes.kill("api-1").await;
    let killed = Instant::now();
    cluster.start_api("api-2").await;
    let back = killed.elapsed();
    burst.await.expect("burst");

    let accepted = tally.accepted();
    let distinct: std::collections::HashSet<&String> = accepted.iter().collect();
    let db = voidrunner_api::db::connect(&database_url)
        .await
        .expect("db");
    let task_uuid: uuid::Uuid = task.parse().expect("task uuid");
    let rows = {
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        voidrunner_api::entity::execution::Entity::find()
            .filter(voidrunner_api::entity::execution::Column::TaskId.eq(task_uuid))
            .count(&db)
            .await
            .expect("count")
    };
    let (finished, lost) = settle(&client, &token, &accepted, Duration::from_secs(180)).await;
    let all_final = killed.elapsed();
    let results = client.results_per_execution().await;
    let starts = client.starts_per_execution().await;
    let duplicated = duplicates(&results, &accepted);
    let ran_twice = accepted
        .iter()
        .filter(|id| starts.get(*id).copied().unwrap_or(0) > 1)
        .count();
    Report {
        name: "api kill -9 mid-burst",
        submitted: BURST,
        accepted: accepted.len(),
        finished: finished.len(),
        lost,
        duplicated,
        extra: format!(
            "answers={} requests={} rows={rows} ran_twice={ran_twice} api_back_after={:.1}s all_final_after_kill={:.1}s",
            tally.statuses(),
            tries.load(Ordering::SeqCst),
            back.as_secs_f64(),
            all_final.as_secs_f64()
        ),
    }
    .print();
    assert_eq!(
        accepted.len(),
        BURST,
        "every client got its 202: {}",
        tally.statuses()
    );
    assert_eq!(distinct.len(), BURST, "one execution per client");
    assert_eq!(
        rows, BURST as u64,
        "retried requests made no extra executions"
    );
    assert_eq!(
        tally.server_errors_other_than_503(),
        0,
        "{}",
        tally.statuses()
    );
    assert_eq!(lost, 0, "{}", cluster.processes.logs());
    assert_eq!(duplicated, 0);
    assert_eq!(ran_twice, 0, "no fleet failure, so nothing may run twice");
    for execution in &finished {
        assert_eq!(execution["status"], "completed", "{execution}");
        assert_eq!(execution["stdout"], "burst\n");
    }
}

#[tokio::test]
async fn nats_killed_and_restarted_under_load_loses_no_accepted_execution() {
    const SUBMISSIONS: usize = 60;
    let mut nats = start_nats().await;
    let (database_url, _dir) = empty_database(Backend::Postgres).await;
    let mut cluster = Cluster::new(&nats, &database_url, &[]).await;
    cluster.start_worker("w1", "4");
    cluster.start_api("api").await;
    let client = cluster.client.clone();
    let token = login_new_user(&client.http, &client.base_url).await;
    let task = client.task(&token, "sleep 0.2; echo kept").await;

    let tally = std::sync::Arc::new(Tally::default());
    let load = tokio::spawn({
        let (client, tally, token, task) =
            (client.clone(), tally.clone(), token.clone(), task.clone());
        async move {
            for _ in 0..SUBMISSIONS {
                tally.record(client.submit(&token, &task).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    while tally.answered.load(Ordering::SeqCst) < SUBMISSIONS / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nats.kill().await;
    // The outage lasts two seconds: a duration of the fault, not a wait for anything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.start_again().await;
    let recovery = tally.first_accept_after(Instant::now(), &cluster).await;
    load.await.expect("load");

    let accepted = tally.accepted();
    let (finished, lost) = settle(&client, &token, &accepted, Duration::from_secs(120)).await;
    let results = client.results_per_execution().await;
    let duplicated = duplicates(&results, &accepted);
    Report {
        name: "nats-server kill -9 and restart",
        submitted: SUBMISSIONS,
        accepted: accepted.len(),
        finished: finished.len(),
        lost,
        duplicated,
        extra: format!(
            "answers={} first_accept_after_restart={:.1}s",
            tally.statuses(),
            recovery.as_secs_f64()
        ),
    }
    .print();
    assert_eq!(
        tally.server_errors_other_than_503(),
        0,
        "{}",
        tally.statuses()
    );
    assert_eq!(lost, 0, "{}", cluster.processes.logs());
    assert_eq!(duplicated, 0);
    for execution in &finished {
        assert_eq!(
            execution["status"],
            "completed",
            "{execution}\n{}",
            cluster.processes.logs()
        );
        assert_eq!(execution["stdout"], "kept\n");
    }
    cluster.processes.assert_running("api");
    cluster.processes.assert_running("w1");
}

#[tokio::test]
async fn postgres_stopped_for_10_s_under_load_answers_503_and_records_everything_after() {
    let nats = start_nats().await;
    let postgres = OwnPostgres::start().await;
    let mut cluster = Cluster::new(&nats, &postgres.url(), &[]).await;
    cluster.start_worker("w1", "4");
    cluster.start_api("api").await;
    let client = cluster.client.clone();
    let token = login_new_user(&client.http, &client.base_url).await;
    let task = client.task(&token, "sleep 1; echo recorded").await;

    // A submission every 100 ms, each on its own, so slow answers do not slow the load.
    let tally = std::sync::Arc::new(Tally::default());
    let stop_load = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn({
        let (client, tally, token, task) =
            (client.clone(), tally.clone(), token.clone(), task.clone());
        let stop_load = stop_load.clone();
        async move {
            let mut inflight = tokio::task::JoinSet::new();
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            while !stop_load.is_cancelled() {
                ticks.tick().await;
                let (client, tally, token, task) =
                    (client.clone(), tally.clone(), token.clone(), task.clone());
                inflight.spawn(async move { tally.record(client.submit(&token, &task).await) });
            }
            while inflight.join_next().await.is_some() {}
        }
    });
    while tally.count(202) < 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    postgres.stop().await;
    let stopped = Instant::now();
    // The outage lasts ten seconds, as the fault calls for.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let refused_during = tally.count(503);
    postgres.start_again().await;
    let restarted = Instant::now();
    let recovery = tally.first_accept_after(restarted, &cluster).await;
    // A little more load after the recovery, then stop.
    let target = tally.count(202) + 5;
    while tally.count(202) < target {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_load.cancel();
    load.await.expect("load");
    let outage = restarted - stopped;

    let accepted = tally.accepted();
    let (finished, lost) = settle(&client, &token, &accepted, Duration::from_secs(120)).await;
    let results = client.results_per_execution().await;
    let duplicated = duplicates(&results, &accepted);
    Report {
        name: "postgres stopped 10 s",
        submitted: tally.answered.load(Ordering::SeqCst),
        accepted: accepted.len(),
        finished: finished.len(),
        lost,
        duplicated,
        extra: format!(
            "answers={} refused_503_during_outage={refused_during} outage={:.1}s first_accept_after_restart={:.1}s",
            tally.statuses(),
            outage.as_secs_f64(),
            recovery.as_secs_f64()
        ),
    }
    .print();
    assert!(
        refused_during > 0,
        "no 503 while the database was down: {}",
        tally.statuses()
    );
    assert_eq!(
        tally.server_errors_other_than_503(),
        0,
        "{}",
        tally.statuses()
    );
    assert_eq!(lost, 0, "{}", cluster.processes.logs());
    assert_eq!(duplicated, 0);
    for execution in &finished {
        assert_eq!(execution["status"], "completed", "{execution}");
        assert_eq!(execution["stdout"], "recorded\n");
    }
    cluster.processes.assert_running("api");
}

#[tokio::test]
async fn sigterm_drains_the_api_and_lets_the_worker_finish_what_it_runs() {
    let nats = start_nats().await;
    let (database_url, _dir) = empty_database(Backend::Postgres).await;
    let mut cluster = Cluster::new(
        &nats,
        &database_url,
        &[
            ("VOIDRUNNER_DRAIN_SECONDS", "2"),
            ("VOIDRUNNER_SHUTDOWN_GRACE_SECONDS", "30"),
        ],
    )
    .await;
    cluster.start_worker("w1", "2");
    cluster.start_api("api-1").await;
    let client = cluster.client.clone();
    let token = login_new_user(&client.http, &client.base_url).await;
    let task = client.task(&token, "echo begun; sleep 3; echo ended").await;
    let (status, body) = client.submit(&token, &task).await.expect("api answers");
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();

    // A live-output stream stays open while the api is told to stop: the drain period bounds it.
    let events = client
        .http
        .get(format!("{}/api/v1/executions/{id}/events", client.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("events stream");
    assert_eq!(events.status().as_u16(), 200);
    loop {
        let execution = client.get(&token, &id).await;
        if execution["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    assert!(
        cluster
            .processes
            .terminate("api-1", Duration::from_secs(10))
            .await,
        "the api did not exit cleanly on SIGTERM\n{}",
        cluster.processes.logs()
    );
    let api_stopped = asked.elapsed();
    drop(events);

    // The worker, told to stop mid-run, finishes the run first and reports it.
    let asked = Instant::now();
    assert!(
        cluster
            .processes
            .terminate("w1", Duration::from_secs(40))
            .await,
        "the worker did not exit cleanly on SIGTERM\n{}",
        cluster.processes.logs()
    );
    let worker_stopped = asked.elapsed();
    // The api is ready once some worker is alive.
    cluster.start_worker("w2", "2");
    cluster.start_api("api-2").await;
    let (finished, lost) = settle(&client, &token, &[id], Duration::from_secs(30)).await;
    println!(
        "FAULT REPORT sigterm: api_exit={:.1}s worker_exit={:.1}s lost={lost}",
        api_stopped.as_secs_f64(),
        worker_stopped.as_secs_f64()
    );
    assert_eq!(lost, 0);
    assert_eq!(finished[0]["status"], "completed", "{}", finished[0]);
    assert_eq!(finished[0]["stdout"], "begun\nended\n");
    assert_eq!(finished[0]["worker_id"], "w1");
    assert_eq!(
        finished[0]["attempt"], 1,
        "finished by the stopping worker, not redelivered"
    );
}

#[tokio::test]
async fn a_native_worker_killed_mid_run_leaves_nothing_running_and_its_restart_removes_the_rest() {
    let nats = start_nats().await;
    let (database_url, _dir) = empty_database(Backend::Postgres).await;
    let state = tempfile::TempDir::new().expect("state dir");
    let state_dir = state.path().display().to_string();
    let mut cluster = Cluster::new(
        &nats,
        &database_url,
        &[
            ("VOIDRUNNER_SANDBOX_BACKEND", "native"),
            ("VOIDRUNNER_SANDBOX_STATE_DIR", &state_dir),
        ],
    )
    .await;
    // A worker id of this run alone: what it leaves is told apart from any other's.
    let worker = format!("doomed-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    cluster.start_worker(&worker, "2");
    cluster.start_api("api").await;
    let client = cluster.client.clone();
    let token = login_new_user(&client.http, &client.base_url).await;
    let task = client.task(&token, "sleep 3; echo survived").await;
    let mut accepted = Vec::new();
    for _ in 0..2 {
        let (status, body) = client.submit(&token, &task).await.expect("api answers");
        assert_eq!(status, 202, "{body}");
        accepted.push(body["id"].as_str().expect("id").to_owned());
    }
    for id in &accepted {
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.get(&token, id).await["status"] != "running" {
            assert!(Instant::now() < deadline, "{}", cluster.processes.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Its sandboxes (the two running, the warm ones) by their bundles.
    let sandboxes: Vec<String> = std::fs::read_dir(state.path().join("bundles"))
        .expect("bundles")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(sandboxes.len() >= 2, "{sandboxes:?}");
    let left_of = |kind: &str| -> Vec<String> {
        native_leftovers(state.path(), &worker)
            .into_iter()
            .filter(|left| left.starts_with(kind) && sandboxes.iter().any(|id| left.contains(id)))
            .collect()
    };
    assert!(
        !left_of("process").is_empty(),
        "the running sandboxes have processes"
    );

    cluster.processes.kill(&worker).await;
    // Nothing of its sandboxes runs on unwatched: the runtime processes die with the worker,
    // and each sandbox's init with its runtime process.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left_of("process").is_empty() {
        assert!(
            Instant::now() < deadline,
            "sandbox processes outlived their worker: {:#?}",
            left_of("process")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !left_of("").is_empty(),
        "a killed worker could not clean up, yet nothing is left to clean"
    );

    // Back under the same id, the worker removes what it left and runs the executions again.
    cluster.start_worker(&worker, "2");
    let (finished, lost) = settle(&client, &token, &accepted, Duration::from_secs(90)).await;
    assert_eq!(lost, 0, "{}", cluster.processes.logs());
    for execution in &finished {
        assert_eq!(execution["status"], "completed", "{execution}");
        assert_eq!(execution["stdout"], "survived\n", "{execution}");
    }
    let left = left_of("");
    assert!(
        left.is_empty(),
        "the restarted worker left its old sandboxes: {left:#?}"
    );
    // Stopped as it should be, it leaves nothing at all.
    assert!(
        cluster
            .processes
            .terminate(&worker, Duration::from_secs(30))
            .await
    );
    let left = native_leftovers(state.path(), &worker);
    assert!(
        left.is_empty(),
        "the stopped worker left sandboxes: {left:#?}"
    );
}
