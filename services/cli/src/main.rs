//! `voidrunner`: run code safely at scale. See `voidrunner --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use voidrunner::client::Client;
use voidrunner::commands::{exit, resources, run::RunArgs, session, table::Format};
use voidrunner::serve;
use voidrunner::settings::{self, Target};
use voidrunner_api::config::ApiConfig;
use voidrunner_shared::config::{LogFormat, NatsConfig};

/// VoidRunner runs untrusted code in hardened, single-use containers. Configuration comes from
/// `VOIDRUNNER_*` environment variables (see the README).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the client commands print: a table for people or JSON for scripts.
    #[arg(long, short, global = true, value_enum, default_value_t)]
    output: Format,
}

/// The commands that talk to an api (`VOIDRUNNER_URL`, `VOIDRUNNER_API_KEY` or a login).
#[derive(Subcommand)]
enum ClientCommand {
    /// Runs a program and streams its output; exits with the program's exit code.
    Run(RunArgs),
    /// Logs in with a password and keeps the session (mode 0600 in the config directory).
    Login(session::LoginArgs),
    /// Ends the kept session.
    Logout,
    /// Your executions: ls, show, logs [-f], cancel.
    #[command(subcommand)]
    Executions(resources::Executions),
    /// Your tasks: ls, show, rm.
    #[command(subcommand)]
    Tasks(resources::Tasks),
    /// Many runs at once: batch FILE.jsonl.
    #[command(subcommand)]
    Runs(resources::Runs),
    /// The live workers of the fleet.
    Workers,
    /// The languages this installation runs, and the live workers that serve each.
    Languages,
    /// Executions the fleet gave up on: ls, rerun.
    #[command(subcommand)]
    DeadLetters(resources::DeadLetters),
    /// Your API keys: ls, create, revoke.
    #[command(subcommand)]
    ApiKeys(resources::ApiKeys),
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Service(ServiceCommand),
    #[command(flatten)]
    Client(ClientCommand),
    /// Prints a completion script for a shell (e.g. `voidrunner completions bash > /etc/bash_completion.d/voidrunner`).
    Completions { shell: clap_complete::Shell },
    /// Checks the configuration: `config check [api|worker|serve|client]`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Checks what a command needs from this machine (Docker, images, nats-server, the
    /// database, free ports) and says how to fix what is missing.
    Doctor {
        #[arg(value_enum, default_value_t)]
        command: Target,
    },
    /// The language images: build [NAME…] (offline, with progress).
    #[command(subcommand)]
    Images(voidrunner::commands::images::Images),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validates the environment exactly as the command would when it starts, prints the
    /// effective configuration (secrets redacted), and exits 1 naming each bad variable.
    Check {
        #[arg(value_enum, default_value_t)]
        command: Target,
    },
}

/// The services and their chores.
#[derive(Subcommand)]
enum ServiceCommand {
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
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let vars: Vec<(String, String)> = std::env::vars().collect();
    match cli.command {
        Command::Client(command) => ExitCode::from(client(command, cli.output, &vars).await),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "voidrunner",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { command }) => ExitCode::from(
            voidrunner::commands::config::check(command, &vars, cli.output),
        ),
        Command::Images(command) => ExitCode::from(command.execute().await),
        Command::Doctor { command } => {
            ExitCode::from(voidrunner::commands::doctor::doctor(command, &vars, cli.output).await)
        }
        Command::Service(command) => match service(command, vars).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("Error: {error:?}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A client command; what it failed at is said on stderr, with the client-error exit code.
async fn client(command: ClientCommand, format: Format, vars: &[(String, String)]) -> u8 {
    let outcome = async {
        let client = Client::from_env(vars)?;
        match command {
            ClientCommand::Run(args) => voidrunner::commands::run::run(&client, args).await,
            ClientCommand::Login(args) => session::login(&client, args).await,
            ClientCommand::Logout => session::logout(&client).await,
            ClientCommand::Executions(command) => command.execute(&client, format).await,
            ClientCommand::Tasks(command) => command.execute(&client, format).await,
            ClientCommand::Runs(command) => command.execute(&client, format).await,
            ClientCommand::Workers => resources::workers(&client, format).await,
            ClientCommand::Languages => resources::languages(&client, format).await,
            ClientCommand::DeadLetters(command) => command.execute(&client, format).await,
            ClientCommand::ApiKeys(command) => command.execute(&client, format).await,
        }
    };
    match outcome.await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("voidrunner: {error}");
            exit::CLIENT_ERROR
        }
    }
}

/// A service command, with its logs and traces.
async fn service(command: ServiceCommand, vars: Vec<(String, String)>) -> anyhow::Result<()> {
    let json_logs = settings::log(&vars)?.log_format == LogFormat::Json;
    let service = match command {
        ServiceCommand::Api => "voidrunner-api",
        ServiceCommand::Worker => "voidrunner-worker",
        _ => "voidrunner",
    };
    let telemetry = voidrunner_shared::telemetry::init(json_logs, service);
    let shutdown = voidrunner::shutdown_on_signals();
    let outcome = run(command, vars, shutdown).await;
    // The spans still buffered go out before the process ends.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .ok();
    outcome
}

async fn run(
    command: ServiceCommand,
    vars: Vec<(String, String)>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Serve => serve::run(settings::serve(&vars)?, shutdown).await,
        ServiceCommand::Api => {
            let settings = settings::api(&vars)?;
            let addr = settings.api.api_addr;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding VOIDRUNNER_API_ADDR {addr}"))?;
            let api =
                voidrunner_api::Api::build(settings.api, settings.policy, &settings.nats).await?;
            api.run(listener, shutdown).await?;
            Ok(())
        }
        ServiceCommand::Worker => {
            let settings = settings::worker(&vars)?;
            let worker =
                voidrunner_worker::Worker::build(settings.worker, settings.policy, &settings.nats)
                    .await?;
            worker
                .run(shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("worker: {e}"))
        }
        ServiceCommand::Migrate => {
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
        ServiceCommand::NatsUsers { dir } => {
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
        ServiceCommand::ExportContract { dir } => {
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
