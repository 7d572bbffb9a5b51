//! Database connection and the migration check every service does before it serves.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use voidrunner_migration::{Migrator, MigratorTrait};

#[derive(Debug, thiserror::Error)]
pub enum DbStartError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] DbErr),
    #[error(
        "the database has {0} pending migration(s): run `voidrunner migrate` \
         (or set VOIDRUNNER_AUTO_MIGRATE=true)"
    )]
    Unmigrated(usize),
    #[error("migrating the database failed: {0}")]
    Migrate(#[source] DbErr),
}

/// Connects to PostgreSQL or SQLite; a SQLite file is created when missing.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbStartError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(20)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        // A request waits this long for a connection before it answers 503.
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        // On every connection of the pool (these pragmas are per connection, but WAL): WAL lets
        // readers proceed while the recorder writes, and with it `synchronous=NORMAL` is
        // durable against a process crash (fsync at checkpoints, not at every commit).
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5))
        });
    Database::connect(options)
        .await
        .map_err(DbStartError::Connect)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<usize, DbStartError> {
    let pending = Migrator::get_pending_migrations(db)
        .await
        .map_err(DbStartError::Migrate)?
        .len();
    Migrator::up(db, None)
        .await
        .map_err(DbStartError::Migrate)?;
    Ok(pending)
}

/// Refuses to serve on a database that lacks migrations, unless told to apply them.
pub async fn ensure_migrated(
    db: &DatabaseConnection,
    auto_migrate: bool,
) -> Result<(), DbStartError> {
    let pending = Migrator::get_pending_migrations(db)
        .await
        .map_err(DbStartError::Connect)?
        .len();
    match (pending, auto_migrate) {
        (0, _) => Ok(()),
        (_, true) => migrate(db).await.map(|applied| {
            tracing::info!(applied, "applied pending migrations");
        }),
        (pending, false) => Err(DbStartError::Unmigrated(pending)),
    }
}

/// The SQLite URL of a database file, created on first use.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}
