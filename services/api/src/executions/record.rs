//! What the fleet reports, applied: `started` events and results.

use sea_orm::sea_query::{Expr, SimpleExpr};
use voidrunner_shared::events::{Encoding, ResultV1, StartedV1};

use super::transitions::Transition;
use super::{ExecutionError, Lifecycle};
use crate::entity::execution::{self, Column};

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Utf8 => "utf-8",
        Encoding::Base64 => "base64",
    }
}

fn count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The columns a result sets.
fn result_columns(result: &ResultV1) -> Vec<(Column, SimpleExpr)> {
    let mut columns = vec![
        (Column::ExitCode, Expr::value(result.exit_code)),
        (Column::Stdout, Expr::value(result.stdout.text.clone())),
        (
            Column::StdoutEncoding,
            Expr::value(encoding_name(result.stdout.encoding)),
        ),
        (Column::Stderr, Expr::value(result.stderr.text.clone())),
        (
            Column::StderrEncoding,
            Expr::value(encoding_name(result.stderr.encoding)),
        ),
        (
            Column::OutputTruncated,
            Expr::value(result.output_truncated),
        ),
        (
            Column::StdoutTruncated,
            Expr::value(result.stdout_truncated),
        ),
        (
            Column::StderrTruncated,
            Expr::value(result.stderr_truncated),
        ),
        (Column::OomKilled, Expr::value(result.oom_killed)),
        (Column::CompileError, Expr::value(result.compile_error)),
        (
            Column::PeakMemoryBytes,
            Expr::value(
                result
                    .peak_memory_bytes
                    .and_then(|bytes| i64::try_from(bytes).ok()),
            ),
        ),
        (Column::Error, Expr::value(result.error.clone())),
        (Column::WorkerId, Expr::value(result.worker_id.clone())),
        (Column::Attempt, Expr::value(count(result.attempt))),
        (Column::FinishedAt, Expr::value(result.finished_at)),
        (Column::Runs, Expr::value(count(result.runs))),
    ];
    if let Some(started_at) = result.started_at {
        columns.push((Column::StartedAt, Expr::value(started_at)));
    }
    if result.dead_lettered {
        columns.push((Column::DeadLetteredAt, Expr::value(result.finished_at)));
    }
    columns
}

impl Lifecycle {
    /// A worker started the execution; a late `started` after the result changes nothing.
    pub async fn start(
        &self,
        started: &StartedV1,
    ) -> Result<Option<execution::Model>, ExecutionError> {
        let columns = vec![
            (Column::StartedAt, Expr::value(started.started_at)),
            (Column::WorkerId, Expr::value(started.worker_id.clone())),
            (Column::Attempt, Expr::value(count(started.attempt))),
        ];
        self.change(
            started.execution_id,
            Transition::Start,
            voidrunner_shared::Status::Running,
            columns,
        )
        .await
    }

    /// A result arrived: the execution ends as it says, once. `None` for a duplicate or a
    /// result that came after the execution ended otherwise (e.g. cancelled while queued).
    pub async fn finish(
        &self,
        result: &ResultV1,
    ) -> Result<Option<execution::Model>, ExecutionError> {
        self.change(
            result.execution_id,
            Transition::Finish,
            result.status,
            result_columns(result),
        )
        .await
    }
}
