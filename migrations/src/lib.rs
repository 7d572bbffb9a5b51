//! Database migrations, written once for PostgreSQL and SQLite.
//!
//! Column types are chosen so both backends behave the same: uuids, enums stored as short
//! strings, timestamps with time zone, 64-bit integers for anything that can grow.

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_initial;
mod m20261129_000002_sandbox_options;
mod m20261129_000003_delivery;
mod m20261129_000004_accounts;
mod m20261129_000005_task_details;
mod m20261129_000006_runs;
mod m20261129_000007_webhooks;
mod m20261129_000008_stream_truncation;
mod m20261203_000009_dispatch_token;
mod m20261203_000010_trace_parent;
mod m20261203_000011_admission_counts;
mod m20261204_000012_executions_by_user;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_initial::Migration),
            Box::new(m20261129_000002_sandbox_options::Migration),
            Box::new(m20261129_000003_delivery::Migration),
            Box::new(m20261129_000004_accounts::Migration),
            Box::new(m20261129_000005_task_details::Migration),
            Box::new(m20261129_000006_runs::Migration),
            Box::new(m20261129_000007_webhooks::Migration),
            Box::new(m20261129_000008_stream_truncation::Migration),
            Box::new(m20261203_000009_dispatch_token::Migration),
            Box::new(m20261203_000010_trace_parent::Migration),
            Box::new(m20261203_000011_admission_counts::Migration),
            Box::new(m20261204_000012_executions_by_user::Migration),
        ]
    }
}
