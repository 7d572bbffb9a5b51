use sea_orm::entity::prelude::*;
pub use voidrunner_shared::Status;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub task_id: Uuid,
    pub user_id: Uuid,
    pub status: Status,
    pub lane: String,
    pub exit_code: Option<i64>,
    #[sea_orm(column_type = "Text")]
    pub stdout: String,
    pub stdout_encoding: String,
    #[sea_orm(column_type = "Text")]
    pub stderr: String,
    pub stderr_encoding: String,
    pub output_truncated: bool,
    pub oom_killed: bool,
    pub compile_error: bool,
    pub peak_memory_bytes: Option<i64>,
    /// What the program reads on its standard input.
    #[sea_orm(column_type = "Text")]
    pub stdin: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub worker_id: Option<String>,
    pub attempt: i32,
    /// Null until the dispatch is in JetStream: the transactional outbox marker.
    pub dispatched_at: Option<DateTimeUtc>,
    pub stream_sequence: Option<i64>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    /// The client's `Idempotency-Key`: one execution per key and user.
    pub idempotency_key: Option<String>,
    /// Whether the execution counts against its user's limit of executions at once; held ones
    /// wait in the database, not on a lane.
    pub admitted: bool,
    /// When the fleet gave up on it and its dispatch went to the DLQ.
    pub dead_lettered_at: Option<DateTimeUtc>,
    /// The dead-lettered execution this one re-runs.
    pub rerun_of: Option<Uuid>,
    /// How many times the program ran, retries included (0 until a result says).
    pub runs: i32,
    /// Where the result is POSTed once the execution ends.
    pub callback_url: Option<String>,
    /// `pending`, `delivered` or `failed`; none without a callback URL.
    pub webhook_state: Option<String>,
    /// When the next delivery attempt is due (also a lease while one is under way).
    pub webhook_next_at: Option<DateTimeUtc>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The capability of its dispatch: `started` events and results must carry it.
    pub dispatch_token: Option<String>,
    /// The W3C `traceparent` of the request that created it: its trace.
    pub trace_parent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::task::Entity",
        from = "Column::TaskId",
        to = "super::task::Column::Id",
        on_delete = "Cascade"
    )]
    Task,
}

impl Related<super::task::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Task.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
