//! Users, tasks and executions.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    PasswordHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    UserId,
    Name,
    ScriptType,
    ScriptContent,
    Priority,
    TimeoutSeconds,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    TaskId,
    UserId,
    Status,
    Lane,
    ExitCode,
    Stdout,
    StdoutEncoding,
    Stderr,
    StderrEncoding,
    OutputTruncated,
    OomKilled,
    Error,
    WorkerId,
    Attempt,
    DispatchedAt,
    StreamSequence,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(uuid(Users::Id).primary_key())
                    .col(string_len_uniq(Users::Email, 320))
                    .col(string(Users::PasswordHash))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .col(uuid(Tasks::Id).primary_key())
                    .col(uuid(Tasks::UserId))
                    .col(string_len(Tasks::Name, 255))
                    .col(string_len(Tasks::ScriptType, 16))
                    .col(text(Tasks::ScriptContent))
                    .col(small_integer(Tasks::Priority))
                    .col(integer(Tasks::TimeoutSeconds))
                    .col(timestamp_with_time_zone(Tasks::CreatedAt))
                    .col(timestamp_with_time_zone(Tasks::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_tasks_user")
                            .from(Tasks::Table, Tasks::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_tasks_user_created")
                    .table(Tasks::Table)
                    .col(Tasks::UserId)
                    .col(Tasks::CreatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Executions::Table)
                    .col(uuid(Executions::Id).primary_key())
                    .col(uuid(Executions::TaskId))
                    .col(uuid(Executions::UserId))
                    .col(string_len(Executions::Status, 16))
                    .col(string_len(Executions::Lane, 8))
                    .col(big_integer_null(Executions::ExitCode))
                    .col(text(Executions::Stdout).default(""))
                    .col(string_len(Executions::StdoutEncoding, 8).default("utf-8"))
                    .col(text(Executions::Stderr).default(""))
                    .col(string_len(Executions::StderrEncoding, 8).default("utf-8"))
                    .col(boolean(Executions::OutputTruncated).default(false))
                    .col(boolean(Executions::OomKilled).default(false))
                    .col(text_null(Executions::Error))
                    .col(string_len_null(Executions::WorkerId, 255))
                    .col(integer(Executions::Attempt).default(0))
                    .col(timestamp_with_time_zone_null(Executions::DispatchedAt))
                    .col(big_integer_null(Executions::StreamSequence))
                    .col(timestamp_with_time_zone(Executions::CreatedAt))
                    .col(timestamp_with_time_zone_null(Executions::StartedAt))
                    .col(timestamp_with_time_zone_null(Executions::FinishedAt))
                    .col(timestamp_with_time_zone(Executions::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_executions_task")
                            .from(Executions::Table, Executions::TaskId)
                            .to(Tasks::Table, Tasks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_task_created")
                    .table(Executions::Table)
                    .col(Executions::TaskId)
                    .col(Executions::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // The outbox sweeper looks for executions that were committed but never published.
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_undispatched")
                    .table(Executions::Table)
                    .col(Executions::DispatchedAt)
                    .col(Executions::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Executions::Table.into_iden(),
            Tasks::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
