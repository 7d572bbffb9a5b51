use sea_orm::entity::prelude::*;
use voidrunner_shared::{Language, TaskStatus};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub script_type: Language,
    #[sea_orm(column_type = "Text")]
    pub script_content: String,
    pub priority: i16,
    pub timeout_seconds: i32,
    /// Further files of the program: a JSON array of `{path, content}`.
    pub files: Option<Json>,
    pub memory_mb: Option<i32>,
    pub cpu_millis: Option<i32>,
    pub output_limit_bytes: Option<i64>,
    pub network: bool,
    /// Runs after the first when the program fails or times out.
    pub max_retries: i32,
    /// Delay before the first retry; doubles for each further one.
    pub retry_backoff_seconds: i32,
    pub description: Option<String>,
    /// The user's own JSON object, at most 16 KiB.
    pub metadata: Option<Json>,
    /// The status of the latest execution, or `idle` before the first (see `Model::status`).
    #[sea_orm(column_name = "status")]
    pub status_name: String,
    /// `task`, or `run` for the program of a one-shot run (left out of task listings).
    pub kind: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
    #[sea_orm(has_many = "super::execution::Entity")]
    Execution,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl Related<super::execution::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Execution.def()
    }
}

impl Model {
    /// The lane the task's priority maps onto.
    pub fn lane(&self) -> voidrunner_shared::Lane {
        voidrunner_shared::Lane::for_priority(u8::try_from(self.priority).unwrap_or(0))
    }

    /// The program's further files.
    pub fn files(&self) -> Vec<voidrunner_shared::events::SourceFile> {
        self.files
            .clone()
            .and_then(|files| serde_json::from_value(files).ok())
            .unwrap_or_default()
    }

    /// The task's status; a name this version does not know reads as idle.
    pub fn status(&self) -> TaskStatus {
        self.status_name.parse().unwrap_or(TaskStatus::Idle)
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// The kinds of task.
pub const KIND_TASK: &str = "task";
pub const KIND_RUN: &str = "run";

/// Further files as the `files` column stores them.
pub fn files_json(files: &[voidrunner_shared::events::SourceFile]) -> Json {
    serde_json::to_value(files).unwrap_or_default()
}
