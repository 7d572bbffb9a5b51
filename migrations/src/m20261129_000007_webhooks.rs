//! Webhooks: an execution's callback URL and delivery state, each delivery attempt, and the
//! per-user secret that signs them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    WebhookSecret,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    CallbackUrl,
    WebhookState,
    WebhookNextAt,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    Id,
    ExecutionId,
    Attempt,
    AttemptedAt,
    StatusCode,
    Error,
    DurationMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            (
                Users::Table.into_iden(),
                string_len_null(Users::WebhookSecret, 80),
            ),
            (
                Executions::Table.into_iden(),
                string_len_null(Executions::CallbackUrl, 2048),
            ),
            // pending | delivered | failed; null without a callback URL.
            (
                Executions::Table.into_iden(),
                string_len_null(Executions::WebhookState, 16),
            ),
            (
                Executions::Table.into_iden(),
                timestamp_with_time_zone_null(Executions::WebhookNextAt),
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
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_webhook_due")
                    .table(Executions::Table)
                    .col(Executions::WebhookState)
                    .col(Executions::WebhookNextAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookAttempts::Table)
                    .col(uuid(WebhookAttempts::Id).primary_key())
                    .col(uuid(WebhookAttempts::ExecutionId))
                    .col(integer(WebhookAttempts::Attempt))
                    .col(timestamp_with_time_zone(WebhookAttempts::AttemptedAt))
                    .col(integer_null(WebhookAttempts::StatusCode))
                    .col(text_null(WebhookAttempts::Error))
                    .col(big_integer(WebhookAttempts::DurationMs))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_webhook_attempts_execution")
                            .from(WebhookAttempts::Table, WebhookAttempts::ExecutionId)
                            .to(Executions::Table, Executions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_attempts_execution")
                    .table(WebhookAttempts::Table)
                    .col(WebhookAttempts::ExecutionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(WebhookAttempts::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_executions_webhook_due")
                    .table(Executions::Table)
                    .to_owned(),
            )
            .await?;
        for (table, column) in [
            (Users::Table.into_iden(), Users::WebhookSecret.into_iden()),
            (
                Executions::Table.into_iden(),
                Executions::CallbackUrl.into_iden(),
            ),
            (
                Executions::Table.into_iden(),
                Executions::WebhookState.into_iden(),
            ),
            (
                Executions::Table.into_iden(),
                Executions::WebhookNextAt.into_iden(),
            ),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
