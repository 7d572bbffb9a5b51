//! A three-node NATS cluster loses a node without losing work: an api and two workers (separate
//! processes, given all three URLs, every stream and bucket R3) take 500 submissions while the
//! leader of the tasks stream is killed with -9 and restarted, then the leader of the results
//! stream. Every accepted execution ends once, none runs twice, the restarted nodes catch up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{json, Value};
use voidrunner_shared::nats_server::NatsServer;
use voidrunner_shared::Namespace;
use voidrunner_testkit::processes::{free_port, Processes};
use voidrunner_testkit::{
    empty_database, login_new_user, nats_server_bin, send, test_env, unique_prefix, wait_all_final,
    Backend,
};

const BIN: &str = env!("CARGO_BIN_EXE_voidrunner");
const SUBMISSIONS: usize = 500;
/// Submissions per second: the faults happen while work keeps coming.
const PACE: Duration = Duration::from_millis(40);

/// One node of the cluster: its ports and store survive a restart.
struct Node {
    name: String,
    dir: PathBuf,
    port: u16,
    extra: String,
    server: Option<NatsServer>,
}

impl Node {
    async fn start(&mut self) {
        let server = NatsServer::start_with(&nats_server_bin(), &self.dir, self.port, &self.extra)
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", self.name));
        self.server = Some(server);
    }

    async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::TempDir::new().expect("cluster dir");
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let others: Vec<String> = routes
                .iter()
                .filter(|other| *other != route)
                .map(|other| format!("nats-route://127.0.0.1:{other}"))
                .collect();
            let extra = format!(
                "server_name: {name}\ncluster {{\n  name: voidrunner-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                others.join(", ")
            );
            nodes.push(Node {
                dir: dir.path().join(&name),
                name,
                port: free_port(),
                extra,
                server: None,
            });
        }
        // Started side by side: each waits for the others to form the JetStream meta group.
        futures::future::join_all(nodes.iter_mut().map(Node::start)).await;
        let cluster = Cluster { nodes, _dir: dir };
        // Ready once the JetStream meta group has a leader.
        let js = connect(&cluster.urls()).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while js.query_account().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the cluster formed no JetStream meta group:\n{}",
                cluster.logs()
            );
        }
        cluster
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                let log =
                    std::fs::read_to_string(node.dir.join("nats-server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {}\n{}",
                    node.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|node| node.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }
}

async fn connect(urls: &str) -> jetstream::Context {
    let servers: Vec<&str> = urls.split(',').collect();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .expect("connect to the cluster");
    jetstream::new(client)
}

