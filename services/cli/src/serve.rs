//! Embedded mode: the api and a worker in one process, on the same JetStream code paths as the
//! distributed mode. With no configuration it keeps everything in a data directory: SQLite, a
//! generated JWT secret, and the JetStream store of a nats-server child process.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use voidrunner_api::Api;
use voidrunner_worker::Worker;

pub use crate::settings::Embedded;

use voidrunner_shared::nats_auth::{authorization_block, Role};
use voidrunner_shared::nats_server::NatsServer;
use voidrunner_shared::Namespace;

#[derive(Debug, Deserialize, Serialize)]
pub struct ServeConfig {
    /// `VOIDRUNNER_DATA_DIR`: where embedded mode keeps its state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `VOIDRUNNER_NATS_SERVER_BIN`: the nats-server started when `VOIDRUNNER_NATS_URL` is unset.
    #[serde(default = "default_nats_server_bin")]
    pub nats_server_bin: String,
    /// `VOIDRUNNER_EMBEDDED_NATS_PORT`: its client port on 127.0.0.1 (0 picks a free one).
    #[serde(default = "default_embedded_nats_port")]
    pub embedded_nats_port: u16,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_nats_server_bin() -> String {
    "nats-server".into()
}
fn default_embedded_nats_port() -> u16 {
    4222
}

/// Runs embedded mode until `shutdown`.
pub async fn run(mut embedded: Embedded, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data_dir = &embedded.serve.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating VOIDRUNNER_DATA_DIR {}", data_dir.display()))?;

    // With its own nats-server, each part connects under its role's least privilege; the
    // observer's password is for people with the NATS CLI. A given server brings its own.
    let mut worker_nats = embedded.nats.clone();
    let nats_child = match embedded.nats.nats_url {
        Some(_) => None,
        None => {
            let nats_dir = data_dir.join("nats");
            let credentials = nats_dir.join("credentials");
            let namespace = embedded.nats.namespace();
            let passwords = nats_credentials(&credentials, &namespace)?;
            let server = NatsServer::start_with(
                &embedded.serve.nats_server_bin,
                &nats_dir,
                embedded.serve.embedded_nats_port,
                &authorization_block(&namespace, &passwords),
            )
            .await?;
            let url = server.url().to_owned();
            tracing::info!(url = %url, "started embedded nats-server");
            let password_of = |wanted: Role| {
                passwords
                    .iter()
                    .find(|(role, _)| *role == wanted)
                    .map(|(_, password)| password.clone())
            };
            embedded.nats.nats_url = Some(url.clone());
            embedded.nats.nats_user = Some(Role::Api.as_str().to_owned());
            embedded.nats.nats_password = password_of(Role::Api);
            worker_nats.nats_url = Some(url.clone());
            worker_nats.nats_user = Some(Role::Worker.as_str().to_owned());
            worker_nats.nats_password = password_of(Role::Worker);
            // The api provisions; the worker's role may not.
            worker_nats.nats_provision = false;
            tracing::info!(
                "inspect the bus read-only: nats --server {url} --user {observer} --password \
                 \"$(cat {file})\" --inbox-prefix {inbox} stream ls",
                observer = Role::Observer.as_str(),
                file = credentials.join(Role::Observer.as_str()).display(),
                inbox = Role::Observer.inbox_prefix(),
            );
            Some(server)
        }
    };
    if embedded.api.database_url.is_none() {
        // Our own SQLite file: created here, so migrating it needs no one's permission.
        embedded.api.database_url = Some(voidrunner_api::db::sqlite_url(
            &data_dir.join("voidrunner.db"),
        ));
        embedded.api.auto_migrate = true;
    }
    // Empty is unset (compose passes the variable through whether it is set or not).
    embedded.api.jwt_secret = embedded
        .api
        .jwt_secret
        .take()
        .filter(|s| !s.trim().is_empty());
    if embedded.api.jwt_secret.is_none() {
        embedded.api.jwt_secret = Some(load_or_create_secret(&data_dir.join("jwt-secret"))?);
    }

    // One process, one recorder: the api's /metrics shows the worker's metrics too.
    embedded.worker.metrics_addr = "off".into();

    let listener = tokio::net::TcpListener::bind(embedded.api.api_addr)
        .await
        .with_context(|| format!("binding VOIDRUNNER_API_ADDR {}", embedded.api.api_addr))?;
    let api = Api::build(embedded.api, embedded.policy.clone(), &embedded.nats).await?;
    let worker = Worker::build(embedded.worker, embedded.policy, &worker_nats).await?;
    tracing::info!(
        api = %listener.local_addr()?,
        nats = embedded.nats.nats_url.as_deref().unwrap_or_default(),
        data_dir = %data_dir.display(),
        "voidrunner is up (embedded mode)"
    );

    let api_task = tokio::spawn(api.run(listener, shutdown.clone()));
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    let (api_result, worker_result) = tokio::join!(
        async {
            let result = api_task.await;
            shutdown.cancel();
            result
        },
        async {
            let result = worker_task.await;
            shutdown.cancel();
            result
        }
    );
    if let Some(server) = nats_child {
        server.stop().await;
    }
    api_result.context("api task")?.context("api")?;
    worker_result
        .context("worker task")?
        .map_err(|e| anyhow::anyhow!("worker: {e}"))?;
    Ok(())
}

/// The JWT secret kept in the data directory, generated on first start.
/// The NATS users of the installation `ns`, one per role: each password in `dir/<role>`
/// (created once, mode 0600, kept after), and `dir/authorization.conf` for nats-server.
pub fn nats_credentials(dir: &Path, ns: &Namespace) -> anyhow::Result<Vec<(Role, String)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut passwords = Vec::new();
    for role in Role::ALL {
        passwords.push((role, load_or_create_secret(&dir.join(role.as_str()))?));
    }
    let config = dir.join("authorization.conf");
    let _ = std::fs::remove_file(&config);
    write_private(&config, &authorization_block(ns, &passwords))
        .with_context(|| format!("writing {}", config.display()))?;
    Ok(passwords)
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(secret) = std::fs::read_to_string(path) {
        return Ok(secret.trim().to_owned());
    }
    let secret: String = (0..2)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    write_private(path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
