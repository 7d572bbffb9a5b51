//! What the lifecycle can refuse, and what can fail under it.

use voidrunner_shared::publish::PublishError;
use voidrunner_shared::Status;

use super::transitions::Transition;

#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    #[error("no execution with this id")]
    NotFound,
    #[error("no dead letter with this execution id")]
    NotDeadLetter,
    #[error("this dead letter has already been re-run")]
    AlreadyRerun,
    #[error("the execution has already ended and cannot be cancelled")]
    AlreadyEnded,
    /// A programming error: no rule of the table leads there.
    #[error("{} never leads to {to}", transition.as_str())]
    Unreachable { transition: Transition, to: Status },
    /// The key came with another request before (another task, program or stdin).
    #[error("this Idempotency-Key was used for a different request; use a new key")]
    KeyReused,
    #[error("the program with this stdin is {size} bytes once encoded, more than the {max} a NATS message carries here")]
    TooLarge { size: usize, max: usize },
    /// Nothing was written: an execution accepted now would wait for the sweeper with nobody
    /// told why.
    #[error("the message broker (NATS) is unreachable; nothing was changed, try again shortly")]
    BrokerDown,
    #[error("the task of this execution is gone")]
    TaskGone,
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
    #[error("publishing to JetStream failed")]
    Publish(#[from] PublishError),
    #[error("the cancellation request could not be recorded")]
    Cancellation(#[source] async_nats::Error),
    #[error("the dispatch could not be encoded")]
    Encode(#[from] serde_json::Error),
}