/// The stream's cluster view: its leader and each replica's (current, lag), retried through
/// elections.
async fn cluster_info(js: &jetstream::Context, stream: &str) -> (String, HashMap<String, bool>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut handle) = js.get_stream(stream).await {
            if let Ok(info) = handle.info().await {
                if let Some(cluster) = &info.cluster {
                    if let Some(leader) = &cluster.leader {
                        let replicas = cluster
                            .replicas
                            .iter()
                            .map(|peer| {
                                (
                                    peer.name.clone(),
                                    peer.current && peer.lag.unwrap_or(0) == 0,
                                )
                            })
                            .collect();
                        return (leader.clone(), replicas);
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "{stream} has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `node` is a current replica of every stream again; returns how long it took.
async fn caught_up(js: &jetstream::Context, streams: &[String], node: &str) -> Duration {
    let began = Instant::now();
    let deadline = began + Duration::from_secs(60);
    loop {
        let mut current = true;
        for stream in streams {
            let (leader, replicas) = cluster_info(js, stream).await;
            current &= leader == node || replicas.get(node).copied().unwrap_or(false);
        }
        if current {
            return began.elapsed();
        }
        assert!(Instant::now() < deadline, "{node} did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `started` events per execution id on EVENTS (attempt and worker of each): more than one
/// would be a second run.
async fn starts(js: &jetstream::Context, ns: &Namespace) -> HashMap<String, Vec<String>> {
    let stream = js.get_stream(ns.events_stream()).await.expect("events");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{}.events.*.started", ns.prefix()),
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let pending = consumer.cached_info().num_pending;
    let mut counts: HashMap<String, Vec<String>> = HashMap::new();
    let mut messages = consumer.messages().await.expect("messages");
    for _ in 0..pending {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("events keep coming")
            .expect("message")
            .expect("message ok");
        let id = message.subject.split('.').nth(2).expect("id").to_owned();
        let event: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        counts.entry(id).or_default().push(format!(
            "attempt {} on {} at {}",
            event["attempt"], event["worker_id"], event["started_at"]
        ));
    }
    counts
}

#[tokio::test]
async fn a_three_node_cluster_loses_a_stream_leader_twice_without_losing_work() {
    let mut cluster = Cluster::start().await;
    let urls = cluster.urls();
    let prefix = unique_prefix();
    let ns = Namespace::new(&prefix).expect("prefix");
    let (database_url, _db) = empty_database(Backend::Postgres).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let vars = test_env(
        &urls,
        &database_url,
        &prefix,
        &[
            ("VOIDRUNNER_API_ADDR", &addr),
            ("VOIDRUNNER_NATS_REPLICAS", "3"),
            ("VOIDRUNNER_WORKER_SLOTS", "3"),
            ("VOIDRUNNER_MAX_ACTIVE_PER_USER", "1000"),
            ("RUST_LOG", "info"),
        ],
    );
    let mut processes = Processes::new(BIN, vars);
    processes.run_to_completion("migrate").await;
    processes.start("api", "api", &[]);
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    for id in ["cluster-w1", "cluster-w2"] {
        // As deployed: the api provisions, workers wait for it.
        processes.start(
            id,
            "worker",
            &[
                ("VOIDRUNNER_WORKER_ID", id),
                ("VOIDRUNNER_NATS_PROVISION", "false"),
            ],
        );
    }
    processes.wait_ready("api", &http, &base).await;
    let js = connect(&urls).await;
    let streams = [ns.tasks_stream(), ns.results_stream(), ns.events_stream()];
    let (tasks_leader, replicas) = cluster_info(&js, &ns.tasks_stream()).await;
    assert_eq!(replicas.len(), 2, "TASKS is not R3: {replicas:?}");

    let token = login_new_user(&http, &base).await;
    let (status, task) = send(
        http.post(format!("{base}/api/v1/tasks"))
            .bearer_auth(&token)
            .json(&json!({ "name": "cluster", "script_type": "bash", "script_content": "echo \"ran $((6*7))\"" })),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let task_id = task["id"].as_str().expect("task id").to_owned();

    let mut accepted = Vec::new();
    let mut refused = HashMap::<u16, usize>::new();
    let mut log = Vec::new();
    let mut results_leader = String::new();
    let began = Instant::now();
    for i in 0..SUBMISSIONS {
        match i {
            100 => {
                log.push(format!(
                    "{:.1}s kill -9 {tasks_leader} (TASKS leader)",
                    began.elapsed().as_secs_f64()
                ));
                cluster.node(&tasks_leader).kill().await;
            }
            200 => {
                cluster.node(&tasks_leader).start().await;
                let took = caught_up(&js, &streams, &tasks_leader).await;
                log.push(format!(
                    "{:.1}s {tasks_leader} back, caught up in {:.1}s",
                    began.elapsed().as_secs_f64(),
                    took.as_secs_f64()
                ));
            }
            300 => {
                results_leader = cluster_info(&js, &ns.results_stream()).await.0;
                log.push(format!(
                    "{:.1}s kill -9 {results_leader} (RESULTS leader)",
                    began.elapsed().as_secs_f64()
                ));
                cluster.node(&results_leader).kill().await;
            }
            400 => {
                cluster.node(&results_leader).start().await;
                let took = caught_up(&js, &streams, &results_leader).await;
                log.push(format!(
                    "{:.1}s {results_leader} back, caught up in {:.1}s",
                    began.elapsed().as_secs_f64(),
                    took.as_secs_f64()
                ));
            }
            _ => {}
        }
        let response = http
            .post(format!("{base}/api/v1/tasks/{task_id}/executions"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("the api answers");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 202 {
            accepted.push(body["id"].as_str().expect("id").to_owned());
        } else {
            assert_eq!(
                status, 503,
                "only 'try again' may refuse a submission: {body}"
            );
            *refused.entry(status).or_default() += 1;
        }
        tokio::time::sleep(PACE).await;
    }
    let submitted_in = began.elapsed();

    // Every accepted execution ends, completed, once.
    let finals = wait_all_final(&http, &base, &token, &accepted, Duration::from_secs(300)).await;
    let all_done = began.elapsed();
    let completed = finals
        .values()
        .filter(|execution| execution["status"] == "completed" && execution["stdout"] == "ran 42\n")
        .count();
    let not_completed: Vec<&Value> = finals
        .values()
        .filter(|execution| execution["status"] != "completed")
        .collect();
    let starts = starts(&js, &ns).await;
    let twice: Vec<String> = accepted
        .iter()
        .filter_map(|id| {
            let seen = starts.get(id)?;
            (seen.len() > 1).then(|| format!("{id}: {}", seen.join("; ")))
        })
        .collect();
    let ran_twice = twice.len();
    println!(
        "cluster failover: submitted {SUBMISSIONS} in {:.1}s, accepted {}, refused {:?}, completed {completed}, \
         lost 0, ran twice {ran_twice} ({} started events), all final after {:.1}s\n  {}",
        submitted_in.as_secs_f64(),
        accepted.len(),
        refused,
        starts.values().map(Vec::len).sum::<usize>(),
        all_done.as_secs_f64(),
        log.join("\n  ")
    );
    assert!(not_completed.is_empty(), "{not_completed:?}");
    assert_eq!(completed, accepted.len());
    assert_eq!(ran_twice, 0, "executions ran twice:\n{}", twice.join("\n"));
    // The count above read the real events (a `started` is best effort, so not all need be).
    let started: usize = accepted
        .iter()
        .filter_map(|id| starts.get(id))
        .map(Vec::len)
        .sum();
    assert!(
        started >= accepted.len() * 9 / 10,
        "only {started} started events"
    );
    assert!(
        accepted.len() >= SUBMISSIONS * 9 / 10,
        "too many refusals: {refused:?}"
    );
    processes.assert_running("api");
    processes.assert_running("cluster-w1");
    processes.assert_running("cluster-w2");
}
