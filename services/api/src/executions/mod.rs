//! The one owner of an execution's life. Nothing else writes an execution's status.
//!
//! - `submit`: a new execution is committed queued (the outbox entry), admitted under its
//!   user's limit or held, and dispatched to TASKS (`admission`, `dispatch`).
//! - `record`: what the fleet reports moves it on: `started` makes it running, a result
//!   finishes it (dead letters are results too).
//! - `cancel`: a queued execution is cancelled here; a running one is asked of its worker.
//! - `rerun`: a dead letter runs again as a new execution.
//!
//! Every change of status is one transition of the table in `transitions`: a write guarded by
//! the states it may leave, in one transaction with the task's status and the admission of
//! held executions it frees room for. After the commit, `followups` does what the change
//! calls for beyond the database (dispatches, webhooks, live events), and `observe` logs and
//! counts it — whichever path made the change, the recorder, a sync waiter or a route.

pub mod admission;
pub mod callback;
mod cancel;
mod dispatch;
mod error;
mod followups;
mod observe;
mod record;
mod submit;
pub mod transitions;
pub mod view;

use std::sync::Arc;

use async_nats::jetstream;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tokio::sync::Notify;
use uuid::Uuid;
use voidrunner_shared::Namespace;

use crate::entity::execution;

pub use error::ExecutionError;
pub use submit::{NewExecution, NewRun, Submitted};

/// Stands in for a worker id in what the api reports on the fleet's behalf.
pub const REPORTER: &str = "api";

/// What the lifecycle needs: the database, the bus, and the per-user limit.
#[derive(Clone)]
pub struct Lifecycle {
    pub(crate) db: DatabaseConnection,
    pub(crate) nats: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) namespace: Namespace,
    /// `VOIDRUNNER_MAX_ACTIVE_PER_USER`.
    pub(crate) max_active_per_user: crate::config::ActiveLimit,
    /// Woken when an execution with a callback finishes, so its webhook goes out at once.
    webhooks_due: Arc<Notify>,
}

impl Lifecycle {
    pub fn new(
        db: DatabaseConnection,
        nats: async_nats::Client,
        jetstream: jetstream::Context,
        namespace: Namespace,
        max_active_per_user: crate::config::ActiveLimit,
    ) -> Lifecycle {
        Lifecycle {
            db,
            nats,
            jetstream,
            namespace,
            max_active_per_user,
            webhooks_due: Arc::new(Notify::new()),
        }
    }

    /// Resolves when an execution with a callback URL has finished since the last call.
    pub async fn webhook_due(&self) {
        self.webhooks_due.notified().await;
    }

    /// The execution with `execution_id` if it belongs to `user_id`; someone else's execution
    /// does not exist.
    pub async fn find_owned(
        &self,
        user_id: Uuid,
        execution_id: Uuid,
    ) -> Result<execution::Model, ExecutionError> {
        execution::Entity::find_by_id(execution_id)
            .filter(execution::Column::UserId.eq(user_id))
            .one(&self.db)
            .await?
            .ok_or(ExecutionError::NotFound)
    }
}
