//! `voidrunner`: run code safely at scale. See `voidrunner --help`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use voidrunner::serve::{self, Embedded};
use voidrunner_api::config::ApiConfig;
use voidrunner_shared::config::{NatsConfig, SandboxPolicy};
use voidrunner_worker::config::WorkerConfig;

/// VoidRunner runs untrusted code in hardened, single-use containers. Configuration comes from
/// `VOIDRUNNER_*` environment variables (see the README).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embedded mode: api and worker in one process (SQLite and a local nats-server by default).
    Serve,
    /// The REST api and result recorder (needs VOIDRUNNER_DATABASE_URL, _NATS_URL, _JWT_SECRET).
    Api,
    /// A worker that runs executions in Docker (needs VOIDRUNNER_NATS_URL).
    Worker,
    /// Apply database migrations to VOIDRUNNER_DATABASE_URL (default: SQLite in the data dir).
    Migrate,
    /// Write the wire contract (event JSON Schemas, stream and consumer definitions) into a
    /// directory, as committed under `nats/`.
    ExportContract { dir: PathBuf },
    /// Write the NATS users of the installation (VOIDRUNNER_NATS_PREFIX), one per role with
    /// least privilege: DIR/authorization.conf to include in nats-server's configuration, and
    /// DIR/api, DIR/worker, DIR/observer with each password (mode 0600, kept when present).
    NatsUsers { dir: PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let json_logs = vars
        .iter()
        .any(|(k, v)| k == "VOIDRUNNER_LOG_FORMAT" && v == "json");
    let service = match cli.command {
        Command::Api => "voidrunner-api",
        Command::Worker => "voidrunner-worker",
        _ => "voidrunner",
    };
    let telemetry = voidrunner_shared::telemetry::init(json_logs, service);
    let shutdown = voidrunner::shutdown_on_signals();
    let outcome = run(cli.command, vars, shutdown).await;
    // The spans still buffered go out before the process ends.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .ok();
    outcome
}

async fn run(
    command: Command,
    vars: Vec<(String, String)>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve::run(Embedded::from_env(vars)?, shutdown).await,
        Command::Api => {
            let config = ApiConfig::from_env(vars.clone())?;
            let nats = NatsConfig::from_env(vars.clone())?;
            let policy = SandboxPolicy::from_env(vars)?;
            let listener = tokio::net::TcpListener::bind(config.api_addr)
                .await
                .with_context(|| format!("binding VOIDRUNNER_API_ADDR {}", config.api_addr))?;
            let api = voidrunner_api::Api::build(config, policy, &nats).await?;
            api.run(listener, shutdown).await?;
            Ok(())
        }
        Command::Worker => {
            let config = WorkerConfig::from_env(vars.clone())?;
            let nats = NatsConfig::from_env(vars.clone())?;
            let policy = SandboxPolicy::from_env(vars)?;
            let worker = voidrunner_worker::Worker::build(config, policy, &nats).await?;
            worker
                .run(shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("worker: {e}"))
        }
        Command::Migrate => {
            let config = ApiConfig::from_env(vars.clone())?;
            let url = match config.database_url {
                Some(url) => url,
                None => {
                    let serve: serve::ServeConfig = voidrunner_shared::config::from_env(vars)?;
                    std::fs::create_dir_all(&serve.data_dir)?;
                    voidrunner_api::db::sqlite_url(&serve.data_dir.join("voidrunner.db"))
                }
            };
            let db = voidrunner_api::db::connect(&url).await?;
            let applied = voidrunner_api::db::migrate(&db).await?;
            println!(
                "applied {applied} migration(s) to {}",
                voidrunner_api::config::redact_url(&url)
            );
            Ok(())
        }
        Command::NatsUsers { dir } => {
            let nats = NatsConfig::from_env(vars)?;
            serve::nats_credentials(&dir, &nats.namespace())?;
            println!(
                "wrote {} (include it in nats-server.conf) and the passwords of {}",
                dir.join("authorization.conf").display(),
                voidrunner_shared::nats_auth::Role::ALL
                    .map(|role| role.as_str())
                    .join(", ")
            );
            Ok(())
        }
        Command::ExportContract { dir } => {
            for (path, contents) in voidrunner_shared::export::contract_files() {
                let path = dir.join(path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, contents)?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}
