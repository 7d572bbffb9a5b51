//! Which output stream was truncated, stdout or stderr.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Executions {
    Table,
    StdoutTruncated,
    StderrTruncated,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Executions::StdoutTruncated, Executions::StderrTruncated] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Executions::Table)
                        .add_column(boolean(column).default(false))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Executions::StdoutTruncated, Executions::StderrTruncated] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Executions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
