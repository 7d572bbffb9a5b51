//! The one status type of an execution, from the wire to the database to the API, and the
//! status of a task, which is its latest execution's.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
#[cfg(feature = "sea-orm")]
use sea_orm::sea_query::StringLen;
use serde::{Deserialize, Serialize};

/// Where an execution is in its life: `queued → running → completed | failed | timeout |
/// cancelled | error`. Results on the wire carry one of the final states.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[cfg_attr(
    feature = "sea-orm",
    derive(sea_orm::EnumIter, sea_orm::DeriveActiveEnum)
)]
#[cfg_attr(
    feature = "sea-orm",
    sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted, waiting for room under its user's limit or for a worker.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "queued"))]
    Queued,
    /// A worker announced that it started it.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "running"))]
    Running,
    /// The program exited with code 0.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "completed"))]
    Completed,
    /// The program exited with another code, or was killed (e.g. out of memory).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "failed"))]
    Failed,
    /// The program outlived its wall-clock limit and was killed.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "timeout"))]
    Timeout,
    /// A cancellation request stopped it.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "cancelled"))]
    Cancelled,
    /// The fleet could not run it (image missing, retries exhausted, ...).
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "error"))]
    Error,
}

impl Status {
    /// Every state, in the order of an execution's life.
    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Timeout,
        Status::Cancelled,
        Status::Error,
    ];
    /// The states an execution can still leave.
    pub const UNFINISHED: [Status; 2] = [Status::Queued, Status::Running];
    /// The states a result may report.
    pub const FINAL: [Status; 5] = [
        Status::Completed,
        Status::Failed,
        Status::Timeout,
        Status::Cancelled,
        Status::Error,
    ];

    pub fn is_final(self) -> bool {
        !Self::UNFINISHED.contains(&self)
    }

    /// The name used on the wire, in the database and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Cancelled => "cancelled",
            Status::Error => "error",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a status name that is not one.
#[derive(Debug, thiserror::Error)]
#[error("unknown status {0:?}: expected one of queued, running, completed, failed, timeout, cancelled, error")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
            .ok_or_else(|| UnknownStatus(name.to_owned()))
    }
}

/// A task's status: its latest execution's, or `idle` before the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum TaskStatus {
    Idle,
    Latest(Status),
}

impl TaskStatus {
    pub const IDLE: &'static str = "idle";

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Idle => Self::IDLE,
            TaskStatus::Latest(status) => status.as_str(),
        }
    }

    /// Every task status, `idle` first.
    pub fn all() -> impl Iterator<Item = TaskStatus> {
        std::iter::once(TaskStatus::Idle).chain(Status::ALL.into_iter().map(TaskStatus::Latest))
    }
}

impl From<Option<Status>> for TaskStatus {
    fn from(latest: Option<Status>) -> Self {
        latest.map_or(TaskStatus::Idle, TaskStatus::Latest)
    }
}

impl From<TaskStatus> for String {
    fn from(status: TaskStatus) -> Self {
        status.as_str().to_owned()
    }
}

impl TryFrom<String> for TaskStatus {
    type Error = UnknownStatus;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name == Self::IDLE {
            return Ok(TaskStatus::Idle);
        }
        name.parse().map(TaskStatus::Latest).map_err(|_| {
            UnknownStatus(format!(
                "{name} (a task's status is idle or one of an execution's)"
            ))
        })
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_name_and_json() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>().ok(), Some(status));
            let json = serde_json::to_value(status).expect("serialises");
            assert_eq!(json, status.as_str());
        }
        assert!("done".parse::<Status>().is_err());
    }

    #[test]
    fn a_task_status_is_idle_or_an_execution_status() {
        let names: Vec<&str> = TaskStatus::all().map(TaskStatus::as_str).collect();
        assert_eq!(
            names,
            [
                "idle",
                "queued",
                "running",
                "completed",
                "failed",
                "timeout",
                "cancelled",
                "error"
            ]
        );
        for status in TaskStatus::all() {
            assert_eq!(status.as_str().parse::<TaskStatus>().ok(), Some(status));
        }
        assert!("paused".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn final_and_unfinished_states_split_the_states() {
        for status in Status::ALL {
            assert_ne!(
                Status::FINAL.contains(&status),
                Status::UNFINISHED.contains(&status)
            );
            assert_eq!(status.is_final(), Status::FINAL.contains(&status));
        }
    }
}
