//! Delivery guarantees: idempotency keys, per-user admission, dead letters and their re-runs on
//! executions; retries on tasks.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    MaxRetries,
    RetryBackoffSeconds,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    UserId,
    Status,
    IdempotencyKey,
    Admitted,
    DeadLetteredAt,
    RerunOf,
    Runs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        let columns = [
            (
                Tasks::Table.into_iden(),
                integer(Tasks::MaxRetries).default(0).to_owned(),
            ),
            (
                Tasks::Table.into_iden(),
                integer(Tasks::RetryBackoffSeconds).default(1).to_owned(),
            ),
            (
                Executions::Table.into_iden(),
                string_len_null(Executions::IdempotencyKey, 255),
            ),
            // Rows from before this migration were all dispatched at once: admitted.
            (
                Executions::Table.into_iden(),
                boolean(Executions::Admitted).default(true).to_owned(),
            ),
            (
                Executions::Table.into_iden(),
                timestamp_with_time_zone_null(Executions::DeadLetteredAt),
            ),
            (
                Executions::Table.into_iden(),
                uuid_null(Executions::RerunOf),
            ),
            (
                Executions::Table.into_iden(),
                integer(Executions::Runs).default(0).to_owned(),
            ),
        ];
        for (table, mut column) in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        // One execution per key and user, whichever api replica the retries reach.
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_idempotency")
                    .table(Executions::Table)
                    .col(Executions::UserId)
                    .col(Executions::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A dead letter is re-run at most once.
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_rerun_of")
                    .table(Executions::Table)
                    .col(Executions::RerunOf)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Admission counts a user's unfinished executions.
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_user_status")
                    .table(Executions::Table)
                    .col(Executions::UserId)
                    .col(Executions::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in [
            "idx_executions_idempotency",
            "idx_executions_rerun_of",
            "idx_executions_user_status",
        ] {
            manager
                .drop_index(
                    Index::drop()
                        .name(index)
                        .table(Executions::Table)
                        .to_owned(),
                )
                .await?;
        }
        let columns = [
            (Tasks::Table.into_iden(), Tasks::MaxRetries.into_iden()),
            (
                Tasks::Table.into_iden(),
                Tasks::RetryBackoffSeconds.into_iden(),
            ),
            (
                Executions::Table.into_iden(),
                Executions::IdempotencyKey.into_iden(),
            ),
            (
                Executions::Table.into_iden(),
                Executions::Admitted.into_iden(),
            ),
            (
                Executions::Table.into_iden(),
                Executions::DeadLetteredAt.into_iden(),
            ),
            (
                Executions::Table.into_iden(),
                Executions::RerunOf.into_iden(),
            ),
            (Executions::Table.into_iden(), Executions::Runs.into_iden()),
        ];
        for (table, column) in columns {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
