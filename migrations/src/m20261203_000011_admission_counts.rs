//! Per-user admission counted, not recounted: how many of a user's executions are admitted and
//! unfinished, and how many are held, kept on the user's row by the transactions that change
//! them. Admission then costs one row update instead of a count over the user's executions
//! under a lock. The held executions are found through a partial index.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    ActiveExecutions,
    HeldExecutions,
}

const HELD_INDEX: &str = "idx_executions_held";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        for column in [Users::ActiveExecutions, Users::HeldExecutions] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(big_integer(column).default(0))
                        .to_owned(),
                )
                .await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE users SET \
               active_executions = (SELECT COUNT(*) FROM executions e WHERE e.user_id = users.id \
                 AND e.admitted AND e.status IN ('queued', 'running')), \
               held_executions = (SELECT COUNT(*) FROM executions e WHERE e.user_id = users.id \
                 AND NOT e.admitted AND e.status = 'queued')",
        )
        .await?;
        db.execute_unprepared(&format!(
            "CREATE INDEX {HELD_INDEX} ON executions (user_id, created_at, id) \
             WHERE NOT admitted AND status = 'queued'"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX {HELD_INDEX}"))
            .await?;
        for column in [Users::ActiveExecutions, Users::HeldExecutions] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
