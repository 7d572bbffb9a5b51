//! The transition table: every way an execution's status may change, and the one guarded
//! write that makes a change. A transition leaves only the states its rule lists, so a late,
//! duplicate or forged message finds the execution elsewhere and changes nothing.

use chrono::Utc;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;
use voidrunner_shared::Status;

use super::ExecutionError;
use crate::entity::execution;

/// A change of an execution's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A worker announced that it started the execution (again, after a redelivery).
    Start,
    /// A result arrived: from its worker, or for a dead letter from the api.
    Finish,
    /// The api cancelled an execution no worker had started.
    Cancel,
}

impl Transition {
    pub const ALL: [Transition; 3] = [Transition::Start, Transition::Finish, Transition::Cancel];

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Finish => "finish",
            Transition::Cancel => "cancel",
        }
    }

    /// The states the transition may leave.
    pub fn from(self) -> &'static [Status] {
        match self {
            Transition::Start | Transition::Finish => &Status::UNFINISHED,
            Transition::Cancel => &[Status::Queued],
        }
    }

    /// The states it may reach.
    pub fn to(self) -> &'static [Status] {
        match self {
            Transition::Start => &[Status::Running],
            Transition::Finish => &Status::FINAL,
            Transition::Cancel => &[Status::Cancelled],
        }
    }

    pub fn allows(self, from: Status, to: Status) -> bool {
        self.from().contains(&from) && self.to().contains(&to)
    }
}

/// Moves the execution to `to` by `transition`, writing `changes` beside the status, if it is
/// in a state the transition leaves. Returns whether it wrote; a `to` the transition never
/// reaches is refused before anything is written.
pub(super) async fn apply<C: ConnectionTrait>(
    db: &C,
    execution_id: Uuid,
    transition: Transition,
    to: Status,
    changes: Vec<(execution::Column, SimpleExpr)>,
) -> Result<bool, ExecutionError> {
    if !transition.to().contains(&to) {
        return Err(ExecutionError::Unreachable { transition, to });
    }
    let mut update = execution::Entity::update_many()
        .col_expr(execution::Column::Status, Expr::value(to))
        .col_expr(execution::Column::UpdatedAt, Expr::value(Utc::now()));
    for (column, value) in changes {
        update = update.col_expr(column, value);
    }
    let outcome = update
        .filter(execution::Column::Id.eq(execution_id))
        .filter(execution::Column::Status.is_in(transition.from().iter().copied()))
        .exec(db)
        .await?;
    Ok(outcome.rows_affected > 0)
}

/// The state diagram of an execution in Mermaid, drawn from the table (the README shows it,
/// and a test keeps the two the same).
pub fn mermaid() -> String {
    let mut lines = vec![
        "stateDiagram-v2".to_owned(),
        "    [*] --> queued : submit".to_owned(),
        "    note right of queued : held under the user's limit, then admitted and dispatched"
            .to_owned(),
    ];
    for transition in Transition::ALL {
        for from in transition.from() {
            for to in transition.to() {
                lines.push(format!("    {from} --> {to} : {}", transition.as_str()));
            }
        }
    }
    for status in Status::FINAL {
        lines.push(format!("    {status} --> [*]"));
    }
    lines.join("\n") + "\n"
}
