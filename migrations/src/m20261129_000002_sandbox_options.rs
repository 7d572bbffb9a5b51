//! Multi-file programs, requested limits and network on tasks; stdin, peak memory and compile
//! errors on executions.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Files,
    MemoryMb,
    CpuMillis,
    OutputLimitBytes,
    Network,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Stdin,
    PeakMemoryBytes,
    CompileError,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        let columns = [
            (Tasks::Table.into_iden(), json_null(Tasks::Files)),
            (Tasks::Table.into_iden(), integer_null(Tasks::MemoryMb)),
            (Tasks::Table.into_iden(), integer_null(Tasks::CpuMillis)),
            (
                Tasks::Table.into_iden(),
                big_integer_null(Tasks::OutputLimitBytes),
            ),
            (
                Tasks::Table.into_iden(),
                boolean(Tasks::Network).default(false).to_owned(),
            ),
            (
                Executions::Table.into_iden(),
                text(Executions::Stdin).default("").to_owned(),
            ),
            (
                Executions::Table.into_iden(),
                big_integer_null(Executions::PeakMemoryBytes),
            ),
            (
                Executions::Table.into_iden(),
                boolean(Executions::CompileError).default(false).to_owned(),
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
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            (Tasks::Table.into_iden(), Tasks::Files.into_iden()),
            (Tasks::Table.into_iden(), Tasks::MemoryMb.into_iden()),
            (Tasks::Table.into_iden(), Tasks::CpuMillis.into_iden()),
            (
                Tasks::Table.into_iden(),
                Tasks::OutputLimitBytes.into_iden(),
            ),
            (Tasks::Table.into_iden(), Tasks::Network.into_iden()),
            (Executions::Table.into_iden(), Executions::Stdin.into_iden()),
            (
                Executions::Table.into_iden(),
                Executions::PeakMemoryBytes.into_iden(),
            ),
            (
                Executions::Table.into_iden(),
                Executions::CompileError.into_iden(),
            ),
        ];
        for (table, column) in columns {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
