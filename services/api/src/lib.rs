//! The VoidRunner api service.
//!
//! `routes/` speaks HTTP: it parses, authorises (`http`), calls the domain and shapes the
//! answer. `executions/` owns the life of an execution and `tasks/` the programs users keep.
//! Beside the routes run the background jobs that feed the lifecycle: the `recorder` (results
//! and `started` events from JetStream), the `outbox` sweeper, `dead_letters` (executions the
//! fleet lost) and `webhooks` (deliveries of finished executions). Below them all: `entity`
//! (sea-orm) and the wire contract in `voidrunner_shared`.

pub mod auth;
pub mod config;
pub mod db;
pub mod dead_letters;
pub mod docs;
pub mod entity;
pub mod error;
pub mod executions;
pub mod http;
pub mod openapi;
pub mod outbox;
pub mod pagination;
pub mod ratelimit;
pub mod recorder;
pub mod routes;
pub mod rules;
pub mod state;
pub mod tasks;
pub mod webhooks;
pub mod whole_number;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use voidrunner_shared::config::{ConfigError, NatsConfig, SandboxPolicy};
use voidrunner_shared::connect::ConnectError;
use voidrunner_shared::nats_auth::Role;
use voidrunner_shared::provision::{provision, ProvisionError};

use crate::auth::TokenKeys;
use crate::config::ApiConfig;
use crate::db::DbStartError;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] DbStartError),
    #[error(transparent)]
    Nats(#[from] ConnectError),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("recounting the users' active executions failed: {0}")]
    Recount(#[source] executions::ExecutionError),
}

/// A built api, ready to serve on a listener.
pub struct Api {
    state: AppState,
}

impl Api {
    /// Connects to the database and NATS, checks migrations and provisions the streams.
    pub async fn build(
        config: ApiConfig,
        policy: SandboxPolicy,
        nats: &NatsConfig,
    ) -> Result<Api, StartError> {
        let db = db::connect(config.required_database_url()?).await?;
        Self::build_with_db(config, policy, nats, db).await
    }

    /// Like `build`, on an existing database connection.
    pub async fn build_with_db(
        config: ApiConfig,
        policy: SandboxPolicy,
        nats: &NatsConfig,
        db: DatabaseConnection,
    ) -> Result<Api, StartError> {
        // Installed before anything is counted: counts made earlier would go nowhere.
        voidrunner_shared::metrics::recorder();
        db::ensure_migrated(&db, config.auto_migrate).await?;
        let tokens = TokenKeys::new(
            config.required_jwt_secret()?.as_bytes(),
            config.jwt_ttl_seconds,
        );
        let namespace = nats.namespace();
        let (client, jetstream) =
            voidrunner_shared::connect::connect(nats, "voidrunner-api", &Role::Api.inbox_prefix())
                .await?;
        provision(&jetstream, &namespace, nats).await?;
        let executions = executions::Lifecycle::new(
            db.clone(),
            client.clone(),
            jetstream.clone(),
            namespace.clone(),
            config.max_active_per_user,
        );
        // Counts left stale by replicas without a limit (or with another) are set right before
        // anything is admitted by this one.
        if config.max_active_per_user != config::ActiveLimit::Unlimited {
            let users = executions
                .recount_all()
                .await
                .map_err(StartError::Recount)?;
            tracing::debug!(users, "recounted the users' active executions");
        }
        Ok(Api {
            state: AppState {
                executions,
                db,
                nats: client,
                jetstream,
                namespace,
                tokens,
                config: Arc::new(config),
                policy: Arc::new(policy),
                limiter: ratelimit::Limiter::default(),
                streams: ratelimit::StreamSlots::default(),
            },
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves the REST API and runs the recorder and outbox sweeper until `shutdown`.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let state = self.state;
        let sweep_every = Duration::from_secs(state.config.outbox_sweep_seconds);
        let mut jobs = tokio::task::JoinSet::new();
        jobs.spawn(recorder::run(
            state.clone(),
            recorder::Feed::Results,
            shutdown.clone(),
        ));
        jobs.spawn(recorder::run(
            state.clone(),
            recorder::Feed::Started,
            shutdown.clone(),
        ));
        jobs.spawn(dead_letters::run(state.clone(), shutdown.clone()));
        jobs.spawn(webhooks::run(state.clone(), shutdown.clone()));
        jobs.spawn(outbox::run_sweeper(
            state.executions.clone(),
            sweep_every,
            shutdown.clone(),
        ));

        tracing::info!(addr = %listener.local_addr()?, "api listening");
        let drain = Duration::from_secs(state.config.drain_seconds);
        let app = routes::router(state);
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
        // In-flight requests finish, within the drain period: live-output streams could
        // otherwise hold the replica open for as long as their executions run.
        let served = tokio::select! {
            served = serve => served,
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(drain).await;
            } => {
                tracing::warn!(drain_seconds = drain.as_secs(), "requests still open after the drain period; closing them");
                Ok(())
            }
        };
        shutdown.cancel();
        // The recorders finish the batch in hand, ack it and stop.
        while jobs.join_next().await.is_some() {}
        tracing::info!("api stopped");
        served
    }
}
